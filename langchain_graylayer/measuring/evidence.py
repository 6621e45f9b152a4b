"""What each routed run adds to the judge's evidence: per-user counters in the store.

The router tells :class:`EvidenceRecorder` how each attributable request ended, and the feedback
recorder tells it about feedback, however late; it turns them into
:class:`~langchain_graylayer.store.evidence.UnitDelta` s under the arm the run was routed under
(layer, step, version) and the user's opaque unit key, and hands them to the store: a
``MemoryStore`` adds them at once, a networked store through
:func:`~langchain_graylayer.store.cached.for_requests` writes them from a background thread, so the
request never waits. It never raises: a failure is logged, rate-limited, and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from langchain_graylayer.measuring.feedback import FeedbackKind
from langchain_graylayer.measuring.labels import Outcome, RunLabels
from langchain_graylayer.plan.evaluators import EvaluatorMetric
from langchain_graylayer.plan.gates import GuardrailMetric
from langchain_graylayer.plan.plan import RolloutPlan
from langchain_graylayer.store.evidence import ArmKey, UnitDelta
from langchain_graylayer.store.protocols import EvidenceStore

__all__ = ["EvidenceRecorder", "RequestResult"]

logger = logging.getLogger(__name__)

_FEEDBACK_FIELD = {
    FeedbackKind.BAD: "bad",
    FeedbackKind.GOOD: "good",
    FeedbackKind.COMPLAINT: "complaints",
}


@dataclass(frozen=True, slots=True)
class RequestResult:
    """How one routed request ended, as the measuring handler saw it."""

    outcome: Outcome
    seconds: float
    completed: bool
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    """Money of the request's priced model calls (the plan's currency)."""
    unpriced: int = 0
    """Model calls of the request whose model has no price (their cost is unknown)."""


class EvidenceRecorder:
    """Adds what routed runs did to the evidence store, per user and per arm.

    Example:
        >>> from langchain_graylayer import MemoryStore, RolloutPlan
        >>> store = MemoryStore()
        >>> recorder = EvidenceRecorder(store, RolloutPlan.default("p"))
        >>> labels = RunLabels("p", "candidate", "normal", "0@1.000", "ab12", 2)
        >>> recorder.request(labels, RequestResult(Outcome.OK, 0.8, completed=True))
        >>> recorder.record_feedback(labels, None, 9.0)
        >>> arm = store.read_evidence("p", "normal", "0@1.000")["candidate"]
        >>> arm.users, arm.total("completions"), arm.total("scores"), arm.classes
        (1, 1.0, 1.0, (0, 0, 1, 0, 0))
    """

    def __init__(self, store: EvidenceStore, plan: RolloutPlan) -> None:
        self.store = store
        self.plan = plan
        self.errors = 0
        """Deltas that could not be handed to the store."""
        self._slo = {layer: _slo_of(plan, layer) for layer in plan.layer_names}
        self._lock = threading.Lock()
        self._last_warning = float("-inf")

    def request(self, labels: RunLabels, result: RequestResult) -> None:
        """A routed request ended (``completed`` as the completion judge said). A cancelled
        request (the client went away) and an interrupted one (paused for a person; its resumed
        run counts) are no evidence either way and are not recorded."""
        if result.outcome in (Outcome.CANCELLED, Outcome.INTERRUPTED):
            return
        slo = self._slo.get(labels.layer)
        failed = result.outcome is not Outcome.OK
        self._add(labels, {
            "requests": 1.0,
            "completions": float(result.completed and not failed),
            "failures": float(failed),
            "tool_calls": float(result.tool_calls),
            "tool_errors": float(result.tool_errors),
            "slow": float(slo is not None and result.seconds > slo),
            "latency_seconds": result.seconds,
            "input_tokens": float(result.input_tokens),
            "output_tokens": float(result.output_tokens),
            "cost": result.cost,
            "unpriced": float(result.unpriced > 0),
        })  # fmt: skip

    def completion(self, labels: RunLabels) -> None:
        """A background completion judge accepted the request's answer after it ended."""
        self._add(labels, {"completions": 1.0})

    def evaluation(self, labels: RunLabels, evaluator: str, score: float) -> None:
        """An evaluator scored a run (or a conversation) of ``labels``: 1 is a pass."""
        metric = EvaluatorMetric.of(evaluator)
        self._add(labels, {
            metric.count_field: 1.0,
            metric.pass_field: float(score),
            metric.fail_field: 1.0 - float(score),
        })  # fmt: skip

    def record_feedback(
        self, labels: RunLabels, kind: FeedbackKind | None, score: float | None = None
    ) -> None:
        """Feedback on a run, counted in the step the run was routed under."""
        counts = {"bad": 0.0, "good": 0.0, "complaints": 0.0}
        if kind is not None:
            counts[_FEEDBACK_FIELD[kind]] = 1.0
        if score is not None:
            counts.update(scores=1.0, score_sum=float(score))
        self._add(labels, counts)

    def _add(self, labels: RunLabels, counts: dict[str, float]) -> None:
        if not labels.attributable or labels.plan != self.plan.id:
            return
        delta = UnitDelta(
            ArmKey(labels.layer, labels.step, labels.version), labels.unit, labels.activity,
            {name: value for name, value in counts.items() if value},
        )  # fmt: skip
        try:
            self.store.add_evidence(self.plan.id, [delta])
        except Exception as exc:  # the request goes on; the judge sees fewer users
            with self._lock:
                self.errors += 1
                now, quiet = time.monotonic(), time.monotonic() - self._last_warning < 10.0
                if not quiet:
                    self._last_warning = now
            if not quiet:
                logger.warning("graylayer could not record evidence (%d so far): %s",
                               self.errors, exc)  # fmt: skip


def _slo_of(plan: RolloutPlan, layer: str) -> float | None:
    """The latency objective of the layer's ``slow_rate`` guardrail (``None``: none)."""
    for guardrail in plan.gates_for(layer).guardrails:
        if guardrail.metric is GuardrailMetric.SLOW_RATE:
            return guardrail.slo_seconds
    return None
