"""The simulator's synthetic world: the population, the scenarios and the traffic they draw per
tick, served to the controller as ``ArmStats`` by :class:`SyntheticSource` on a fake
:class:`Clock`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from langchain_graylayer.judging.readmodel import ArmStats, LatencySummary, Snapshot
from langchain_graylayer.measuring.windows import DURATION_BUCKETS
from langchain_graylayer.plan.plan import Version

Array = npt.NDArray[Any]

PLAN_ID = "simulate"
TICK = 300.0
"""Seconds per tick: traffic is drawn and the controller steps once per 5 simulated minutes."""
EPOCH = 1_700_000_000.0
"""The fake clock's start: a real-looking time (the controller reads 0 as unset)."""
WINDOW_TICKS = 12
"""The article's 60-minute QoS window."""

LAYERS: tuple[str, ...] = ("internal", "early_adopter", "normal", "high_value", "vip")
SHARES: tuple[float, ...] = (0.005, 0.10, 0.70, 0.15, 0.045)
"""The article's case study (SPEC §7): internal 0.5 % (by membership), early adopters 10 %,
normal 70 %, high value 15 %, VIP 4.5 %."""

STABLE, CANDIDATE = 0, 1
# fields of a (layer, arm) count vector; the last N_BINS are the latency histogram's bins
REQ, ERR, DONE, TOOLS, TOOL_ERR, FB_BAD, FB_GOOD, COMPLAINT, LAT_SUM = range(9)
HIST = LAT_SUM + 1
BOUNDS = np.array(DURATION_BUCKETS)
N_BINS = len(DURATION_BUCKETS) + 1  # the last bin is above the top bound (+Inf only)
N_FIELDS = HIST + N_BINS
CUMULATIVE_BOUNDS = (*DURATION_BUCKETS, math.inf)


# ----------------------------------------------------------------------------- population
@dataclass(frozen=True)
class Population:
    """Who arrives, how often, and how the stable version does per request (stats.md §7.1)."""

    layers: tuple[str, ...] = LAYERS
    shares: tuple[float, ...] = SHARES
    users_per_hour: float = 3000.0
    extra_requests: float = 1.5
    """Each user makes ``1 + Poisson(extra_requests)`` requests (tasks); 0 = one request."""
    completion: float = 0.85
    error: float = 0.02
    tools_per_request: float = 3.0
    tool_success: float = 0.97
    latency_median_s: float = 2.0
    latency_sigma: float = 0.67
    feedback: float = 0.20
    """Share of requests whose user leaves feedback."""
    bad_feedback: float = 0.05
    """Share of feedback that is bad."""
    complaint: float = 0.005
    """Complaints per request."""

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.shares) or not math.isclose(sum(self.shares), 1.0):
            raise ValueError("one share per layer, summing to 1")


@dataclass(frozen=True)
class Scenario:
    """How the candidate differs from stable (and what happens to both arms)."""

    id: str
    description: str
    bad: bool
    """A candidate that must not reach everyone (escape / exposure are measured)."""
    completion_delta: float = 0.0
    affected_layers: tuple[str, ...] = ()
    """Layers where the candidate's completion differs; empty means every layer."""
    slow_share: float = 0.0
    """Share of candidate requests that take ``slow_extra_s`` longer."""
    slow_extra_s: float = 10.0
    burst_tool_success: float | None = None
    """Candidate tool success during bursts of ``burst_minutes`` every ``burst_period_minutes``,
    at a random phase."""
    burst_minutes: float = 20.0
    burst_period_minutes: float = 120.0
    lost_share: float = 0.0
    """Share of candidate requests that reach users but are never logged (a logging bug): a
    sample-ratio alert counts as catching it."""
    bad_feedback: float | None = None
    """Candidate's share of bad feedback (``None``: as stable)."""
    feedback_delay_h: float = 0.0
    """Feedback of both arms arrives uniformly 0..this many hours after the request."""
    diurnal_amplitude: float = 0.0
    """Both arms' completion ± this over a 24 h cycle (random phase)."""
    outage_error: float | None = None
    """Both arms' error rate during one ``outage_minutes`` upstream outage in the first 12 h."""
    outage_minutes: float = 30.0

    def affects(self, layer: str) -> bool:
        return not self.affected_layers or layer in self.affected_layers


