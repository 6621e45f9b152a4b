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

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableBinding

from langchain_graylayer.measuring.cost import ModelCall, calls_of_messages

__all__ = [
    "READABLE_MODES",
    "OutputCounts",
    "RunMessages",
    "has_subgraphs",
    "shows_messages",
    "stream_mode_of",
    "tool_results",
]

READABLE_MODES = frozenset({"values", "updates"})
"""The stream modes whose chunks show every message a run adds."""


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
    calls: tuple[ModelCall, ...] = ()
    """Its model calls (model, tokens in and out), priced as the handler prices them."""

    @property
    def tool_calls(self) -> int:
        return len(self.tools)

    @property
    def tool_errors(self) -> int:
        return sum(not ok for _, ok in self.tools)

    @property
    def input_tokens(self) -> int:
        return sum(call.input_tokens for call in self.calls)

    @property
    def output_tokens(self) -> int:
        return sum(call.output_tokens for call in self.calls)

    @classmethod
    def of(cls, messages: Sequence[Any]) -> OutputCounts:
        """The counts of the messages a run added."""
        return cls(tuple(tool_results(messages)), tuple(calls_of_messages(messages)))


def _unanswered(messages: Sequence[Any]) -> dict[Any, str]:
    """The last AI message's tool calls (id → name) that no later ``ToolMessage`` answers."""
    answered: set[str] = set()
    for message in reversed(messages):
        if isinstance(message, ToolMessage):
            answered.add(message.tool_call_id)
        elif isinstance(message, AIMessage):
            calls = message.tool_calls
            return {c.get("id") or n: c["name"] for n, c in enumerate(calls)
                    if c.get("id") not in answered}  # fmt: skip
        else:
            return {}
    return {}


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
    """The messages one run added, read from the states or updates it streams.

    ``mode`` is how chunks come: ``"values"`` (each chunk the whole state) or ``"updates"``
    (each chunk ``{node: update}``, the update's ``messages`` being what the node added). Chunks
    of subgraphs (and of agents run inside a tool) come under their namespace: each namespace's
    messages since its own question count, each message once (a subgraph that shares
    ``messages`` repeats its parent's).

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> run = RunMessages()
        >>> run.add({"messages": [HumanMessage("hi"), AIMessage("hello", id="a")]})
        >>> [m.content for m in run.messages()]
        ['hello']
    """

    __slots__ = ("_seen", "mode", "subgraphs")

    def __init__(self, mode: str = "values", *, subgraphs: bool = False) -> None:
        self.mode = mode
        self.subgraphs = subgraphs
        """Stream the subgraphs' chunks too (what a graph with subgraphs needs shown when it
        raises inside one; LangGraph then runs the graph's steps on a thread, so it is asked for
        only where a subgraph is)."""
        self._seen: dict[tuple[str, ...], dict[Any, Any]] = {}

    def add(self, chunk: Any, namespace: tuple[str, ...] = ()) -> None:
        """One state (``values``) or one update (``updates``) of the graph at ``namespace``."""
        if self.mode == "values":
            found = messages_in(chunk)
            if found is not None:
                self._seen[namespace] = dict(enumerate(found))
            return
        if not isinstance(chunk, Mapping):
            return
        seen = self._seen.setdefault(namespace, {})
        for update in chunk.values():
            for part in update if isinstance(update, list) else (update,):
                found = messages_in(part) if isinstance(part, Mapping) else None
                for message in found or ():
                    seen.setdefault(message.id or id(message), message)

    def messages(self) -> list[Any]:
        """The messages the run added so far."""
        added: dict[Any, Any] = {}
        for seen in self._seen.values():
            for message in _since_question(list(seen.values())):
                added.setdefault(message.id or id(message), message)
        return list(added.values())

    def counts(self, *, raised: bool = False) -> OutputCounts:
        """The run's counts (``raised``: the run raised after the last chunk seen)."""
        if not raised:
            return OutputCounts.of(self.messages())
        # What was running in each graph when it raised: the exception came out of one call of
        # each (a tool that runs an agent fails with it); a call shared by a parent and a
        # subgraph that shares its messages counts once.
        running: dict[Any, bool] = {}
        tools: list[tuple[str, bool]] = []
        for seen in self._seen.values():
            for index, (call, name) in enumerate(_unanswered(list(seen.values())).items()):
                if call not in running:
                    running[call] = True
                    tools.append((name, index > 0))
        counts = OutputCounts.of(self.messages())
        return dataclasses.replace(counts, tools=counts.tools + tuple(tools))


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


def has_subgraphs(runnable: Any) -> bool:
    """True for a LangGraph graph with a subgraph as a node. (An agent that a tool runs is no
    node: its messages never reach the outer agent's output, only a handler counts its work.)"""
    try:
        return any(True for _ in _unwrapped(runnable).get_subgraphs())
    except Exception:
        return False


def stream_mode_of(runnable: Any, kwargs: Mapping[str, Any]) -> str | None:
    """The stream mode a graph's ``stream`` yields with ``kwargs``, when its chunks show every
    message (``values`` or ``updates``, one mode, no subgraph namespaces, the v1 format);
    ``None`` otherwise."""
    if kwargs.get("subgraphs") or kwargs.get("version", "v1") != "v1":
        return None
    mode = kwargs.get("stream_mode") or getattr(_unwrapped(runnable), "stream_mode", None)
    return mode if isinstance(mode, str) and mode in READABLE_MODES else None


_MODES = ["updates", "values"]


class _Invoke:
    """What LangGraph's ``invoke`` keeps of its stream (v1: the last state, with the interrupts
    of the updates), and every state, of the graph and its subgraphs, shown to ``run``."""

    __slots__ = ("interrupts", "latest", "run")

    def __init__(self, run: RunMessages) -> None:
        self.run, self.latest, self.interrupts = run, None, list[Any]()

    def add(self, namespace: tuple[str, ...], mode: str, payload: Any) -> None:
        if mode == "values":
            self.run.add(payload, namespace)
            if not namespace:
                self.latest = payload
        elif not namespace and isinstance(payload, Mapping):
            found = payload.get("__interrupt__")
            if found is not None:
                self.interrupts.extend(found)

    def output(self) -> Any:
        latest, interrupts = self.latest, self.interrupts
        if not interrupts:
            return latest
        if isinstance(latest, dict):
            return {**latest, "__interrupt__": interrupts}
        return {"__interrupt__": interrupts}


def invoke_tracked(graph: Any, input: Any, config: Any, run: RunMessages) -> Any:
    """``graph.invoke(input, config)`` as LangGraph runs it (its ``stream`` in ``updates`` and
    ``values`` modes), also streaming its subgraphs' states to ``run``: when the run raises,
    the last states show what was running."""
    invoke = _Invoke(run)
    if not run.subgraphs:
        for mode, payload in graph.stream(input, config, stream_mode=_MODES):
            invoke.add((), mode, payload)
        return invoke.output()
    for namespace, mode, payload in graph.stream(input, config, stream_mode=_MODES, subgraphs=True):
        invoke.add(namespace, mode, payload)
    return invoke.output()


async def ainvoke_tracked(graph: Any, input: Any, config: Any, run: RunMessages) -> Any:
    """:func:`invoke_tracked` for async code."""
    invoke = _Invoke(run)
    if not run.subgraphs:
        async for mode, payload in graph.astream(input, config, stream_mode=_MODES):
            invoke.add((), mode, payload)
        return invoke.output()
    stream = graph.astream(input, config, stream_mode=_MODES, subgraphs=True)
    async for namespace, mode, payload in stream:
        invoke.add(namespace, mode, payload)
    return invoke.output()
