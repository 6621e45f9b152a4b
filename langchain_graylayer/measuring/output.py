"""Measuring a LangGraph agent from what it returns instead of from every callback event.

A ``create_agent`` agent (any LangGraph graph with a ``messages`` channel) returns its whole
conversation: the tool calls and their ``ToolMessage`` statuses (handled errors included), the
final answer, and ``usage_metadata`` on every AI message. So the router can count a request's
tool calls, tool errors and tokens once, at the end of its own run, with no handler on the
descendant runs (each handler on a run costs every event a dispatch through LangChain's
callback manager, and every chat-model call a protocol check per handler).

:class:`RunMessages` reads the messages a run added from its final state, or from the chunks of
its stream (``values`` or ``updates`` mode), and keeps the last state it saw: when the run
raises, the tool calls of its last AI message that have no answer are the ones that were
running, so a tool that raised out of the agent is counted as a failed call, as the event
handler counts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableBinding

__all__ = [
    "READABLE_MODES",
    "OutputCounts",
    "RunMessages",
    "shows_messages",
    "stream_mode_of",
    "tool_results",
    "usage_from_messages",
]

READABLE_MODES = frozenset({"values", "updates"})
"""The stream modes whose chunks show every message a run adds."""


def usage_from_messages(messages: Iterable[Any]) -> tuple[int, int, str | None]:
    """``(input tokens, output tokens, model)`` of the AI messages in ``messages``: from
    ``usage_metadata``, else a legacy ``response_metadata["token_usage"]``; ``model`` is the
    model that answered (``response_metadata`` ``model_name`` or ``model``), ``None`` when no AI
    message names one or they name several (call it per message then)."""
    inputs = outputs = 0
    models: set[str] = set()
    for message in messages:
        if not isinstance(message, AIMessage):
            continue
        usage = message.usage_metadata
        if usage:
            inputs += int(usage.get("input_tokens", 0))
            outputs += int(usage.get("output_tokens", 0))
        else:
            legacy = message.response_metadata.get("token_usage") or {}
            inputs += int(legacy.get("prompt_tokens", 0) or 0)
            outputs += int(legacy.get("completion_tokens", 0) or 0)
        model = message.response_metadata.get("model_name") or message.response_metadata.get(
            "model"
        )
        if model:
            models.add(str(model))
    return inputs, outputs, models.pop() if len(models) == 1 else None


def tool_results(messages: Iterable[Any]) -> list[tuple[str, bool]]:
    """``(tool name, ok)`` for each tool call answered in ``messages`` (a ``ToolMessage`` with
    status ``"error"`` is a handled tool error)."""
    return [
        (message.name or "unknown", message.status != "error")
        for message in messages
        if isinstance(message, ToolMessage)
    ]


@dataclass(frozen=True, slots=True)
class OutputCounts:
    """What one run did, as its messages show it."""

    tools: tuple[tuple[str, bool], ...] = ()
    """``(tool name, ok)`` per tool call."""
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None

    @property
    def tool_calls(self) -> int:
        return len(self.tools)

    @property
    def tool_errors(self) -> int:
        return sum(not ok for _, ok in self.tools)

    @classmethod
    def of(cls, messages: Sequence[Any], *, raised: bool = False) -> OutputCounts:
        """The counts of the messages a run added; ``raised``: the run raised after them, so
        the unanswered tool calls of its last AI message were running, and one of them raised
        (the first, when several were: the exception does not say which)."""
        tools = tool_results(messages)
        if raised:
            pending = _unanswered(messages)
            tools += [(name, index > 0) for index, name in enumerate(pending)]
        inputs, outputs, model = usage_from_messages(messages)
        return cls(tuple(tools), inputs, outputs, model)


def _unanswered(messages: Sequence[Any]) -> list[str]:
    """The names of the last AI message's tool calls that no later ``ToolMessage`` answers."""
    answered: set[str] = set()
    for message in reversed(messages):
        if isinstance(message, ToolMessage):
            answered.add(message.tool_call_id)
        elif isinstance(message, AIMessage):
            return [c["name"] for c in message.tool_calls if c.get("id") not in answered]
        else:
            return []
    return []


