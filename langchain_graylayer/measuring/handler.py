"""Callback handlers that measure every routed run into
:class:`~langchain_graylayer.measuring.prometheus.GraylayerMetrics`.

GrayRouter attaches a handler to every run it makes when the runs' output cannot show their work
(LangGraph agents are measured from their messages instead:
:mod:`~langchain_graylayer.measuring.output`); you can also attach
:class:`GraylayerCallbackHandler` yourself (it is then the one that measures, never both). It reads
the labels the router writes into run metadata, and runs inline under sync and async code alike
(LangChain calls a ``run_inline`` sync handler in place from its async callback manager). End
and error hooks carry no metadata (langchain#14041), so the handler keeps ``run_id → labels``
from the start hooks, bounded and expiring, and finds a request by the
``graylayer.request_id`` metadata rather than by walking parents: that survives runs detached from
the tree (langchain#36072), streaming, ``batch`` and concurrent async requests.

A failure inside a handler is logged and counted in ``graylayer_handler_errors_total``; it never
reaches the user's request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from typing_extensions import override

from langchain_graylayer._cache import ExpiringLRU
from langchain_graylayer.measuring.completion import CompletionJudge, default_completion_judge
from langchain_graylayer.measuring.cost import ModelCall, RunCost, calls_of_result
from langchain_graylayer.measuring.events import tool_failed, tool_name
from langchain_graylayer.measuring.evidence import RequestResult
from langchain_graylayer.measuring.labels import (
    EVALUATOR_TAG,
    FALLBACK_KEY,
    PLAN_KEY,
    REASON_KEY,
    REQUEST_ID_KEY,
    Outcome,
    RunLabels,
    cancelled,
    carries_interrupt,
    interrupted,
    labels_from_metadata,
)
from langchain_graylayer.measuring.output import OutputCounts
from langchain_graylayer.measuring.prometheus import GraylayerMetrics, default_metrics
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.pricing import Pricing

if TYPE_CHECKING:
    from langchain_graylayer.measuring.journal import ToolCallJournal

__all__ = ["ChildRunsHandler", "GraylayerCallbackHandler"]

logger = logging.getLogger(__name__)


F = TypeVar("F", bound=Callable[..., None])


def _guarded(method: F) -> F:
    """Log and count any failure of a handler method instead of raising it."""

    @functools.wraps(method)
    def wrapper(self: Measurer, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception:
            logger.exception("graylayer callback %s failed; the request goes on", method.__name__)
            with contextlib.suppress(Exception):  # the counter failing must not raise either
                self.metrics.handler_errors.inc()

    return cast(F, wrapper)


def _request_id(metadata: Mapping[str, Any] | None) -> UUID | None:
    try:
        return UUID(str(metadata[REQUEST_ID_KEY])) if metadata else None
    except (KeyError, ValueError):
        return None


class _Request:
    __slots__ = ("cost", "fallback", "labels", "started", "tools")

    def __init__(self, labels: RunLabels, pricing: Pricing | None) -> None:
        self.labels = labels
        self.started = time.perf_counter()
        self.fallback = False
        self.tools = [0, 0]  # calls, errors
        self.cost = RunCost(pricing)  # tokens in and out, money, unpriced calls


class Measurer:
    """The state and logic shared by the sync and async handlers."""

    def __init__(
        self,
        metrics: GraylayerMetrics | None,
        judge: CompletionJudge,
        max_runs: int,
        run_ttl: float,
        pricing: Pricing | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else default_metrics()
        self.judge = judge
        self.run_ttl = run_ttl
        self.pricing = pricing
        self._lock = threading.Lock()
        self._requests: ExpiringLRU[UUID, _Request] = ExpiringLRU(max_runs, time.monotonic)
        self._runs: ExpiringLRU[UUID, tuple[RunLabels, str, UUID | None]] = ExpiringLRU(
            max_runs, time.monotonic
        )
        self._verdicts: ExpiringLRU[UUID, bool] = ExpiringLRU(max_runs, time.monotonic)

    def mark_completed(self, run_id: UUID, completed: bool) -> None:
        """Record a judge's verdict for a request before its run ends (overrides ``judge``)."""
        with self._lock:
            self._verdicts.set(run_id, completed, self.run_ttl)

    def pending(self) -> int:
        """Runs started and not yet ended (for tests and leak checks)."""
        with self._lock:
            return len(self._requests) + len(self._runs)

    @_guarded
    def chain_start(self, run_id: UUID, metadata: Mapping[str, Any] | None) -> None:
        if not metadata or REQUEST_ID_KEY not in metadata:
            return
        request_id = str(metadata[REQUEST_ID_KEY])
        if request_id == str(run_id):
            reason = metadata.get(REASON_KEY)
            labels = labels_from_metadata(metadata)
            if labels is None:  # a routed request always has a layer: this one was not routed
                if reason is not None:
                    self.metrics.record_unrouted(str(metadata.get(PLAN_KEY, "")), str(reason))
                return
            with self._lock:
                self._requests.set(run_id, _Request(labels, self.pricing), self.run_ttl)
        elif metadata.get(FALLBACK_KEY):
            self.mark_fallback(UUID(request_id))

    @_guarded
    def request_started(
        self, run_id: UUID, labels: RunLabels | None, plan: str, reason: str | None
    ) -> None:
        """A request started whose labels the caller knows (the router's own run): what
        :meth:`chain_start` reads from its metadata. ``labels=None``: it was not routed."""
        if labels is None:
            if reason is not None:
                self.metrics.record_unrouted(plan, reason)
            return
        with self._lock:
            self._requests.set(run_id, _Request(labels, self.pricing), self.run_ttl)

    @_guarded
    def mark_fallback(self, request_id: UUID) -> None:
        """The request's candidate failed and stable answers: not a completion, not an error."""
        with self._lock:
            request = self._requests.get(request_id)
        if request is not None:
            request.fallback = True

    def chain_end(
        self,
        run_id: UUID,
        outputs: Any,
        error: BaseException | None,
        *,
        paused: bool = False,
        work: Sequence[tuple[OutputCounts, bool]] = (),
    ) -> RequestResult | None:
        """Measure a request that ended; its result, for the evidence (``None``: not ours).
        ``paused``: the caller saw the run stop at a LangGraph interrupt (e.g. in a chunk).
        ``work``: what the request's runs did, read from their messages when no handler
        watched them: ``(counts, retry)``, ``retry`` for the stable answer after a fallback
        (stable's own work, never the request's)."""
        try:
            return self._chain_end(run_id, outputs, error, paused, work)
        except Exception:
            logger.exception("graylayer callback chain_end failed; the request goes on")
            with contextlib.suppress(Exception):
                self.metrics.handler_errors.inc()
            return None

    def _chain_end(
        self,
        run_id: UUID,
        outputs: Any,
        error: BaseException | None,
        paused: bool,
        work: Sequence[tuple[OutputCounts, bool]],
    ) -> RequestResult | None:
        with self._lock:
            request = self._requests.pop(run_id)
            verdict = self._verdicts.pop(run_id)
        if request is None:
            return None
        seconds = time.perf_counter() - request.started
        if cancelled(error):  # the client went away: not the version's failure
            outcome, completed = Outcome.CANCELLED, False
        elif paused or interrupted(error) or (error is None and carries_interrupt(outputs)):
            outcome, completed = Outcome.INTERRUPTED, False  # it resumes later: not ended
        elif error is not None:
            outcome, completed = Outcome.ERROR, False
        elif request.fallback:  # stable answered: the candidate did not complete the task
            outcome, completed = Outcome.FALLBACK, False
        else:
            outcome = Outcome.OK
            completed = verdict if verdict is not None else self._judge(outputs)
        if outcome is not Outcome.INTERRUPTED:  # its work counts when the thread resumes
            for counts, retry in work:
                self._record_work(request, counts, retry)
        self.metrics.record_request(request.labels, outcome, seconds, completed=completed)
        cost = request.cost
        calls, failed = request.tools
        return RequestResult(
            outcome, seconds, completed, calls, failed, cost.input_tokens, cost.output_tokens,
            cost=cost.cost, unpriced=cost.unpriced,
        )  # fmt: skip

    @_guarded
    def _record_work(self, request: _Request, counts: OutputCounts, retry: bool) -> None:
        """What the messages of one of the request's runs show, counted as the event handler
        counts it: per tool call and per direction of tokens, under the version that did it."""
        labels = request.labels
        if retry:
            labels = dataclasses.replace(labels, version=Version.STABLE.value)
        for name, ok in counts.tools:
            self.metrics.record_tool(labels, name, ok=ok)
        self._record_calls(labels, counts.calls, None if retry else request)
        if not retry:
            request.tools[0] += counts.tool_calls
            request.tools[1] += counts.tool_errors

    def _record_calls(
        self, labels: RunLabels, calls: Iterable[ModelCall], request: _Request | None
    ) -> None:
        """Model calls' tokens and money into the metrics, and into ``request``'s own count
        (``None``: a stable retry's or an unknown request's, for the metrics alone)."""
        run = request.cost if request is not None else RunCost(self.pricing)
        for call in calls:
            money = run.add(call)
            self.metrics.record_tokens(labels, input=call.input_tokens, output=call.output_tokens)
            if money is not None and self.pricing is not None:
                self.metrics.record_cost(labels, money, self.pricing.currency)

    def _judge(self, outputs: Any) -> bool:
        try:
            return bool(self.judge(outputs))
        except Exception:
            logger.exception("completion judge failed; counting the task as not completed")
            self.metrics.handler_errors.inc()
            return False

    @_guarded
    def child_start(
        self,
        run_id: UUID,
        metadata: Mapping[str, Any] | None,
        name: str | None,
        tags: list[str] | None = None,
    ) -> None:
        """A descendant run started: a tool (``name``: the tool's) or a model (``name``: the
        model's ``ls_model_name``, for calls whose response names none). An evaluator's run
        (tagged :data:`EVALUATOR_TAG`) is not the agent's and is not measured."""
        labels = labels_from_metadata(metadata)
        if labels is not None and not (tags and EVALUATOR_TAG in tags):
            request = _request_id(metadata)
            with self._lock:
                self._runs.set(run_id, (labels, name or "unknown", request), self.run_ttl)

    def _pop_child(self, run_id: UUID) -> tuple[RunLabels, str, _Request | None] | None:
        with self._lock:
            child = self._runs.pop(run_id)
            if child is None:
                return None
            labels, name, request_id = child
            return labels, name, None if request_id is None else self._requests.get(request_id)

    @_guarded
    def tool_end(self, run_id: UUID, output: Any, error: BaseException | None) -> None:
        child = self._pop_child(run_id)
        if child is not None:
            failed = error is not None or tool_failed(output)
            self.metrics.record_tool(child[0], child[1], ok=not failed)
            if child[2] is not None and not child[2].fallback:  # the request's own count
                child[2].tools[0] += 1
                child[2].tools[1] += failed

    @_guarded
    def llm_end(self, run_id: UUID, response: LLMResult | None) -> None:
        child = self._pop_child(run_id)
        if child is None or response is None:
            return
        labels, model, request = child
        # The request's own count (not its stable retry's), or a count for the metrics alone.
        own = request if request is not None and not request.fallback else None
        self._record_calls(labels, calls_of_result(response, model), own)


