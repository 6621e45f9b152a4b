"""The ``graylayer_*`` Prometheus metric family, and the numbers the controller reads back.

Every metric is labelled ``plan``, ``version`` and ``layer`` — never a user id or session id. The
names are public API (dashboards and alerts are written against them):

==========================================  =========  ==========================================
metric                                      type       extra labels
==========================================  =========  ==========================================
``graylayer_requests_total``                counter    ``outcome`` = ok | error | fallback
``graylayer_request_duration_seconds``      histogram
``graylayer_tool_calls_total``              counter    ``tool``, ``status`` = ok | error
``graylayer_tool_results_total``            counter    ``status`` = ok | error (all tools)
``graylayer_task_completions_total``        counter
``graylayer_tokens_total``                  counter    ``direction`` = input | output
``graylayer_feedback_total``                counter    ``kind`` = bad | complaint | good
``graylayer_feedback_score``                histogram  (NPS-style 0-10 scores)
``graylayer_unrouted_requests_total``       counter    only ``plan`` and ``reason``
``graylayer_layer_ratio``                   gauge      only ``plan`` and ``layer``
``graylayer_handler_errors_total``          counter    none (failures inside graylayer's handlers)
==========================================  =========  ==========================================

``graylayer_tool_results_total`` counts the same calls without the ``tool`` label, so its series
exist from start-up at zero and ``increase()`` sees every call (a per-tool series appears only at
its first call, which ``increase()`` cannot count). Routed requests are counted in
``graylayer_requests_total``; requests graylayer did not route (no
user id, opt-out, routing degraded) only in ``graylayer_unrouted_requests_total``, so they never
dilute a layer's comparison.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.decision import Version
from langchain_graylayer.store.base import Store

if TYPE_CHECKING:
    from langchain_graylayer.plan import RolloutPlan

__all__ = [
    "DURATION_BUCKETS",
    "FEEDBACK_SCORE_BUCKETS",
    "ArmStats",
    "FeedbackKind",
    "GraylayerMetrics",
    "InProcessSource",
    "LatencySummary",
    "MetricSource",
    "Outcome",
    "RunLabels",
    "Snapshot",
    "default_metrics",
]

DURATION_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
"""Latency buckets for agents, in seconds (0.05 s to 120 s)."""

FEEDBACK_SCORE_BUCKETS: tuple[float, ...] = tuple(float(i) for i in range(11))
"""NPS-style scores 0-10: ``le="6"`` counts detractors, ``+Inf`` minus ``le="8"`` promoters."""


class Outcome(StrEnum):
    """How a routed request ended."""

    OK = "ok"
    ERROR = "error"
    FALLBACK = "fallback"
    """The candidate failed and stable answered (counted against the candidate)."""


class FeedbackKind(StrEnum):
    """Kinds of later user feedback."""

    BAD = "bad"
    COMPLAINT = "complaint"
    GOOD = "good"


@dataclass(frozen=True, slots=True)
class RunLabels:
    """The labels a run is measured under."""

    plan: str
    version: str
    layer: str


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Request latencies of one arm: count, sum and cumulative histogram buckets."""

    count: int = 0
    sum: float = 0.0
    buckets: tuple[tuple[float, int], ...] = ()
    """``(upper bound, cumulative count)`` pairs, as Prometheus exposes ``_bucket{le=...}``."""

    @property
    def mean(self) -> float:
        """Mean latency in seconds (NaN without data)."""
        return self.sum / self.count if self.count else math.nan

    def slower_than(self, slo: float) -> float:
        """Estimated number of requests slower than ``slo`` seconds.

        Exact when ``slo`` is a bucket bound; otherwise linearly interpolated inside the bucket,
        as Prometheus' ``histogram_quantile`` does.
        """
        below, lower_bound, lower_count = 0.0, 0.0, 0
        for bound, cumulative in self.buckets:
            if slo <= bound:
                if math.isinf(bound) or bound == lower_bound:
                    below = float(lower_count if math.isinf(bound) else cumulative)
                else:
                    share = (slo - lower_bound) / (bound - lower_bound)
                    below = lower_count + share * (cumulative - lower_count)
                break
            lower_bound, lower_count = bound, cumulative
        else:
            below = float(self.count)
        return max(self.count - below, 0.0)


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Counts of one (layer, version) arm over a window: what the judge compares."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    completions: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    feedback_bad: int = 0
    feedback_complaint: int = 0
    feedback_good: int = 0
    feedback_score_count: int = 0
    feedback_score_sum: float = 0.0
    latency: LatencySummary = field(default_factory=LatencySummary)

    @property
    def failures(self) -> int:
        """Requests the version itself failed: errors plus fallbacks."""
        return self.errors + self.fallbacks

    @property
    def completion_rate(self) -> float:
        """Completed tasks per request (NaN without requests)."""
        return self.completions / self.requests if self.requests else math.nan

    @property
    def tool_success_rate(self) -> float:
        """Successful tool calls per tool call (NaN without tool calls)."""
        return 1 - self.tool_errors / self.tool_calls if self.tool_calls else math.nan


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Per-arm statistics of one plan over a window.

    An arm with no data is absent from ``arms`` (never reported as zeros); ``error`` says why a
    source could not answer at all (e.g. Prometheus unreachable), and then ``arms`` is empty.
    """

    plan_id: str
    window: float
    arms: Mapping[tuple[str, Version], ArmStats]
    error: str | None = None

    def arm(self, layer: str, version: Version) -> ArmStats | None:
        """The arm's statistics, or ``None`` when there is no data."""
        return self.arms.get((layer, version))


