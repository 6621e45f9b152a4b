"""What watches a routed run: built once per router, asked once per request.

A :class:`RunObserver` holds everything that observes the router's runs — the metrics handler
(which also journals the candidate's tool calls), the tracing handler, the run index that
attributes later feedback, and the background completion judge — and :meth:`RunObserver.open`
gives each request its labelled config: the plan, version, layer and request id in the run's
metadata and tags (so every descendant run carries them), and the observers as inheritable
callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_graylayer.measuring.completion import (
    BackgroundJudge,
    CompletionJudge,
    default_completion_judge,
)
from langchain_graylayer.measuring.evaluation import EvaluationMetrics, Evaluations
from langchain_graylayer.measuring.evidence import EvidenceRecorder, RequestResult
from langchain_graylayer.measuring.feedback import FeedbackRecorder, RunIndex
from langchain_graylayer.measuring.handler import (
    ChildRunsHandler,
    GraylayerCallbackHandler,
    Measurer,
)
from langchain_graylayer.measuring.journal import ToolCallJournal
from langchain_graylayer.measuring.labels import (
    FALLBACK_KEY,
    FALLBACK_TAG,
    LAYER_KEY,
    PLAN_KEY,
    REASON_KEY,
    REQUEST_ID_KEY,
    SESSION_KEY,
    VERSION_KEY,
    Outcome,
    RunLabels,
    cancelled,
    carries_interrupt,
    interrupted,
    layer_tag,
    plan_tag,
    version_tag,
)
from langchain_graylayer.measuring.output import OutputCounts, RunMessages, shows_messages
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.measuring.tracing import GraylayerTracingHandler
from langchain_graylayer.plan.plan import RolloutPlan, Version
from langchain_graylayer.plan.pricing import Pricing
from langchain_graylayer.routing.decision import RoutingDecision
from langchain_graylayer.routing.runs import handlers_in, with_handlers
from langchain_graylayer.store.protocols import RoutingStore

__all__ = ["Call", "RunObserver", "labels_of", "reads_outputs"]


class Call:
    """One routed request: its labelled config, its run id, what measures it (``None`` when a
    handler attached by the caller measures requests from chain events), and where its
    evidence goes."""

    __slots__ = (
        "config", "decision", "evidence", "fell_back", "labels", "measurer", "paused", "run",
        "run_id", "started_at", "work",
    )  # fmt: skip

    def __init__(
        self,
        config: RunnableConfig,
        run_id: UUID,
        decision: RoutingDecision,
        measurer: Measurer | None,
        evidence: EvidenceRecorder | None = None,
        run: RunMessages | None = None,
        labels: RunLabels | None = None,
    ) -> None:
        self.config, self.run_id, self.decision, self.measurer = config, run_id, decision, measurer
        self.evidence = evidence
        self.run = run
        """Reads the tool calls and tokens from the run's messages (``None``: a handler on the
        descendant runs counts them)."""
        self.work: list[tuple[OutputCounts, bool]] = []
        self.labels = labels if labels is not None else labels_of(decision)
        self.started_at = time.perf_counter()
        self.fell_back = False
        self.paused = False
        """A streamed chunk said the run paused at a LangGraph ``interrupt()``."""

    def started(self) -> None:
        self.started_at = time.perf_counter()
        if self.measurer is not None:
            decision = self.decision
            self.measurer.request_started(
                self.run_id, self.labels, decision.plan_id, decision.reason.value
            )

    def ended(self, output: Any, error: BaseException | None = None) -> None:
        result = None
        if self.measurer is not None:
            work = self.work
            if self.run is not None:
                raised = error is not None and not cancelled(error)
                work = [*work, (self.run.counts(raised=raised), self.fell_back)]
            result = self.measurer.chain_end(
                self.run_id, output, error, paused=self.paused, work=work
            )
        if self.evidence is None or self.labels is None or not self.labels.attributable:
            return
        if result is None:  # measured by a handler of the caller's: what this call saw
            seconds = time.perf_counter() - self.started_at
            if cancelled(error):
                result = RequestResult(Outcome.CANCELLED, seconds, completed=False)
            elif self.interrupted(output, error):
                result = RequestResult(Outcome.INTERRUPTED, seconds, completed=False)
            elif error is not None or self.fell_back:
                outcome = Outcome.ERROR if error is not None else Outcome.FALLBACK
                result = RequestResult(outcome, seconds, completed=False)
            else:
                completed = default_completion_judge(output)
                result = RequestResult(Outcome.OK, seconds, completed=completed)
        self.evidence.request(self.labels, result)

    def interrupted(self, output: Any, error: BaseException | None = None) -> bool:
        """True when the run paused at a LangGraph interrupt rather than ended."""
        if error is not None:
            return interrupted(error)
        return self.paused or carries_interrupt(output)

    def fallback_config(self) -> RunnableConfig:
        """The stable retry's config: relabelled stable and tagged fallback (the request now
        counts as a fallback of the candidate, not an error and not a completion)."""
        self.fell_back = True
        if self.measurer is not None:
            self.measurer.mark_fallback(self.run_id)
        if self.run is not None:  # the candidate's work until it raised; stable's comes next
            self.work.append((self.run.counts(raised=True), False))
            self.run = RunMessages(self.run.mode, subgraphs=self.run.subgraphs)
        config = self.config
        stale = version_tag(Version.CANDIDATE.value)
        return {
            **config,
            "metadata": {
                **config.get("metadata", {}),
                VERSION_KEY: Version.STABLE.value,
                FALLBACK_KEY: True,
            },
            "tags": [
                *(t for t in config.get("tags", []) if t != stale),
                version_tag(Version.STABLE.value),
                FALLBACK_TAG,
            ],
        }


def labels_of(decision: RoutingDecision) -> RunLabels | None:
    """The labels a routed run is measured and attributed under (``None``: not routed)."""
    if decision.layer is None:
        return None
    return RunLabels(
        decision.plan_id, decision.version.value, decision.layer, decision.step, decision.unit,
        decision.activity,
    )  # fmt: skip


class RunObserver:
    """The observers of one router's runs, built when the router is.

    ``metrics=None`` measures nothing (an uninstrumented router); the candidate's tool calls are
    still journaled when a ``journal`` is given, and feedback is still attributed.
    ``pricing`` (the plan's price table) turns each request's tokens into money.
    """

    def __init__(
        self,
        *,
        metrics: GraylayerMetrics | None,
        completion_judge: CompletionJudge | Runnable[Any, Any] | None,
        journal: ToolCallJournal | None,
        tracing: GraylayerTracingHandler | None,
        feedback: FeedbackRecorder,
        evidence: EvidenceRecorder | None = None,
        evaluations: Evaluations | None = None,
        pricing: Pricing | None = None,
        subgraphs: bool = False,
    ) -> None:
        self.journal = journal
        self.evaluations = evaluations
        self.subgraphs = subgraphs
        """Measured from their output, runs show their subgraphs' states too."""
        self.evidence = evidence
        self.tracing = tracing
        self.feedback = feedback
        self.handler: ChildRunsHandler | None = None
        self.background: BackgroundJudge | None = None
        if metrics is not None:
            judge = completion_judge
            if isinstance(judge, Runnable):  # a Runnable judge runs after the answer
                self.background = BackgroundJudge(judge, metrics)
            if judge is None or isinstance(judge, Runnable):
                judge = default_completion_judge
            # One handler measures and journals: each handler on a run costs every event a
            # dispatch through LangChain's callback manager.
            self.handler = ChildRunsHandler(metrics, judge=judge, journal=journal, pricing=pricing)

    @classmethod
    def of_plan(
        cls,
        plan: RolloutPlan,
        store: RoutingStore,
        *,
        metrics: GraylayerMetrics | None,
        clock: Callable[[], float],
        completion_judge: CompletionJudge | Runnable[Any, Any] | None = None,
        tracer: Any = None,
        journal_tool_calls: bool = True,
        feedback_ttl: float = 86400.0,
        evaluators: Mapping[str, Any] | None = None,
        subgraphs: bool = False,
    ) -> RunObserver:
        """A router's observer of ``plan``'s runs: ``metrics`` (``None``: not instrumented)
        start their arms and watch the ratios; the candidate's side-effecting tool calls are
        journaled, runs traced with ``tracer``, evidence recorded, the plan's evaluators run."""
        if metrics is not None:
            priced = plan.pricing.currency if plan.pricing.models else None
            metrics.init_arms(plan.id, plan.layer_names, priced)
            metrics.watch_ratios(plan, store)
        journal = None
        tools = plan.judging.side_effect_tools
        if journal_tool_calls and tools:  # the plan names side effects: watch for them
            journal = ToolCallJournal(store, () if "*" in tools else tools, clock=clock)
        tracing = None
        if tracer is not None:
            tracing = GraylayerTracingHandler(tracer, agent_name=plan.id)
        evidence = EvidenceRecorder(store, plan)
        evaluations = None
        if plan.evaluators:
            evaluation_metrics = None if metrics is None else EvaluationMetrics.of(metrics.registry)
            evaluations = Evaluations(plan, evaluators or {}, evidence, metrics=evaluation_metrics)
        return cls(
            metrics=metrics,
            completion_judge=completion_judge,
            journal=journal,
            tracing=tracing,
            feedback=FeedbackRecorder(metrics, RunIndex(ttl=feedback_ttl, clock=clock), evidence),
            evidence=evidence,
            evaluations=evaluations,
            pricing=plan.pricing,
            subgraphs=subgraphs,
        )

    def open(
        self,
        config: RunnableConfig,
        decision: RoutingDecision,
        run_id: UUID,
        mode: str | None = None,
    ) -> Call:
        """The request's labelled config and what measures it; records the run for feedback.

        ``mode``: the run's messages show its work, in its final state or its chunks of this
        stream mode (``"values"`` or ``"updates"``), so no handler watches its descendants;
        ``None``: the metrics handler does."""
        request_id = str(run_id)
        metadata: dict[str, Any] = {
            PLAN_KEY: decision.plan_id,
            VERSION_KEY: decision.version.value,
            REQUEST_ID_KEY: request_id,
            REASON_KEY: decision.reason.value,
        }
        tags = [plan_tag(decision.plan_id), version_tag(decision.version.value)]
        if decision.session_id is not None:
            metadata[SESSION_KEY] = decision.session_id
        labels = labels_of(decision)
        if labels is not None:
            metadata[LAYER_KEY] = labels.layer
            tags.append(layer_tag(labels.layer))
            self.feedback.index.record(request_id, labels)
        callbacks = config.get("callbacks")
        present = handlers_in(callbacks)
        if mode is not None and any(isinstance(h, GraylayerCallbackHandler) for h in present):
            mode = None  # a handler of the caller's (or an outer router's) counts the work
        handlers, measurer = self._observers(present, decision, from_output=mode is not None)
        # What ``merge_configs(config, {"metadata", "tags", "callbacks"})`` gives, without its
        # generic merging of every key (it runs on every request).
        labelled: RunnableConfig = {
            **config,
            "metadata": {**config.get("metadata", {}), **metadata},
            "tags": sorted({*config.get("tags", []), *tags}),
        }
        if handlers:
            labelled["callbacks"] = with_handlers(callbacks, handlers)
        run = None
        if mode is not None and measurer is not None:
            run = RunMessages(mode, subgraphs=self.subgraphs)
        return Call(labelled, run_id, decision, measurer, self.evidence, run, labels)

    def _observers(
        self, present: list[Any], decision: RoutingDecision, *, from_output: bool = False
    ) -> tuple[list[BaseCallbackHandler], Measurer | None]:
        """The handlers to add, and what measures the request itself. A measuring handler the
        caller attached measures instead of ours (never both); an outer router's handler
        measures the descendants, and this router still reports its own request. Measured
        ``from_output``, the descendants get no metrics handler."""
        handlers: list[BaseCallbackHandler] = []
        measurer = None
        handler = self.handler
        if handler is not None:
            if not from_output and not any(
                isinstance(h, GraylayerCallbackHandler) for h in present
            ):
                handlers.append(handler)  # it journals the candidate's tool calls too
            if not any(
                isinstance(h, GraylayerCallbackHandler) and not isinstance(h, ChildRunsHandler)
                for h in present
            ):
                measurer = handler.measurer
        if not handlers and self.journal is not None and decision.version is Version.CANDIDATE:
            handlers.append(self.journal)
        if self.tracing is not None and not any(
            isinstance(h, GraylayerTracingHandler) for h in present
        ):
            handlers.append(self.tracing)
        return handlers, measurer

    def answered(self, call: Call, output: Any) -> None:
        """The request answered: hand its output to a background completion judge, if any."""
        background, handler = self.background, self.handler
        if background is None or handler is None or call.labels is None:
            return
        if call.interrupted(output):  # paused for a person: nothing to judge until it resumes
            return
        handler.mark_completed(call.run_id, False)  # counted when (and if) the judge accepts
        labels = call.labels
        evidence = self.evidence if labels is not None and labels.attributable else None
        background.submit(output, labels, then=None if evidence is None else evidence.completion)

    def evaluate(self, call: Call, input: Any, output: Any) -> None:
        """The request answered: hand it to the plan's evaluators (sampled, in the background).
        A fallback (stable answered for the candidate) and a paused run are not evaluated."""
        evaluations, labels = self.evaluations, call.labels
        if evaluations is None or labels is None or not labels.attributable or call.fell_back:
            return
        if call.interrupted(output):
            return
        session = call.decision.session_id
        evaluations.run_ended(labels, str(call.run_id), session, input, output)


def reads_outputs(plan: RolloutPlan, versions: tuple[Any, ...]) -> bool:
    """Whether a router of ``plan`` over ``versions`` can count each request from the messages
    it returns: every version is a LangGraph agent, and no guardrail needs the model calls made
    inside tools (cost), which only a handler on the descendant runs sees."""
    watches_cost = any(
        guardrail.metric.relative
        for layer in plan.layer_names
        for guardrail in plan.gates_for(layer).guardrails
    )
    return not watches_cost and all(shows_messages(version) for version in versions)
