"""The cost guardrail's parts: the relative comparison (a table of cases and an A/A under
continuous monitoring), the choice of money or tokens, the verdict, and counting a run's calls."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.judging.cost import arm_moments, compare_relative, cost_comparison
from langchain_graylayer.judging.judge import Action, JudgeInput, Rule, judge
from langchain_graylayer.judging.stats import RatioMoments
from langchain_graylayer.measuring.cost import (
    ModelCall,
    RunCost,
    call_of_message,
    calls_of_result,
)
from langchain_graylayer.plan import Pricing
from langchain_graylayer.plan.gates import Gates, Guardrail, GuardrailMetric, Judging
from langchain_graylayer.store.evidence import ArmTotals, accumulate_users


def moments(cost: Any, requests: Any) -> RatioMoments:
    """Per-user cost and requests → the arm's ratio moments."""
    y, x = np.asarray(cost, float), np.asarray(requests, float)
    return RatioMoments(len(y), y.sum(), x.sum(), (y * y).sum(), (x * x).sum(), (x * y).sum())


def users(n: int, per_request: float, seed: int, sigma: float = 0.5) -> RatioMoments:
    """``n`` users with 1-4 requests each, each user's cost per request log-normal (mean one)
    around ``per_request``."""
    rng = np.random.default_rng(seed)
    requests = rng.integers(1, 5, n)
    scale = rng.lognormal(-sigma * sigma / 2, sigma, n)
    return moments(requests * per_request * scale, requests)


STABLE = users(2000, 0.01, seed=1)

CASES = [
    # (name, candidate, margin, harm, non_inferior)
    ("same cost, large arms: within a 20 % budget", users(2000, 0.01, 2), 0.2, False, True),
    ("1.5× cost: over a 20 % budget", users(2000, 0.015, 3), 0.2, True, False),
    ("1.1× cost: within a 20 % budget", users(2000, 0.011, 4), 0.2, False, True),
    ("1.5× cost: within an 80 % budget", users(2000, 0.015, 5), 0.8, False, True),
    ("1.2× cost: at the budget, neither", users(2000, 0.012, 6), 0.2, False, False),
    ("cheaper: within even a zero budget", users(2000, 0.007, 7), 0.0, False, True),
    ("1.5× cost in 30 users: too few to call harm", users(30, 0.015, 8), 0.2, False, False),
]


@pytest.mark.parametrize(("name", "cand", "margin", "harm", "non_inferior"), CASES)
def test_relative_comparison_table(
    name: str, cand: RatioMoments, margin: float, harm: bool, non_inferior: bool
) -> None:
    c = compare_relative(cand, STABLE, alpha=0.01, n_star=400, margin=margin)
    assert (c.harm, c.non_inferior) == (harm, non_inferior), name
    assert c.lower <= c.estimate <= c.upper
    assert c.estimate == pytest.approx(cand.rate / STABLE.rate - 1)


@pytest.mark.parametrize(
    ("cand", "stable", "reason"),
    [
        (users(5, 0.01, 1), STABLE, "candidate has 5 users"),
        (STABLE, users(9, 0.01, 1), "stable has 9 users"),
        (moments([0.0] * 20, [1] * 20), STABLE, "no cost in one of the arms"),
        (moments([], []), moments([], []), "candidate has 0 users"),
    ],
)
def test_too_little_data_is_inconclusive_never_harm(
    cand: RatioMoments, stable: RatioMoments, reason: str
) -> None:
    c = compare_relative(cand, stable, alpha=0.05, n_star=400, margin=0.0)
    assert c.inconclusive
    assert reason in (c.inconclusive_reason or "")
    assert not c.harm
    assert not c.non_inferior
    assert (c.lower, c.upper) == (-1.0, math.inf)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("alpha", {"alpha": 0.5}),
        ("alpha", {"alpha": 0.0}),
        ("n_star", {"n_star": 0.0}),
        ("margin", {"margin": -0.1}),
        ("min_users", {"min_users": 1}),
    ],
)
def test_bad_settings_are_named(field: str, kwargs: dict[str, float]) -> None:
    settings: dict[str, Any] = {"alpha": 0.05, "n_star": 400.0, "margin": 0.2, **kwargs}
    with pytest.raises(ConfigurationError, match=field):
        compare_relative(STABLE, STABLE, **settings)


