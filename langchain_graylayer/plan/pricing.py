"""Prices: what a model's tokens cost, so a plan can judge and report money, not only tokens.

A plan's :class:`Pricing` maps model names to a price per million input and output tokens. A
model is found by its exact name, else by the longest configured name it starts with (so
``gpt-4o`` prices ``gpt-4o-2024-08-06``); an unpriced model costs ``None`` — unknown, never 0.
Pure data: nothing here imports LangChain.
"""

from __future__ import annotations

from pydantic import Field

from langchain_graylayer.plan._config import ConfigModel

__all__ = ["ModelPrice", "Pricing"]

_PER = 1_000_000


class ModelPrice(ConfigModel):
    """One model's price, in the plan's currency per million tokens."""

    input: float = Field(ge=0, allow_inf_nan=False)
    """Per million input (prompt) tokens."""
    output: float = Field(ge=0, allow_inf_nan=False)
    """Per million output (completion) tokens."""


class Pricing(ConfigModel):
    """A price table.

    Example:
        >>> prices = Pricing(models={"gpt-4o": {"input": 2.5, "output": 10.0}})
        >>> prices.cost("gpt-4o-2024-08-06", input_tokens=1000, output_tokens=200)
        0.0045
        >>> prices.cost("some-other-model", 1000, 200) is None
        True
    """

    currency: str = Field(default="USD", min_length=1, max_length=16)
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    """Model name (or name prefix) → price."""

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of ``model``: its exact entry, else the longest entry it starts with."""
        if model in self.models:
            return self.models[model]
        prefixes = [name for name in self.models if name and model.startswith(name)]
        return self.models[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Money for one call's tokens; ``None`` when the model has no price."""
        price = self.price_of(model)
        if price is None:
            return None
        return (input_tokens * price.input + output_tokens * price.output) / _PER