def _scenarios() -> dict[str, Scenario]:
    drops = {
        f"S2-{d}": Scenario(f"S2-{d}", f"global completion −{d} points", True, -d / 100)
        for d in (2, 5, 10, 25)
    }
    return {
        "S0": Scenario("S0", "A/A: candidate = stable", False),
        "S1": Scenario("S1", "better: completion +3 points", False, 0.03),
        **drops,
        "S3": Scenario("S3", "completion −10 points in normal only", True, -0.10, ("normal",)),
        "S4": Scenario("S4", "latency tail: 4% of candidate requests +10 s", True, slow_share=0.04),
        "S5": Scenario(
            "S5",
            "tool success 0.70 for 20 min every 2 h (random phase)",
            True,
            burst_tool_success=0.70,
        ),
        "S6": Scenario(
            "S6", "SRM bug: 10% of candidate requests never logged", True, lost_share=0.1
        ),
        "S7": Scenario(
            "S7",
            "A/A with ±5 points diurnal completion and a 30-min outage (errors 30%)",
            False,
            diurnal_amplitude=0.05,
            outage_error=0.30,
        ),
        "S8": Scenario(
            "S8",
            "bad feedback 5% → 10% of feedback, feedback 0–6 h late",
            True,
            bad_feedback=0.10,
            feedback_delay_h=6.0,
        ),
    }


SCENARIOS: dict[str, Scenario] = _scenarios()
QUICK_SCENARIOS: tuple[str, ...] = ("S0", "S1", "S2-5", "S2-25", "S3")


def _latency_bins(median_s: float, sigma: float, slow_share: float, extra: float) -> Array:
    """Probabilities and conditional means of the histogram bins for a lognormal latency,
    a share ``slow_share`` of it shifted by ``extra`` seconds. Shape (2, N_BINS)."""
    mu = math.log(median_s)
    edges = np.concatenate(([0.0], BOUNDS, [np.inf]))

    def cdf_and_partial(x: Array) -> tuple[Array, Array]:
        """P(X ≤ x) and E[X; X ≤ x] for X ~ LogNormal(mu, sigma)."""
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 0.0)) - mu) / sigma
        return ndtr(z), math.exp(mu + sigma**2 / 2) * ndtr(z - sigma)

    p0, m0 = cdf_and_partial(edges)
    p1, m1 = cdf_and_partial(edges - extra)  # X + extra ≤ x  ⇔  X ≤ x − extra
    m1 = m1 + extra * p1
    prob = np.diff((1 - slow_share) * p0 + slow_share * p1)
    partial = np.diff((1 - slow_share) * m0 + slow_share * m1)
    mean = np.divide(partial, prob, out=edges[1:].copy(), where=prob > 0)
    mean[-1] = mean[-1] if np.isfinite(mean[-1]) else edges[-2]
    prob = np.clip(prob, 0.0, None)
    return np.stack([prob / prob.sum(), mean])


