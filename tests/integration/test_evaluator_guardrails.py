"""Evaluators as guardrails, end to end: real ``create_agent`` agents behind a GrayRouter, real
``openevals`` / ``agentevals`` evaluators over a scripted judge chat model, the real controller.

The candidate promises refunds it cannot ("guaranteed within the hour"); the judge model's
scripted verdict fails every answer that says so. The hallucination guardrail rolls it back.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool
from prometheus_client import CollectorRegistry

from langchain_graylayer import GrayRouter, MemoryStore, RolloutController, RolloutPlan
from langchain_graylayer.judging.judge import Rule
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.rollout.state import PlanState
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

openevals_llm = pytest.importorskip("openevals.llm")
agentevals_match = pytest.importorskip("agentevals.trajectory.match")

PLAN_ID = "refund-v2"
QUESTION = "Can I get a refund for order A-1?"
STABLE_ANSWER = "Order A-1 qualifies; the refund is being processed."
CANDIDATE_ANSWER = "Order A-1 qualifies; your refund is guaranteed within the hour."
HALLUCINATION_PROMPT = (
    "Does the output make claims the input does not support?\n<input>{inputs}</input>\n"
    "<output>{outputs}</output>"
)


@tool
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"{order_id}: delivered 3 days ago, refundable"


def agent(answer: str) -> Any:
    model = ScriptedChatModel(script=calls_then_answers(["lookup_order"], answer))
    return create_agent(model, [lookup_order], name="support")


def verdict(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
    """The judge's scripted verdict, as a structured-output tool call (what openevals reads)."""
    output = str(messages[-1].content).split("<output>")[-1]
    ok = "guaranteed" not in output
    args = {"reasoning": "checked the output's claims", "score": ok}
    return AIMessage("", tool_calls=[{"name": "score", "args": args, "id": "verdict"}])


def judge_model() -> ScriptedChatModel:
    return ScriptedChatModel(script=verdict, model_name="judge-mini")


def hallucination_evaluator() -> Any:
    return openevals_llm.create_llm_as_judge(
        prompt=HALLUCINATION_PROMPT, judge=judge_model(), feedback_key="hallucination"
    )


def plan(**evaluator: Any) -> RolloutPlan:
    spec = {"name": "hallucination", "kind": "openevals", **evaluator}
    return RolloutPlan.from_dict({
        "id": PLAN_ID,
        "layers": [{"name": "all", "score_range": [0, 1], "steps": [0.5, 1.0]}],
        "evaluators": [spec],
        "gates": {
            "size_steps": False, "min_samples": 1000, "bake_time": "1h",
            "guardrails": [
                {"metric": "completion_rate"},
                {"metric": "eval:hallucination", "margin": 0.05},
            ],
        },
    })  # fmt: skip


def router_for(
    the_plan: RolloutPlan, store: MemoryStore, metrics: GraylayerMetrics, **evaluators: Any
) -> GrayRouter[Any, Any]:
    return GrayRouter(
        stable=agent(STABLE_ANSWER), candidate=agent(CANDIDATE_ANSWER), plan=the_plan,
        store=store, metrics=metrics, evaluators=evaluators,
    )  # fmt: skip


def ask(router: GrayRouter[Any, Any], users: range) -> dict[str, int]:
    """One question per user; how many runs each version answered."""
    served = {"stable": 0, "candidate": 0}
    for i in users:
        out = router.invoke(
            {"messages": [("user", QUESTION)]}, {"configurable": {"user_id": f"user-{i}"}}
        )
        served["candidate" if out["messages"][-1].content == CANDIDATE_ANSWER else "stable"] += 1
    return served


def sample(metrics: GraylayerMetrics, name: str, **labels: str) -> float:
    assert metrics.registry is not None
    total = 0.0
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@pytest.fixture
def metrics() -> GraylayerMetrics:
    return GraylayerMetrics(registry=CollectorRegistry())


