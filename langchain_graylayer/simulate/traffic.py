"""The simulator's synthetic world: a finite population of returning users, the scenarios, and
the traffic they make, recorded as the same per-user evidence the routers write to the store.

Written from first principles, not from the judge's assumptions:

* **Users come back and differ.** A population of ``users`` people split over the layers
  (internal 0.5 %, early adopters 10 %, normal 70 %, high value 15 %, VIP 4.5 %: the article's
  case study). Each has a session rate drawn from a log-normal (heavy-tailed: a few users make
  most sessions), an activity class from their use count before the rollout, and their own
  propensities — task completion, errors, tool success, bad feedback, complaints — drawn from
  Beta distributions whose intra-class correlation is ``icc`` (0.3: a user who fails once
  tends to fail again). Heavier users complete a little more often, so a routing bug that
  sends them to one arm biases the comparison.
* **Sessions**, ``1 + Poisson(extra_requests)`` requests each, arrive as a Poisson process
  whose rate follows a **daily cycle** with a peak hour per layer (VIPs in office hours,
  normal users in the evening) and a night-time low.
* **Sticky buckets**: a user's bucket is fixed; the session is served by the candidate iff
  the bucket is under the layer's ratio when it starts. A scenario may skew that (a routing
  bug that sends heavy users to the candidate).
* **Late feedback**: feedback and complaints may arrive hours after their request; they count
  in the arm (layer, step, version) the request was served under, as the product does.

Evidence is kept per arm as each user's counters with the arm's Gram matrix updated
incrementally (:class:`~langchain_graylayer.simulate.arms.UserArm`). :class:`SimStore` is a real
``MemoryStore`` whose evidence methods read and write this traffic, so the controller under test
is the product's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from langchain_graylayer.plan.assignment import ACTIVITY_CLASSES, activity_class
from langchain_graylayer.plan.bucketing import BUCKETS, ratio_threshold
from langchain_graylayer.simulate.arms import N_FIELDS, SeenUsers, UserArm
from langchain_graylayer.simulate.scenarios import Scenario
from langchain_graylayer.store.evidence import FIELDS, PRE_STEP, ArmTotals, UnitDelta
from langchain_graylayer.store.memory import MemoryStore

Array = npt.NDArray[Any]

PLAN_ID = "simulate"
TICK = 300.0
"""Seconds per tick: traffic is drawn and the controller steps once per 5 simulated minutes."""
EPOCH = 1_700_000_000.0
"""The fake clock's start (midnight of a simulated day): a real-looking time."""
WINDOW_TICKS = 12
"""The article's 60-minute QoS window."""

LAYERS: tuple[str, ...] = ("internal", "early_adopter", "normal", "high_value", "vip")
SHARES: tuple[float, ...] = (0.005, 0.10, 0.70, 0.15, 0.045)
"""The article's case study: internal 0.5 % (by membership), early adopters 10 %, normal 70 %,
high value 15 %, VIP 4.5 %."""
PEAK_HOURS: tuple[float, ...] = (11.0, 15.0, 20.0, 13.0, 10.0)
"""Hour of each layer's daily traffic peak: staff and VIPs in office hours, most people at
night-time's edge; the low is twelve hours later."""

STABLE, CANDIDATE = 0, 1
F = {name: index for index, name in enumerate(FIELDS)}