# ----------------------------------------------------------------------------- traffic
class Traffic:
    """Synthetic counts per tick for every (layer, arm), kept cumulatively.

    ``tick(ratios)`` draws one tick under the layers' current candidate ratios; ``window(k)``
    is the counts of ticks ``k`` .. now. ``observer`` (if given) is called after every tick with
    the tick's index and its counts ``(layer, arm, field)`` (feedback as it arrives), e.g. to
    check independently what a metric source serves.
    """

    def __init__(
        self,
        population: Population,
        scenario: Scenario,
        seed: Sequence[int],
        ticks: int,
        observer: Callable[[int, Array], None] | None = None,
    ) -> None:
        pop, sc = population, scenario
        self.population, self.scenario, self.horizon = pop, sc, ticks
        self.observer = observer
        self.rng = rng = np.random.default_rng(list(seed))
        n_layers = len(pop.layers)
        # arrivals do not depend on the engine's ratios: drawn for the whole horizon at once
        per_tick = pop.users_per_hour * TICK / 3600 * np.asarray(pop.shares)
        self.arrivals = rng.poisson(per_tick, (ticks, n_layers))
        period = max(round(sc.burst_period_minutes * 60 / TICK), 1)
        self._burst = (
            (int(rng.integers(period)), period, round(sc.burst_minutes * 60 / TICK))
            if sc.burst_tool_success is not None
            else None
        )
        self._diurnal_phase = float(rng.uniform(0, 2 * math.pi)) if sc.diurnal_amplitude else 0.0
        outage_ticks = round(sc.outage_minutes * 60 / TICK)
        start = int(rng.integers(max(min(ticks, round(12 * 3600 / TICK)), 1)))
        self._outage = (start, start + outage_ticks) if sc.outage_error is not None else None
        affected = np.array([sc.affects(name) for name in pop.layers])
        self.affected = affected
        """Layers where the candidate's outcome differs (S3: only ``normal``)."""
        done = np.full((n_layers, 2), pop.completion)
        done[affected, CANDIDATE] += sc.completion_delta
        self._done = np.clip(done, 0.0, 1.0)
        bad = np.full((n_layers, 2), pop.bad_feedback)
        if sc.bad_feedback is not None:
            bad[:, CANDIDATE] = sc.bad_feedback
        self._bad = bad
        stable_lat = _latency_bins(pop.latency_median_s, pop.latency_sigma, 0.0, 0.0)
        cand_lat = _latency_bins(
            pop.latency_median_s, pop.latency_sigma, sc.slow_share, sc.slow_extra_s
        )
        lat = np.empty((2, n_layers, 2, N_BINS))
        lat[:, :, STABLE], lat[:, :, CANDIDATE] = stable_lat[:, None], cand_lat[:, None]
        self._lat_p, self._lat_mean = lat[0], lat[1]
        self._delay = round(sc.feedback_delay_h * 3600 / TICK)
        self._pending = np.zeros((ticks + self._delay + 1, n_layers, 2, 3))
        self.cum = np.zeros((ticks + 1, n_layers, 2, N_FIELDS))
        self.cum_users = np.zeros((ticks + 1, n_layers, 2), dtype=np.int64)
        """Users per arm, cumulative, including those whose requests were never logged."""
        self.cum_cand_requests = np.zeros((ticks + 1, n_layers), dtype=np.int64)
        """Candidate requests served, cumulative, logged or not."""
        self.ticks = 0

    # -- rates that may vary with time
    def rates(self, t: int) -> tuple[Array, Array, Array]:
        """Completion, error and tool-success probabilities per (layer, arm) at tick ``t``."""
        pop, sc = self.population, self.scenario
        shape = self._done.shape
        done = self._done
        if sc.diurnal_amplitude:
            angle = 2 * math.pi * t * TICK / 86400 + self._diurnal_phase
            done = np.clip(done + sc.diurnal_amplitude * math.sin(angle), 0.0, 1.0)
        error = np.full(shape, pop.error)
        if self._outage is not None and self._outage[0] <= t < self._outage[1]:
            error[:] = sc.outage_error
        tool = np.full(shape, pop.tool_success)
        if self._burst is not None:
            phase, period, length = self._burst
            if (t + phase) % period < length:
                tool[:, CANDIDATE] = sc.burst_tool_success
        return done, error, tool

    def tick(self, ratios: Array) -> None:
        """Draw one tick of traffic under the per-layer candidate ratios."""
        t, rng, pop, sc = self.ticks, self.rng, self.population, self.scenario
        if t >= self.horizon:
            raise IndexError("the traffic's horizon is over")
        users = self.arrivals[t]
        cand = rng.binomial(users, np.asarray(ratios, dtype=float))
        per_arm = np.stack([users - cand, cand], axis=1)
        requests = per_arm + rng.poisson(pop.extra_requests * per_arm)
        logged = requests.copy()
        if sc.lost_share:
            logged[:, CANDIDATE] = rng.binomial(requests[:, CANDIDATE], 1 - sc.lost_share)
        done, error, tool = self.rates(t)
        tools = rng.poisson(pop.tools_per_request * logged)
        n = np.stack([logged, logged, tools, logged, logged])
        p = np.stack([error, done, 1 - tool, np.full(done.shape, pop.feedback),
                      np.full(done.shape, pop.complaint)])  # fmt: skip
        errors, completions, tool_errors, feedback, complaints = rng.binomial(n, p)
        bad = rng.binomial(feedback, self._bad)
        hist = rng.multinomial(logged, self._lat_p)
        arrived = np.stack([bad, feedback - bad, complaints], axis=-1).astype(float)
        if self._delay:
            spread = rng.multinomial(
                arrived.astype(np.int64), np.full(self._delay + 1, 1 / (self._delay + 1))
            )
            self._pending[t : t + self._delay + 1] += np.moveaxis(spread, -1, 0)
            arrived = self._pending[t]
        row = np.empty((*logged.shape, N_FIELDS))
        row[..., REQ], row[..., ERR], row[..., DONE] = logged, errors, completions
        row[..., TOOLS], row[..., TOOL_ERR] = tools, tool_errors
        row[..., FB_BAD], row[..., FB_GOOD], row[..., COMPLAINT] = np.moveaxis(arrived, -1, 0)
        row[..., LAT_SUM] = (hist * self._lat_mean).sum(axis=-1)
        row[..., HIST:] = hist
        self.cum[t + 1] = self.cum[t] + row
        self.cum_users[t + 1] = self.cum_users[t] + per_arm
        self.cum_cand_requests[t + 1] = self.cum_cand_requests[t] + requests[:, CANDIDATE]
        self.ticks = t + 1
        if self.observer is not None:
            self.observer(t, row)

    # -- reading
    def window(self, first_tick: int) -> Array:
        """Counts of ticks ``first_tick`` .. now, shape (layer, arm, field)."""
        first = min(max(first_tick, 0), self.ticks)
        result: Array = self.cum[self.ticks] - self.cum[first]
        return result

    @property
    def exposed(self) -> int:
        """Users served by the candidate so far, all layers (logged or not)."""
        return int(self.cum_users[self.ticks, :, CANDIDATE].sum())

    @property
    def exposed_affected(self) -> int:
        """Users served by the candidate so far in the layers where it differs."""
        return int(self.cum_users[self.ticks, self.affected, CANDIDATE].sum())

    @property
    def candidate_requests(self) -> int:
        return int(self.cum_cand_requests[self.ticks].sum())


