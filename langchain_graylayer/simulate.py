"""Rollout simulator: the product's own controller against the article's QoS rule, Monte Carlo.

``graylayer simulate`` (or ``python -m langchain_graylayer.simulate``) rolls synthetic candidates
out over a synthetic population, layer by layer, and measures how often a good candidate is
rolled back by mistake, how often a bad one reaches every user, how many users a bad candidate
reaches before it is stopped and how long a good one takes to reach 100 % (notes/stats.md §7,
SPEC §5 and §7).

Only traffic and outcomes are synthetic. The ``ours`` engine is the product itself: a real
:class:`~langchain_graylayer.controller.RolloutController` with a real
:class:`~langchain_graylayer.store.memory.MemoryStore`, a fake clock and a ``MetricSource``
(:class:`SyntheticSource`) that serves the generated counts as ``ArmStats`` over exactly the
window the controller asks for; every verdict is :func:`~langchain_graylayer.judge.judge` called
by the controller with the plan's gates. The ``article`` engine is the article's rule around the
library's :func:`~langchain_graylayer.qos.qos_score`: at the end of every 60-minute window of a
step, the candidate's QoS over that window (high-risk weights 0.3/0.2/0.5) decides — < 0.6 roll
back, < 0.8 hold, else one step up — and missing data reads as zeros (an hour without candidate
traffic scores 0.56 and rolls back).

Traffic is drawn per 5-minute tick and per (layer, arm) as binomial / Poisson / multinomial
counts, never per request: users arrive as a Poisson process (3 000/h by default), layers
internal 0.5 %, early_adopter 10 %, normal 70 %, high_value 15 %, vip 4.5 % (the article's case
study), each user makes ``1 + Poisson(1.5)`` requests (stats.md §7.1), and per request: task
completion Bernoulli(0.85), error 0.02, tool calls Poisson(3) each succeeding with 0.97, latency
LogNormal(ln 2 s, 0.67) as Prometheus histogram buckets (multinomial over the buckets, the sum from
the buckets' conditional means), feedback from 20 % of requests of which 5 % bad, complaints
0.5 %. The candidate of a layer is a binomial share (the layer's ratio) of its arriving users.

Scenarios: S0 A/A, S1 better (+3 points of completion), S2-2/5/10/25 global completion drops, S3
−10 points in ``normal`` only, S4 a latency tail (4 % of candidate requests +10 s), S5 tool
failure bursts (success 0.70 for 20 minutes every 2 h, random phase), S6 a sample-ratio bug (10 %
of candidate requests reach users but are never logged), S7 non-stationarity (±5 points diurnal
completion and a 30-minute upstream outage, both arms alike), S8 delayed feedback (candidate bad
feedback 5 % → 10 % of feedback, all feedback arriving 0–6 h late).

Both engines of a seed draw from ``numpy.random.default_rng([base_seed, seed, scenario])`` in the
same order, so they see the same arrivals and identical draws until their ratios first differ.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from langchain_graylayer.controller import RolloutController
from langchain_graylayer.decision import Version
from langchain_graylayer.gates import Gates, Judging
from langchain_graylayer.metrics import (
    DURATION_BUCKETS,
    ArmStats,
    LatencySummary,
    MetricSource,
    Snapshot,
)
from langchain_graylayer.plan import LayerSpec, RolloutPlan
from langchain_graylayer.qos import (
    HIGH_RISK_QOS_WEIGHTS,
    QosInputs,
    article_qos_verdict,
    qos_score,
)
from langchain_graylayer.store.memory import MemoryStore

__all__ = [
    "ENGINES",
    "SCENARIOS",
    "Clock",
    "PlanKnobs",
    "Population",
    "Scenario",
    "SyntheticSource",
    "Traffic",
    "arm_stats",
    "article_qos",
    "main",
    "make_plan",
    "median_ci",
    "run_article",
    "run_ours",
    "simulate",
    "summarise",
    "wilson",
]

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

ENGINES: tuple[str, ...] = ("ours", "article")


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


def _ndtr(z: Array) -> Array:
    """The standard normal CDF, elementwise (±inf allowed)."""
    return np.array([0.5 * math.erfc(-float(v) / math.sqrt(2)) for v in np.ravel(z)]).reshape(
        np.shape(z)
    )


def _latency_bins(median_s: float, sigma: float, slow_share: float, extra: float) -> Array:
    """Probabilities and conditional means of the histogram bins for a lognormal latency,
    a share ``slow_share`` of it shifted by ``extra`` seconds. Shape (2, N_BINS)."""
    mu = math.log(median_s)
    edges = np.concatenate(([0.0], BOUNDS, [np.inf]))

    def cdf_and_partial(x: Array) -> tuple[Array, Array]:
        """P(X ≤ x) and E[X; X ≤ x] for X ~ LogNormal(mu, sigma)."""
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 0.0)) - mu) / sigma
        return _ndtr(z), math.exp(mu + sigma**2 / 2) * _ndtr(z - sigma)

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
    cumulative = np.rint(np.cumsum(counts[HIST : HIST + len(BOUNDS)])).astype(int).tolist()
    latency = LatencySummary(
        requests,
        float(counts[LAT_SUM]),
        tuple(zip(CUMULATIVE_BOUNDS, [*cumulative, requests], strict=True)),
    )
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


# ----------------------------------------------------------------------------- the plan
DEFAULT_STEPS: dict[str, tuple[float, ...]] = {
    "internal": (0.5, 1.0),
    "early_adopter": (0.2, 1.0),
    "normal": (0.25, 0.5, 1.0),
    "high_value": (0.5, 1.0),
    "vip": (0.5, 1.0),
}
"""Steps sized to each layer's traffic at 3 000 users/h (internal 15, early_adopter 300, normal
2 100, high_value 450, vip 135 users/h)."""
DEFAULT_MAX_STEP: dict[str, float] = {"*": 3600.0, "normal": 3 * 3600.0}
"""Small layers promote on "no harm" after an hour (they can only catch collapses); normal, where
a good candidate shows non-inferiority within about an hour, holds a candidate that cannot for up
to 3 h, which is where a few-point drop is caught."""


@dataclass(frozen=True)
class PlanKnobs:
    """The simulation plan's gates and steps (``RolloutPlan`` defaults otherwise)."""

    steps: tuple[tuple[str, tuple[float, ...]], ...] = tuple(DEFAULT_STEPS.items())
    bake_s: float = 1800.0
    max_step: tuple[tuple[str, float], ...] = tuple(DEFAULT_MAX_STEP.items())
    """Seconds per layer, ``"*"`` for the others."""
    min_samples: int = 200
    alpha: float = 0.05
    n_star: float = 400.0
    timeout_policy: str = "promote_if_no_harm"

    def steps_of(self, layer: str) -> tuple[float, ...]:
        steps = dict(self.steps)
        return steps.get(layer, steps.get("*", DEFAULT_STEPS.get(layer, (0.01, 0.1, 0.5, 1.0))))

    def max_step_of(self, layer: str) -> float:
        limits = dict(self.max_step)
        return limits.get(layer, limits.get("*", 3600.0))