def test_an_aa_watched_after_every_batch_rarely_calls_harm_even_at_a_zero_budget() -> None:
    """Always valid: 300 A/A rollouts with heavy-tailed per-user cost (log-normal σ 1.2, a few
    users cost most), each looked at after every 20 users up to 800 per arm. A zero budget is
    the hardest case (any significant increase is harm); the false-harm rate stays near α."""
    alpha, looks, batch, reps = 0.05, 40, 20, 300
    rng = np.random.default_rng(11)
    false_harm = 0
    for _ in range(reps):
        arms = []
        for _arm in range(2):
            requests = rng.integers(1, 6, looks * batch)
            scale = rng.lognormal(-0.72, 1.2, looks * batch)
            cost = rng.gamma(2.0 * requests, 0.005 * scale)  # Gamma(2) per request
            arms.append((cost, requests))
        for k in range(1, looks + 1):
            n = k * batch
            c = compare_relative(
                moments(arms[0][0][:n], arms[0][1][:n]),
                moments(arms[1][0][:n], arms[1][1][:n]),
                alpha=alpha, n_star=400, margin=0.0,
            )  # fmt: skip
            if c.harm:
                false_harm += 1
                break
    assert false_harm / reps <= 0.08, false_harm


def test_a_15x_candidate_is_caught_under_the_same_monitoring() -> None:
    """50 rollouts of a candidate at 1.5× cost (users' cost log-normal σ 0.5 around theirs),
    looked at every 20 users up to 800 per arm: a +20 % budget catches nearly all. (At σ 1.2
    the same 800 users catch about a third: heavy-tailed cost needs more users.)"""
    rng = np.random.default_rng(12)
    caught = 0
    for _ in range(50):
        stable_n = rng.integers(1, 6, 800)
        cand_n = rng.integers(1, 6, 800)
        stable_cost = rng.gamma(2.0 * stable_n, 0.005 * rng.lognormal(-0.125, 0.5, 800))
        cand_cost = rng.gamma(2.0 * cand_n, 0.0075 * rng.lognormal(-0.125, 0.5, 800))
        for n in range(20, 801, 20):
            c = compare_relative(
                moments(cand_cost[:n], cand_n[:n]), moments(stable_cost[:n], stable_n[:n]),
                alpha=0.05, n_star=400, margin=0.2,
            )  # fmt: skip
            if c.harm:
                caught += 1
                break
    assert caught >= 45


# --------------------------------------------------------------------------- money or tokens
def arm(per_user: list[dict[str, float]]) -> ArmTotals:
    return accumulate_users(per_user)


def test_money_when_every_request_was_priced_else_tokens() -> None:
    priced = arm([{"requests": 2, "cost": 0.02, "input_tokens": 900, "output_tokens": 100}] * 30)
    other = arm([{"requests": 1, "cost": 0.01, "input_tokens": 400, "output_tokens": 100}] * 30)
    settings: dict[str, Any] = {"alphas": (0.01, 0.05), "n_stars": (400, 5000), "margin": 0.2}
    money = cost_comparison(priced, other, **settings)
    assert (money.unit, money.priced) == ("money", True)
    assert money.candidate.rate == pytest.approx(0.01)
    one_unpriced = arm(
        [{"requests": 2, "cost": 0.02, "input_tokens": 900, "output_tokens": 100}] * 29
        + [{"requests": 1, "unpriced": 1, "input_tokens": 5000, "output_tokens": 0}]
    )
    tokens = cost_comparison(one_unpriced, other, **settings)
    assert (tokens.unit, tokens.priced) == ("tokens", False)
    assert tokens.candidate.rate == pytest.approx((29 * 1000 + 5000) / 59)
    assert tokens.stable.rate == 500
    assert cost_comparison(ArmTotals(), ArmTotals(), **settings).harm is None


def test_arm_moments_sums_a_weighted_numerator() -> None:
    totals = arm([{"requests": 2, "input_tokens": 3, "output_tokens": 1}, {"requests": 1}])
    m = arm_moments(totals, {"input_tokens": 1.0, "output_tokens": 1.0}, "requests")
    assert (m.users, m.y, m.x, m.y_sq, m.x_sq, m.xy) == (2, 4.0, 3.0, 16.0, 5.0, 8.0)


GATES = Gates(
    min_samples=20, bake_time=1, guardrails=(Guardrail(metric="cost_per_request", margin=0.2),)
)


