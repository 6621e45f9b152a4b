"""Evaluator implementations: how each kind is called, and what its answer scores.

An evaluator of the plan (:class:`~langchain_graylayer.plan.evaluators.EvaluatorSpec`) is bound to
an implementation — a function, any Runnable (an LLM-as-judge chain), an ``openevals`` evaluator
or an ``agentevals`` trajectory evaluator — and :func:`bind` turns it into one callable of an
:class:`EvaluationInput` that returns a score in [0, 1] (1: pass). ``openevals`` and
``agentevals`` are the optional extra ``evals``; graylayer never imports them itself, it calls
the evaluators you build with them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.measuring.completion import final_answer, message_text
from langchain_graylayer.measuring.labels import RunLabels
from langchain_graylayer.plan.evaluators import EvaluatorKind, EvaluatorScope, EvaluatorSpec

__all__ = ["EvaluationInput", "Scorer", "bind", "score_of", "trajectory"]

Scorer = Callable[["EvaluationInput", RunnableConfig], float]
"""A bound evaluator: what one run (or conversation) scores, 1 being a pass."""


@dataclass(frozen=True, slots=True)
class EvaluationInput:
    """What an evaluator sees: one routed run, or the runs of one conversation in order."""

    input: Any
    """The run's input (a conversation: the list of its runs' inputs)."""
    output: Any
    """The run's output (a conversation: the list of its runs' outputs)."""
    labels: RunLabels
    """The arm it counts under (the conversation's last run)."""
    run_id: str
    """The run id (a conversation: its session id), also what sampling hashes."""
    session_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Plan, version, layer, step, run and session ids: handed to function evaluators."""


_PASS_WORDS = {"pass", "passed", "true", "yes", "y", "ok", "correct", "good"}
_FAIL_WORDS = {"fail", "failed", "false", "no", "n", "incorrect", "bad", "wrong"}


def score_of(answer: Any) -> float:
    """A score in [0, 1] from an evaluator's answer: a bool, a number, ``{"score": ...}`` (what
    ``openevals`` returns; a list of them: their mean), a ``(score, reasoning)`` pair, or a
    message or string reading pass/fail/yes/no/true/false or a number.

    Raises:
        ValueError: an answer that says no score (the run counts as not evaluated).

    Example:
        >>> score_of(True), score_of({"key": "x", "score": 0.25}), score_of("FAIL: made up")
        (1.0, 0.25, 0.0)
    """
    if isinstance(answer, bool):
        return float(answer)
    if isinstance(answer, (int, float)):
        value = float(answer)
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"an evaluator score must be in [0, 1], got {answer!r}")
        return value
    if isinstance(answer, Mapping):
        if "score" not in answer:
            raise ValueError(f"an evaluator result needs a 'score', got keys {sorted(answer)}")
        return score_of(answer["score"])
    if isinstance(answer, tuple) and answer:
        return score_of(answer[0])
    if isinstance(answer, BaseMessage):
        return score_of(message_text(answer.content))
    if isinstance(answer, str):
        word = answer.strip().split(maxsplit=1)[0].strip(".:,!").lower() if answer.strip() else ""
        if word in _PASS_WORDS:
            return 1.0
        if word in _FAIL_WORDS:
            return 0.0
        try:
            return score_of(float(word))
        except ValueError:
            raise ValueError(
                f"an evaluator answer must read pass or fail, got {answer!r}"
            ) from None
    if isinstance(answer, Sequence) and answer:
        scores = [score_of(item) for item in answer]
        return sum(scores) / len(scores)
    raise ValueError(f"an evaluator answer must be a bool, a number or a score, got {answer!r}")


def trajectory(value: Any) -> list[BaseMessage]:
    """The messages of a run's output (an agent's state ``{"messages": [...]}``, a list of
    messages, one message), for trajectory evaluators; a conversation's outputs are joined."""
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, Mapping):
        messages = value.get("messages")
        return trajectory(messages) if messages is not None else []
    if isinstance(value, Sequence) and not isinstance(value, str):
        out: list[BaseMessage] = []
        for item in value:
            out.extend(trajectory(item))
        return out
    if isinstance(value, str):
        return [AIMessage(value)]
    return []


def _answer_text(value: Any, scope: EvaluatorScope) -> Any:
    """What an LLM judge reads of an output: the final answer text (a conversation: each)."""
    if scope is EvaluatorScope.CONVERSATION and isinstance(value, list):
        return [final_answer(item) or "" for item in value]
    answer = final_answer(value)
    return answer if answer is not None else value


def _input_text(value: Any, scope: EvaluatorScope) -> Any:
    if scope is EvaluatorScope.CONVERSATION and isinstance(value, list):
        return [_input_text(item, EvaluatorScope.RUN) for item in value]
    if isinstance(value, Mapping) and "messages" in value:
        messages = trajectory(value)
        return message_text(messages[-1].content) if messages else value
    return value


def resolve(target: str) -> Any:
    """Import ``"package.module:attribute"``."""
    module_name, _, attribute = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            "evaluators[].target", target, f"an importable object ({exc})"
        ) from None
    return found


def bind(spec: EvaluatorSpec, implementation: Any | None) -> Scorer:
    """The scorer of ``spec``: its ``implementation``, else the one its ``target`` names.

    Raises:
        ConfigurationError: no implementation, or one that does not fit the kind.
    """
    impl = implementation if implementation is not None else None
    if impl is None and spec.target is not None:
        impl = resolve(spec.target)
    if impl is None:
        raise ConfigurationError(
            f"evaluators[{spec.name}]", "<missing>",
            "an implementation: GrayRouter(evaluators={name: ...}) or a 'target' to import",
        )  # fmt: skip
    kind, scope = spec.kind, spec.scope
    if kind is EvaluatorKind.RUNNABLE:
        if not isinstance(impl, Runnable):
            raise ConfigurationError(f"evaluators[{spec.name}]", type(impl).__name__, "a Runnable")
        runnable: Runnable[Any, Any] = impl

        def run_runnable(data: EvaluationInput, config: RunnableConfig) -> float:
            payload = {"input": data.input, "output": data.output, "metadata": dict(data.metadata)}
            return score_of(runnable.invoke(payload, config))

        return run_runnable
    if not callable(impl):
        raise ConfigurationError(f"evaluators[{spec.name}]", type(impl).__name__, "a callable")
    function: Callable[..., Any] = impl
    if kind is EvaluatorKind.FUNCTION:
        return lambda data, _config: score_of(
            function(data.input, data.output, dict(data.metadata))
        )
    if kind is EvaluatorKind.OPENEVALS:
        return lambda data, _config: score_of(
            function(
                inputs=_input_text(data.input, scope), outputs=_answer_text(data.output, scope)
            )
        )
    return lambda data, _config: score_of(function(outputs=trajectory(data.output)))
