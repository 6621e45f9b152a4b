"""The judge on users, from a table of cases (tests/data/judge_cases.json), and its guarantees.

Each arm of a case is described user by user (a user's counters, a group of alike users, or
copies of a named mix of users) and reduced with ``accumulate_users`` (``ArmAccumulator`` when
the users span activity classes), as the store reduces the routers' evidence. The table covers
every rule ``judge()`` can return, in the order the module docstring gives them.
"""

from __future__ import annotations

import copy
import doctest
import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_graylayer.judging import judge as judge_module
from langchain_graylayer.judging.judge import (
    Action,
    GuardrailResult,
    JudgeInput,
    Rule,
    Verdict,
    judge,
    moments,
)
from langchain_graylayer.judging.stats import cs_halfwidth, exceeds_floor
from langchain_graylayer.plan.gates import Gates, Guardrail, GuardrailMetric, Judging
from langchain_graylayer.simulate.arms import N_FIELDS
from langchain_graylayer.simulate.arms import UserArm as _Arm
from langchain_graylayer.store.evidence import (
    FIELDS,
    ArmAccumulator,
    ArmTotals,
    accumulate_users,
)

TABLE: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "data" / "judge_cases.json").read_text(encoding="utf-8")
)
MIXES: dict[str, list[dict[str, Any]]] = TABLE["mixes"]
CASES: list[dict[str, Any]] = TABLE["cases"]
BY_NAME = {case["name"]: case for case in CASES}


def users_of(items: list[dict[str, Any]], activity: int = 0) -> list[tuple[int, dict[str, float]]]:
    """Expand an arm's description into (activity class, counters) per user."""
    users: list[tuple[int, dict[str, float]]] = []
    for item in items:
        cls = item.get("activity", activity)
        if "mix" in item:
            for _ in range(item.get("times", 1)):
                users += users_of(MIXES[item["mix"]], cls)
        elif "users" in item:
            users += [(cls, dict(item.get("each", {})))] * item["users"]
        else:
            users.append((activity, dict(item)))
    return users


def arm(items: list[dict[str, Any]] | None) -> ArmTotals | None:
    if items is None:
        return None
    return _reduce(json.dumps(items))


@functools.cache
def _reduce(items: str) -> ArmTotals:
    """One arm's totals (cached: the tables' big arms are reduced once per session)."""
    users = users_of(json.loads(items))
    classes = {cls for cls, _ in users}
    if len(classes) <= 1:
        return accumulate_users([c for _, c in users], activity=min(classes, default=0))
    mixed = ArmAccumulator()
    for index, (cls, counts) in enumerate(users):
        mixed.add(f"u{index}", cls, counts)
    return mixed.totals()


def judge_input(case: dict[str, Any]) -> JudgeInput:
    return JudgeInput(
        layer="normal",
        gates=Gates(**case.get("gates", {})),
        judging=Judging(**case.get("judging", {})),
        candidate=arm(case["candidate"]),
        stable=arm(case["stable"]),
        ratio=case["ratio"],
        elapsed=case["elapsed"],
        tests=case.get("tests", 16),
    )


def guardrail(verdict: Verdict, metric: str) -> GuardrailResult:
    return next(g for g in verdict.guardrails if g.metric == metric)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_judge_table(case: dict[str, Any]) -> None:
    verdict = judge(judge_input(case))
    expected = case["expected"]
    got = (verdict.action.value, verdict.rule.value)
    assert got == (expected["action"], expected["rule"]), verdict.reason
    assert expected["reason"] in verdict.reason
    assert verdict.alert is expected["alert"]
    assert verdict.detail == expected["detail"]
    assert verdict.key == (verdict.action, verdict.rule, verdict.detail, verdict.alert)
    if "srm" in case:
        if case["srm"] is None:
            assert verdict.srm is None
        else:
            assert verdict.srm is not None
            for key, value in case["srm"].items():
                assert verdict.srm[key] == pytest.approx(value), key
    if "guardrail" in case:
        want = dict(case["guardrail"])
        result = guardrail(verdict, want.pop("metric"))
        note = want.pop("note", None)
        for key, value in want.items():
            assert getattr(result, key) == value, key
        if note is not None:
            assert note in result.note
    json.dumps(verdict.to_dict(), allow_nan=False)  # audit-ready


