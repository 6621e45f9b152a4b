"""The judge, from a table of cases (tests/data/judge_cases.json), and its guarantees."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_graylayer.judging.judge import Action, JudgeInput, judge
from langchain_graylayer.judging.qos import article_qos_verdict
from langchain_graylayer.judging.readmodel import ArmStats, LatencySummary
from langchain_graylayer.plan.gates import Gates, Judging

CASES = json.loads((Path(__file__).parents[1] / "data" / "judge_cases.json").read_text())["cases"]


def arm(data: dict[str, Any] | None) -> ArmStats | None:
    if data is None:
        return None
    data = dict(data)
    latency = data.pop("latency", None)
    if latency is not None:
        buckets = tuple((math.inf if b == "inf" else b, c) for b, c in latency["buckets"])
        data["latency"] = LatencySummary(latency["count"], latency["sum"], buckets)
    return ArmStats(**data)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_judge_table(case: dict[str, Any]) -> None:
    data = JudgeInput(
        layer="normal",
        gates=Gates(**case.get("gates", {})),
        judging=Judging(**case.get("judging", {})),
        candidate=arm(case["candidate"]),
        stable=arm(case["stable"]),
        ratio=case["ratio"],
        elapsed=case["elapsed"],
        tests=16,
    )
    verdict = judge(data)
    assert verdict.action.value == case["expected"], verdict.reason
    assert case["reason"] in verdict.reason
    assert verdict.alert is case.get("alert", False)
    json.dumps(verdict.to_dict())  # audit-ready


def test_every_verdict_explains_each_guardrail() -> None:
    verdict = judge(
        JudgeInput("normal", Gates(), Judging(), arm(CASES[4]["candidate"]),
                   arm(CASES[4]["stable"]), 0.1, 600.0)
    )  # fmt: skip
    completion = next(g for g in verdict.guardrails if g.metric == "completion_rate")
    assert completion.harm
    assert completion.upper < 0
    assert (completion.n_candidate, completion.n_stable) == (300, 2700)
    assert completion.candidate_rate == pytest.approx(0.6)
    tools = next(g for g in verdict.guardrails if g.metric == "tool_success_rate")
    assert not tools.applicable
    assert verdict.qos is not None
    assert verdict.qos["candidate"] < verdict.qos["stable"]  # type: ignore[operator]


def test_missing_data_is_reported_as_none_never_scored_as_zero() -> None:
    verdict = judge(JudgeInput("vip", Gates(), Judging(), None, None, 0.01, 60.0))
    assert verdict.action is Action.HOLD
    assert verdict.qos == {"candidate": None, "stable": None}
    # the article's rule reads missing data as zeros and would roll back on silence:
    assert article_qos_verdict(0.0) == "rollback"


def simulate(p_candidate: float, seeds: int, rng: np.random.Generator) -> list[Action]:
    """One 10% step: judge after every 50 candidate requests up to 3000; first action wins."""
    decisions = []
    for _ in range(seeds):
        c = rng.random(3000) < p_candidate
        s = rng.random(27000) < 0.85
        decision = Action.HOLD
        for n in range(50, 3001, 50):
            cand = ArmStats(requests=n, completions=int(c[:n].sum()))
            stable = ArmStats(requests=9 * n, completions=int(s[: 9 * n].sum()))
            verdict = judge(
                JudgeInput("normal", Gates(bake_time=60), Judging(), cand, stable, 0.1, 7200, 16)
            )
            if verdict.action is not Action.HOLD:
                decision = verdict.action
                break
        decisions.append(decision)
    return decisions


def test_aa_false_rollbacks_stay_within_alpha_under_continuous_monitoring() -> None:
    decisions = simulate(0.85, 200, np.random.default_rng(7))
    assert decisions.count(Action.ROLLBACK) / len(decisions) <= 0.05


def test_a_ten_point_drop_is_caught() -> None:
    decisions = simulate(0.75, 60, np.random.default_rng(11))
    assert decisions.count(Action.ROLLBACK) / len(decisions) >= 0.95
    assert Action.PROMOTE not in decisions
