"""Run plumbing for the router: what measures a request, its own run's callback manager, the
handlers it adds to a config, and the output of a streamed run.

Nothing here knows about plans or versions; ``router.py`` uses it for each request.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    BaseCallbackHandler,
)
from langchain_core.messages import BaseMessageChunk
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_async_callback_manager_for_config

from langchain_graylayer.measuring.handler import (
    AsyncGraylayerCallbackHandler,
    GraylayerCallbackHandler,
)
from langchain_graylayer.measuring.handler import _Measurer as Measurer

Output = TypeVar("Output")

MEASURING = (GraylayerCallbackHandler, AsyncGraylayerCallbackHandler)
"""Handlers that measure requests: with one of them in the caller's callbacks, the router adds
none of its own."""


class RouterHandler(GraylayerCallbackHandler):
    """The router's own handler. The router reports each request's start and end itself, so
    LangChain skips this handler for every chain event (a LangGraph agent run has dozens)."""

    ignore_chain = True


class Call:
    """One routed request: its labelled config, its run id, and what measures it (``None`` when
    a handler attached by the caller measures requests from chain events)."""

    __slots__ = ("config", "measurer", "run_id")

    def __init__(self, config: RunnableConfig, run_id: UUID, measurer: Measurer | None) -> None:
        self.config, self.run_id, self.measurer = config, run_id, measurer

    def started(self) -> None:
        if self.measurer is not None:
            self.measurer.chain_start(self.run_id, self.config.get("metadata"))

    def fell_back(self) -> None:
        if self.measurer is not None:
            self.measurer.mark_fallback(self.run_id)

    def ended(self, output: Any, error: BaseException | None = None) -> None:
        if self.measurer is not None:
            self.measurer.chain_end(self.run_id, output, error)


class _InPlace:
    """An async handler that is not ``run_inline``, awaited in place for the router's own events.

    LangChain runs such handlers (LangServe's per-request event aggregator is one) through
    ``asyncio.gather``: a task and a few event-loop turns per event, about 35 µs. The router's own
    run has two events and does nothing while they are handled, so it awaits the handler directly
    (several such handlers: one after the other). Only the router's own run manager sees the
    wrapper: its children inherit the handler itself.
    """

    __slots__ = ("handler",)
    run_inline = True

    def __init__(self, handler: AsyncCallbackHandler) -> None:
        self.handler = handler

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)


def own_run_manager(config: RunnableConfig) -> AsyncCallbackManager:
    """The callback manager of the router's own run (async)."""
    manager = get_async_callback_manager_for_config(config)
    handlers = manager.handlers
    if not all(h.run_inline for h in handlers):
        manager.handlers = [
            cast(BaseCallbackHandler, _InPlace(h))
            if isinstance(h, AsyncCallbackHandler) and not h.run_inline
            else h
            for h in handlers
        ]  # ``inheritable_handlers``, what children get, is a separate list: left as it is
    return manager


def with_handlers(callbacks: Any, handlers: list[BaseCallbackHandler]) -> Any:
    """``callbacks`` (a list, a manager or ``None``) plus inheritable ``handlers``, as
    ``merge_configs`` combines them; a manager is copied, never changed."""
    if callbacks is None:
        return handlers
    if isinstance(callbacks, list):
        return [*callbacks, *handlers]
    merged = callbacks.copy()
    for handler in handlers:
        merged.add_handler(handler, inherit=True)
    return merged


def handlers_in(callbacks: Any) -> list[Any]:
    """The handlers the caller attached (a list, or a callback manager's)."""
    handlers = getattr(callbacks, "handlers", callbacks)
    return handlers if isinstance(handlers, list) else []


def merge_message_pair(previous: Any, chunk: Any) -> Any:
    """``stream_mode="messages"`` yields ``(message chunk, metadata)``: keep the latest message,
    merged with the previous chunks of the same message; other sequences: the last one."""
    if len(chunk) != 2 or not isinstance(chunk[0], BaseMessageChunk):
        return chunk
    message = chunk[0]
    if (
        isinstance(previous, tuple)
        and previous
        and isinstance(previous[0], BaseMessageChunk)
        and previous[0].id == message.id
        and type(previous[0]) is type(message)
    ):
        message = previous[0] + message
    return (message, chunk[1])


class Accumulator(Generic[Output]):
    """The streamed run's output: the sum of its chunks, or the last chunk when they do not add
    up (e.g. LangGraph's per-node update dicts), so the completion judge still sees the answer."""

    def __init__(self) -> None:
        self.value: Output | None = None
        self.started = False
        self._addable = True

    def add(self, chunk: Output) -> None:
        if isinstance(chunk, (tuple, list)):
            self.value, self.started = merge_message_pair(self.value, chunk), True
            self._addable = False  # never concatenate tuples or lists of chunks
        elif not self.started:
            self.value, self.started = chunk, True
        elif self._addable:
            try:
                self.value = cast(Any, self.value) + chunk
            except TypeError:
                self.value, self._addable = chunk, False
        else:
            self.value = chunk
