"""Reading LangChain callback events: handled tool errors, token usage, tool names.

Shared by the metrics handler, the tracing handler and the tool-call journal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.outputs import LLMResult

__all__ = ["token_usage", "tool_failed", "tool_name"]


def tool_failed(output: Any) -> bool:
    """A handled tool error: a ToolMessage (maybe inside a LangGraph Command) with error status."""
    if isinstance(output, ToolMessage):
        return output.status == "error"
    update = getattr(output, "update", None)  # langgraph.types.Command
    messages = update.get("messages", []) if isinstance(update, Mapping) else []
    return any(isinstance(m, ToolMessage) and m.status == "error" for m in messages)


def token_usage(response: LLMResult) -> tuple[int, int]:
    """(input, output) tokens of one LLM call, from usage_metadata or legacy llm_output."""
    inputs = outputs = 0
    for generations in response.generations:
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                inputs += int(usage.get("input_tokens", 0))
                outputs += int(usage.get("output_tokens", 0))
    if not inputs and not outputs and response.llm_output:
        legacy = response.llm_output.get("token_usage") or {}
        inputs = int(legacy.get("prompt_tokens", 0))
        outputs = int(legacy.get("completion_tokens", 0))
    return inputs, outputs


def tool_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str | None:
    name = kwargs.get("name")
    if not name and serialized:
        name = serialized.get("name")
    return None if name is None else str(name)
