"""Task completion: the final answer in a run's output, and the judges that accept it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

__all__ = ["CompletionJudge", "default_completion_judge", "final_answer"]

CompletionJudge = Callable[[Any], bool]
"""Decides from a routed run's final output whether the user's task was completed."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        parts = [b if isinstance(b, str) else str(b.get("text", "")) for b in content if b]
        return "".join(parts)
    return "" if content is None else str(content)


def final_answer(output: Any) -> str | None:
    """The final answer text in a run's output, or ``None`` when there is none.

    Understands strings, messages, lists of messages, LangGraph states and stream updates
    (``{"messages": [...]}``, ``{"node": {"messages": [...]}}``) and ``{"output": ...}`` /
    ``{"answer": ...}`` dicts. An AI message that still requests tools is not a final answer.
    """
    if output is None:
        return None
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage):
        if isinstance(output, ToolMessage):  # a return-direct tool answered
            return _text(output.content)
        if not isinstance(output, AIMessage) or output.tool_calls:
            return None  # the user's own question, or a step that still calls tools
        return _text(output.content)
    if isinstance(output, tuple) and output and isinstance(output[0], BaseMessage):
        return final_answer(output[0])  # stream_mode="messages": (message, metadata)
    if isinstance(output, Sequence) and output:
        return final_answer(output[-1])
    if isinstance(output, Mapping):
        for key in ("messages", "output", "answer", "content", "text"):
            if key in output:
                return final_answer(output[key])
        for value in reversed(list(output.values())):
            if isinstance(value, Mapping):
                found = final_answer(value)
                if found is not None:
                    return found
        return None
    content = getattr(output, "content", None)
    return None if content is None else _text(content)


def default_completion_judge(output: Any) -> bool:
    """The default judge: the run produced a non-empty final answer."""
    answer = final_answer(output)
    return bool(answer and answer.strip())
