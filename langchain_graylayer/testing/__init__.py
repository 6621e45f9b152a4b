"""Offline chat models for tests, demos and benchmarks: agents that call real tools, no network;
and fault injection (:mod:`langchain_graylayer.testing.chaos`: :func:`with_chaos`,
:class:`ChaosStore`) to rehearse failures in CI.

:class:`ScriptedChatModel` replies with whatever its script says for the conversation so far. It
accepts ``bind_tools`` (so ``create_agent`` and LangGraph's prebuilt agents can use it), reports
token usage as a provider does, and streams its reply as text tokens, tool-call chunks and a
final usage chunk (as OpenAI's ``stream_usage`` does), so ``astream_events`` and LangGraph's
``messages`` stream mode see what a real model would send.

Example — an agent that looks an order up, then answers::

    >>> from langchain_core.tools import tool
    >>> @tool
    ... def lookup_order(order_id: str) -> str:
    ...     '''Where an order is.'''
    ...     return f"{order_id} has shipped"
    >>> model = ScriptedChatModel(script=calls_then_answers(["lookup_order"], "It has shipped."))
    >>> model = model.bind_tools([lookup_order])
    >>> reply = model.invoke("Where is A-1?")
    >>> reply.tool_calls[0]["name"], reply.usage_metadata["total_tokens"]
    ('lookup_order', 15)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from langchain_graylayer.plan.chaos import Chaos
from langchain_graylayer.testing.chaos import ChaosStore, InjectedFault, with_chaos

__all__ = [
    "DEFAULT_USAGE",
    "Chaos",
    "ChaosStore",
    "InjectedFault",
    "Script",
    "ScriptedChatModel",
    "calls_then_answers",
    "in_order",
    "since_question",
    "with_chaos",
]

Script = Callable[[list[BaseMessage], tuple[str, ...]], AIMessage | str]
"""Decides a reply from the conversation so far and the names of the bound tools."""

DEFAULT_USAGE = UsageMetadata(input_tokens=10, output_tokens=5, total_tokens=15)
"""The token usage every reply reports unless the script's reply carries its own."""


class ScriptedChatModel(BaseChatModel):
    """A chat model whose reply is ``script(messages, bound_tool_names)``.

    A reply that is a string becomes an ``AIMessage``; a reply without ``usage_metadata`` gets
    ``usage`` (``None``: none). Give it a script of your own, or one of the helpers below.
    """

    script: Script
    """Decides each reply."""
    usage: UsageMetadata | None = DEFAULT_USAGE
    model_name: str = "scripted"
    """Reported as the model's name (``response_metadata["model_name"]``)."""
    bound_tools: tuple[str, ...] = ()
    """The names of the tools bound with :meth:`bind_tools`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "graylayer-scripted"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        names = tuple(getattr(t, "name", None) or getattr(t, "__name__", str(t)) for t in tools)
        return self.model_copy(update={"bound_tools": names})

    def reply(self, messages: list[BaseMessage]) -> AIMessage:
        """The script's reply to ``messages``, with usage and the model's name."""
        answer = self.script(messages, self.bound_tools)
        message = AIMessage(answer) if isinstance(answer, str) else answer
        if message.usage_metadata is None and self.usage is not None:
            message.usage_metadata = self.usage
        message.response_metadata = {"model_name": self.model_name, **message.response_metadata}
        return message

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.reply(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self.reply(messages)
        chunks = [
            AIMessageChunk(content=token, id=reply.id)
            for token in re.split(r"(\s)", reply.text)
            if token
        ]
        if reply.tool_calls:
            call_chunks = [
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                for i, c in enumerate(reply.tool_calls)
            ]
            chunks.append(AIMessageChunk(content="", id=reply.id, tool_call_chunks=call_chunks))
        chunks.append(
            AIMessageChunk(
                content="",
                id=reply.id,
                usage_metadata=reply.usage_metadata,
                response_metadata=reply.response_metadata,
            )
        )
        for message in chunks:
            chunk = ChatGenerationChunk(message=message)
            if run_manager is not None:
                run_manager.on_llm_new_token(message.text, chunk=chunk)
            yield chunk


def since_question(messages: Sequence[BaseMessage]) -> tuple[str, list[ToolMessage]]:
    """The last human message's text and the tool results that came after it."""
    question, results = "", list[ToolMessage]()
    for message in messages:
        if isinstance(message, HumanMessage):
            question, results = message.text, []
        elif isinstance(message, ToolMessage):
            results.append(message)
    return question, results


def calls_then_answers(
    calls: Sequence[str | tuple[str, Mapping[str, Any]]],
    answer: str,
    *,
    args: Mapping[str, Any] | None = None,
    usage: UsageMetadata | None = None,
) -> Script:
    """A script that, since the last human message, calls the tools of ``calls`` one per turn
    (``"name"`` with ``args``, or ``("name", {...})``), then answers ``answer``.

    It decides from the conversation so far, so one agent serves any number of runs.
    """
    default_args = dict(args if args is not None else {"order_id": "A-1"})

    def script(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
        _, results = since_question(messages)
        done = len(results)
        if done < len(calls):
            call = calls[done]
            name, call_args = (call, default_args) if isinstance(call, str) else call
            tool_call = {"name": name, "args": dict(call_args), "id": f"call-{done}-{name}"}
            return AIMessage("", tool_calls=[tool_call], usage_metadata=usage)
        return AIMessage(answer, usage_metadata=usage)

    return script


def in_order(replies: Iterable[AIMessage | str]) -> Script:
    """A script that replies with the next item of ``replies``, whatever the conversation (an
    iterator may be endless, or shared by several models; ``StopIteration`` when it runs out)."""
    iterator = iter(replies)

    def script(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage | str:
        return next(iterator)

    return script
