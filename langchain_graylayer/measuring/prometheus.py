"""The ``graylayer_*`` Prometheus metric family, and the numbers the controller reads back.

Every metric is labelled ``plan``, ``version`` and ``layer`` — never a user id or session id. The
names are public API (dashboards and alerts are written against them):

==========================================  =========  ==========================================
metric                                      type       extra labels
==========================================  =========  ==========================================
``graylayer_requests_total``                counter    ``outcome`` = ok | error | fallback |
                                                       cancelled | interrupted
``graylayer_request_duration_seconds``      histogram
``graylayer_tool_calls_total``              counter    ``tool``, ``status`` = ok | error
``graylayer_tool_results_total``            counter    ``status`` = ok | error (all tools)
``graylayer_task_completions_total``        counter
``graylayer_tokens_total``                  counter    ``direction`` = input | output
``graylayer_cost_total``                    counter    ``currency`` (the plan's price table)
``graylayer_feedback_total``                counter    ``kind`` = bad | complaint | good
``graylayer_feedback_score``                histogram  (NPS-style 0-10 scores)
``graylayer_unrouted_requests_total``       counter    only ``plan`` and ``reason``
``graylayer_layer_ratio``                   gauge      only ``plan`` and ``layer``
``graylayer_store_available``               gauge      only ``plan`` (0: breaker open, last known)
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

import math
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from langchain_graylayer.measuring.feedback import FeedbackKind
from langchain_graylayer.measuring.labels import Outcome, RunLabels
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.store.protocols import RatioStore

if TYPE_CHECKING:
    from langchain_graylayer.plan.plan import RolloutPlan

__all__ = ["DURATION_BUCKETS", "FEEDBACK_SCORE_BUCKETS", "GraylayerMetrics", "default_metrics"]

FEEDBACK_SCORE_BUCKETS: tuple[float, ...] = tuple(float(i) for i in range(11))
"""NPS-style scores 0-10: ``le="6"`` counts detractors, ``+Inf`` minus ``le="8"`` promoters."""


DURATION_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
"""Latency buckets for agents, in seconds (0.05 s to 120 s)."""


# ----------------------------------------------------------------------------- the family
# ----------------------------------------------------------------------------- the family
class GraylayerMetrics:
    """The ``graylayer_*`` metrics in one registry: for dashboards and alerts (the judge reads
    per-user evidence from the store instead; counters cannot say who came back).

    Use :func:`default_metrics` for the process-wide instance on prometheus_client's global
    registry; pass ``registry=CollectorRegistry()`` to isolate (tests, several apps).

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> metrics = GraylayerMetrics(registry=CollectorRegistry())
        >>> labels = RunLabels("refund-v2", "candidate", "normal")
        >>> metrics.record_request(labels, Outcome.OK, 1.2, completed=True)
        >>> metrics.completions.labels("refund-v2", "candidate", "normal")._value.get()
        1.0
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        """Create the family in ``registry`` (``None``: not exported, e.g. in tests)."""
        self.registry = registry
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
        self.cost = Counter(
            "graylayer_cost_total",
            "Money of the agent's priced model calls, in the plan's currency (a model without a "
            "price adds tokens, not cost; an evaluator's judge runs are not counted).",
            [*arm, "currency"],
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
        self.store_available = Gauge(
            "graylayer_store_available",
            "1 while the request path's store answers; 0 while its circuit breaker is open and "
            "requests are served from this replica's last known state (or stable).",
            ["plan"],
            registry=registry,
        )
        self.handler_errors = Counter(
            "graylayer_handler_errors_total",
            "Failures inside graylayer's callback handlers (logged, never raised).",
            registry=registry,
        )

    # -- writing ---------------------------------------------------------------------------
    def init_arms(self, plan_id: str, layers: Iterable[str], currency: str | None = None) -> None:
        """Export zero-valued series for every arm, so ``increase()`` counts from the start
        (``currency``: the plan prices its models, so its cost series are exported too)."""
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
                if currency is not None:
                    self.cost.labels(*values, currency)
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

    def record_completion(self, labels: RunLabels) -> None:
        """A completion decided after the request was counted (a background judge)."""
        self.completions.labels(labels.plan, labels.version, labels.layer).inc()

    def record_tool(self, labels: RunLabels, tool: str, *, ok: bool) -> None:
        """One tool call ended (``ok=False``: raised, or returned a ToolMessage with error)."""
        status = "ok" if ok else "error"
        plan, version, layer = labels.plan, labels.version, labels.layer
        self._child(self.tool_calls, plan, version, layer, tool, status).inc()
        self._child(self.tool_results, plan, version, layer, status).inc()

    def record_tokens(self, labels: RunLabels, *, input: int, output: int) -> None:
        """Tokens of one LLM call."""
        plan, version, layer = labels.plan, labels.version, labels.layer
        if input:
            self._child(self.tokens, plan, version, layer, "input").inc(input)
        if output:
            self._child(self.tokens, plan, version, layer, "output").inc(output)

    def record_cost(self, labels: RunLabels, amount: float, currency: str) -> None:
        """Money of one priced LLM call."""
        if amount > 0:
            self._child(self.cost, labels.plan, labels.version, labels.layer, currency).inc(amount)

    def record_feedback(
        self, labels: RunLabels, kind: FeedbackKind | None, score: float | None = None
    ) -> None:
        """Feedback attributed to the version and layer that served the run."""
        values = (labels.plan, labels.version, labels.layer)
        if kind is not None:
            self.feedback.labels(*values, kind.value).inc()
        if score is not None:
            self.feedback_score.labels(*values).observe(score)

    def record_unrouted(self, plan_id: str, reason: str) -> None:
        """A request graylayer did not route."""
        self.unrouted.labels(plan_id, reason).inc()

    def watch_ratios(self, plan: RolloutPlan, store: RatioStore) -> None:
        """Export each layer's ratio as read from ``store`` at scrape time (NaN if unreadable),
        and whether the store answers (``graylayer_store_available``).

        Not available in prometheus_client's multiprocess mode (no ``set_function`` there).
        """
        for layer in plan.layer_names:
            self.ratio.labels(plan.id, layer).set_function(_ratio_reader(store, plan.id, layer))
        # A networked store as the request path sees it (a CachedStore) says whether it answers.
        self.store_available.labels(plan.id).set_function(
            lambda: float(getattr(store, "available", True))
        )


def _ratio_reader(store: RatioStore, plan_id: str, layer: str) -> Callable[[], float]:
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
