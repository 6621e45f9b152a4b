"""Run plumbing for the router: its own run's callback manager, the handlers it adds to a
config, the output of a streamed run, and its run ids.

Nothing here knows about plans or versions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar, cast
from uuid import UUID, uuid4

from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    BaseCallbackHandler,
)
from langchain_core.messages import BaseMessageChunk
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_async_callback_manager_for_config

from langchain_graylayer.measuring.labels import carries_interrupt
from langchain_graylayer.measuring.output import RunMessages, ainvoke_tracked, invoke_tracked

try:  # langchain-core 1.x makes UUIDv7 run ids; keep ours of the same kind
    from langchain_core.utils.uuid import uuid7 as _uuid7
except ImportError:  # pragma: no cover - releases without it
    _uuid7 = None  # type: ignore[assignment]

__all__ = [
    "Accumulator",
    "ainvoke_child",
    "astream_child",
    "child_config",
    "handlers_in",
    "invoke_child",
    "merge_message_pair",
    "new_run_id",
    "own_run_manager",
    "paused_in_state",
    "paused_in_state_async",
    "stream_child",
    "with_handlers",
]

Output = TypeVar("Output")


def new_run_id() -> UUID:
    """A new run id, of the kind langchain-core makes (UUIDv7 where it can)."""
    return _uuid7() if _uuid7 is not None else uuid4()


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


def child_config(config: RunnableConfig, callbacks: Any) -> RunnableConfig:
    """The chosen runnable's config: the router's (already ensured, once per request) with the
    callbacks of the router's own run's children, and without its run name and id. What
    ``patch_config(config, callbacks=...)`` gives, without ensuring the config again."""
    child = cast(RunnableConfig, {**config, "callbacks": callbacks})
    child.pop("run_name", None)
    child.pop("run_id", None)
    return child


def invoke_child(
    runnable: Runnable[Any, Output],
    input: Any,
    child: RunnableConfig,
    kwargs: dict[str, Any],
    run: RunMessages | None,
) -> Output:
    """Invoke the chosen runnable as the router's child (called in place, as ``RunnableBranch``
    does: the child sets its own config context); with ``run``, through the states it goes
    through, which show its work even if it raises."""
    if run is not None:
        return cast(Output, invoke_tracked(runnable, input, child, run))
    return runnable.invoke(input, child, **kwargs)


async def ainvoke_child(
    runnable: Runnable[Any, Output],
    input: Any,
    child: RunnableConfig,
    kwargs: dict[str, Any],
    run: RunMessages | None,
) -> Output:
    """:func:`invoke_child` for async code: awaited in place (the child sets its own config
    context, and a task per request would cost more than the rest of the routing)."""
    if run is not None:
        return cast(Output, await ainvoke_tracked(runnable, input, child, run))
    return await runnable.ainvoke(input, child, **kwargs)


def stream_child(
    runnable: Runnable[Any, Output],
    input: Any,
    child: RunnableConfig,
    kwargs: dict[str, Any],
    run: RunMessages | None,
) -> Iterator[Output]:
    """Stream the chosen runnable, showing its chunks to ``run`` (if any); with
    ``run.subgraphs``, its subgraphs' chunks too (``run`` then sees what was running if the
    stream raises inside one), yielding the graph's own chunks only: what the caller asked
    for."""
    if run is None or not run.subgraphs:
        for chunk in runnable.stream(input, child, **kwargs):
            if run is not None:
                run.add(chunk)
            yield chunk
        return
    graph: Any = runnable  # a LangGraph graph: (namespace, chunk) pairs with subgraphs=True
    for namespace, chunk in graph.stream(input, child, **kwargs, subgraphs=True):
        run.add(chunk, namespace)
        if not namespace:
            yield chunk


async def astream_child(
    runnable: Runnable[Any, Output],
    input: Any,
    child: RunnableConfig,
    kwargs: dict[str, Any],
    run: RunMessages | None,
) -> AsyncIterator[Output]:
    """:func:`stream_child` for async code."""
    if run is None or not run.subgraphs:
        async for chunk in runnable.astream(input, child, **kwargs):
            if run is not None:
                run.add(chunk)
            yield chunk
        return
    graph: Any = runnable
    async for namespace, chunk in graph.astream(input, child, **kwargs, subgraphs=True):
        run.add(chunk, namespace)
        if not namespace:
            yield chunk


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


_MODES_WITH_INTERRUPTS = frozenset({"values", "updates"})


def _chunks_hide_interrupts(kwargs: dict[str, Any]) -> bool:
    """True when the stream modes asked for never carry ``__interrupt__`` (``messages`` alone,
    ``custom``, ...); a graph's default mode and ``values``/``updates`` do."""
    modes = kwargs.get("stream_mode")
    if modes is None:
        return False
    modes = [modes] if isinstance(modes, str) else list(modes)
    return not _MODES_WITH_INTERRUPTS.intersection(modes)


def paused_in_state(runnable: Any, config: RunnableConfig, kwargs: dict[str, Any]) -> bool:
    """Whether a streamed LangGraph run whose chunks could not show it paused at an
    ``interrupt()``: asked of its checkpointed state, only then. Never raises."""
    if not _chunks_hide_interrupts(kwargs) or not hasattr(runnable, "get_state"):
        return False
    try:
        return bool(runnable.get_state(config).interrupts)
    except Exception:  # no checkpointer, no thread: nothing paused that could resume
        return False


async def paused_in_state_async(
    runnable: Any, config: RunnableConfig, kwargs: dict[str, Any]
) -> bool:
    """:func:`paused_in_state` for async code."""
    if not _chunks_hide_interrupts(kwargs) or not hasattr(runnable, "aget_state"):
        return False
    try:
        return bool((await runnable.aget_state(config)).interrupts)
    except Exception:
        return False


class Accumulator(Generic[Output]):
    """The streamed run's output: the sum of its chunks, or the last chunk when they do not add
    up (e.g. LangGraph's per-node update dicts), so the completion judge still sees the answer;
    and whether a chunk said the run paused at a LangGraph ``interrupt()``."""

    def __init__(self) -> None:
        self.value: Output | None = None
        self.started = False
        self.paused = False
        self._addable = True

    def add(self, chunk: Output) -> None:
        if not self.paused and carries_interrupt(chunk):
            self.paused = True
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
