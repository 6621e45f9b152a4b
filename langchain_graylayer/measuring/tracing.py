"""OpenTelemetry spans for routed requests, named after the GenAI semantic conventions.

:class:`GraylayerTracingHandler` opens one ``invoke_agent`` span per request that a
:class:`~langchain_graylayer.routing.router.GrayRouter` routes, with ``execute_tool`` and ``chat``
child spans, all labelled with the plan, version and layer that served it. Like the metrics handler
it finds the request by its ``graylayer.request_id`` metadata, and parents child spans on the
request span explicitly, as callbacks may run on other threads. The request span's parent is the
span current when the request starts (an HTTP server span, say).

The GenAI conventions are in *Development* (their semconv constants are deprecated): names are
plain strings here. ``opentelemetry-api`` is imported only when a handler is built; without it the
handler does nothing. Runs that never end are forgotten after ``run_ttl`` (and beyond
``max_runs``): their spans are dropped unended, never exported. Failures are logged, never raised.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from typing_extensions import override

from langchain_graylayer._cache import ExpiringLRU
from langchain_graylayer.measuring.events import token_usage, tool_failed, tool_name
from langchain_graylayer.measuring.labels import (
    FALLBACK_KEY,
    LAYER_KEY,
    PLAN_KEY,
    REASON_KEY,
    REQUEST_ID_KEY,
    SESSION_KEY,
    VERSION_KEY,
    interrupted,
)

__all__ = ["GraylayerTracingHandler"]

logger = logging.getLogger(__name__)

TRACER_NAME = "langchain_graylayer"
OPERATION_NAME = "gen_ai.operation.name"
AGENT_NAME = "gen_ai.agent.name"
AGENT_VERSION = "gen_ai.agent.version"
CONVERSATION_ID = "gen_ai.conversation.id"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ERROR_TYPE = "error.type"
HANDLED_TOOL_ERROR = "tool_error"
"""``error.type`` of a tool error the tool handled itself (a ToolMessage with error status)."""

_LABELS = (PLAN_KEY, VERSION_KEY, LAYER_KEY, REQUEST_ID_KEY, REASON_KEY)
_CONVERSATION = (SESSION_KEY, "session_id", "thread_id")  # the router's, then the caller's
TRACE_ID_TTL = 600.0  # how long trace_id_of remembers an ended request

F = TypeVar("F", bound=Callable[..., None])
_Tokens = tuple[int, int]


def _traced(method: F) -> F:
    """Return at once without a tracer; log any failure (``_guarded`` would count a metric)."""

    @functools.wraps(method)
    def wrapper(self: GraylayerTracingHandler, *args: Any, **kwargs: Any) -> None:
        if self._tracer is None:
            return
        try:
            method(self, *args, **kwargs)
        except Exception:
            logger.exception("graylayer tracing %s failed; the request goes on", method.__name__)

    return cast(F, wrapper)


def _span_attributes(metadata: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {key: str(metadata[key]) for key in _LABELS if key in metadata}
    if metadata.get(FALLBACK_KEY):
        attributes[FALLBACK_KEY] = True
    return attributes


@dataclass
class _Run:
    """An open span; a request's own run has ``request_id`` equal to its run id."""

    span: Any
    request_id: str
    trace_id: str | None = None
    fallback: bool = False
    input_tokens: int = 0
    output_tokens: int = 0