def make_plan(
    knobs: PlanKnobs | None = None,
    layers: Sequence[str] = LAYERS,
    *,
    plan_id: str = PLAN_ID,
    gates: Gates | None = None,
    judging: Judging | None = None,
) -> RolloutPlan:
    """A plan over ``layers`` with the knobs' steps, gates and judging.

    ``internal`` is a membership layer (``group == "staff"``); the others are the default
    plan's score layers. A layer whose ``max_step`` differs from the plan's (``"*"``) gets its
    own gates. ``gates`` / ``judging`` replace what the knobs would build (every layer).
    """
    knobs = knobs or PlanKnobs()
    defaults = {layer.name: layer for layer in RolloutPlan.default(plan_id).layers}
    plan_gates = gates or Gates(
        min_samples=knobs.min_samples,
        bake_time=knobs.bake_s,
        max_step_time=knobs.max_step_of("*"),
        timeout_policy=knobs.timeout_policy,
    )
    specs = []
    for name in layers:
        spec: dict[str, Any] = (
            defaults[name].model_dump()
            if name in defaults
            else {"name": name, "rules": ('group == "staff"',), "description": "testers"}
        )
        spec["steps"] = knobs.steps_of(name)
        limit = knobs.max_step_of(name)
        if gates is None and limit != plan_gates.max_step_time:
            spec["gates"] = Gates.model_validate(
                {**plan_gates.model_dump(), "max_step_time": limit}
            )
        specs.append(LayerSpec.model_validate(spec))
    judging = judging or Judging(alpha=knobs.alpha, n_star=knobs.n_star)
    return RolloutPlan.default(plan_id, gates=plan_gates, judging=judging, layers=specs)


def describe_plan(plan: RolloutPlan) -> str:
    """The plan's steps, gates and judging, for the report."""
    g, j = plan.gates, plan.judging
    tests = sum(len(layer.steps) for layer in plan.layers)
    steps = "; ".join(
        f"{layer.name} " + "→".join(f"{s:g}" for s in layer.steps) for layer in plan.layers
    )
    limits = ", ".join(
        f"{layer.name} {layer.gates.max_step_time / 60:g} min"
        for layer in plan.layers
        if layer.gates is not None
    )
    split = j.alpha / (len(g.guardrails) * tests)
    return (
        f"plan steps: {steps}\n"
        f"gates: min_samples {g.min_samples}, bake_time {g.bake_time / 60:g} min, max_step_time "
        f"{g.max_step_time / 60:g} min{f' ({limits})' if limits else ''}, timeout_policy "
        f"{g.timeout_policy}; guardrails "
        + ", ".join(f"{r.metric.value}±{r.margin:g}" for r in g.guardrails)
        + f"\njudging: alpha {j.alpha:g} (harm tests at {j.alpha:g}/({len(g.guardrails)} "
        f"guardrails × {tests} steps) = {split:.2g} each), n_star {j.n_star:g}, ni_n_star "
        f"{j.ni_n_star:g}, srm_alpha {j.srm_alpha:g}, hard floor error rate > "
        f"{j.max_error_rate} (n ≥ {j.floor_min_samples}), rollback_scope {j.rollback_scope}"
    )


