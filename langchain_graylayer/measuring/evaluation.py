"""Running the plan's evaluators in the background, bounded, and turning their scores into evidence.

:class:`Evaluations` is built once per router. When a routed run ends, :meth:`Evaluations.run_ended`
does what the request pays for: a hash of the run id per evaluator (the sampling, the same rate
for both versions) and a hand-off to the evaluator's own threads. Everything else happens there:

* **concurrency**: ``concurrency`` evaluations at once per evaluator, ``max_pending`` waiting;
  past that a sampled run is ``dropped``;
* **timeout**: an evaluation still running after ``timeout`` counts as ``timeout`` (its thread is
  abandoned, and counts against the concurrency until it ends);
* **spend cap**: the tokens (and money, through the plan's pricing) of the evaluator's own model
  calls over the last hour; at the cap sampling pauses — sampled runs count as ``capped``, the
  gauge ``graylayer_evaluator_paused`` is 1 and a warning is logged — until the hour's spend falls
  below it;
* **not evaluated is not failed**: an evaluator that raises, times out or answers no score adds
  nothing to the evidence (outcome ``error`` or ``timeout``), so it can never hurt a version;
* **never the agent's runs**: an evaluation runs on a thread of its own, with none of the
  request's callbacks and no graylayer labels, tagged ``graylayer:evaluator``; its model calls are
  counted only in the evaluator's spend.

A conversation evaluator (``scope: conversation``) collects a session's runs and evaluates them
once the session has been idle for ``idle_time``.

Metrics (labels never carry a user or session id):

==========================================  =========  ==========================================
``graylayer_evaluations_total``             counter    plan, version, layer, evaluator, ``outcome``
                                                       = pass | fail | error | timeout | capped |
                                                       dropped
``graylayer_evaluation_score_total``        counter    plan, version, layer, evaluator (Σ scores)
``graylayer_evaluator_tokens_total``        counter    plan, evaluator, ``direction``
``graylayer_evaluator_cost_total``          counter    plan, evaluator (pricing currency)
``graylayer_evaluator_paused``              gauge      plan, evaluator (1: spend cap reached)
==========================================  =========  ==========================================
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import set_config_context
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.measuring.evaluators import EvaluationInput, Scorer, bind
from langchain_graylayer.measuring.events import token_usage
from langchain_graylayer.measuring.evidence import EvidenceRecorder
from langchain_graylayer.measuring.labels import EVALUATOR_TAG, RunLabels
from langchain_graylayer.plan.evaluators import EvaluatorScope, EvaluatorSpec, sampled
from langchain_graylayer.plan.plan import RolloutPlan
from langchain_graylayer.plan.pricing import Pricing

__all__ = ["EVALUATOR_TAG", "EvaluationMetrics", "Evaluations"]

logger = logging.getLogger(__name__)

EVALUATOR_KEY = "graylayer.evaluator"

_HOUR = 3600.0
_MAX_TURNS = 200
"""Runs kept per conversation (the latest)."""
_MAX_CONVERSATIONS = 10_000
"""Open conversations kept per evaluator (past it the oldest is dropped, and counted)."""


class EvaluationMetrics:
    """The evaluator metrics in one registry (one instance per registry: see :meth:`of`)."""

    _instances: ClassVar[weakref.WeakKeyDictionary[Any, EvaluationMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        arm = ("plan", "version", "layer", "evaluator")
        self.evaluations = Counter(
            "graylayer_evaluations_total", "Evaluations of routed runs by outcome.",
            [*arm, "outcome"], registry=registry,
        )  # fmt: skip
        self.scores = Counter(
            "graylayer_evaluation_score_total", "Sum of evaluation scores (1 = pass).",
            arm, registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "graylayer_evaluator_tokens_total", "Tokens of the evaluators' own model calls.",
            ["plan", "evaluator", "direction"], registry=registry,
        )  # fmt: skip
        self.cost = Counter(
            "graylayer_evaluator_cost_total", "Money of the evaluators' own model calls.",
            ["plan", "evaluator"], registry=registry,
        )  # fmt: skip
        self.paused = Gauge(
            "graylayer_evaluator_paused", "1 while an evaluator's spend cap pauses its sampling.",
            ["plan", "evaluator"], registry=registry,
        )  # fmt: skip

    @classmethod
    def of(cls, registry: CollectorRegistry | None) -> EvaluationMetrics:
        """The evaluator metrics of ``registry`` (created once; ``None``: an unexported set)."""
        if registry is None:
            return cls(None)
        with cls._lock:
            found = cls._instances.get(registry)
            if found is None:
                found = cls._instances[registry] = cls(registry)
            return found

    def outcome(self, plan: str, labels: RunLabels, evaluator: str, outcome: str) -> None:
        self.evaluations.labels(plan, labels.version, labels.layer, evaluator, outcome).inc()


class _Spend:
    """An evaluator's spend over the last hour: (time, tokens, money) entries, bounded by the
    hour (older entries are dropped as they are read)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.entries: deque[tuple[float, int, float]] = deque()
        self.tokens = 0
        self.money = 0.0

    def add(self, tokens: int, money: float) -> None:
        self.entries.append((self.clock(), tokens, money))
        self.tokens += tokens
        self.money += money

    def last_hour(self) -> tuple[int, float]:
        horizon = self.clock() - _HOUR
        while self.entries and self.entries[0][0] < horizon:
            _, tokens, money = self.entries.popleft()
            self.tokens -= tokens
            self.money -= money
        return self.tokens, self.money