def _model_of(metadata: Mapping[str, Any] | None) -> str:
    """The model a chat model run says it is (LangChain's ``ls_model_name``), or ``""``."""
    name = metadata.get("ls_model_name") if metadata else None
    return name if isinstance(name, str) else ""


class GraylayerCallbackHandler(BaseCallbackHandler):
    """Measures routed runs: requests, latency, completion, tool calls, tokens.

    Runs inline (no thread hop, also under async), does O(1) work per event, and never raises.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from langchain_graylayer.measuring.prometheus import GraylayerMetrics
        >>> handler = GraylayerCallbackHandler(GraylayerMetrics(registry=CollectorRegistry()))
        >>> handler.pending()
        0
    """

    run_inline = True
    raise_error = False

    def __init__(
        self,
        metrics: GraylayerMetrics | None = None,
        *,
        judge: CompletionJudge = default_completion_judge,
        max_runs: int = 100_000,
        run_ttl: float = 3600.0,
        journal: ToolCallJournal | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        """``judge`` decides task completion from the final output; ``max_runs`` and ``run_ttl``
        bound the state kept for runs that never end (cancelled streams, detached runs);
        ``journal`` also records the candidate's tool calls (one handler instead of two);
        ``pricing`` (the plan's price table) turns tokens into money (``None``: tokens only)."""
        self.measurer = Measurer(metrics, judge, max_runs, run_ttl, pricing)
        self.journal = journal

    @property
    def metrics(self) -> GraylayerMetrics:
        return self.measurer.metrics

    def pending(self) -> int:
        """Runs started and not yet ended."""
        return self.measurer.pending()

    def mark_completed(self, run_id: UUID, completed: bool) -> None:
        """Record a judge's verdict for request ``run_id`` before its run ends."""
        self.measurer.mark_completed(run_id, completed)

    @override
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.measurer.chain_start(run_id, metadata)

    @override
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.measurer.chain_end(run_id, outputs, None)

    @override
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.measurer.chain_end(run_id, None, error)

    @override
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.measurer.child_start(
            run_id, metadata, tool_name(serialized, kwargs), kwargs.get("tags")
        )
        if self.journal is not None:  # it logs its own failures, never raises
            self.journal.on_tool_start(
                serialized, input_str, run_id=run_id, metadata=metadata, **kwargs
            )

    @override
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.measurer.tool_end(run_id, output, None)

    @override
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.measurer.tool_end(run_id, None, error)

    @override
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.measurer.child_start(run_id, metadata, _model_of(metadata), kwargs.get("tags"))

    @override
    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.measurer.child_start(run_id, metadata, _model_of(metadata), kwargs.get("tags"))

    @override
    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self.measurer.llm_end(run_id, response)

    @override
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.measurer.llm_end(run_id, None)


class ChildRunsHandler(GraylayerCallbackHandler):
    """The router's own handler. The router reports each request's start and end itself, so
    LangChain skips this handler for every chain event (a LangGraph agent run has dozens) and it
    measures the descendants: tool calls and tokens."""

    ignore_chain = True
