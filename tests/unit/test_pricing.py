"""A plan's price table: exact names, longest prefix, unknown models, clear errors."""

from __future__ import annotations

import pytest

from langchain_graylayer import RolloutPlan
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan import Pricing

PRICES = Pricing(
    models={
        "gpt-4o": {"input": 2.5, "output": 10.0},
        "gpt-4o-mini": {"input": 0.15, "output": 0.6},
        "claude-sonnet-4": {"input": 3.0, "output": 15.0},
    }
)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", 2.5e-3 + 2 * 10e-3),
        ("gpt-4o-2024-08-06", 2.5e-3 + 2 * 10e-3),  # a dated name: its family's price
        ("gpt-4o-mini-2024-07-18", 0.15e-3 + 2 * 0.6e-3),  # the longest prefix wins
        ("claude-sonnet-4-5", 3e-3 + 2 * 15e-3),
    ],
)
def test_cost_per_call(model: str, expected: float) -> None:
    assert PRICES.cost(model, input_tokens=1000, output_tokens=2000) == pytest.approx(expected)


def test_an_unpriced_model_costs_unknown_not_zero() -> None:
    assert PRICES.cost("llama-3", 1000, 1000) is None
    assert Pricing().cost("gpt-4o", 1000, 1000) is None


def test_a_plan_carries_its_prices_and_rejects_bad_ones() -> None:
    layers = [{"name": "all", "members": ["a"]}]
    plan = RolloutPlan.from_dict(
        {
            "id": "p",
            "layers": layers,
            "pricing": {"currency": "EUR", "models": {"m": {"input": 1, "output": 2}}},
        }
    )
    assert plan.pricing.currency == "EUR"
    assert plan.pricing.cost("m", 10**6, 0) == 1.0
    assert RolloutPlan.from_dict({"id": "p", "layers": layers}).pricing.models == {}
    with pytest.raises(ConfigurationError, match=r"pricing\.models\.m\.output"):
        RolloutPlan.from_dict(
            {"id": "p", "layers": layers, "pricing": {"models": {"m": {"input": 1, "output": -1}}}}
        )
    with pytest.raises(ConfigurationError, match=r"pricing\.models\.m\.input"):
        RolloutPlan.from_dict(
            {
                "id": "p",
                "layers": layers,
                "pricing": {"models": {"m": {"input": "inf", "output": 1}}},
            }
        )