def test_a_candidate_that_hallucinates_is_rolled_back_on_that_guardrail(
    metrics: GraylayerMetrics,
) -> None:
    the_plan, store = plan(), MemoryStore()
    controller = RolloutController(plan=the_plan, store=store)
    controller.step()  # opens the layer at 50 %
    router = router_for(the_plan, store, metrics, hallucination=hallucination_evaluator())
    assert router.evaluations is not None
    served = ask(router, range(80))
    assert served["candidate"] > 10
    assert served["stable"] > 10
    assert router.evaluations.drain(30.0)

    entries = controller.step()

    assert [e.action.value for e in entries][:1] == ["rollback"], entries
    assert store.get_ratio(PLAN_ID, "all") == 0.0
    verdict_ = entries[0].verdict
    assert verdict_ is not None
    assert verdict_["rule"] == Rule.HARM.value
    assert verdict_["detail"] == "eval:hallucination"
    row = next(g for g in verdict_["guardrails"] if g["metric"] == "eval:hallucination")
    assert row["candidate_rate"] == 0.0
    assert row["stable_rate"] == 1.0
    assert row["harm"]
    failed = sample(metrics, "graylayer_evaluations_total", version="candidate", outcome="fail")
    passed = sample(metrics, "graylayer_evaluations_total", version="stable", outcome="pass")
    assert failed == served["candidate"]
    assert passed == served["stable"]


def test_sampling_is_the_same_for_both_arms(metrics: GraylayerMetrics) -> None:
    the_plan, store = plan(sampling_rate=0.3), MemoryStore()
    RolloutController(plan=the_plan, store=store).step()  # opens the layer at 50 %
    router = router_for(the_plan, store, metrics, hallucination=hallucination_evaluator())
    assert router.evaluations is not None
    served = ask(router, range(300))
    assert router.evaluations.drain(30.0)
    for version in ("stable", "candidate"):
        evaluated = sample(metrics, "graylayer_evaluations_total", version=version)
        share = evaluated / served[version]
        # 30 % of ~150 runs per arm: a binomial sd of ~3.7 points; 4 sd either way.
        assert abs(share - 0.3) < 0.15, (version, evaluated, served)


def test_the_spend_cap_stops_sampling_and_says_so(metrics: GraylayerMetrics) -> None:
    # Each judge call reports 15 tokens: the cap lets three evaluations through in an hour.
    the_plan, store = plan(max_tokens_per_hour=45, concurrency=1), MemoryStore()
    RolloutController(plan=the_plan, store=store).step()  # opens the layer at 50 %
    router = router_for(the_plan, store, metrics, hallucination=hallucination_evaluator())
    evaluations = router.evaluations
    assert evaluations is not None
    for i in range(8):
        ask(router, range(i, i + 1))
        assert evaluations.drain(10.0)

    scored = sample(metrics, "graylayer_evaluations_total", outcome="pass") + sample(
        metrics, "graylayer_evaluations_total", outcome="fail"
    )
    assert scored == 3
    assert sample(metrics, "graylayer_evaluations_total", outcome="capped") == 5
    assert sample(metrics, "graylayer_evaluator_tokens_total", evaluator="hallucination") == 45
    assert sample(metrics, "graylayer_evaluator_paused", evaluator="hallucination") == 1.0
    assert evaluations.status()["hallucination"]["paused"] is True


def test_a_failing_evaluator_never_hurts_the_candidate(metrics: GraylayerMetrics) -> None:
    def fails_on_the_candidate(inputs: Any, outputs: Any) -> dict[str, Any]:
        if "guaranteed" in str(outputs):
            raise TimeoutError("judge endpoint down")
        return {"key": "hallucination", "score": True}

    the_plan, store = plan(), MemoryStore()
    controller = RolloutController(plan=the_plan, store=store)
    controller.step()
    router = router_for(the_plan, store, metrics, hallucination=fails_on_the_candidate)
    assert router.evaluations is not None
    served = ask(router, range(60))
    assert router.evaluations.drain(30.0)

    entries = controller.step()

    assert all(e.action.value != "rollback" for e in entries), entries
    assert store.get_ratio(PLAN_ID, "all") == 0.5
    errors = sample(metrics, "graylayer_evaluations_total", version="candidate", outcome="error")
    assert errors == served["candidate"]
    raw = store.get_plan_state(PLAN_ID)
    assert raw is not None
    step = PlanState.from_json(raw, the_plan).layer("all").step_key
    arm = store.read_evidence(PLAN_ID, "all", step)
    assert arm["candidate"].total("eval.hallucination.n") == 0  # not evaluated, not failed
    assert arm["candidate"].total("requests") == served["candidate"]