# ----------------------------------------------------------------------------- engines
def _base(engine: str, traffic: Traffic) -> dict[str, Any]:
    return {
        "engine": engine, "outcome": "timeout", "hours": 0.0, "exposed": 0,
        "exposed_affected": 0, "candidate_requests": 0, "flagged": False, "flag_hours": None,
        "flag_exposed": None, "flag_exposed_affected": None, "flag_reason": None,
        "layer": None, "ratio": 0.0, "reason": "", "layer_done": {}, "promotions": {},
        "srm_alerts": 0, "srm_hours": None, "srm_exposed": None, "srm_exposed_affected": None,
    }  # fmt: skip


def _finish(result: dict[str, Any], outcome: str, ticks: int, traffic: Traffic) -> dict[str, Any]:
    result.update(
        outcome=outcome,
        hours=ticks * TICK / 3600,
        exposed=traffic.exposed,
        exposed_affected=traffic.exposed_affected,
        candidate_requests=traffic.candidate_requests,
    )
    return result


def _flag(result: dict[str, Any], ticks: int, traffic: Traffic, reason: str) -> None:
    """Record the rollback: when, after how many exposed users, and why."""
    if not result["flagged"]:
        result.update(
            flagged=True,
            flag_hours=ticks * TICK / 3600,
            flag_exposed=traffic.exposed,
            flag_exposed_affected=traffic.exposed_affected,
            flag_reason=reason,
        )


def _harm_kind(reason: str) -> str:
    if reason.startswith("harm on "):
        return reason[len("harm on ") :].split(":", 1)[0]
    if reason.startswith("hard floor"):
        return "hard_floor"
    return reason.split(":", 1)[0]