@runtime_checkable
class MetricSource(Protocol):
    """Where the controller reads per-arm numbers: the process itself, or Prometheus."""

    def snapshot(self, plan_id: str, window: float) -> Snapshot:
        """Statistics per (layer, version) of ``plan_id`` over the last ``window`` seconds."""
        ...


# ----------------------------------------------------------------------------- accumulators
_COUNTS = [f.name for f in fields(ArmStats) if f.name not in ("latency", "feedback_score_sum")]


class _Slot:
    """One time slot of one arm: counts, the score sum and latency histogram counts."""

    __slots__ = ("counts", "latency_buckets", "latency_count", "latency_sum", "score_sum")

    def __init__(self, n_buckets: int) -> None:
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.score_sum = 0.0
        self.latency_count = 0
        self.latency_sum = 0.0
        self.latency_buckets = [0] * n_buckets


class _Accumulators:
    """Per-arm counts in fixed time slots, so any recent window can be summed."""

    def __init__(self, clock: Callable[[], float], resolution: float, retention: float) -> None:
        self.clock = clock
        self.resolution = resolution
        self.retention = retention
        self._slots: dict[tuple[str, str, str], dict[int, _Slot]] = {}
        self._lock = threading.Lock()

    def _slot(self, labels: RunLabels) -> _Slot:
        index = int(self.clock() // self.resolution)
        key = (labels.plan, labels.layer, labels.version)
        slots = self._slots.setdefault(key, {})
        slot = slots.get(index)
        if slot is None:
            slot = slots[index] = _Slot(len(DURATION_BUCKETS))
            oldest = index - int(self.retention // self.resolution)
            for stale in [i for i in slots if i < oldest]:
                del slots[stale]
        return slot

    def add(self, labels: RunLabels, **counts: int) -> None:
        with self._lock:
            slot = self._slot(labels)
            for name, value in counts.items():
                slot.counts[name] += value

    def add_request(self, labels: RunLabels, seconds: float, **counts: int) -> None:
        """A request's counts and its latency, under one lock."""
        with self._lock:
            slot = self._slot(labels)
            for name, value in counts.items():
                slot.counts[name] += value
            slot.latency_count += 1
            slot.latency_sum += seconds
            position = bisect.bisect_left(DURATION_BUCKETS, seconds)
            if position < len(DURATION_BUCKETS):
                slot.latency_buckets[position] += 1

    def add_score(self, labels: RunLabels, score: float) -> None:
        with self._lock:
            slot = self._slot(labels)
            slot.counts["feedback_score_count"] += 1
            slot.score_sum += score

    def window(self, plan_id: str, window: float) -> dict[tuple[str, Version], ArmStats]:
        first = int((self.clock() - window) // self.resolution)
        arms: dict[tuple[str, Version], ArmStats] = {}
        with self._lock:
            for (plan, layer, version), slots in self._slots.items():
                if plan != plan_id:
                    continue
                recent = [slot for index, slot in slots.items() if index >= first]
                if not recent:
                    continue
                arms[(layer, Version(version))] = _merge(recent)
        return arms


def _merge(slots: Iterable[_Slot]) -> ArmStats:
    counts = dict.fromkeys(_COUNTS, 0)
    score_sum, latency_count, latency_sum = 0.0, 0, 0.0
    buckets = [0] * len(DURATION_BUCKETS)
    for slot in slots:
        for name, value in slot.counts.items():
            counts[name] += value
        score_sum += slot.score_sum
        latency_count += slot.latency_count
        latency_sum += slot.latency_sum
        buckets = [a + b for a, b in zip(buckets, slot.latency_buckets, strict=True)]
    cumulative, running = [], 0
    for bound, count in zip(DURATION_BUCKETS, buckets, strict=True):
        running += count
        cumulative.append((bound, running))
    cumulative.append((math.inf, latency_count))
    latency = LatencySummary(latency_count, latency_sum, tuple(cumulative))
    return ArmStats(**counts, feedback_score_sum=score_sum, latency=latency)


# ----------------------------------------------------------------------------- the family
class GraylayerMetrics:
    """The ``graylayer_*`` metrics in one registry, plus in-process windowed accumulators.

    Use :func:`default_metrics` for the process-wide instance on prometheus_client's global
    registry; pass ``registry=CollectorRegistry()`` to isolate (tests, several apps).

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> metrics = GraylayerMetrics(registry=CollectorRegistry())
        >>> labels = RunLabels("refund-v2", "candidate", "normal")
        >>> metrics.record_request(labels, Outcome.OK, 1.2, completed=True)
        >>> snapshot = InProcessSource(metrics).snapshot("refund-v2", 3600)
        >>> arm = snapshot.arm("normal", Version.CANDIDATE)
        >>> arm.requests, arm.completions, arm.completion_rate
        (1, 1, 1.0)
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        clock: Callable[[], float] = time.time,
        resolution: float = 10.0,
        retention: float = 7 * 86400.0,
    ) -> None:
        """Create the family in ``registry`` (``None``: no Prometheus export, accumulators only).

        ``resolution`` is the accumulators' slot width in seconds (windows are rounded to it) and
        ``retention`` how long slots are kept.
        """
        self.registry = registry
        self.clock = clock
        self._acc = _Accumulators(clock, resolution, retention)
        # (metric, label values) → child: ``labels()`` validates and locks on every call, and a
        # request writes several series. Bounded: plans × versions × layers × a few values.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        arm = ("plan", "version", "layer")
        self.requests = Counter(
            "graylayer_requests_total",
            "Routed requests by outcome.",
            [*arm, "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "graylayer_request_duration_seconds",
            "Latency of routed requests, seconds.",
            arm,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.tool_calls = Counter(
            "graylayer_tool_calls_total", "Tool calls by tool and status.",
            [*arm, "tool", "status"], registry=registry,
        )  # fmt: skip
        self.tool_results = Counter(
            "graylayer_tool_results_total",
            "Tool calls of all tools by status (exported from start-up, for increase()).",
            [*arm, "status"],
            registry=registry,
        )
        self.completions = Counter(
            "graylayer_task_completions_total",
            "Requests whose task was completed.",
            arm,
            registry=registry,
        )
        self.tokens = Counter(
            "graylayer_tokens_total",
            "LLM tokens by direction.",
            [*arm, "direction"],
            registry=registry,
        )
        self.feedback = Counter(
            "graylayer_feedback_total",
            "User feedback by kind.",
            [*arm, "kind"],
            registry=registry,
        )
        self.feedback_score = Histogram(
            "graylayer_feedback_score",
            "NPS-style feedback scores (0-10).",
            arm,
            buckets=FEEDBACK_SCORE_BUCKETS,
            registry=registry,
        )
        self.unrouted = Counter(
            "graylayer_unrouted_requests_total",
            "Requests graylayer did not route (no user id, opt-out, degraded).",
            ["plan", "reason"],
            registry=registry,
        )
        self.ratio = Gauge(
            "graylayer_layer_ratio",
            "Current candidate ratio.",
            ["plan", "layer"],
            registry=registry,
        )
        self.handler_errors = Counter(
            "graylayer_handler_errors_total",
            "Failures inside graylayer's callback handlers (logged, never raised).",
            registry=registry,
        )

    # -- writing ---------------------------------------------------------------------------
    def init_arms(self, plan_id: str, layers: Iterable[str]) -> None:
        """Export zero-valued series for every arm, so ``increase()`` counts from the start."""
        for layer in layers:
            for version in Version:
                values = (plan_id, version.value, layer)
                for outcome in Outcome:
                    self.requests.labels(*values, outcome.value)
                self.duration.labels(*values)
                self.completions.labels(*values)
                for status in ("ok", "error"):
                    self.tool_results.labels(*values, status)
                for direction in ("input", "output"):
                    self.tokens.labels(*values, direction)
                for kind in FeedbackKind:
                    self.feedback.labels(*values, kind.value)
                self.feedback_score.labels(*values)

    def _child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*values)
            if len(self._children) < 10_000:  # tool names come from the agent: a guard, not a limit
                self._children[key] = child
        return child

    def record_request(
        self, labels: RunLabels, outcome: Outcome, seconds: float, *, completed: bool
    ) -> None:
        """One routed request ended."""
        plan, version, layer = labels.plan, labels.version, labels.layer
        self._child(self.requests, plan, version, layer, outcome.value).inc()
        self._child(self.duration, plan, version, layer).observe(seconds)
        if completed:
            self._child(self.completions, plan, version, layer).inc()
        self._acc.add_request(
            labels,
            seconds,
            requests=1,
            errors=int(outcome is Outcome.ERROR),
            fallbacks=int(outcome is Outcome.FALLBACK),
            completions=int(completed),
        )

    def record_completion(self, labels: RunLabels) -> None:
        """A completion decided after the request was counted (a background judge)."""
        self.completions.labels(labels.plan, labels.version, labels.layer).inc()
        self._acc.add(labels, completions=1)

    def record_tool(self, labels: RunLabels, tool: str, *, ok: bool) -> None:
        """One tool call ended (``ok=False``: raised, or returned a ToolMessage with error)."""
        status = "ok" if ok else "error"
        plan, version, layer = labels.plan, labels.version, labels.layer
        self._child(self.tool_calls, plan, version, layer, tool, status).inc()
        self._child(self.tool_results, plan, version, layer, status).inc()
        self._acc.add(labels, tool_calls=1, tool_errors=int(not ok))

    def record_tokens(self, labels: RunLabels, *, input: int, output: int) -> None:
        """Tokens of one LLM call."""
        plan, version, layer = labels.plan, labels.version, labels.layer
        if input:
            self._child(self.tokens, plan, version, layer, "input").inc(input)
        if output:
            self._child(self.tokens, plan, version, layer, "output").inc(output)
        self._acc.add(labels, input_tokens=input, output_tokens=output)

    def record_feedback(
        self, labels: RunLabels, kind: FeedbackKind | None, score: float | None = None
    ) -> None:
        """Feedback attributed to the version and layer that served the run."""
        values = (labels.plan, labels.version, labels.layer)
        if kind is not None:
            self.feedback.labels(*values, kind.value).inc()
            self._acc.add(labels, **{f"feedback_{kind.value}": 1})
        if score is not None:
            self.feedback_score.labels(*values).observe(score)
            self._acc.add_score(labels, score)

    def record_unrouted(self, plan_id: str, reason: str) -> None:
        """A request graylayer did not route."""
        self.unrouted.labels(plan_id, reason).inc()

    def watch_ratios(self, plan: RolloutPlan, store: Store) -> None:
        """Export each layer's ratio as read from ``store`` at scrape time (NaN if unreadable).

        Not available in prometheus_client's multiprocess mode (no ``set_function`` there).
        """
        for layer in plan.layer_names:
            self.ratio.labels(plan.id, layer).set_function(_ratio_reader(store, plan.id, layer))

    # -- reading ---------------------------------------------------------------------------
    def window(self, plan_id: str, window: float) -> dict[tuple[str, Version], ArmStats]:
        """Per-arm statistics over the last ``window`` seconds (rounded out to the resolution)."""
        return self._acc.window(plan_id, window)


class InProcessSource:
    """Reads the numbers this process measured: the embedded default for one replica.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> InProcessSource(GraylayerMetrics(registry=None)).snapshot("p", 60).arms
        {}
    """

    def __init__(self, metrics: GraylayerMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else default_metrics()

    def snapshot(self, plan_id: str, window: float) -> Snapshot:
        return Snapshot(plan_id, window, self.metrics.window(plan_id, window))


def _ratio_reader(store: Store, plan_id: str, layer: str) -> Callable[[], float]:
    def read() -> float:
        try:
            return store.get_ratio(plan_id, layer)
        except Exception:
            return math.nan

    return read


_DEFAULTS: dict[int, GraylayerMetrics] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_metrics(registry: CollectorRegistry = REGISTRY) -> GraylayerMetrics:
    """The one :class:`GraylayerMetrics` of ``registry`` (the global registry by default).

    A registry refuses a second metric of the same name, so every router of a process shares
    this instance unless given its own.
    """
    with _DEFAULTS_LOCK:
        metrics = _DEFAULTS.get(id(registry))
        if metrics is None:
            metrics = _DEFAULTS[id(registry)] = GraylayerMetrics(registry)
        return metrics