def arm_stats(counts: Array) -> ArmStats:
    """One arm's window counts as the product's ``ArmStats`` (latency as a histogram)."""
    requests = int(counts[REQ])
    bins = counts[HIST : HIST + len(BOUNDS)].tolist()
    latency = LatencySummary.from_bins(DURATION_BUCKETS, bins, requests, float(counts[LAT_SUM]))
    good = int(counts[FB_GOOD])
    return ArmStats(
        requests=requests,
        errors=int(counts[ERR]),
        completions=int(counts[DONE]),
        tool_calls=int(counts[TOOLS]),
        tool_errors=int(counts[TOOL_ERR]),
        feedback_bad=int(counts[FB_BAD]),
        feedback_complaint=int(counts[COMPLAINT]),
        feedback_good=good,
        latency=latency,
    )


class _LazyArms(Mapping[tuple[str, Version], ArmStats]):
    """Builds ``ArmStats`` only for the arms read; an arm without requests is absent."""

    def __init__(self, counts: Array, layers: Sequence[str]) -> None:
        self._counts, self._layers = counts, list(layers)

    def __getitem__(self, key: tuple[str, Version]) -> ArmStats:
        layer, version = key
        if layer not in self._layers:
            raise KeyError(key)
        counts = self._counts[self._layers.index(layer), int(version is Version.CANDIDATE)]
        if counts[REQ] == 0:
            raise KeyError(key)
        return arm_stats(counts)

    def __iter__(self) -> Iterator[tuple[str, Version]]:
        for i, layer in enumerate(self._layers):
            for j, version in enumerate((Version.STABLE, Version.CANDIDATE)):
                if self._counts[i, j, REQ] > 0:
                    yield layer, version

    def __len__(self) -> int:
        return int((self._counts[..., REQ] > 0).sum())


class SyntheticSource:
    """A ``MetricSource`` over :class:`Traffic`: the counts of the ticks inside ``window``.

    The controller asks for the window since its step started; the source serves the ticks that
    ended after ``now − window`` — exactly the traffic drawn at the step's ratio.
    """

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    def first_tick(self, window: float) -> int:
        now = self.traffic.ticks * TICK  # seconds since EPOCH
        return math.floor((now - window) / TICK + 1e-9)

    def snapshot(self, plan_id: str, window: float) -> Snapshot:
        counts = self.traffic.window(self.first_tick(window))
        return Snapshot(plan_id, window, _LazyArms(counts, self.traffic.population.layers))


class Clock:
    """The simulation's time, in seconds, for the controller and the store."""

    def __init__(self) -> None:
        self.now = EPOCH

    def __call__(self) -> float:
        return self.now