def run_ours(
    plan: RolloutPlan,
    traffic: Traffic,
    wrap_source: Callable[[SyntheticSource], MetricSource] | None = None,
) -> dict[str, Any]:
    """The product's controller and judge on one traffic realisation, until a rollback, every
    layer at 100 %, or the traffic's horizon. ``wrap_source`` may instrument the source."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    source: MetricSource = SyntheticSource(traffic)
    if wrap_source is not None:
        source = wrap_source(SyntheticSource(traffic))
    controller = RolloutController(
        plan=plan, store=store, source=source, clock=clock, holder="simulate"
    )
    layers = plan.layer_names
    result = _base("ours", traffic)
    promotions: Counter[str] = Counter()
    controller.step()  # opens the first layer at its first step
    for k in range(traffic.horizon):
        ratios = np.array([store.get_ratio(plan.id, layer) for layer in layers])
        traffic.tick(ratios)
        clock.now = EPOCH + (k + 1) * TICK
        for entry in controller.step():
            if entry.action in ("promote", "complete_layer"):
                timeout = entry.reason.startswith("step timeout")
                promotions["timeout" if timeout else "non_inferior"] += 1
                if entry.new_ratio is not None and entry.new_ratio >= 1.0 and entry.layer:
                    result["layer_done"][entry.layer] = (k + 1) * TICK / 3600
            elif entry.action == "alert":
                promotions["alert"] += 1
                if entry.reason.startswith("sample-ratio mismatch"):
                    result["srm_alerts"] += 1
                    if result["srm_hours"] is None:
                        result.update(
                            srm_hours=(k + 1) * TICK / 3600, srm_exposed=traffic.exposed,
                            srm_exposed_affected=traffic.exposed_affected,
                        )  # fmt: skip
            elif entry.action == "rollback":
                verdict = entry.verdict or {}
                _flag(result, k + 1, traffic, _harm_kind(entry.reason))
                result.update(
                    layer=entry.layer, ratio=entry.old_ratio or 0.0, reason=entry.reason,
                    promotions=dict(promotions), n_candidate=verdict.get("n_candidate"),
                )  # fmt: skip
                return _finish(result, "rollback", k + 1, traffic)
        if all(store.get_ratio(plan.id, layer) >= 1.0 for layer in layers):
            result["promotions"] = dict(promotions)
            return _finish(result, "full", k + 1, traffic)
    status = controller.status()["layers"]
    active = next((s for s in status if s["phase"] == "active"), status[-1])
    result.update(
        layer=active["layer"], ratio=active["ratio"], reason=active["last_reason"] or "",
        promotions=dict(promotions),
    )  # fmt: skip
    return _finish(result, "timeout", traffic.horizon, traffic)


def article_qos(counts: Array) -> float:
    """The article's QoS of one window's counts of one arm, high-risk weights (0.3, 0.2, 0.5).

    As in the article, missing data reads as zeros: a window without requests scores 0.56.
    NPS is 0 (no scores are simulated); bad feedback and complaints are per request.
    """
    n, tools = counts[REQ], counts[TOOLS]
    inputs = QosInputs(
        bad_rate=min(counts[FB_BAD] / n, 1.0) if n else 0.0,
        nps=0.0,
        availability=1 - min(counts[ERR] / n, 1.0) if n else 0.0,
        latency_s=counts[LAT_SUM] / n if n else 0.0,
        tool_success=1 - counts[TOOL_ERR] / tools if tools else 0.0,
        completion=min(counts[DONE] / n, 1.0) if n else 0.0,
        complaint_rate=min(counts[COMPLAINT] / n, 1.0) if n else 0.0,
    )
    return qos_score(inputs, HIGH_RISK_QOS_WEIGHTS, max_latency_s=5.0).qos


def run_article(plan: RolloutPlan, traffic: Traffic) -> dict[str, Any]:
    """The article's QoS rule with the plan's layers and steps, one 60-minute window at a time."""
    layers = plan.layer_names
    steps = [plan.layer(name).steps for name in layers]
    result = _base("article", traffic)
    ratios = np.zeros(len(layers))
    layer, step, step_start = 0, 0, 0
    ratios[layer] = steps[layer][step]
    promotions = 0
    for k in range(traffic.horizon):
        traffic.tick(ratios)
        now = k + 1
        if (now - step_start) % WINDOW_TICKS:
            continue
        counts = traffic.window(now - WINDOW_TICKS)[layer, CANDIDATE]
        qos = article_qos(counts)
        verdict = article_qos_verdict(qos)
        if verdict == "rollback":
            silent = bool(counts[REQ] == 0)
            _flag(result, now, traffic, "silent window" if silent else "qos")
            result.update(
                layer=layers[layer], ratio=float(ratios[layer]), reason=f"qos {qos:.3f} < 0.6",
                n_candidate=int(counts[REQ]), silent=silent, promotions={"qos": promotions},
            )  # fmt: skip
            return _finish(result, "rollback", now, traffic)
        if verdict == "promote":
            promotions += 1
            step, step_start = step + 1, now
            ratios[layer] = steps[layer][step]
            if steps[layer][step] >= 1.0:  # the layer is done; the next one opens
                result["layer_done"][layers[layer]] = now * TICK / 3600
                layer, step = layer + 1, 0
                if layer == len(layers):
                    result["promotions"] = {"qos": promotions}
                    return _finish(result, "full", now, traffic)
                ratios[layer] = steps[layer][step]
    result.update(layer=layers[layer], ratio=float(ratios[layer]), promotions={"qos": promotions})
    return _finish(result, "timeout", traffic.horizon, traffic)


def scenario_key(scenario_id: str) -> int:
    """A stable integer per scenario id, so a subset of scenarios draws the same numbers."""
    return zlib.crc32(scenario_id.encode())


@dataclass(frozen=True)
class SimConfig:
    """Everything a worker needs to run seeds (picklable)."""

    population: Population = field(default_factory=Population)
    knobs: PlanKnobs = field(default_factory=PlanKnobs)
    horizon_ticks: int = round(48 * 3600 / TICK)
    base_seed: int = 0


_PLANS: dict[PlanKnobs, RolloutPlan] = {}


def run_one(config: SimConfig, scenario_id: str, engine: str, seed: int) -> dict[str, Any]:
    """One engine on one seed of one scenario."""
    plan = _PLANS.get(config.knobs)
    if plan is None:
        plan = _PLANS[config.knobs] = make_plan(config.knobs, config.population.layers)
    traffic = Traffic(
        config.population,
        SCENARIOS[scenario_id],
        (config.base_seed, seed, scenario_key(scenario_id)),
        config.horizon_ticks,
    )
    started = time.perf_counter()
    run = run_ours(plan, traffic) if engine == "ours" else run_article(plan, traffic)
    run.update(scenario=scenario_id, seed=seed, seconds=time.perf_counter() - started)
    return run


def _run_batch(job: tuple[SimConfig, str, str, tuple[int, ...]]) -> list[dict[str, Any]]:
    config, scenario_id, engine, seeds = job
    return [run_one(config, scenario_id, engine, seed) for seed in seeds]


def simulate(
    config: SimConfig,
    scenarios: Sequence[str],
    engines: Sequence[str],
    seeds: int,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every (scenario, engine, seed), in ``jobs`` processes; runs sorted by their key."""
    batch = 10 if seeds >= 40 else max(seeds // 4, 1)
    work = [
        (config, s, e, tuple(range(first, min(first + batch, seeds))))
        for s in scenarios
        for e in engines
        for first in range(0, seeds, batch)
    ]
    total, done = len(scenarios) * len(engines) * seeds, 0
    runs: list[dict[str, Any]] = []
    if jobs <= 1:
        for job in work:
            runs += _run_batch(job)
            done += len(job[3])
            if progress:
                progress(done, total)
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = [pool.submit(_run_batch, job) for job in work]
            for future in as_completed(futures):
                chunk = future.result()
                runs += chunk
                done += len(chunk)
                if progress:
                    progress(done, total)
    order = {s: i for i, s in enumerate(scenarios)}
    runs.sort(key=lambda r: (order[r["scenario"]], r["engine"], r["seed"]))
    return runs


# ----------------------------------------------------------------------------- statistics
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def _binomial_half_ppf(q: float, n: int) -> int:
    """The smallest k with P(Binomial(n, ½) ≤ k) ≥ q."""
    cdf, log_half_n = 0.0, -n * math.log(2)
    for k in range(n + 1):
        cdf += math.exp(
            math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half_n
        )
        if cdf >= q:
            return k
    return n


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free (order-statistic) interval of the median: ranks from Binomial(n, ½)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    ordered = sorted(values)
    low = _binomial_half_ppf((1 - level) / 2, n)  # ranks low+1 .. n−low (1-based)
    if low < 1:
        return ordered[0], ordered[-1]  # too few values: the range (coverage < level)
    return ordered[low - 1], ordered[n - low]


def _rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "ci95": [low, high]}