class GraylayerTracingHandler(BaseCallbackHandler):
    """Traces routed requests as OpenTelemetry spans: agent, tool calls and chat model calls.

    Runs inline (no thread hop, also under async), does O(1) work per event, and never raises.

    Args:
        tracer: an OpenTelemetry ``Tracer``; ``None`` means the global tracer provider's
            ``langchain_graylayer`` tracer, or a no-op handler without ``opentelemetry-api``.
        agent_name: ``gen_ai.agent.name`` of the request spans; default the plan id.
        max_runs: most runs tracked at once; the least recently used are dropped beyond it.
        run_ttl: seconds after which a run that never ended is dropped (its span unexported).

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> handler = GraylayerTracingHandler(TracerProvider().get_tracer("demo"))
        >>> handler.enabled, handler.pending(), handler.trace_id_of("no-such-run")
        (True, 0, None)
        >>> # router.invoke(question, {"callbacks": [handler], "configurable": {"user_id": "u1"}})
    """

    run_inline = True
    raise_error = False

    def __init__(
        self,
        tracer: Any = None,
        *,
        agent_name: str | None = None,
        max_runs: int = 100_000,
        run_ttl: float = 3600.0,
    ) -> None:
        self.agent_name = agent_name
        self.run_ttl = run_ttl
        self._otel: Any = None
        self._tracer: Any = None
        try:
            from opentelemetry import trace
        except ImportError:  # the [otel] extra is not installed
            if tracer is not None:
                logger.warning("opentelemetry-api is not installed; graylayer tracing is off")
        else:
            self._otel = trace
            self._tracer = tracer if tracer is not None else trace.get_tracer(TRACER_NAME)
        self._lock = threading.Lock()
        self._runs: ExpiringLRU[str, _Run] = ExpiringLRU(max_runs, time.monotonic)
        self._trace_ids: ExpiringLRU[str, str] = ExpiringLRU(10_000, time.monotonic)

    @property
    def enabled(self) -> bool:
        """False when the handler does nothing (no OpenTelemetry API)."""
        return self._tracer is not None

    def pending(self) -> int:
        """Spans started and not yet ended (for tests and leak checks)."""
        with self._lock:
            return len(self._runs)

    def trace_id_of(self, run_id: UUID | str) -> str | None:
        """The hex trace id of request ``run_id`` while it runs and for 10 minutes after.

        ``run_id`` is the router's run id (``graylayer.request_id``); ``None`` when it is unknown,
        forgotten, or was traced by a non-recording tracer.
        """
        key = str(run_id)
        with self._lock:
            run = self._runs.get(key)
            return run.trace_id if run is not None else self._trace_ids.get(key)

    # Start hooks take run_id, metadata, name, tool_call_id... as **kwargs: compatible and short.
    @_traced
    @override
    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        metadata = kwargs.get("metadata")
        if not metadata or REQUEST_ID_KEY not in metadata:
            return
        request_id = str(metadata[REQUEST_ID_KEY])
        if request_id != str(kwargs["run_id"]):
            if metadata.get(FALLBACK_KEY):
                self._mark_fallback(request_id)
            return
        with self._lock:
            if self._runs.get(request_id) is not None:  # the same handler attached twice
                return
        agent = self.agent_name or str(metadata.get(PLAN_KEY, "agent"))
        attributes = {
            OPERATION_NAME: "invoke_agent",
            AGENT_NAME: agent,
            **_span_attributes(metadata),
        }
        if VERSION_KEY in metadata:
            attributes[AGENT_VERSION] = str(metadata[VERSION_KEY])
        conversation = next((metadata[k] for k in _CONVERSATION if metadata.get(k)), None)
        if conversation:
            attributes[CONVERSATION_ID] = str(conversation)
        span = self._tracer.start_span(
            f"invoke_agent {agent}", kind=self._otel.SpanKind.INTERNAL, attributes=attributes
        )
        context = span.get_span_context()
        run = _Run(span, request_id, f"{context.trace_id:032x}" if context.is_valid else None)
        with self._lock:
            self._runs.set(request_id, run, self.run_ttl)

    def _mark_fallback(self, request_id: str) -> None:
        with self._lock:
            request = self._runs.get(request_id)
            if request is None or request.fallback:
                return
            request.fallback = True
        request.span.set_attribute(FALLBACK_KEY, True)

    def _start_child(
        self, event: Mapping[str, Any], operation: str, target: str | None, kind: str, **extra: Any
    ) -> None:
        """Open span ``"{operation} {target}"`` under the request span of the run's metadata."""
        metadata = event.get("metadata")
        if not metadata or REQUEST_ID_KEY not in metadata:
            return
        request_id = str(metadata[REQUEST_ID_KEY])
        if metadata.get(FALLBACK_KEY):
            self._mark_fallback(request_id)
        with self._lock:
            request = self._runs.get(request_id)
        if request is None:  # a request this handler did not see start
            return
        attributes = {OPERATION_NAME: operation, **_span_attributes(metadata)}
        attributes.update({key: value for key, value in extra.items() if value is not None})
        span = self._tracer.start_span(
            f"{operation} {target}" if target else operation,
            context=self._otel.set_span_in_context(request.span),
            kind=getattr(self._otel.SpanKind, kind),
            attributes=attributes,
        )
        with self._lock:
            self._runs.set(str(event["run_id"]), _Run(span, request_id), self.run_ttl)

    def _end(self, run_id: UUID, failure: BaseException | str | None, usage: _Tokens) -> None:
        """End the span of ``run_id``; a model call's ``usage`` also counts for its request."""
        key = str(run_id)
        with self._lock:
            run = self._runs.pop(key)
            if run is None:
                return
            if run.request_id == key:
                usage = run.input_tokens, run.output_tokens
                if run.trace_id is not None:
                    self._trace_ids.set(key, run.trace_id, TRACE_ID_TTL)
            elif (request := self._runs.get(run.request_id)) is not None:
                request.input_tokens += usage[0]
                request.output_tokens += usage[1]
        if any(usage):
            run.span.set_attributes({INPUT_TOKENS: usage[0], OUTPUT_TOKENS: usage[1]})
        if isinstance(failure, BaseException) and interrupted(failure):  # paused, not failed
            run.span.set_attribute("graylayer.interrupted", True)
            failure = None
        if isinstance(failure, BaseException):
            run.span.record_exception(failure)
            failure = type(failure).__name__
        if failure is not None:  # an exception's class name, or a handled error's type
            run.span.set_attribute(ERROR_TYPE, failure)
            run.span.set_status(self._otel.Status(self._otel.StatusCode.ERROR))
        run.span.end()

    @_traced
    @override
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None, (0, 0))

    @_traced
    @override
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error, (0, 0))

    @_traced
    @override
    def on_tool_start(self, serialized: Any, input_str: Any, **kwargs: Any) -> None:
        tool = tool_name(serialized, kwargs) or "unknown"
        extra = {TOOL_NAME: tool, TOOL_CALL_ID: kwargs.get("tool_call_id")}
        self._start_child(kwargs, "execute_tool", tool, "INTERNAL", **extra)

    @_traced
    @override
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, HANDLED_TOOL_ERROR if tool_failed(output) else None, (0, 0))

    @_traced
    @override
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error, (0, 0))

    @_traced
    @override
    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self._start_model(kwargs, "chat")

    @_traced
    @override
    def on_llm_start(self, serialized: Any, prompts: Any, **kwargs: Any) -> None:
        self._start_model(kwargs, "text_completion")

    def _start_model(self, event: Mapping[str, Any], operation: str) -> None:
        metadata = event.get("metadata") or {}
        model = metadata.get("ls_model_name")
        extra = {REQUEST_MODEL: model, PROVIDER_NAME: metadata.get("ls_provider")}
        self._start_child(event, operation, model, "CLIENT", **extra)

    @_traced
    @override
    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None, token_usage(response))

    @_traced
    @override
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error, (0, 0))
