"""Task completion: the final answer in a run's output, and the judges that accept it.

A completion judge is a function (run inline, at the end of the run) or a Runnable such as an
LLM-as-judge chain, which :class:`BackgroundJudge` runs after the answer, off the user's latency.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from langchain_graylayer.measuring.labels import RunLabels

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

    from langchain_graylayer.measuring.prometheus import GraylayerMetrics

__all__ = ["BackgroundJudge", "CompletionJudge", "default_completion_judge", "final_answer"]

logger = logging.getLogger(__name__)

CompletionJudge = Callable[[Any], bool]
"""Decides from a routed run's final output whether the user's task was completed."""


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or text content blocks joined."""
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
            return message_text(output.content)
        if not isinstance(output, AIMessage) or output.tool_calls:
            return None  # the user's own question, or a step that still calls tools
        return message_text(output.content)
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
    return None if content is None else message_text(content)


def default_completion_judge(output: Any) -> bool:
    """The default judge: the run produced a non-empty final answer."""
    answer = final_answer(output)
    return bool(answer and answer.strip())


class BackgroundJudge:
    """Runs a Runnable completion judge after the answer, on a small shared pool started on first
    use; a truthy answer counts the request as completed. A judge that fails counts as "not
    completed" and is logged and counted in ``graylayer_handler_errors_total``."""

    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()

    def __init__(self, judge: Runnable[Any, Any], metrics: GraylayerMetrics) -> None:
        self.judge = judge
        self.metrics = metrics

    def submit(
        self, output: Any, labels: RunLabels, then: Callable[[RunLabels], None] | None = None
    ) -> None:
        """Judge ``output`` in the background; count a completion under ``labels`` if accepted
        (and tell ``then``, e.g. the evidence recorder)."""
        self._executor().submit(self._run, output, labels, then)

    @classmethod
    def _executor(cls) -> ThreadPoolExecutor:
        with cls._pool_lock:
            if cls._pool is None:
                cls._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="graylayer-judge")
            return cls._pool

    def _run(
        self, output: Any, labels: RunLabels, then: Callable[[RunLabels], None] | None
    ) -> None:
        try:
            config: Any = {"callbacks": [], "run_name": "graylayer_judge"}
            accepted = bool(self.judge.invoke(output, config))
        except Exception:
            logger.exception("completion judge failed; the task is counted as not completed")
            self.metrics.handler_errors.inc()
            return
        if accepted:
            self.metrics.record_completion(labels)
            if then is not None:
                then(labels)