def _dist(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "median_ci95": [None, None], "p90": None}
    low, high = median_ci(values)
    return {
        "n": len(values),
        "median": float(np.median(values)),
        "median_ci95": [float(low), float(high)],
        "p90": float(np.quantile(values, 0.9)),
    }


def _catch(run: dict[str, Any], srm_catches: bool) -> tuple[float, int, int, str] | None:
    """(hours, users exposed, in the affected layers, by what) of the first catch, if any."""
    srm = srm_catches and run.get("srm_hours") is not None
    if srm and (not run["flagged"] or run["srm_hours"] <= run["flag_hours"]):
        return run["srm_hours"], run["srm_exposed"], run["srm_exposed_affected"], "srm"
    if run["flagged"]:
        return (run["flag_hours"], run["flag_exposed"], run["flag_exposed_affected"],
                run["flag_reason"])  # fmt: skip
    return None


def summarise(runs: Sequence[dict[str, Any]], scenario: str, engine: str) -> dict[str, Any]:
    """Rates (Wilson 95 % CIs) and distributions (median with an order-statistic CI, p90).

    A bad candidate is *caught* when it is rolled back — or, for a sample-ratio bug (S6), when
    a sample-ratio alert holds it; *escaped* when it reached 100 % of every layer.
    """
    rows = [r for r in runs if r["scenario"] == scenario and r["engine"] == engine]
    n = len(rows)
    sc = SCENARIOS.get(scenario)
    outcomes = Counter(r["outcome"] for r in rows)
    catches = [c for r in rows if (c := _catch(r, bool(sc and sc.lost_share)))]
    full = [r for r in rows if r["outcome"] == "full"]
    where = Counter(
        f"{r['layer']}@{r['ratio']:g}" for r in rows if r["outcome"] == "rollback" and r["layer"]
    )
    promotions: Counter[str] = Counter()
    for r in rows:
        promotions.update(r.get("promotions", {}))
    return {
        "scenario": scenario,
        "engine": engine,
        "bad": bool(sc.bad) if sc else None,
        "description": sc.description if sc else "",
        "seeds": n,
        "rollback": _rate(outcomes["rollback"], n),
        "full": _rate(outcomes["full"], n),
        "timeout": _rate(outcomes["timeout"], n),
        "caught": _rate(len(catches), n),
        "srm_alerted": _rate(sum(r["srm_alerts"] > 0 for r in rows), n),
        "silent_rollbacks": sum(bool(r.get("silent")) for r in rows),
        "caught_by": dict(Counter(c[3] for c in catches).most_common()),
        "rollback_where": dict(where.most_common()),
        "exposed_at_catch": _dist([c[1] for c in catches]),
        "exposed_affected_at_catch": _dist([c[2] for c in catches]),
        "hours_to_catch": _dist([c[0] for c in catches]),
        "hours_to_full": _dist([r["hours"] for r in full]),
        "users_to_full": _dist([r["exposed"] for r in full]),
        "promotions": dict(promotions),
        "seconds_per_run": float(np.mean([r["seconds"] for r in rows])) if rows else None,
    }


# ----------------------------------------------------------------------------- reporting
def _pct(rate: dict[str, Any]) -> str:
    low, high = rate["ci95"]
    if rate["n"] == 0:
        return "—"
    return f"{rate['rate']:.1%} [{low:.1%}, {high:.1%}] ({rate['k']}/{rate['n']})"


def _q(d: dict[str, Any], digits: int = 0) -> str:
    if d["median"] is None:
        return "—"
    low, high = d["median_ci95"]
    f = f",.{digits}f"
    return f"{d['median']:{f}} [{low:{f}}, {high:{f}}] / {d['p90']:{f}}"


def _top(counter: Mapping[str, int], k: int = 3) -> str:
    return ", ".join(f"{key} {value}" for key, value in list(counter.items())[:k]) or "—"


