"""What a run's model calls cost: tokens in and out, the model's name, and money from the plan's
price table.

One small vocabulary for every path that measures a run — the callback handler (one LLM call at
a time, from its ``LLMResult``) and a measurement from the run's result (the ``AIMessage`` s in its
output) — so both count the same thing the same way:

* :func:`call_of_message`, :func:`calls_of_messages`, :func:`calls_of_result`: the
  :class:`ModelCall` s (model name, input and output tokens) of a message, of a run's messages
  or of an LLM result, from ``usage_metadata`` (the legacy ``llm_output["token_usage"]`` as a
  fallback) and the model name in ``response_metadata`` (``model_name``, else ``model``), else
  ``llm_output``, else the run's ``ls_model_name``;
* :meth:`RunCost.add`: prices each call with :meth:`Pricing.cost
  <langchain_graylayer.plan.pricing.Pricing.cost>` and adds it up. A call of a model with no
  price adds its tokens and counts as *unpriced*: its cost is unknown, never 0, and a request
  with an unpriced call makes the cost guardrail compare tokens instead of money.

Runs tagged :data:`~langchain_graylayer.measuring.labels.EVALUATOR_TAG` (an evaluator's judge model)
are never the agent's own: the handler does not measure them, so they count in neither tokens
nor cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.outputs import LLMResult

from langchain_graylayer.plan.pricing import Pricing

__all__ = [
    "UNKNOWN_MODEL",
    "ModelCall",
    "RunCost",
    "call_of_message",
    "calls_of_messages",
    "calls_of_result",
]

UNKNOWN_MODEL = ""
"""The model name of a call that reported none (no price matches it)."""


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One model call's tokens, and the model that said it made them."""

    model: str
    input_tokens: int
    output_tokens: int


def model_name(*sources: Mapping[str, Any] | None) -> str:
    """The first ``model_name`` (else ``model``) found in ``sources``, in order."""
    for source in sources:
        if source:
            name = source.get("model_name") or source.get("model")
            if isinstance(name, str) and name:
                return name
    return UNKNOWN_MODEL


def call_of_message(message: Any, default_model: str = UNKNOWN_MODEL) -> ModelCall | None:
    """The call behind an ``AIMessage`` (``None``: it reports no usage).

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> reply = AIMessage("hi", response_metadata={"model_name": "gpt-4o-mini"},
        ...                   usage_metadata={"input_tokens": 12, "output_tokens": 3,
        ...                                   "total_tokens": 15})
        >>> call_of_message(reply)
        ModelCall(model='gpt-4o-mini', input_tokens=12, output_tokens=3)
    """
    usage = getattr(message, "usage_metadata", None)
    metadata = getattr(message, "response_metadata", None)
    if usage:
        inputs, outputs = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    elif isinstance(metadata, Mapping) and isinstance(metadata.get("token_usage"), Mapping):
        legacy = metadata["token_usage"]  # a chat model from before usage_metadata
        inputs = int(legacy.get("prompt_tokens", 0) or 0)
        outputs = int(legacy.get("completion_tokens", 0) or 0)
    else:
        return None
    if not inputs and not outputs:
        return None
    name = model_name(metadata) or default_model
    return ModelCall(name, inputs, outputs)


def calls_of_messages(messages: Iterable[Any]) -> list[ModelCall]:
    """The calls behind the AI messages of ``messages`` (e.g. a run's output ``messages``;
    a checkpointed thread's output repeats earlier turns: pass only this run's).

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
        >>> calls_of_messages([HumanMessage("hi"), AIMessage("hello", usage_metadata=usage)])
        [ModelCall(model='', input_tokens=5, output_tokens=2)]
    """
    return [call for m in messages if (call := call_of_message(m)) is not None]


def calls_of_result(response: LLMResult, default_model: str = UNKNOWN_MODEL) -> list[ModelCall]:
    """The calls behind one LLM result: one per generation that reports usage, else one from
    the legacy ``llm_output["token_usage"]``. ``default_model`` names a call whose response does
    not (e.g. the run's ``ls_model_name`` metadata)."""
    fallback = model_name(response.llm_output) or default_model
    calls = [
        call
        for generations in response.generations
        for generation in generations
        if (call := call_of_message(getattr(generation, "message", None), fallback)) is not None
    ]
    if not calls and response.llm_output:
        legacy = response.llm_output.get("token_usage") or {}
        inputs = int(legacy.get("prompt_tokens", 0))
        outputs = int(legacy.get("completion_tokens", 0))
        if inputs or outputs:
            calls.append(ModelCall(fallback, inputs, outputs))
    return calls


class RunCost:
    """A request's model calls added up: tokens, money, and calls nobody could price.

    Example:
        >>> prices = Pricing(models={"gpt-4o": {"input": 2.5, "output": 10.0}})
        >>> run = RunCost(prices)
        >>> run.add(ModelCall("gpt-4o-2024-08-06", 1000, 200))
        0.0045
        >>> run.add(ModelCall("local-llama", 500, 50)) is None
        True
        >>> run.input_tokens, run.output_tokens, run.cost, run.unpriced
        (1500, 250, 0.0045, 1)
    """

    __slots__ = ("cost", "input_tokens", "output_tokens", "pricing", "unpriced")

    def __init__(self, pricing: Pricing | None) -> None:
        self.pricing = pricing
        """``None``: nothing is priced (every call is unpriced)."""
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        """Money of the priced calls, in the price table's currency."""
        self.unpriced = 0
        """Calls whose model has no price: their cost is unknown."""

    def add(self, call: ModelCall) -> float | None:
        """Count one call; its money (``None``: unpriced)."""
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        money = None
        if self.pricing is not None:
            money = self.pricing.cost(call.model, call.input_tokens, call.output_tokens)
        if money is None:
            self.unpriced += 1
        else:
            self.cost += money
        return money

    def add_all(self, calls: Iterable[ModelCall]) -> RunCost:
        """Count every call of ``calls`` (e.g. the AI messages of a run's output)."""
        for call in calls:
            self.add(call)
        return self
