"""Fault injection (``Chaos``, ``with_chaos``, ``ChaosStore``, a plan's ``chaos:``) on real agents.

The agents are ``create_agent`` graphs with a scripted chat model and a real ``@tool``; the
rollout runs on a real router and controller with a MemoryStore and a manual clock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import tool

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan, StoreError, Version
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.plan.chaos import Chaos, draw
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.rollout.state import PlanStatus
from langchain_graylayer.testing import (
    ChaosStore,
    InjectedFault,
    ScriptedChatModel,
    calls_then_answers,
    with_chaos,
)
from langchain_graylayer.testing.chaos import InjectedTimeout, apply_plan_chaos

QUESTION = {"messages": [("user", "where is my order A-1?")]}


@tool
def lookup_order(order_id: str) -> str:
    """Where an order is."""
    return f"{order_id} has shipped"


@tool
def issue_refund(order_id: str) -> str:
    """Refund an order."""
    return f"{order_id} refunded"


def agent(answer: str, calls: tuple[str, ...] = ("lookup_order",)) -> Runnable[Any, Any]:
    model = ScriptedChatModel(script=calls_then_answers(list(calls), answer))
    return create_agent(model, [lookup_order, issue_refund])


def answer_of(output: dict[str, Any]) -> str:
    return str(output["messages"][-1].content)


def outcomes(runnable: Runnable[Any, Any], n: int) -> list[str]:
    found = []
    for _ in range(n):
        try:
            found.append(answer_of(runnable.invoke(QUESTION)))
        except InjectedFault as exc:
            found.append(type(exc).__name__)
    return found


# --------------------------------------------------------------------------- the spec
@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"tool_error_rate": 1.5}, "chaos.tool_error_rate"),
        ({"tool_error_rate": math.nan}, "chaos.tool_error_rate"),
        ({"model_delay": "10m"}, "chaos.model_delay"),
        ({"version": "both", "error_rate": 0.1}, "chaos.version"),
        ({"tool_eror_rate": 0.1}, "chaos.tool_eror_rate"),
        ({"seed": 3}, "chaos"),  # nothing to inject is a mistake, not a quiet no-op
    ],
)
def test_a_bad_chaos_block_names_the_field(data: dict[str, Any], field: str) -> None:
    plan = {"id": "p", "layers": [{"name": "all", "members": ["a"]}], "chaos": data}
    with pytest.raises(ConfigurationError) as caught:
        RolloutPlan.from_dict(plan)
    assert caught.value.field == field


def test_a_plan_has_no_chaos_unless_it_says_so() -> None:
    assert RolloutPlan.default("p").chaos is None
    chaos = {"seed": 7, "tool_delay": "250ms", "tool_error_rate": 0.3, "tools": ["lookup_order"]}
    plan = RolloutPlan.from_dict(
        {"id": "p", "layers": [{"name": "all", "members": ["a"]}], "chaos": chaos}
    )
    assert plan.chaos == Chaos(seed=7, tool_delay=0.25, tool_error_rate=0.3, tools={"lookup_order"})
    assert plan.chaos.describe() == (
        "candidate: tool_error_rate=0.3, tool_delay=0.25, tools=lookup_order, seed=7"
    )


def test_which_calls_fail_depends_on_the_seed_only() -> None:
    first = [draw(7, "tool", n) < 0.3 for n in range(200)]
    assert first == [draw(7, "tool", n) < 0.3 for n in range(200)]
    assert first != [draw(8, "tool", n) < 0.3 for n in range(200)]
    assert 40 <= sum(first) <= 80
    runs = [outcomes(with_chaos(agent("shipped"), Chaos(seed=7, tool_error_rate=0.3)), 30)
            for _ in range(2)]  # fmt: skip
    assert runs[0] == runs[1]
    assert 3 <= runs[0].count("InjectedFault") <= 18


# --------------------------------------------------------------------------- real agents
def test_tool_failures_raise_from_the_tool_of_a_real_agent() -> None:
    candidate = with_chaos(agent("shipped"), Chaos(tool_error_rate=1.0))
    with pytest.raises(InjectedFault, match="tool 'lookup_order' failed"):
        candidate.invoke(QUESTION)
    assert candidate.faults == {"tool_error": 1}
    # only the named tools fail
    only_refunds = with_chaos(agent("shipped"), Chaos(tool_error_rate=1.0, tools={"issue_refund"}))
    assert outcomes(only_refunds, 3) == ["shipped"] * 3
    refunding = with_chaos(
        agent("ok", ("lookup_order", "issue_refund")),
        Chaos(tool_error_rate=1.0, tools={"issue_refund"}),
    )
    with pytest.raises(InjectedFault, match="issue_refund"):
        refunding.invoke(QUESTION)


def test_model_timeouts_slow_models_and_crashes() -> None:
    timing_out = with_chaos(agent("shipped"), Chaos(model_timeout_rate=1.0))
    with pytest.raises(InjectedTimeout) as caught:
        timing_out.invoke(QUESTION)
    assert isinstance(caught.value, TimeoutError)
    crashing = with_chaos(agent("shipped"), Chaos(error_rate=1.0))
    with pytest.raises(InjectedFault, match="run 0 of candidate failed"):
        crashing.invoke(QUESTION)
    assert crashing.faults == {"run_error": 1}
    slow = with_chaos(agent("shipped"), Chaos(model_delay=0.05, tool_delay=0.05))
    started = time.monotonic()
    assert answer_of(slow.invoke(QUESTION)) == "shipped"
    # two model calls and one tool call, each delayed
    assert time.monotonic() - started >= 0.15
    assert slow.faults == {"model_delay": 2, "tool_delay": 1}


async def test_faults_reach_async_and_streamed_runs() -> None:
    candidate = with_chaos(agent("shipped"), Chaos(tool_error_rate=1.0))
    with pytest.raises(InjectedFault):
        await candidate.ainvoke(QUESTION)
    with pytest.raises(InjectedFault):
        async for _ in candidate.astream(QUESTION):
            pass
    with pytest.raises(InjectedFault):
        for _ in candidate.stream(QUESTION):
            pass
    assert candidate.faults == {"tool_error": 3}
    slow = with_chaos(agent("shipped"), Chaos(tool_delay=0.05))
    started = time.monotonic()
    assert answer_of(await slow.ainvoke(QUESTION)) == "shipped"
    assert time.monotonic() - started >= 0.05


# --------------------------------------------------------------------------- rollout rehearsal
GATES = {"min_samples": 40, "min_users_at_timeout": 10, "bake_time": 60, "max_step_time": 300}


class Rehearsal:
    """A router (stable agent, candidate agent with or without chaos) and a controller on a
    MemoryStore with a manual clock: the traffic of ``ticks`` controller ticks."""

    def __init__(self, chaos: Chaos | None) -> None:
        self.now = 1_000_000.0
        self.plan = RolloutPlan.from_dict({
            "id": "refund-v2", "gates": GATES,
            "layers": [{"name": "all", "score_range": [0, 1], "steps": [0.5, 1.0]}],
        })  # fmt: skip
        self.store = MemoryStore(clock=self.clock)
        candidate = agent("v2: shipped")
        self.candidate = candidate if chaos is None else with_chaos(candidate, chaos)
        self.router: GrayRouter[Any, Any] = GrayRouter(
            stable=agent("v1: shipped"), candidate=self.candidate, plan=self.plan,
            store=self.store, metrics=GraylayerMetrics(registry=None), clock=self.clock,
        )  # fmt: skip
        self.controller = RolloutController(plan=self.plan, store=self.store, clock=self.clock)
        self.answers: list[str] = []

    def clock(self) -> float:
        return self.now

    def run(self, ticks: int, users: int = 60) -> list[str]:
        actions = []
        for tick in range(ticks):
            for user in range(users):
                config = {"configurable": {"user_id": f"u{user}", "session_id": f"s{tick}-{user}"}}
                self.answers.append(answer_of(self.router.invoke(QUESTION, config)))
            self.now += 30
            actions += [entry.action for entry in self.controller.step()]
            if "rollback" in actions:
                break
        return actions


def test_a_candidate_whose_tools_fail_is_rolled_back_and_users_are_still_served() -> None:
    world = Rehearsal(Chaos(seed=3, tool_error_rate=0.3))
    actions = world.run(ticks=12)
    assert "rollback" in actions
    assert world.controller.status()["status"] == PlanStatus.ROLLED_BACK.value
    rollback = next(e for e in world.controller.audit() if e.action == "rollback")
    assert "harm on error_rate" in rollback.reason, rollback.reason
    assert world.store.get_ratios("refund-v2") == {"all": 0.0}
    # every request was answered: the failed candidate runs by stable
    faults = world.candidate.faults["tool_error"]  # type: ignore[attr-defined]
    assert faults >= 10
    assert world.router.counts()["fallback"] == faults
    assert set(world.answers) == {"v1: shipped", "v2: shipped"}
    assert len(world.answers) == world.router.counts()["requests"]
    # after the rollback every user is on stable
    world.answers.clear()
    world.run(ticks=1)
    assert set(world.answers) == {"v1: shipped"}


def test_the_same_candidate_without_chaos_is_not_rolled_back() -> None:
    world = Rehearsal(None)
    actions = world.run(ticks=12)
    assert "rollback" not in actions
    assert "promote" in actions
    assert world.router.counts()["fallback"] == 0
    assert world.controller.status()["status"] != PlanStatus.ROLLED_BACK.value


# --------------------------------------------------------------------------- a plan's chaos
def chaos_plan(**chaos: Any) -> RolloutPlan:
    return RolloutPlan.from_dict({"id": "p", "layers": [{"name": "all", "members": ["u1"]}],
                                  "chaos": chaos})  # fmt: skip


def test_a_plan_with_chaos_is_refused_unless_the_process_opts_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GRAYLAYER_ALLOW_CHAOS", raising=False)
    plan = chaos_plan(error_rate=1.0)
    stable, candidate = RunnableLambda(lambda q: "v1"), RunnableLambda(lambda q: "v2")
    for value in (None, "0", "yes", "true"):
        if value is not None:
            monkeypatch.setenv("GRAYLAYER_ALLOW_CHAOS", value)
        with pytest.raises(ConfigurationError, match="GRAYLAYER_ALLOW_CHAOS=1") as caught:
            GrayRouter(stable=stable, candidate=candidate, plan=plan, store=MemoryStore())
        assert caught.value.field == "chaos"
    # without chaos the same process is fine, and nothing is wrapped
    assert apply_plan_chaos(RolloutPlan.default("p"), stable, candidate) == (stable, candidate)


def test_a_plan_with_chaos_injects_into_its_version_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GRAYLAYER_ALLOW_CHAOS", "1")
    store = MemoryStore()
    store.set_ratio("p", "all", 1.0)
    with caplog.at_level(logging.WARNING):
        router: GrayRouter[Any, Any] = GrayRouter(
            stable=agent("v1: shipped"), candidate=agent("v2: shipped"),
            plan=chaos_plan(tool_error_rate=1.0), store=store,
            metrics=GraylayerMetrics(registry=None),
        )  # fmt: skip
    assert "CHAOS ON for plan p" in caplog.text
    user = {"configurable": {"user_id": "u1"}}
    assert router.route("u1").version is Version.CANDIDATE
    assert answer_of(router.invoke(QUESTION, user)) == "v1: shipped"  # fell back
    assert router.counts()["fallback"] == 1
    # chaos on stable leaves the candidate alone
    stable_chaos = GrayRouter(
        stable=agent("v1: shipped"), candidate=agent("v2: shipped"),
        plan=chaos_plan(tool_error_rate=1.0, version="stable"), store=store,
        metrics=GraylayerMetrics(registry=None),
    )  # fmt: skip
    assert answer_of(stable_chaos.invoke(QUESTION, user)) == "v2: shipped"
    with pytest.raises(InjectedFault):
        stable_chaos.invoke(QUESTION)  # no user: stable, which fails as told


def test_the_admin_status_shows_a_plans_chaos(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from langchain_graylayer.serve.app import add_gray_routes

    monkeypatch.setenv("GRAYLAYER_ALLOW_CHAOS", "1")
    headers = {"Authorization": "Bearer token-0123456789abcdef"}
    for plan, expected in [
        (chaos_plan(tool_error_rate=0.3, seed=7), {"seed": 7, "tool_error_rate": 0.3}),
        (RolloutPlan.default("p"), None),
    ]:
        router: GrayRouter[Any, Any] = GrayRouter(
            stable=RunnableLambda(lambda q: "v1"), candidate=RunnableLambda(lambda q: "v2"),
            plan=plan, store=MemoryStore(), metrics=GraylayerMetrics(registry=None),
        )  # fmt: skip
        app = FastAPI()
        add_gray_routes(app, router, admin_token=headers["Authorization"][7:])
        with TestClient(app) as client:
            status = client.get("/graylayer/api/status", headers=headers).json()
        if expected is None:
            assert "chaos" not in status
        else:
            assert {k: status["chaos"][k] for k in expected} == expected
            assert status["chaos"]["version"] == "candidate"


# --------------------------------------------------------------------------- the store
def test_a_hung_store_times_calls_out_and_heal_releases_them() -> None:
    store = ChaosStore(MemoryStore(), timeout=0.05)
    store.set_ratio("p", "all", 0.5)
    store.hang(60)
    started = time.monotonic()
    with pytest.raises(StoreError, match="hung"):
        store.get_ratio("p", "all")
    assert 0.05 <= time.monotonic() - started < 1.0
    # a call waiting on a short hang goes through when it ends
    store.timeout = 5.0
    results: list[float] = []
    waiter = threading.Thread(target=lambda: results.append(store.get_ratio("p", "all")))
    waiter.start()
    time.sleep(0.05)
    store.heal()
    waiter.join(2.0)
    assert results == [0.5]
    store.fail()
    with pytest.raises(StoreError, match="down"):
        store.pin_session("p", "s", None, 1.0)  # type: ignore[arg-type]
    store.heal()
    assert (store.faults, store.get_ratio("p", "all")) == (2, 0.5)
    # only the named calls get faults; other attributes go to the inner store
    reads_only = ChaosStore(MemoryStore(), methods={"get_ratios"})
    reads_only.fail()
    reads_only.set_ratio("p", "all", 1.0)
    with pytest.raises(StoreError):
        reads_only.get_ratios("p")
    assert reads_only.networked is False


def test_a_router_on_a_failing_store_answers_from_stable() -> None:
    store = ChaosStore(MemoryStore())
    store.set_ratio("p", "all", 1.0)
    router: GrayRouter[Any, Any] = GrayRouter(
        stable=agent("v1: shipped"), candidate=agent("v2: shipped"),
        plan=RolloutPlan.from_dict({"id": "p", "layers": [{"name": "all", "members": ["u1"]}]}),
        store=store, metrics=GraylayerMetrics(registry=None),
    )  # fmt: skip
    user = {"configurable": {"user_id": "u1"}}
    assert answer_of(router.invoke(QUESTION, user)) == "v2: shipped"
    store.fail()
    assert answer_of(router.invoke(QUESTION, {"configurable": {"user_id": "u2"}})) == "v1: shipped"
    assert store.faults >= 1


def test_graylayer_serve_refuses_a_chaos_plan_without_the_opt_in(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_graylayer.cli.main import main

    monkeypatch.delenv("GRAYLAYER_ALLOW_CHAOS", raising=False)
    plan = tmp_path / "plan.yaml"
    plan.write_text("id: p\nlayers: [{name: all, members: [u1]}]\nchaos: {tool_error_rate: 0.3}\n")
    agents = "examples.customer_service.agents"
    code = main(["serve", "--plan", str(plan), "--stable", f"{agents}:stable",
                 "--candidate", f"{agents}:candidate", "--port", "0"])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert "chaos" in error
    assert "GRAYLAYER_ALLOW_CHAOS=1" in error
