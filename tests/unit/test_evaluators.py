"""Evaluators: the plan's declarations, sampling, scores, per-user evidence, the judge, and the
background runner's bounds (timeout, queue, spend cap) with real functions and Runnables."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from prometheus_client import CollectorRegistry

from langchain_graylayer import MemoryStore, RolloutPlan
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.judging.judge import Action, JudgeInput, Rule, judge
from langchain_graylayer.measuring.evaluation import EvaluationMetrics, Evaluations
from langchain_graylayer.measuring.evaluators import score_of
from langchain_graylayer.measuring.evidence import EvidenceRecorder
from langchain_graylayer.measuring.labels import RunLabels
from langchain_graylayer.plan.evaluators import EvaluatorMetric, sampled
from langchain_graylayer.plan.gates import Gates, Guardrail, Judging
from langchain_graylayer.store.evidence import accumulate_users, field_pair
from langchain_graylayer.testing import ScriptedChatModel

LABELS = RunLabels("p", "candidate", "normal", "0@1.000", "unit-1", 2)
STEP = "0@1.000"


def plan_with(*evaluators: dict[str, Any], **extra: Any) -> RolloutPlan:
    return RolloutPlan.default("p", evaluators=list(evaluators), **extra)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


# ----------------------------------------------------------------------------- the plan
@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"evaluators": [{"name": "a"}, {"name": "a"}]}, "evaluators[1].name"),
        ({"evaluators": [{"name": "Bad-Name"}]}, "evaluators[0].name"),
        ({"evaluators": [{"name": "a", "sampling_rate": 1.5}]}, "evaluators[0].sampling_rate"),
        ({"evaluators": [{"name": "a", "max_cost_per_hour": 1.0}]}, "max_cost_per_hour"),
        ({"gates": {"guardrails": [{"metric": "eval:nobody"}]}}, "gates.guardrails[0].metric"),
        ({"gates": {"guardrails": [{"metric": "hallucination"}]}}, "gates.guardrails[0].metric"),
    ],
)
def test_a_plan_with_a_bad_evaluator_fails_at_load_naming_the_field(
    data: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RolloutPlan.from_dict({"id": "p", "layers": [{"name": "all", "members": ["a"]}], **data})
    assert field in str(caught.value)


def test_an_evaluator_guardrail_round_trips_through_a_dict() -> None:
    plan = plan_with(
        {"name": "policy", "kind": "runnable", "sampling_rate": 0.25},
        gates={"guardrails": [{"metric": "eval:policy", "margin": 0.02}]},
    )
    again = RolloutPlan.from_dict(plan.model_dump(mode="json"))
    assert again == plan
    assert isinstance(again.gates.guardrails[0].metric, EvaluatorMetric)
    assert again.gates.guardrails[0].metric.evaluator == "policy"


# ----------------------------------------------------------------------------- sampling
def test_sampling_is_a_pure_function_of_the_evaluator_and_the_run() -> None:
    runs = [f"run-{i}" for i in range(20_000)]
    picked = [r for r in runs if sampled("policy", r, 0.1)]
    assert picked == [r for r in runs if sampled("policy", r, 0.1)]  # same in every process
    assert abs(len(picked) / len(runs) - 0.1) < 0.01
    other = {r for r in runs if sampled("tone", r, 0.1)}
    assert len(other & set(picked)) < 0.02 * len(runs)  # evaluators sample independently
    assert all(sampled("policy", r, 1.0) for r in runs[:100])
    assert not any(sampled("policy", r, 0.0) for r in runs[:100])


# ----------------------------------------------------------------------------- scores
@pytest.mark.parametrize(
    ("answer", "score"),
    [
        (True, 1.0), (False, 0.0), (0.4, 0.4), (1, 1.0),
        ({"key": "k", "score": True}, 1.0), ([{"score": 1.0}, {"score": 0.0}], 0.5),
        ((False, "made up a date"), 0.0), ("PASS", 1.0), ("fail: invented a fee", 0.0),
        ("0.75", 0.75), (AIMessage("Yes."), 1.0), (AIMessage("no"), 0.0),
    ],
)  # fmt: skip
def test_an_answer_becomes_a_score(answer: Any, score: float) -> None:
    assert score_of(answer) == score


@pytest.mark.parametrize("answer", [None, 1.5, -0.1, float("nan"), "maybe", {"verdict": 1}, []])
def test_an_answer_without_a_score_is_refused(answer: Any) -> None:
    with pytest.raises(ValueError, match=r"score|evaluator"):
        score_of(answer)


# ----------------------------------------------------------------------------- evidence, judge
def test_named_fields_keep_exact_products_over_users() -> None:
    users = [
        {"requests": 3, "eval.p.n": 2, "eval.p.pass": 1},
        {"requests": 1, "eval.p.n": 1, "eval.p.pass": 1},
        {"requests": 2},
    ]
    arm = accumulate_users(users)
    assert arm.users == 3
    assert (arm.total("eval.p.n"), arm.total("eval.p.pass")) == (3.0, 2.0)
    assert arm.product("eval.p.n", "eval.p.n") == 2 * 2 + 1
    assert arm.product("eval.p.pass", "eval.p.n") == arm.product("eval.p.n", "eval.p.pass") == 3
    assert arm.positive("eval.p.pass") == 2
    assert field_pair("eval.p.pass", "eval.p.n") == ("eval.p.n", "eval.p.pass")
    assert field_pair("eval.p.n", "requests") == ("requests", "eval.p.n")


def test_a_field_that_is_neither_known_nor_named_is_refused() -> None:
    with pytest.raises(KeyError):
        accumulate_users([{"requests": 1, "bogus": 1}])


def _arm(users: int, evaluated: int, passes: int) -> Any:
    return accumulate_users(
        [{"requests": 1, "completions": 1, "eval.h.n": 1, "eval.h.pass": 1}] * passes
        + [{"requests": 1, "completions": 1, "eval.h.n": 1}] * (evaluated - passes)
        + [{"requests": 1, "completions": 1}] * (users - evaluated)
    )


def test_the_judge_rolls_back_on_an_evaluator_guardrail() -> None:
    gates = Gates(guardrails=(Guardrail(metric="eval:h", margin=0.05),))  # type: ignore[arg-type]
    candidate, stable = _arm(200, 100, 60), _arm(1800, 900, 855)  # 60 % vs 95 % pass
    verdict = judge(JudgeInput("normal", gates, Judging(), candidate, stable, 0.1, 60.0))
    assert (verdict.action, verdict.rule, verdict.detail) == (Action.ROLLBACK, Rule.HARM, "eval:h")
    row = verdict.guardrails[0]
    assert (row.candidate_rate, row.stable_rate, row.n_candidate) == (0.6, 0.95, 200)


def test_an_evaluator_that_evaluated_nothing_is_not_applicable() -> None:
    gates = Gates(guardrails=(Guardrail(metric="eval:h", margin=0.05),))  # type: ignore[arg-type]
    candidate, stable = _arm(200, 0, 0), _arm(1800, 0, 0)
    verdict = judge(JudgeInput("normal", gates, Judging(), candidate, stable, 0.1, 60.0))
    assert verdict.action is Action.HOLD
    assert not verdict.guardrails[0].applicable


# ----------------------------------------------------------------------------- the runner
def runner(
    store: MemoryStore,
    plan: RolloutPlan,
    registry: CollectorRegistry,
    clock: Any = time.monotonic,
    **implementations: Any,
) -> Evaluations:
    return Evaluations(
        plan, implementations, EvidenceRecorder(store, plan),
        metrics=EvaluationMetrics.of(registry), clock=clock,
    )  # fmt: skip


def test_a_runnable_judge_scores_runs_into_the_evidence() -> None:
    store, registry = MemoryStore(), CollectorRegistry()
    plan = plan_with({"name": "polite", "kind": "runnable"})
    judge_chain = RunnableLambda(lambda d: "pass" if "please" in d["output"] else "fail")
    evaluations = runner(store, plan, registry, polite=judge_chain)
    for i, answer in enumerate(["please wait", "no", "please hold"]):
        evaluations.run_ended(LABELS, f"run-{i}", None, "refund?", answer)
    assert evaluations.drain(10.0)
    arm = store.read_evidence("p", "normal", STEP)["candidate"]
    assert (arm.total("eval.polite.n"), arm.total("eval.polite.pass")) == (3.0, 2.0)
    assert value(registry, "graylayer_evaluations_total", outcome="pass") == 2
    assert value(registry, "graylayer_evaluation_score_total", evaluator="polite") == 2
    evaluations.close()


def test_invert_turns_a_harm_score_into_a_pass() -> None:
    store, registry = MemoryStore(), CollectorRegistry()
    plan = plan_with({"name": "hallucinated", "invert": True})
    evaluations = runner(store, plan, registry, hallucinated=lambda i, o, m: "always" in o)
    evaluations.run_ended(LABELS, "r1", None, "q", "it always works")
    evaluations.run_ended(LABELS, "r2", None, "q", "it may work")
    assert evaluations.drain(10.0)
    arm = store.read_evidence("p", "normal", STEP)["candidate"]
    assert arm.total("eval.hallucinated.pass") == 1.0
    evaluations.close()


def test_a_slow_evaluator_times_out_and_the_run_is_not_evaluated() -> None:
    store, registry = MemoryStore(), CollectorRegistry()
    plan = plan_with({"name": "slow", "timeout": 0.1, "concurrency": 2})
    release = threading.Event()
    evaluations = runner(store, plan, registry, slow=lambda i, o, m: release.wait(5.0))
    started = time.perf_counter()
    evaluations.run_ended(LABELS, "r1", None, "q", "a")
    assert time.perf_counter() - started < 0.05  # the caller never waits for an evaluator
    assert evaluations.drain(5.0)
    release.set()
    assert value(registry, "graylayer_evaluations_total", outcome="timeout") == 1
    assert "p" not in str(store.read_evidence("p", "normal", STEP).get("candidate"))
    evaluations.close()


def test_past_max_pending_a_sampled_run_is_dropped_and_counted() -> None:
    store, registry = MemoryStore(), CollectorRegistry()
    plan = plan_with({"name": "busy", "concurrency": 1, "max_pending": 2})
    release = threading.Event()
    evaluations = runner(store, plan, registry, busy=lambda i, o, m: release.wait(5.0))
    for i in range(5):
        evaluations.run_ended(LABELS, f"r{i}", None, "q", "a")
    release.set()
    assert evaluations.drain(10.0)
    assert value(registry, "graylayer_evaluations_total", outcome="dropped") == 3
    assert value(registry, "graylayer_evaluations_total", outcome="pass") == 2
    evaluations.close()


def test_a_money_cap_pauses_sampling_until_the_hour_has_passed() -> None:
    now = [1000.0]
    store, registry = MemoryStore(), CollectorRegistry()
    plan = plan_with(
        {"name": "judge", "kind": "runnable", "max_cost_per_hour": 0.001, "concurrency": 1},
        pricing={"models": {"judge-mini": {"input": 40.0, "output": 40.0}}},
    )
    model = ScriptedChatModel(script=lambda m, t: "pass", model_name="judge-mini")
    chain = RunnableLambda(lambda d: d["output"]) | model  # 15 tokens: 0.0006 a call
    evaluations = runner(store, plan, registry, clock=lambda: now[0], judge=chain)
    for i in range(4):
        evaluations.run_ended(LABELS, f"r{i}", None, "q", "a")
        assert evaluations.drain(10.0)
    assert value(registry, "graylayer_evaluations_total", outcome="pass") == 2
    assert value(registry, "graylayer_evaluations_total", outcome="capped") == 2
    assert value(registry, "graylayer_evaluator_cost_total") == pytest.approx(0.0012)
    assert evaluations.status()["judge"]["paused"] is True
    now[0] += 3601.0  # the hour's spend is gone: sampling resumes
    evaluations.run_ended(LABELS, "r9", None, "q", "a")
    assert evaluations.drain(10.0)
    assert value(registry, "graylayer_evaluations_total", outcome="pass") == 3
    assert value(registry, "graylayer_evaluator_paused", evaluator="judge") == 0.0
    evaluations.close()


def test_implementations_must_match_the_plans_evaluators() -> None:
    store, registry = MemoryStore(), CollectorRegistry()
    plan = plan_with({"name": "policy"})
    with pytest.raises(ConfigurationError, match="policy"):
        runner(store, plan, registry)  # declared, nothing bound, no target
    with pytest.raises(ConfigurationError, match="tone"):
        runner(store, plan, registry, policy=lambda i, o, m: True, tone=lambda i, o, m: True)
    with pytest.raises(ConfigurationError, match="Runnable"):
        runner(store, plan_with({"name": "policy", "kind": "runnable"}), registry, policy=len)


def test_a_target_imports_the_implementation() -> None:
    store, registry = MemoryStore(), CollectorRegistry()
    plan = plan_with({"name": "nonempty", "target": "builtins:bool"})
    evaluations = Evaluations(
        plan, {}, EvidenceRecorder(store, plan), metrics=EvaluationMetrics.of(registry)
    )
    assert evaluations.lanes[0].spec.target == "builtins:bool"
    evaluations.close()


def test_only_sampled_conversations_are_kept() -> None:
    store, registry = MemoryStore(), CollectorRegistry()
    plan = plan_with(
        {"name": "none", "scope": "conversation", "sampling_rate": 0.0},
        {"name": "all", "scope": "conversation", "sampling_rate": 1.0, "idle_time": 60},
    )
    now = [0.0]
    seen: list[int] = []
    evaluations = runner(
        store, plan, registry, clock=lambda: now[0],
        none=lambda i, o, m: True, all=lambda i, o, m: bool(seen.append(len(i))) or True,
    )  # fmt: skip
    for turn in range(3):
        evaluations.run_ended(LABELS, f"r{turn}", "session-1", f"q{turn}", f"a{turn}")
    none, every = evaluations.lanes
    assert (len(none.conversations), len(every.conversations)) == (0, 1)
    assert evaluations.evaluate_idle() == 0  # not idle yet
    now[0] += 61.0
    assert evaluations.evaluate_idle() == 1
    assert evaluations.drain(10.0)
    assert seen == [3]
    arm = store.read_evidence("p", "normal", STEP)["candidate"]
    assert arm.total("eval.all.n") == 1.0  # one conversation, one evaluation
    evaluations.close()