class _SpendHandler(BaseCallbackHandler):
    """Counts an evaluator's own model calls into its spend (and nothing else sees them)."""

    run_inline = True
    raise_error = False

    def __init__(self, lane: _Lane) -> None:
        self.lane = lane

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self.lane.spent(*token_usage(response), _model_name(response))
        except Exception:  # spend accounting never breaks an evaluation
            logger.exception("graylayer could not count an evaluator's spend")


def _model_name(response: LLMResult) -> str | None:
    name = (response.llm_output or {}).get("model_name")
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            metadata = getattr(message, "response_metadata", None) or {}
            name = name or metadata.get("model_name") or metadata.get("model")
    return None if name is None else str(name)


class _Conversation:
    __slots__ = ("inputs", "labels", "last", "outputs")

    def __init__(self, labels: RunLabels, now: float) -> None:
        self.labels, self.last = labels, now
        self.inputs: deque[Any] = deque(maxlen=_MAX_TURNS)
        self.outputs: deque[Any] = deque(maxlen=_MAX_TURNS)


class _Lane:
    """One evaluator: its sampling, threads, timeout, spend and conversations."""

    def __init__(self, owner: Evaluations, spec: EvaluatorSpec, scorer: Scorer) -> None:
        self.owner, self.spec, self.scorer = owner, spec, scorer
        self.lock = threading.Lock()
        self.pending = 0
        """Sampled evaluations handed to the pool and not finished (or abandoned) yet."""
        self.running = 0
        """Evaluator calls still running, timed out ones included."""
        self.spend = _Spend(owner.clock)
        self.paused = False
        self.warned = float("-inf")
        self.pool = ThreadPoolExecutor(spec.concurrency, f"graylayer-eval-{spec.name}")
        self.conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self.config: RunnableConfig = {
            "callbacks": [_SpendHandler(self)],
            "tags": [EVALUATOR_TAG, f"{EVALUATOR_TAG}:{spec.name}"],
            "metadata": {EVALUATOR_KEY: spec.name},
            "run_name": f"graylayer_evaluator_{spec.name}",
        }

    # ------------------------------------------------------------------ spend
    def spent(self, input_tokens: int, output_tokens: int, model: str | None) -> None:
        plan, name = self.owner.plan.id, self.spec.name
        pricing: Pricing = self.owner.plan.pricing
        money = pricing.cost(model, input_tokens, output_tokens) if model else None
        with self.lock:
            self.spend.add(input_tokens + output_tokens, money or 0.0)
        metrics = self.owner.metrics
        if metrics is not None:
            metrics.tokens.labels(plan, name, "input").inc(input_tokens)
            metrics.tokens.labels(plan, name, "output").inc(output_tokens)
            if money:
                metrics.cost.labels(plan, name).inc(money)

    def over_cap(self) -> bool:
        """At the spend cap: say so once when sampling pauses, and once when it resumes."""
        spec = self.spec
        if spec.max_tokens_per_hour is None and spec.max_cost_per_hour is None:
            return False
        with self.lock:
            tokens, money = self.spend.last_hour()
            over = (
                spec.max_tokens_per_hour is not None and tokens >= spec.max_tokens_per_hour
            ) or (spec.max_cost_per_hour is not None and money >= spec.max_cost_per_hour)
            changed, self.paused = over != self.paused, over
        if changed:
            if over:
                logger.warning(
                    "graylayer evaluator %r paused: its spend in the last hour (%d tokens, %.4f) "
                    "reached its cap; sampling resumes when the hour's spend falls below it",
                    spec.name, tokens, money,
                )  # fmt: skip
            else:
                logger.warning("graylayer evaluator %r resumed sampling", spec.name)
            if self.owner.metrics is not None:
                self.owner.metrics.paused.labels(self.owner.plan.id, spec.name).set(float(over))
        return over

    # ------------------------------------------------------------------ evaluation
    def submit(self, data: EvaluationInput) -> None:
        """Hand a sampled run to the pool (or count why not)."""
        if self.over_cap():
            self.owner.count(data.labels, self.spec.name, "capped")
            return
        with self.lock:
            full = self.pending >= self.spec.max_pending
            if not full:
                self.pending += 1
        if full:
            self.owner.count(data.labels, self.spec.name, "dropped")
            return
        try:
            self.pool.submit(self._evaluate, data)
        except RuntimeError:  # shut down
            with self.lock:
                self.pending -= 1

    def _evaluate(self, data: EvaluationInput) -> None:
        try:
            self._evaluate_once(data)
        finally:
            with self.lock:
                self.pending -= 1

    def _evaluate_once(self, data: EvaluationInput) -> None:
        with self.lock:  # abandoned (timed-out) calls still hold their slot
            busy = self.running >= self.spec.concurrency
        if busy:
            self.owner.count(data.labels, self.spec.name, "dropped")
            return
        result: list[float] = []
        failure: list[BaseException] = []

        def call() -> None:
            try:
                with set_config_context(self.config) as context:
                    result.append(context.run(self.scorer, data, self.config))
            except BaseException as exc:  # reported by the waiting worker
                failure.append(exc)
            finally:
                with self.lock:
                    self.running -= 1

        with self.lock:
            self.running += 1
        thread = threading.Thread(target=call, name=f"graylayer-eval-{self.spec.name}", daemon=True)
        thread.start()
        thread.join(self.spec.timeout)
        name = self.spec.name
        if thread.is_alive():
            self._warn("timed out after %gs", self.spec.timeout)
            self.owner.count(data.labels, name, "timeout")
        elif failure or not result:
            self._warn("failed: %r", failure[0] if failure else None)
            self.owner.count(data.labels, name, "error")
        else:
            score = 1.0 - result[0] if self.spec.invert else result[0]
            self.owner.scored(data.labels, name, score)

    def _warn(self, what: str, detail: Any) -> None:
        """At most one warning every 10 s per evaluator (the metric counts every one)."""
        now = time.monotonic()
        with self.lock:
            quiet = now - self.warned < 10.0
            if not quiet:
                self.warned = now
        if not quiet:
            logger.warning(
                "graylayer evaluator %r " + what + "; the run is not evaluated "
                "(graylayer_evaluations_total counts each)", self.spec.name, detail,
            )  # fmt: skip

    # ------------------------------------------------------------------ conversations
    def turn(self, labels: RunLabels, session_id: str, input: Any, output: Any) -> None:
        """A run of ``session_id`` ended: keep it if the conversation is sampled (decided by
        its session id, so only sampled conversations take memory)."""
        if not sampled(self.spec.name, session_id, self.spec.sampling_rate):
            return
        now = self.owner.clock()
        with self.lock:
            conversation = self.conversations.pop(session_id, None)
            if conversation is None:
                conversation = _Conversation(labels, now)
            conversation.labels, conversation.last = labels, now
            conversation.inputs.append(input)
            conversation.outputs.append(output)
            self.conversations[session_id] = conversation  # most recent last
            dropped = None
            if len(self.conversations) > _MAX_CONVERSATIONS:
                dropped = self.conversations.popitem(last=False)[1]
        if dropped is not None:
            self.owner.count(dropped.labels, self.spec.name, "dropped")

    def idle(self, now: float, everything: bool = False) -> list[EvaluationInput]:
        """The conversations idle for ``idle_time`` (all: ``everything``), taken out."""
        ready: list[tuple[str, _Conversation]] = []
        with self.lock:
            for session_id, conversation in self.conversations.items():
                if not everything and now - conversation.last < self.spec.idle_time:
                    break  # ordered by last activity
                ready.append((session_id, conversation))
            for session_id, _ in ready:
                del self.conversations[session_id]
        out = []
        for session_id, c in ready:
            metadata = {**_metadata(c.labels), "session_id": session_id, "turns": len(c.inputs)}
            out.append(EvaluationInput(
                list(c.inputs), list(c.outputs), c.labels, session_id, session_id, metadata,
            ))  # fmt: skip
        return out