def test_judge_runs_never_appear_as_agent_runs(metrics: GraylayerMetrics) -> None:
    the_plan, store = plan(), MemoryStore()
    RolloutController(plan=the_plan, store=store).step()  # opens the layer at 50 %
    router = router_for(the_plan, store, metrics, hallucination=hallucination_evaluator())
    assert router.evaluations is not None
    ask(router, range(20))
    assert router.evaluations.drain(30.0)
    # The same traffic without evaluators, measured the same way.
    bare_metrics = GraylayerMetrics(registry=CollectorRegistry())
    bare_plan = RolloutPlan.from_dict({"id": PLAN_ID, "layers": the_plan.model_dump()["layers"]})
    bare = router_for(bare_plan, store, bare_metrics)
    ask(bare, range(20))

    for name in ("graylayer_requests_total", "graylayer_tokens_total",
                 "graylayer_tool_calls_total"):  # fmt: skip
        assert sample(metrics, name) == sample(bare_metrics, name) > 0, name
    assert sample(metrics, "graylayer_requests_total") == 20
    assert sample(metrics, "graylayer_evaluator_tokens_total") == 20 * 15


def test_an_agentevals_trajectory_policy_and_a_conversation_evaluator(
    metrics: GraylayerMetrics,
) -> None:
    """A trajectory policy (look the order up before answering) needs no model; a conversation
    evaluator sees a session's runs once the session is idle."""
    reference = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "lookup_order", "arguments": '{"order_id": "A-1"}'}}]},
    ]  # fmt: skip
    policy = functools.partial(
        agentevals_match.create_trajectory_match_evaluator(
            trajectory_match_mode="superset", tool_args_match_mode="ignore"
        ),
        reference_outputs=reference,
    )
    seen: list[tuple[list[Any], list[Any]]] = []

    def whole_thread(inputs: list[Any], outputs: list[Any], meta: dict[str, Any]) -> bool:
        seen.append((inputs, outputs))
        return meta["turns"] == 2

    the_plan = RolloutPlan.from_dict({
        "id": PLAN_ID, "layers": [{"name": "all", "score_range": [0, 1], "steps": [1.0]}],
        "gates": {"size_steps": False},
        "evaluators": [
            {"name": "looks_up_orders", "kind": "agentevals"},
            {"name": "thread", "scope": "conversation", "idle_time": 0.2},
        ],
    })  # fmt: skip
    store = MemoryStore()
    RolloutController(plan=the_plan, store=store).step()  # opens the layer at 100 %
    router = router_for(the_plan, store, metrics, looks_up_orders=policy, thread=whole_thread)
    assert router.evaluations is not None
    for _ in range(2):
        router.invoke(
            {"messages": [("user", QUESTION)]},
            {"configurable": {"user_id": "u1", "session_id": "s1"}},
        )
    assert router.evaluations.drain(10.0)
    assert sample(metrics, "graylayer_evaluations_total", evaluator="looks_up_orders",
                  outcome="pass") == 2  # fmt: skip
    deadline = time.monotonic() + 10.0
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert router.evaluations.drain(10.0)
    assert len(seen) == 1
    assert len(seen[0][0]) == 2
    assert sample(metrics, "graylayer_evaluations_total", evaluator="thread",
                  outcome="pass") == 1  # fmt: skip


def test_the_admin_status_says_an_evaluator_is_paused(metrics: GraylayerMetrics) -> None:
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from langchain_graylayer.serve.app import add_gray_routes

    the_plan, store = plan(max_tokens_per_hour=15, concurrency=1), MemoryStore()
    controller = RolloutController(plan=the_plan, store=store)
    controller.step()
    router = router_for(the_plan, store, metrics, hallucination=hallucination_evaluator())
    app = fastapi.FastAPI()
    add_gray_routes(app, router, controller=controller, admin_token="t0ken", use_langserve=False)
    assert router.evaluations is not None
    for i in range(3):
        ask(router, range(i, i + 1))
        assert router.evaluations.drain(10.0)
    with TestClient(app) as client:
        response = client.get("/graylayer/api/status", headers={"Authorization": "Bearer t0ken"})
    assert response.status_code == 200
    evaluator = response.json()["health"]["evaluators"]["hallucination"]
    assert evaluator["paused"] is True
    assert evaluator["tokens_last_hour"] == 15
    assert evaluator["sampling_rate"] == 1.0