# ----------------------------------------------------------------------------- population
@dataclass(frozen=True)
class Population:
    """Who the users are and how stable serves them."""

    layers: tuple[str, ...] = LAYERS
    shares: tuple[float, ...] = SHARES
    peak_hours: tuple[float, ...] = PEAK_HOURS
    users: int = 30_000
    """People in the population (returning users: each comes back many times)."""
    sessions_per_hour: float = 3000.0
    """Mean sessions per hour over a day, all layers."""
    extra_requests: float = 1.5
    """Each session makes ``1 + Poisson(extra_requests)`` requests."""
    activity_sigma: float = 1.2
    """Log-normal spread of users' session rates (1.2: the top 10 % make about half)."""
    daily_amplitude: float = 0.6
    """Traffic swings ±60 % over the day (peak 1.6×, night low 0.4× the mean)."""
    icc: float = 0.3
    """Intra-class correlation of a user's outcomes (0: every request independent)."""
    completion: float = 0.85
    heavy_completion_bonus: float = 0.02
    """Completion rises by this per activity class above the middle one."""
    error: float = 0.02
    tools_per_request: float = 3.0
    tool_success: float = 0.97
    latency_median_s: float = 2.0
    latency_sigma: float = 0.67
    slo_s: float = 5.0
    feedback: float = 0.20
    """Share of requests whose user leaves feedback."""
    bad_feedback: float = 0.05
    """Share of feedback that is bad."""
    complaint: float = 0.005
    """Complaints per request."""
    tokens_per_request: float = 2000.0
    """Mean model tokens per request (80 % input, 20 % output, priced 2.5 and 10 per million):
    a request's tokens are Gamma-distributed (coefficient of variation 0.7) around its user's
    mean."""
    token_sigma: float = 0.5
    """Log-normal spread (mean one) of users' tokens per request: some users' tasks cost more."""

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.shares) or not math.isclose(sum(self.shares), 1.0):
            raise ValueError("one share per layer, summing to 1")
        if len(self.peak_hours) != len(self.layers):
            raise ValueError("one peak hour per layer")
        if not 0.0 <= self.icc < 1.0:
            raise ValueError("icc in [0, 1)")


def slow_probability(median_s: float, sigma: float, slo_s: float, slow_share: float,
                     extra_s: float) -> float:  # fmt: skip
    """P(latency > slo) for a log-normal latency, a share ``slow_share`` of it ``extra_s``
    seconds later."""

    def above(x: float) -> float:
        return 1.0 if x <= 0 else float(1 - ndtr((math.log(x) - math.log(median_s)) / sigma))

    return (1 - slow_share) * above(slo_s) + slow_share * above(slo_s - extra_s)


def _beta(rng: np.random.Generator, mean: Array, icc: float) -> Array:
    """Per-user propensities with the given mean and intra-class correlation: Beta(μκ, (1−μ)κ)
    with κ = (1 − icc)/icc makes two outcomes of one user correlate by ``icc``."""
    mean = np.clip(mean, 1e-6, 1 - 1e-6)
    if icc <= 0:
        return np.asarray(mean, dtype=float)
    kappa = (1 - icc) / icc
    result: Array = rng.beta(mean * kappa, (1 - mean) * kappa)
    return result