def _metadata(labels: RunLabels) -> dict[str, Any]:
    return {"plan": labels.plan, "version": labels.version, "layer": labels.layer,
            "step": labels.step}  # fmt: skip


class Evaluations:
    """The plan's evaluators at work for one router: sampling, background runs, evidence.

    Example:
        >>> from langchain_graylayer import MemoryStore, RolloutPlan
        >>> plan = RolloutPlan.default("p", evaluators=[{"name": "polite"}])
        >>> store = MemoryStore()
        >>> evaluations = Evaluations(
        ...     plan, {"polite": lambda i, o, meta: "please" in o},
        ...     EvidenceRecorder(store, plan), metrics=None,
        ... )
        >>> labels = RunLabels("p", "candidate", "normal", "0@1.000", "ab12", 2)
        >>> evaluations.run_ended(labels, "run-1", None, "refund?", "yes, please wait")
        >>> evaluations.drain(5.0)
        True
        >>> store.read_evidence("p", "normal", "0@1.000")["candidate"].total("eval.polite.pass")
        1.0
        >>> evaluations.close()
    """

    def __init__(
        self,
        plan: RolloutPlan,
        implementations: Mapping[str, Any],
        evidence: EvidenceRecorder | None,
        *,
        metrics: EvaluationMetrics | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Bind each of ``plan.evaluators`` to its implementation (by name; else its
        ``target``). Raises :class:`~langchain_graylayer.errors.ConfigurationError` for an
        implementation the plan does not declare, or a declared evaluator without one."""
        declared = {spec.name for spec in plan.evaluators}
        for name in implementations:
            if name not in declared:
                raise ConfigurationError(
                    "evaluators", name, f"one of the plan's evaluators ({sorted(declared)})"
                )
        self.plan, self.evidence, self.metrics, self.clock = plan, evidence, metrics, clock
        self.lanes = [
            _Lane(self, spec, bind(spec, implementations.get(spec.name)))
            for spec in plan.evaluators
        ]
        self._runs = [lane for lane in self.lanes if lane.spec.scope is EvaluatorScope.RUN]
        self._threads = [lane for lane in self.lanes if lane.spec.scope is not EvaluatorScope.RUN]
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._sweeper_lock = threading.Lock()

    # ------------------------------------------------------------------ the request path
    def run_ended(
        self, labels: RunLabels, run_id: str, session_id: str | None, input: Any, output: Any
    ) -> None:
        """A routed run answered: sample it for each evaluator and hand it over. Never raises."""
        try:
            for lane in self._runs:
                spec = lane.spec
                if sampled(spec.name, run_id, spec.sampling_rate):
                    metadata = {**_metadata(labels), "run_id": run_id, "session_id": session_id}
                    lane.submit(
                        EvaluationInput(input, output, labels, run_id, session_id, metadata)
                    )
            if session_id is not None and self._threads:
                for lane in self._threads:
                    lane.turn(labels, session_id, input, output)
                self._start_sweeper()
        except Exception:
            logger.exception("graylayer could not hand a run to its evaluators")

    # ------------------------------------------------------------------ results
    def count(self, labels: RunLabels, evaluator: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.outcome(self.plan.id, labels, evaluator, outcome)

    def scored(self, labels: RunLabels, evaluator: str, score: float) -> None:
        self.count(labels, evaluator, "pass" if score >= 0.5 else "fail")
        if self.metrics is not None:
            self.metrics.scores.labels(self.plan.id, labels.version, labels.layer, evaluator).inc(
                score
            )
        if self.evidence is not None:
            self.evidence.evaluation(labels, evaluator, score)

    # ------------------------------------------------------------------ conversations
    def _start_sweeper(self) -> None:
        if self._sweeper is not None:
            return
        with self._sweeper_lock:
            if self._sweeper is None and not self._stop.is_set():
                tick = min(max(min(lane.spec.idle_time for lane in self._threads) / 4, 0.05), 5.0)
                self._sweeper = threading.Thread(
                    target=_sweep, args=(weakref.ref(self), self._stop, tick),
                    name="graylayer-eval-conversations", daemon=True,
                )  # fmt: skip
                self._sweeper.start()

    def evaluate_idle(self, *, everything: bool = False) -> int:
        """Evaluate the conversations idle long enough (``everything``: all open ones, e.g. at
        shutdown); how many were handed over."""
        handed = 0
        for lane in self._threads:
            for data in lane.idle(self.clock(), everything):
                lane.submit(data)
                handed += 1
        return handed

    # ------------------------------------------------------------------ lifecycle
    def status(self) -> dict[str, dict[str, Any]]:
        """Per evaluator: sampling rate, paused (spend cap), last hour's spend, pending."""
        out = {}
        for lane in self.lanes:
            paused = lane.over_cap()
            with lane.lock:
                tokens, money = lane.spend.last_hour()
                out[lane.spec.name] = {
                    "scope": lane.spec.scope.value,
                    "sampling_rate": lane.spec.sampling_rate,
                    "paused": paused,
                    "tokens_last_hour": tokens,
                    "cost_last_hour": round(money, 6),
                    "pending": lane.pending,
                    "open_conversations": len(lane.conversations),
                }
        return out

    def drain(self, timeout: float) -> bool:
        """Wait until no evaluation is pending (for tests and shutdown); False at ``timeout``."""
        deadline = time.monotonic() + timeout
        while any(lane.pending for lane in self.lanes):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop the conversation sweeper and the pools (running evaluations finish)."""
        self._stop.set()
        for lane in self.lanes:
            lane.pool.shutdown(wait=False, cancel_futures=True)


def _sweep(owner: weakref.ref[Evaluations], stop: threading.Event, tick: float) -> None:
    """Evaluate idle conversations every ``tick`` seconds, until ``stop`` or until the
    evaluations are gone (a weak reference: the thread never keeps a router alive)."""
    while not stop.wait(tick):
        evaluations = owner()
        if evaluations is None:
            return
        try:
            evaluations.evaluate_idle()
        except Exception:
            logger.exception("graylayer could not evaluate idle conversations")
        del evaluations