def test_the_table_covers_every_rule_the_judge_returns() -> None:
    """Every rule but ``metrics_unavailable`` (the controller's, when the store cannot answer)."""
    covered = {case["expected"]["rule"] for case in CASES}
    assert covered == {rule.value for rule in Rule} - {Rule.METRICS_UNAVAILABLE.value}
    assert {case["expected"]["action"] for case in CASES} == {a.value for a in Action}


def test_a_few_unlucky_users_break_the_floor_only_on_a_per_request_view() -> None:
    """Four users whose twenty requests all failed put the raw error rate at 52.6 %. The floor's
    own always-valid bound, fed the per-request binomial variance (every request independent),
    would call that significantly above the 20 % floor; over users it is not, and the judge
    holds."""
    case = BY_NAME["hard floor: a few unlucky users are not evidence (raw rate 52.6% > 20%)"]
    data = judge_input(case)
    assert data.candidate is not None
    errors = moments(data.candidate, GuardrailMetric.ERROR_RATE)
    assert errors.rate == pytest.approx(80 / 152)
    split = data.judging.alpha / ((len(data.gates.guardrails) + 1) * data.tests)
    per_request = cs_halfwidth(
        math.sqrt(errors.binomial_floor()), errors.users, split, data.judging.n_star, True
    )
    assert errors.rate - per_request > 0.2
    broken, lower = exceeds_floor(errors, 0.2, alpha=split, n_star=data.judging.n_star)
    assert not broken
    assert lower < 0.2
    verdict = judge(data)
    assert verdict.action is Action.HOLD
    assert verdict.rule is not Rule.HARD_FLOOR


def test_an_srm_hold_reports_no_guardrail_and_a_harmful_comparison_it_refused() -> None:
    skewed = judge(judge_input(BY_NAME[
        "sample-ratio mismatch holds a harmful-looking candidate (30% of users at ratio 50%)"
    ]))  # fmt: skip
    assert (skewed.action, skewed.rule, skewed.alert) == (
        Action.HOLD,
        Rule.SAMPLE_RATIO_MISMATCH,
        True,
    )
    assert skewed.guardrails == ()
    assert skewed.srm is not None
    assert skewed.srm["log_bf"] >= math.log(1 / Judging().srm_alpha)


def test_every_verdict_explains_each_guardrail() -> None:
    verdict = judge(judge_input(BY_NAME["harm: completion collapse"]))
    assert [g.metric for g in verdict.guardrails] == [g.metric.value for g in Gates().guardrails]
    completion = guardrail(verdict, "completion_rate")
    assert completion.harm
    assert completion.upper < 0
    assert completion.lower <= completion.estimate <= completion.upper
    assert (completion.n_candidate, completion.n_stable) == (300, 2700)
    assert completion.candidate_rate == pytest.approx(12 / 22)
    assert completion.estimate == pytest.approx(12 / 22 - 0.84)
    tools = guardrail(verdict, "tool_success_rate")  # the candidate made no tool call
    assert tools.applicable
    assert not tools.harm
    assert "candidate has 0 observations" in tools.note
    assert verdict.qos is not None
    assert verdict.qos["candidate"] < verdict.qos["stable"]  # type: ignore[operator]


def test_verdict_to_dict_is_json_ready() -> None:
    verdict = judge(judge_input(BY_NAME[
        "an agent without tools is promoted (tool success not applicable)"
    ]))  # fmt: skip
    tools = guardrail(verdict, "tool_success_rate")
    assert not tools.applicable
    assert math.isnan(tools.estimate)
    data = verdict.to_dict()
    text = json.dumps(data, allow_nan=False)  # NaN and infinities are gone
    assert json.loads(text) == data
    assert (data["action"], data["rule"]) == ("promote", "non_inferior")
    assert isinstance(data["action"], str)
    assert type(data["rule"]) is str
    row = next(g for g in data["guardrails"] if g["metric"] == "tool_success_rate")
    assert row["estimate"] is None
    assert row["candidate_rate"] is None
    assert set(row) == set(GuardrailResult.__dataclass_fields__)
    assert set(data) == set(Verdict.__dataclass_fields__)