# ----------------------------------------------------------------------------- traffic
class Traffic:
    """The population's sessions, tick by tick, under the layers' current ratios and steps.

    ``tick(ratios, steps)`` draws one tick: sessions, the version each gets, their outcomes,
    recorded as evidence of the arm (layer, step, version) and as request-level counts per
    (layer, arm) for the article's rule (``window``). Late feedback lands in the arm of its
    request when it arrives.
    """

    def __init__(
        self, population: Population, scenario: Scenario, seed: Sequence[int], ticks: int
    ) -> None:
        pop = Population(**{**population.__dict__, **dict(scenario.population)})
        sc = scenario
        self.population, self.scenario, self.horizon = pop, sc, ticks
        self.rng = rng = np.random.default_rng(list(seed))
        n_layers = len(pop.layers)
        counts = rng.multinomial(pop.users, pop.shares)
        self.layer_of = np.repeat(np.arange(n_layers), counts)
        self.start = np.concatenate(([0], np.cumsum(counts)))
        n = pop.users
        # heavy-tailed session rates, scaled to the population's mean sessions per hour
        rate = rng.lognormal(0.0, pop.activity_sigma, n)
        self.rate = rate * pop.sessions_per_hour / rate.sum() / 3600.0  # sessions per second
        use_count = rng.poisson(self.rate * 7 * 86400.0)  # the week before the rollout
        self.activity = np.array([activity_class(int(u)) for u in use_count], dtype=np.int64)
        self.bucket = rng.integers(0, BUCKETS, n)
        mean_done = pop.completion + pop.heavy_completion_bonus * (self.activity - 2)
        self.p_done = _beta(rng, mean_done, pop.icc)
        self.p_error = _beta(rng, np.full(n, pop.error), pop.icc)
        self.p_tool = _beta(rng, np.full(n, pop.tool_success), pop.icc)
        self.p_bad = _beta(rng, np.full(n, pop.bad_feedback), pop.icc)
        self.p_complaint = _beta(rng, np.full(n, pop.complaint), pop.icc)
        # tokens draw from their own stream: the other outcomes stay those of earlier versions
        self._cost_rng = np.random.default_rng([*seed, 17])
        s = pop.token_sigma
        self.tokens = pop.tokens_per_request * self._cost_rng.lognormal(-s * s / 2, s, n)
        # how many heavy and light users of each layer show up in a few hours: the routing
        # bug of ``heavy_skew`` moves as many light users out as it moves heavy users in
        seen = 1 - np.exp(-self.rate * 3 * 3600.0)
        heavy, light = self.activity == ACTIVITY_CLASSES - 1, self.activity <= 1
        self._heavy_light = [
            (float(seen[a:b][heavy[a:b]].sum()), float(seen[a:b][light[a:b]].sum()))
            for a, b in zip(self.start, self.start[1:], strict=False)
        ]
        self.affected = np.array([sc.affects(name) for name in pop.layers])
        """Layers where the candidate differs."""
        self._slow = (
            slow_probability(pop.latency_median_s, pop.latency_sigma, pop.slo_s, 0.0, 0.0),
            slow_probability(pop.latency_median_s, pop.latency_sigma, pop.slo_s,
                             sc.slow_share, sc.slow_extra_s),
        )  # fmt: skip
        mean_latency = pop.latency_median_s * math.exp(pop.latency_sigma**2 / 2)
        self._latency = (mean_latency, mean_latency + sc.slow_share * sc.slow_extra_s)
        period = max(round(sc.burst_period_minutes * 60 / TICK), 1)
        self._burst = (
            (int(rng.integers(period)), period, round(sc.burst_minutes * 60 / TICK))
            if sc.burst_tool_success is not None
            else None
        )
        self._cycle_phase = float(rng.uniform(0, 2 * math.pi)) if sc.completion_cycle else 0.0
        outage_ticks = round(sc.outage_minutes * 60 / TICK)
        first = int(rng.integers(max(min(ticks, round(12 * 3600 / TICK)), 1)))
        self._outage = (first, first + outage_ticks) if sc.outage_error is not None else None
        # per layer: cumulative session weights, to pick who starts a session
        self._cdf = [np.cumsum(self.rate[a:b]) for a, b in zip(self.start, self.start[1:],
                                                                strict=False)]  # fmt: skip
        self._delay = round(sc.feedback_delay_h * 3600 / TICK)
        self._pending: dict[int, list[tuple[tuple[int, str, int], Array, Array]]] = {}
        self.arms: dict[tuple[int, str, int], UserArm | SeenUsers] = {}
        self.cum = np.zeros((ticks + 1, n_layers, 2, N_FIELDS))
        """Request-level counts per tick (cumulative), for the article's window rule."""
        self.exposed_users = np.zeros(n, dtype=bool)
        self.served = np.zeros((n_layers, 2))
        """Requests served per (layer, arm), recorded or not (a logging bug loses some)."""
        self.ticks = 0

    # -- the draw
    def _multiplier(self, t: int) -> Array:
        """Each layer's traffic multiplier at tick ``t`` (the daily cycle)."""
        pop = self.population
        hour = (t * TICK / 3600.0) % 24.0
        peaks = np.asarray(pop.peak_hours)
        result: Array = 1 + pop.daily_amplitude * np.cos(2 * math.pi * (hour - peaks) / 24.0)
        return result

    def _candidate(self, layer: int, users: Array, ratio: float) -> Array:
        """Which of ``users`` (global indices) get the candidate at ``ratio``."""
        threshold = ratio_threshold(ratio)
        chosen = self.bucket[users] < threshold
        skew = self.scenario.heavy_skew
        if skew and 0.0 < ratio < 1.0:
            band = round(skew * threshold)
            heavy = self.activity[users] == ACTIVITY_CLASSES - 1
            light = self.activity[users] <= 1
            b = self.bucket[users]
            chosen = np.where(heavy & (b < threshold + band), True, chosen)
            # as many light users as the heavy band adds move to stable: the split stays right
            heavy_share, light_share = self._heavy_light[layer]
            cut = threshold - band * heavy_share / max(light_share, 1e-9)
            chosen = np.where(light & (b >= cut) & (b < threshold), False, chosen)
        return chosen

    def tick(self, ratios: Sequence[float] | Array, steps: Sequence[str]) -> None:
        """Draw one tick under each layer's ratio and step key."""
        t, rng, pop, sc = self.ticks, self.rng, self.population, self.scenario
        if t >= self.horizon:
            raise IndexError("the traffic's horizon is over")
        row = np.zeros((len(pop.layers), 2, N_FIELDS))
        for key, local, counts in self._pending.pop(t, ()):
            if key[1]:
                self._arm(key).add(local, self.activity[local + self.start[key[0]]], counts)
            row[key[0], key[2]] += counts.sum(axis=0)
        multiplier = self._multiplier(t)
        for layer in range(len(pop.layers)):
            a, b = self.start[layer], self.start[layer + 1]
            if b == a:
                continue
            cdf = self._cdf[layer]
            sessions = rng.poisson(cdf[-1] * multiplier[layer] * TICK)
            if not sessions:
                continue
            users = a + np.searchsorted(cdf, rng.uniform(0, cdf[-1], sessions), side="right")
            users = np.minimum(users, b - 1)
            cand = self._candidate(layer, users, float(ratios[layer]))
            self.exposed_users[users[cand]] = True
            requests = 1 + rng.poisson(pop.extra_requests, sessions)
            for arm in (STABLE, CANDIDATE):
                mask = cand if arm == CANDIDATE else ~cand
                if not mask.any():
                    continue
                who, req = users[mask], requests[mask]
                counts, late = self._outcomes(t, layer, arm, who, req)
                self.served[layer, arm] += req.sum()
                if arm == CANDIDATE and sc.lost_share:
                    kept = rng.random(len(who)) >= sc.lost_share
                    who, counts, late = who[kept], counts[kept], late[kept]
                key = (layer, steps[layer], arm)
                row[layer, arm] += counts.sum(axis=0)
                if not self._delay:
                    row[layer, arm] += late.sum(axis=0)
                local = who - a
                if self._delay:  # the late part lands when it arrives (also with no step)
                    if steps[layer]:
                        self._arm(key).add(local, self.activity[who], counts)
                    due = t + 1 + rng.integers(0, self._delay + 1, len(who))
                    for when in np.unique(due):
                        pick = due == when
                        self._pending.setdefault(int(when), []).append(
                            (key, local[pick], late[pick])
                        )
                elif steps[layer]:
                    self._arm(key).add(local, self.activity[who], counts + late)
        self.cum[t + 1] = self.cum[t] + row
        self.ticks = t + 1

    def _arm(self, key: tuple[int, str, int]) -> UserArm | SeenUsers:
        arm = self.arms.get(key)
        if arm is None:
            layer = key[0]
            size = int(self.start[layer + 1] - self.start[layer])
            arm = self.arms[key] = SeenUsers(size) if key[1].startswith(PRE_STEP) else UserArm(size)
        return arm

    def _outcomes(
        self, t: int, layer: int, arm: int, who: Array, req: Array
    ) -> tuple[Array, Array]:
        """Per session: the counters known at once, and the feedback that may come late."""
        rng, pop, sc = self.rng, self.population, self.scenario
        cand = arm == CANDIDATE and bool(self.affected[layer])
        done = self.p_done[who]
        if cand:
            done = done + sc.completion_delta
        if sc.completion_cycle:
            done = done + sc.completion_cycle * math.sin(
                2 * math.pi * t * TICK / 86400 + self._cycle_phase
            )
        error = self.p_error[who]
        if self._outage is not None and self._outage[0] <= t < self._outage[1]:
            error = np.full(len(who), sc.outage_error)
        tool = self.p_tool[who]
        if cand and self._burst is not None:
            phase, period, length = self._burst
            if (t + phase) % period < length:
                tool = np.full(len(who), sc.burst_tool_success)
        failures = rng.binomial(req, np.clip(error, 0, 1))
        completions = rng.binomial(req - failures, np.clip(done, 0, 1))
        tools = rng.poisson(pop.tools_per_request * req)
        tool_errors = rng.binomial(tools, np.clip(1 - tool, 0, 1))
        slow = rng.binomial(req, self._slow[int(cand and sc.slow_share > 0)])
        feedback = rng.binomial(req, pop.feedback)
        p_bad = (
            self.p_bad[who]
            if not (cand and sc.bad_feedback is not None)
            else np.full(len(who), sc.bad_feedback)
        )
        bad = rng.binomial(feedback, np.clip(p_bad, 0, 1))
        p_complaint = self.p_complaint[who]
        if cand:
            p_complaint = p_complaint + (sc.complaint_factor - 1.0) * pop.complaint
        complaints = rng.binomial(req, np.clip(p_complaint, 0, 1))
        now = np.zeros((len(who), N_FIELDS))
        now[:, F["requests"]] = req
        now[:, F["completions"]] = completions
        now[:, F["failures"]] = failures
        now[:, F["tool_calls"]] = tools
        now[:, F["tool_errors"]] = tool_errors
        now[:, F["slow"]] = slow
        now[:, F["latency_seconds"]] = req * self._latency[int(cand)]
        # a session's tokens: the sum of its requests' Gamma(2) draws around the user's mean
        mean = self.tokens[who] * (sc.token_factor if cand else 1.0)
        tokens = np.round(self._cost_rng.gamma(2.0 * req, mean / 2.0))
        inputs = np.round(0.8 * tokens)
        now[:, F["input_tokens"]], now[:, F["output_tokens"]] = inputs, tokens - inputs
        now[:, F["cost"]] = (inputs * 2.5 + (tokens - inputs) * 10.0) / 1e6
        late = np.zeros((len(who), N_FIELDS))
        late[:, F["bad"]] = bad
        late[:, F["good"]] = feedback - bad
        late[:, F["complaints"]] = complaints
        return now, late

    # -- reading
    def evidence(self, layer: str, step: str) -> dict[str, ArmTotals]:
        """The totals of each version's arm of ``layer`` at ``step`` (what the store answers)."""
        index = self.population.layers.index(layer)
        result = {}
        for arm, version in ((STABLE, "stable"), (CANDIDATE, "candidate")):
            held = self.arms.get((index, step, arm))
            if held is not None and held.users:
                result[version] = held.totals()
        return result

    def window(self, first_tick: int) -> Array:
        """Request-level counts of ticks ``first_tick`` .. now, shape (layer, arm, field)."""
        first = min(max(first_tick, 0), self.ticks)
        result: Array = self.cum[self.ticks] - self.cum[first]
        return result

    @property
    def exposed(self) -> int:
        """Distinct users served by the candidate so far, all layers."""
        return int(self.exposed_users.sum())

    @property
    def exposed_affected(self) -> int:
        """Distinct users served by the candidate so far in the layers where it differs."""
        return int(self.exposed_users[self.affected[self.layer_of]].sum())

    @property
    def candidate_requests(self) -> int:
        """Requests the candidate served, recorded or not."""
        return int(self.served[:, CANDIDATE].sum())


class SimStore(MemoryStore):
    """A ``MemoryStore`` whose evidence is the traffic's: the controller reads it as it reads
    the routers' evidence in production."""

    def __init__(self, traffic: Traffic, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.traffic = traffic

    def add_evidence(self, plan_id: str, deltas: Sequence[UnitDelta]) -> None:
        raise NotImplementedError("the simulated traffic records its own evidence")

    def read_evidence(self, plan_id: str, layer: str, step: str) -> dict[str, ArmTotals]:
        return self.traffic.evidence(layer, step) if step else {}


def window_totals(counts: Array) -> ArmTotals:
    """One arm's request-level window counts as ``ArmTotals`` sums (for the article's QoS)."""
    return ArmTotals(sums={name: float(counts[i]) for i, name in enumerate(FIELDS)})


class Clock:
    """The simulation's time, in seconds, for the controller and the store."""

    def __init__(self) -> None:
        self.now = EPOCH

    def __call__(self) -> float:
        return self.now