def tables(summaries: Sequence[dict[str, Any]]) -> str:
    """Markdown tables: good candidates, then bad ones."""
    good = [s for s in summaries if not s["bad"]]
    bad = [s for s in summaries if s["bad"]]
    out = []
    if good:
        out += [
            "Good candidates (a rollback is a false rollback):",
            "",
            "| scenario | engine | seeds | false rollback [95% CI] | SRM alert | reached 100% "
            "[95% CI] | hours to 100%: median [CI] / p90 | users to 100%: median [CI] / p90 | "
            "rolled back by |",
            "|---|---|---:|---|---:|---|---:|---:|---|",
        ]
        for s in good:
            out.append(
                f"| {s['scenario']} | {s['engine']} | {s['seeds']} | {_pct(s['rollback'])} | "
                f"{s['srm_alerted']['rate']:.1%} | {_pct(s['full'])} | "
                f"{_q(s['hours_to_full'], 1)} | {_q(s['users_to_full'])} | "
                f"{_top(s['caught_by'])} |"
            )
        out.append("")
    if bad:
        out += [
            "Bad candidates (caught = rolled back, for S6 also held on a sample-ratio alert; "
            "escape = reached 100% of every layer):",
            "",
            "| scenario | engine | seeds | caught [95% CI] | escape [95% CI] | SRM alert | users "
            "exposed when caught: median [CI] / p90 | in the affected layer | hours to catch: "
            "median / p90 | caught by |",
            "|---|---|---:|---|---|---:|---:|---:|---:|---|",
        ]
        for s in bad:
            affected = (
                _q(s["exposed_affected_at_catch"]) if s["scenario"] == "S3" else "(all layers)"
            )
            hours = s["hours_to_catch"]
            h = "—" if hours["median"] is None else f"{hours['median']:.1f} / {hours['p90']:.1f}"
            out.append(
                f"| {s['scenario']} | {s['engine']} | {s['seeds']} | {_pct(s['caught'])} | "
                f"{_pct(s['full'])} | {s['srm_alerted']['rate']:.1%} | "
                f"{_q(s['exposed_at_catch'])} | {affected} | {h} | "
                f"{_top(s['caught_by'])} |"
            )
    return "\n".join(out)


def check_targets(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(target, status, evidence) for ``ours``; status is met / missed / not run."""
    by = {(s["scenario"], s["engine"]): s for s in summaries}
    ours = {k[0]: v for k, v in by.items() if k[1] == "ours"}
    checks: list[tuple[str, str, str]] = []

    s0 = ours.get("S0")
    if s0 is None:
        checks.append(("A/A false rollbacks ≤ 2% over ≥ 1 000 seeds", "not run", "no S0"))
    else:
        r = s0["rollback"]
        ok = r["rate"] <= 0.02
        status = ("met" if ok else "missed") + ("" if r["n"] >= 1000 else " (< 1 000 seeds)")
        checks.append(("A/A false rollbacks ≤ 2% over ≥ 1 000 seeds", status, _pct(r)))

    drops = [s for s in ("S2-5", "S2-10", "S2-25", "S3") if s in ours]
    if drops:
        escapes = {s: ours[s]["full"]["k"] for s in drops}
        ok = not any(escapes.values())
        evidence = ", ".join(f"{s} {k}/{ours[s]['seeds']}" for s, k in escapes.items())
        checks.append(("no escape for drops ≥ 5 points", "met" if ok else "missed", evidence))
    else:
        checks.append(("no escape for drops ≥ 5 points", "not run", "no S2-5/10/25, S3"))

    for sid, target, limit in (
        ("S2-5", "−5 points: median users exposed well below 656", 656.0),
        ("S2-25", "−25 points: caught within 60 users exposed (median)", 60.0),
    ):
        if sid not in ours:
            checks.append((target, "not run", f"no {sid}"))
            continue
        d = ours[sid]["exposed_at_catch"]
        if d["median"] is None:
            checks.append((target, "missed", "never caught"))
            continue
        high = d["median_ci95"][1]
        ok = d["median"] <= limit if limit == 60.0 else high < limit
        checks.append(
            (
                target,
                "met" if ok else "missed",
                f"median {_q(d)} (caught {_pct(ours[sid]['caught'])})",
            )
        )

    for sid in ("S0", "S1"):
        if sid not in ours:
            continue
        d = ours[sid]["hours_to_full"]
        share = ours[sid]["full"]
        ok = d["median"] is not None and d["median"] < 12 and share["rate"] > 0.5
        checks.append(
            (f"{sid}: good candidate at 100% of every layer in a median < 12 h",
             "met" if ok else "missed", f"hours {_q(d, 1)}; reached {_pct(share)}")
        )  # fmt: skip
    return checks


def write_csv(path: Path, summaries: Sequence[dict[str, Any]]) -> None:
    columns = [
        "scenario", "engine", "bad", "seeds", "rollback_rate", "rollback_lo", "rollback_hi",
        "full_rate", "full_lo", "full_hi", "caught_rate", "caught_lo", "caught_hi",
        "timeout_rate", "srm_alerted_rate", "exposed_median", "exposed_median_lo",
        "exposed_median_hi", "exposed_p90", "exposed_affected_median", "exposed_affected_p90",
        "hours_to_catch_median", "hours_to_full_median", "hours_to_full_lo", "hours_to_full_hi",
        "hours_to_full_p90", "users_to_full_median", "users_to_full_p90", "caught_by",
        "description",
    ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for s in summaries:
            e, a = s["exposed_at_catch"], s["exposed_affected_at_catch"]
            h, u = s["hours_to_full"], s["users_to_full"]
            writer.writerow([
                s["scenario"], s["engine"], s["bad"], s["seeds"],
                s["rollback"]["rate"], *s["rollback"]["ci95"],
                s["full"]["rate"], *s["full"]["ci95"],
                s["caught"]["rate"], *s["caught"]["ci95"],
                s["timeout"]["rate"], s["srm_alerted"]["rate"],
                e["median"], *e["median_ci95"], e["p90"], a["median"], a["p90"],
                s["hours_to_catch"]["median"], h["median"], *h["median_ci95"], h["p90"],
                u["median"], u["p90"],
                "; ".join(f"{k} {v}" for k, v in s["caught_by"].items()), s["description"],
            ])  # fmt: skip


def plot(path: Path, summaries: Sequence[dict[str, Any]]) -> bool:
    """Write ``simulate.png``: false rollback, escape and exposure per scenario and engine.
    Returns False (and writes nothing) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    engines = sorted({s["engine"] for s in summaries}, key=lambda e: ENGINES.index(e))
    colours = {"ours": "tab:blue", "article": "tab:red"}
    panels: list[tuple[str, list[dict[str, Any]], str]] = [
        ("false rollback rate (good candidates)", [s for s in summaries if not s["bad"]],
         "rollback"),
        ("escape rate: reached 100% (bad candidates)", [s for s in summaries if s["bad"]],
         "full"),
        ("users exposed when caught (median, 95% CI)", [s for s in summaries if s["bad"]],
         "exposed_at_catch"),
    ]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, (title, rows, key) in zip(axes, panels, strict=True):
        scenarios = list(dict.fromkeys(s["scenario"] for s in rows))
        for i, engine in enumerate(engines):
            offset = (i - (len(engines) - 1) / 2) * 0.25
            for j, sid in enumerate(scenarios):
                s = next((r for r in rows if r["scenario"] == sid and r["engine"] == engine), None)
                if s is None:
                    continue
                if key == "exposed_at_catch":
                    d = s[key]
                    if not d["median"]:  # none caught (or at 0 users: not on a log scale)
                        continue
                    y, (lo, hi) = d["median"], d["median_ci95"]
                else:
                    y, (lo, hi) = s[key]["rate"], s[key]["ci95"]
                ax.bar(j + offset, y, width=0.25, color=colours.get(engine, "grey"), alpha=0.75,
                       label=engine if j == 0 else None)  # fmt: skip
                ax.errorbar(
                    j + offset,
                    y,
                    yerr=[[max(y - lo, 0.0)], [max(hi - y, 0.0)]],
                    color="black",
                    capsize=3,
                )
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=45)
        ax.set_title(title, fontsize=10)
        if key == "exposed_at_catch":
            ax.set_yscale("log")
            ax.axhline(
                656, color="grey", linestyle=":", linewidth=1, label="656 (prototype, −5 pts)"
            )
        else:
            ax.set_ylim(0, 1.05)
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.legend(fontsize=8)
    fig.suptitle("graylayer simulate: the product's controller vs the article's QoS rule")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- command line