def test_the_judge_rolls_back_a_candidate_over_its_cost_budget() -> None:
    rng = np.random.default_rng(3)

    def users_of(per_request: float, n: int) -> ArmTotals:
        scale = rng.lognormal(-0.125, 0.5, n)
        return arm([{"requests": 2, "cost": 2 * per_request * s} for s in scale])

    data = JudgeInput("everyone", GATES, Judging(), users_of(0.015, 300), users_of(0.01, 300),
                      0.5, 60.0, currency="EUR")  # fmt: skip
    verdict = judge(data)
    assert (verdict.action, verdict.rule, verdict.detail) == (
        Action.ROLLBACK, Rule.HARM, "cost_per_request"
    )  # fmt: skip
    assert "EUR per request" in verdict.reason
    assert "budget +20%" in verdict.reason
    (result,) = verdict.guardrails
    assert (result.unit, result.harm, result.applicable) == ("money", True, True)
    assert result.lower > 0.2
    assert result.estimate == pytest.approx(0.5, abs=0.1)
    assert verdict.to_dict()["guardrails"][0]["unit"] == "money"

    same = judge(JudgeInput("everyone", GATES, Judging(), users_of(0.01, 300),
                            users_of(0.01, 300), 0.5, 60.0))  # fmt: skip
    assert same.action is Action.PROMOTE
    assert same.guardrails[0].non_inferior


def test_the_judge_says_when_it_compares_tokens() -> None:
    cand = arm([{"requests": 1, "unpriced": 1, "input_tokens": 1000}] * 40)
    stable = arm([{"requests": 1, "cost": 0.001, "input_tokens": 1000}] * 40)
    verdict = judge(JudgeInput("everyone", GATES, Judging(), cand, stable, 0.5, 60.0))
    (result,) = verdict.guardrails
    assert result.unit == "tokens"
    assert "unpriced model" in result.note
    assert not result.harm


def test_cost_is_opt_in_and_its_margin_is_relative() -> None:
    assert GuardrailMetric.COST_PER_REQUEST not in {g.metric for g in Gates().guardrails}
    assert GuardrailMetric.COST_PER_REQUEST.relative
    assert not GuardrailMetric.COST_PER_REQUEST.higher_is_better
    assert not GuardrailMetric.COMPLETION_RATE.relative


# --------------------------------------------------------------------------- a run's calls
PRICES = Pricing(models={"gpt-4o": {"input": 2.5, "output": 10.0}})


def reply(metadata: dict[str, Any], inputs: int = 1000, outputs: int = 200) -> AIMessage:
    usage = {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}
    return AIMessage("ok", response_metadata=metadata, usage_metadata=usage)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metadata", "default", "model"),
    [
        ({"model_name": "gpt-4o-2024-08-06"}, "", "gpt-4o-2024-08-06"),
        ({"model": "claude-sonnet-4"}, "", "claude-sonnet-4"),  # Anthropic's key
        ({}, "gpt-4o", "gpt-4o"),  # the run's ls_model_name
        ({}, "", ""),
    ],
)
def test_the_model_comes_from_the_response(
    metadata: dict[str, Any], default: str, model: str
) -> None:
    assert call_of_message(reply(metadata), default) == ModelCall(model, 1000, 200)


def test_a_message_without_usage_is_no_call() -> None:
    assert call_of_message(AIMessage("hi")) is None
    assert call_of_message(reply({}, 0, 0)) is None


def test_calls_of_a_result_and_the_legacy_token_usage() -> None:
    result = LLMResult(generations=[[ChatGeneration(message=reply({"model_name": "gpt-4o"}))]])
    assert calls_of_result(result) == [ModelCall("gpt-4o", 1000, 200)]
    legacy = LLMResult(
        generations=[[ChatGeneration(message=AIMessage("ok"))]],
        llm_output={"model_name": "gpt-4o", "token_usage": {"prompt_tokens": 7,
                                                            "completion_tokens": 3}},
    )  # fmt: skip
    assert calls_of_result(legacy) == [ModelCall("gpt-4o", 7, 3)]


def test_a_run_adds_money_and_counts_what_it_cannot_price() -> None:
    run = RunCost(PRICES).add_all(
        [ModelCall("gpt-4o-mini", 1000, 200), ModelCall("gpt-4o", 1000, 200), ModelCall("", 5, 5)]
    )
    # "gpt-4o-mini" starts with "gpt-4o": the longest listed prefix prices it
    assert run.cost == pytest.approx(2 * 0.0045)
    assert (run.input_tokens, run.output_tokens, run.unpriced) == (2005, 405, 1)
    nothing = RunCost(None)
    assert nothing.add(ModelCall("gpt-4o", 10, 10)) is None
    assert (nothing.cost, nothing.unpriced) == (0.0, 1)