def test_missing_data_is_reported_as_none_never_scored_as_zero() -> None:
    verdict = judge(JudgeInput("vip", Gates(), Judging(), None, None, 0.01, 60.0))
    assert (verdict.action, verdict.rule) == (Action.HOLD, Rule.NO_CANDIDATE_TRAFFIC)
    assert verdict.qos == {"candidate": None, "stable": None}
    assert (verdict.n_candidate, verdict.n_stable) == (0, 0)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_judge_is_pure(case: dict[str, Any]) -> None:
    """Same input, same verdict; the input is not touched."""
    data = judge_input(case)
    before = copy.deepcopy(data)
    first, second = judge(data), judge(data)
    assert first.to_dict() == second.to_dict()
    assert first.key == second.key
    assert data == before


def test_docstring_examples_run() -> None:
    assert doctest.testmod(judge_module, raise_on_error=False).failed == 0


# --- guarantees under clustered users, peeking at every batch ------------------------------------


def clustered_step(
    rng: np.random.Generator, users: int, p_candidate: float, ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A step's users in arrival order: in the candidate or not, requests (heavy-tailed), and
    completions from each user's own propensity (Beta, intra-class correlation 0.3)."""
    kappa = (1 - 0.3) / 0.3
    in_candidate = rng.random(users) < ratio
    mean = np.where(in_candidate, p_candidate, 0.85)
    requests = 1 + np.floor(rng.lognormal(0.7, 1.0, users))
    propensity = rng.beta(mean * kappa, (1 - mean) * kappa)
    completions = rng.binomial(requests.astype(np.int64), propensity)
    return in_candidate, requests, completions


def monitor(p_candidate: float, runs: int, seed: int) -> tuple[list[Action], int]:
    """One 10 % step of 4 000 users, judged after every 200 (the simulator's ``_Arm`` holds
    the evidence), on completion and errors with the whole alpha on this one step: the first
    non-hold action of each run, and the runs that would have rolled back at *some* peek."""
    rng = np.random.default_rng(seed)
    watched = (GuardrailMetric.COMPLETION_RATE, GuardrailMetric.ERROR_RATE)
    gates = Gates(bake_time=60, guardrails=tuple(Guardrail(metric=m) for m in watched))
    judging = Judging()
    requests_col, completions_col = FIELDS.index("requests"), FIELDS.index("completions")
    first, ever_rolled_back = [], 0
    for _ in range(runs):
        in_candidate, requests, completions = clustered_step(rng, 4000, p_candidate, 0.1)
        arms = {True: _Arm(4000), False: _Arm(4000)}
        decision, rolled_back = Action.HOLD, False
        for start in range(0, 4000, 200):
            batch = np.arange(start, start + 200)
            for side, held in arms.items():
                who = batch[in_candidate[batch] == side]
                counts = np.zeros((len(who), N_FIELDS))
                counts[:, requests_col] = requests[who]
                counts[:, completions_col] = completions[who]
                held.add(who, np.zeros(len(who), dtype=np.int64), counts)
            verdict = judge(
                JudgeInput("normal", gates, judging, arms[True].totals(), arms[False].totals(),
                           0.1, 7200.0, tests=1)
            )  # fmt: skip
            if decision is Action.HOLD:
                decision = verdict.action
            if verdict.action is Action.ROLLBACK:
                rolled_back = True
                break
        first.append(decision)
        ever_rolled_back += rolled_back
    return first, ever_rolled_back


def test_aa_with_clustered_users_rolls_back_within_alpha_at_any_peek() -> None:
    """A/A over clustered users, peeking 20 times and past any promotion: at most alpha of the
    runs ever see a rollback (the step's tests share ``judging.alpha``)."""
    _, rolled_back = monitor(0.85, 150, seed=7)
    assert rolled_back / 150 <= Judging().alpha


def test_a_fifteen_point_drop_is_caught_and_never_promoted() -> None:
    first, _ = monitor(0.70, 40, seed=11)
    assert first.count(Action.ROLLBACK) / len(first) >= 0.95
    assert Action.PROMOTE not in first