def _duration(text: str) -> float:
    """Seconds from ``"45"`` (minutes), ``"45m"``, ``"1.5h"`` or ``"900s"``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 60.0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a duration like 45m, 1.5h or 900s, not {text!r}"
        ) from None


def _max_step(text: str) -> tuple[tuple[str, float], ...]:
    """``"1h"`` (every layer) or ``"1h,normal=3h"`` / ``"normal=2h"`` (others keep defaults)."""
    limits: dict[str, float] = {}
    named = True
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            name, value = part.split("=", 1)
            limits[name.strip()] = _duration(value)
        else:
            named = False
            limits["*"] = _duration(part)
    return tuple(({**DEFAULT_MAX_STEP, **limits} if named else limits).items())


def _steps(text: str) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """``"0.1,0.5,1"`` (every layer) or ``"internal=0.5,1;normal=0.05,0.2,0.5,1;..."``
    (unnamed layers keep the defaults)."""
    try:
        if "=" not in text:
            return (("*", tuple(float(x) for x in text.split(","))),)
        steps = dict(DEFAULT_STEPS)
        for part in filter(None, (p.strip() for p in text.split(";"))):
            name, values = part.split("=", 1)
            steps[name.strip()] = tuple(float(x) for x in values.split(","))
        return tuple(steps.items())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"steps like 0.1,0.5,1 or internal=0.5,1;normal=0.05,0.2,0.5,1, not {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graylayer simulate",
        description="Monte-Carlo rollout simulator: the product's RolloutController and judge "
        "against the article's QoS rule on synthetic layered traffic (notes/stats.md §7).",
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated ids (default: all; --quick: "
        + ",".join(QUICK_SCENARIOS)
        + "); "
        + "; ".join(f"{k}: {v.description}" for k, v in SCENARIOS.items()).replace("%", "%%"),
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help="ours,article")
    parser.add_argument("--seeds", type=int, help="seeds per scenario (200; --quick 40)")
    parser.add_argument("--hours", type=float, default=48.0, help="horizon per run (48)")
    parser.add_argument("--users-per-hour", type=float, default=3000.0)
    parser.add_argument(
        "--requests-per-user",
        type=float,
        default=2.5,
        help="mean requests per user, 1 + Poisson(mean − 1) (2.5; 1 = one request each)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--out", type=Path, help="write results.csv, results.json, simulate.png")
    parser.add_argument("--quick", action="store_true", help="40 seeds, 5 scenarios (< 60 s)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (0)")
    knobs = PlanKnobs()
    plan = parser.add_argument_group("plan knobs (the ours engine; steps apply to both)")
    plan.add_argument("--steps", type=_steps, help="0.1,0.5,1 or layer=…;layer=… (see --help)")
    plan.add_argument("--bake", type=_duration, default=knobs.bake_s, help="bake time (30m)")
    plan.add_argument(
        "--max-step",
        type=_max_step,
        default=knobs.max_step,
        help="max step time: 1h (every layer) or 1h,normal=3h (default: 60m, normal 3h)",
    )
    plan.add_argument("--min-samples", type=int, default=knobs.min_samples)
    plan.add_argument("--alpha", type=float, default=knobs.alpha, help="plan alpha (0.05)")
    plan.add_argument("--n-star", type=float, default=knobs.n_star, help="harm-test N* (400)")
    plan.add_argument(
        "--timeout-policy", choices=("promote_if_no_harm", "hold"), default=knobs.timeout_policy
    )
    return parser


def _progress(started: float) -> Callable[[int, int], None]:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 2.0 or done == total:
            last[0] = now
            print(f"\r{done}/{total} runs, {now - started:.0f} s", end="", file=sys.stderr,
                  flush=True)  # fmt: skip
            if done == total:
                print(file=sys.stderr)

    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``graylayer simulate``: run, print the tables and targets, optionally write files."""
    parser = build_parser()
    args = parser.parse_args(argv)
    scenarios = (
        args.scenarios.split(",")
        if args.scenarios
        else list(QUICK_SCENARIOS if args.quick else SCENARIOS)
    )
    engines = args.engines.split(",")
    for sid in scenarios:
        if sid not in SCENARIOS:
            parser.error(f"unknown scenario {sid!r}; one of {', '.join(SCENARIOS)}")
    for engine in engines:
        if engine not in ENGINES:
            parser.error(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    seeds = args.seeds if args.seeds is not None else (40 if args.quick else 200)
    knobs = PlanKnobs(
        steps=args.steps or PlanKnobs().steps,
        bake_s=args.bake,
        max_step=args.max_step,
        min_samples=args.min_samples,
        alpha=args.alpha,
        n_star=args.n_star,
        timeout_policy=args.timeout_policy,
    )
    population = Population(
        users_per_hour=args.users_per_hour, extra_requests=max(args.requests_per_user - 1, 0.0)
    )
    for name, steps in knobs.steps:
        if not steps or steps[-1] != 1.0:
            parser.error(f"--steps: {name}'s steps must end at 1 (a layer is done at 100%)")
    try:
        plan = make_plan(knobs, population.layers)
    except Exception as exc:  # a ConfigurationError or a pydantic error: bad knobs
        parser.error(f"invalid plan knobs: {exc}")
    config = SimConfig(population, knobs, round(args.hours * 3600 / TICK), args.seed)
    jobs = max(1, min(args.jobs, len(scenarios) * len(engines) * seeds))
    print(
        f"graylayer simulate: {len(scenarios)} scenarios × {len(engines)} engines × {seeds} "
        f"seeds, horizon {args.hours:g} h, {population.users_per_hour:g} users/h "
        f"({args.requests_per_user:g} requests/user), base seed {args.seed}, {jobs} job(s)\n"
        + describe_plan(plan)
        + "\narticle: QoS of the candidate per 60-min window of a step, weights (0.3, 0.2, 0.5), "
        "< 0.6 rollback / < 0.8 hold / else one step up; missing data = 0; same steps",
        flush=True,
    )
    started = time.perf_counter()
    runs = simulate(config, scenarios, engines, seeds, jobs, _progress(started))
    elapsed = time.perf_counter() - started
    summaries = [summarise(runs, s, e) for s in scenarios for e in engines]
    print()
    print(tables(summaries))
    print("\nTargets (ours):")
    for target, status, evidence in check_targets(summaries):
        print(f"- {target}: **{status}** — {evidence}")
    cpu = sum(r["seconds"] for r in runs)
    print(f"\nwall time {elapsed:.1f} s ({cpu:.1f} s in runs, {jobs} job(s))")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(args.out / "results.csv", summaries)
        meta = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "argv": list(sys.argv[1:] if argv is None else argv),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jobs": jobs,
            "seeds": seeds,
            "horizon_hours": args.hours,
            "base_seed": args.seed,
            "population": asdict(population),
            "scenarios": {s: asdict(SCENARIOS[s]) for s in scenarios},
            "plan": plan.model_dump(mode="json"),
            "seconds": elapsed,
        }
        targets = [
            {"target": t, "status": s, "evidence": e} for t, s, e in check_targets(summaries)
        ]
        with (args.out / "results.json").open("w", encoding="utf-8") as handle:
            json.dump({"meta": meta, "summary": summaries, "targets": targets, "runs": runs},
                      handle, indent=1, default=str)  # fmt: skip
        wrote = ["results.csv", "results.json"]
        if plot(args.out / "simulate.png", summaries):
            wrote.append("simulate.png")
        else:
            print("simulate.png skipped: pip install matplotlib to get the plot", file=sys.stderr)
        print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