def _since_question(messages: Sequence[Any]) -> list[Any]:
    """The messages after the last human message: what this run added to the conversation
    (the question may follow earlier turns, from a checkpointer or from the client)."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], HumanMessage):
            return list(messages[index + 1 :])
    return list(messages)


def messages_in(value: Any) -> list[Any] | None:
    """The message list in a run's output: a state (``{"messages": [...]}``), LangGraph's
    ``GraphOutput``, or a list of messages; ``None`` when there is none."""
    if type(value).__name__ == "GraphOutput":
        value = getattr(value, "value", None)
    if isinstance(value, Mapping):
        value = value.get("messages")
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, list) and all(isinstance(m, BaseMessage) for m in value):
        return value
    return None


class RunMessages:
    """The messages one run added, read from its final state or its stream.

    ``mode`` is how chunks come: ``"values"`` (each chunk the whole state) or ``"updates"``
    (each chunk ``{node: update}``, the update's ``messages`` being what the node added; a
    subgraph's node update repeats the messages it was given, so messages are kept once by id).

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> run = RunMessages()
        >>> run.add({"messages": [HumanMessage("hi"), AIMessage("hello", id="a")]})
        >>> [m.content for m in run.messages()]
        ['hello']
    """

    __slots__ = ("_by_id", "_last", "mode")

    def __init__(self, mode: str = "values") -> None:
        self.mode = mode
        self._last: list[Any] = []
        self._by_id: dict[Any, Any] = {}

    def add(self, chunk: Any) -> None:
        """One state (``values``) or one update (``updates``)."""
        if self.mode == "values":
            found = messages_in(chunk)
            if found is not None:
                self._last = found
            return
        if not isinstance(chunk, Mapping):
            return
        for update in chunk.values():
            for part in update if isinstance(update, list) else (update,):
                found = messages_in(part) if isinstance(part, Mapping) else None
                for message in found or ():
                    self._by_id.setdefault(message.id or id(message), message)

    def messages(self) -> list[Any]:
        """The messages the run added so far."""
        found = self._last if self.mode == "values" else list(self._by_id.values())
        return _since_question(found)

    def counts(self, output: Any = None, *, raised: bool = False) -> OutputCounts:
        """The run's counts: from ``output`` when it shows the messages, else from the chunks
        seen (``raised``: the run raised after the last of them)."""
        found = None if raised or output is None else messages_in(output)
        messages = self.messages() if found is None else _since_question(found)
        return OutputCounts.of(messages, raised=raised)


def _unwrapped(runnable: Any) -> Any:
    while isinstance(runnable, RunnableBinding) and not runnable.kwargs:
        runnable = runnable.bound
    return runnable


def shows_messages(runnable: Any) -> bool:
    """True for a LangGraph graph (maybe bound to a config) that returns a ``messages`` channel:
    its output shows every tool call and token of its run."""
    graph = _unwrapped(runnable)
    channels = getattr(graph, "output_channels", None)
    if not hasattr(graph, "get_state") or not hasattr(graph, "stream_mode"):
        return False
    return channels == "messages" or (
        isinstance(channels, (list, tuple)) and "messages" in channels
    )


def stream_mode_of(runnable: Any, kwargs: Mapping[str, Any]) -> str | None:
    """The stream mode a graph's ``stream`` yields with ``kwargs``, when its chunks show every
    message (``values`` or ``updates``, one mode, no subgraph namespaces, the v1 format);
    ``None`` otherwise."""
    if kwargs.get("subgraphs") or kwargs.get("version", "v1") != "v1":
        return None
    mode = kwargs.get("stream_mode") or getattr(_unwrapped(runnable), "stream_mode", None)
    return mode if isinstance(mode, str) and mode in READABLE_MODES else None


def invoke_tracked(graph: Any, input: Any, config: Any, run: RunMessages) -> Any:
    """``graph.invoke(input, config)``, as LangGraph's ``invoke`` runs it (its ``stream`` in
    ``updates`` and ``values`` modes, the last state with the interrupts of the updates), with
    every state shown to ``run`` on the way."""
    latest: Any = None
    interrupts: list[Any] = []
    for mode, payload in graph.stream(input, config, stream_mode=["updates", "values"]):
        if mode == "values":
            latest = payload
            run.add(payload)
        elif isinstance(payload, Mapping) and payload.get("__interrupt__") is not None:
            interrupts.extend(payload["__interrupt__"])
    return _with_interrupts(latest, interrupts)


async def ainvoke_tracked(graph: Any, input: Any, config: Any, run: RunMessages) -> Any:
    """:func:`invoke_tracked` for async code."""
    latest: Any = None
    interrupts: list[Any] = []
    async for mode, payload in graph.astream(input, config, stream_mode=["updates", "values"]):
        if mode == "values":
            latest = payload
            run.add(payload)
        elif isinstance(payload, Mapping) and payload.get("__interrupt__") is not None:
            interrupts.extend(payload["__interrupt__"])
    return _with_interrupts(latest, interrupts)


def _with_interrupts(latest: Any, interrupts: list[Any]) -> Any:
    if not interrupts:
        return latest
    if isinstance(latest, dict):
        return {**latest, "__interrupt__": interrupts}
    return {"__interrupt__": interrupts}
