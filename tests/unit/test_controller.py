"""RolloutController end to end on one process: real router, real handlers, injected clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory  # deprecated, still shipped
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan, StoreError, Version
from langchain_graylayer.errors import PlanStateError
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.rollout.cleanup import ChatHistoryCleanup
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.rollout.state import LayerPhase, PlanStatus
from langchain_graylayer.rollout.transition import first_step
from langchain_graylayer.store.protocols import conversation_key

GATES = {"min_samples": 40, "min_users_at_timeout": 10, "bake_time": 60, "max_step_time": 300}


def make_plan(**kw: Any) -> RolloutPlan:
    return RolloutPlan.from_dict(
        {
            "id": "refund-v2",
            "layers": [
                {"name": "early", "members": [f"u{i}" for i in range(400)],
                 "steps": [0.1, 0.5, 1.0]},
                {"name": "late", "score_range": [0, 1], "steps": [0.1, 1.0]},
            ],
            "default_layer": "late",
            "gates": GATES,
            **kw,
        }
    )  # fmt: skip


class World:
    """A plan, a store, a router whose candidate completes ``p_candidate`` of tasks, a clock."""

    def __init__(self, p_candidate: float, plan: RolloutPlan | None = None, seed: int = 1) -> None:
        self.now = 1_000_000.0
        self.plan = plan or make_plan()
        self.store = MemoryStore(clock=self.clock)
        self.metrics = GraylayerMetrics(registry=None)
        rng = random.Random(seed)

        def answer(version: str, p: float) -> Callable[[str], str]:
            return lambda q: f"{version}: refund approved" if rng.random() < p else ""

        self.router: GrayRouter[str, str] = GrayRouter(
            stable=RunnableLambda(answer("v1", 0.9)),
            candidate=RunnableLambda(answer("v2", p_candidate)),
            plan=self.plan,
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.users = [f"u{i}" for i in range(2000)]
        self.rng = random.Random(seed + 1)

    def clock(self) -> float:
        return self.now

    def controller(self, **kw: Any) -> RolloutController:
        return RolloutController(plan=self.plan, store=self.store, clock=self.clock, **kw)

    def traffic(self, n: int = 120) -> None:
        for _ in range(n):
            user = self.rng.choice(self.users)
            self.router.invoke("where is my refund?", {"configurable": {"user_id": user}})

    def run(self, controller: RolloutController, ticks: int, n: int = 120) -> list[str]:
        actions = []
        for _ in range(ticks):
            self.traffic(n)
            self.now += 30
            actions += [entry.action for entry in controller.step()]
        return actions


def test_a_good_candidate_walks_every_step_layer_after_layer() -> None:
    world = World(p_candidate=0.9)
    controller = world.controller()
    world.run(controller, ticks=60)
    ratios = [(e.layer, e.new_ratio) for e in controller.audit() if e.action == "promote"]
    assert ratios == [("early", 0.5), ("early", 1.0), ("late", 1.0)]
    starts = [(e.layer, e.new_ratio) for e in controller.audit() if e.action == "start_layer"]
    assert starts == [("early", 0.1), ("late", 0.1)]
    assert controller.status()["status"] == PlanStatus.COMPLETED.value
    assert world.store.get_ratios("refund-v2") == {"early": 1.0, "late": 1.0}
    for entry in controller.audit():
        assert entry.operator == "controller"
        if entry.action == "promote":
            assert entry.verdict is not None
            assert entry.verdict["action"] == "promote"


def test_layers_open_in_order_only_when_the_one_before_is_at_100_percent() -> None:
    world = World(p_candidate=0.9)
    controller = world.controller()
    for _ in range(30):
        world.run(controller, ticks=1)
        ratios = world.store.get_ratios("refund-v2")
        if ratios.get("late", 0) > 0:
            assert ratios["early"] == 1.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_clearly_worse_candidate_is_rolled_back_and_cleaned_up() -> None:
    world = World(p_candidate=0.4)
    histories: dict[str, InMemoryChatMessageHistory] = {}

    def history(session_id: str) -> InMemoryChatMessageHistory:
        return histories.setdefault(session_id, InMemoryChatMessageHistory())

    controller = world.controller(cleanup_hooks=[ChatHistoryCleanup(history)])
    controller.step()  # opens "early" at 10%
    candidate_user = next(
        u for u in world.users[:400] if world.router.route(u).version is Version.CANDIDATE
    )
    world.router.invoke("q", {"configurable": {"user_id": candidate_user, "session_id": "chat-9"}})
    history("chat-9").add_user_message("refund please")
    actions = world.run(controller, ticks=20)
    assert "rollback" in actions
    assert controller.status()["status"] == PlanStatus.ROLLED_BACK.value
    assert world.store.get_ratios("refund-v2") == {"early": 0.0, "late": 0.0}
    rollback = next(e for e in controller.audit() if e.action == "rollback")
    assert "harm on completion_rate" in rollback.reason
    assert rollback.verdict is not None
    assert rollback.old_ratio == 0.1
    # the pinned conversation moved to stable and its memory was cleaned
    conversation = conversation_key(candidate_user, "chat-9")  # pins are kept per user
    assert world.store.get_pin("refund-v2", conversation).version is Version.STABLE  # type: ignore[union-attr]
    assert histories["chat-9"].messages == []
    cleanup = next(e for e in controller.audit() if e.action == "cleanup")
    assert cleanup.details["sessions_moved"] == [conversation]
    assert cleanup.details["hooks"] == {"chat_history": "ok"}
    # after a rollback automation does nothing more
    assert world.run(controller, ticks=5) == []


def test_no_traffic_holds_and_never_rolls_back_on_silence() -> None:
    world = World(p_candidate=0.9)
    controller = world.controller()
    actions = world.run(controller, ticks=60, n=0)
    # one hold entry, not one per tick; at the step's timeout it becomes an alert saying why
    # (and no timeout promotion without candidate users)
    assert actions == ["start_layer", "hold", "alert"]
    assert world.store.get_ratio("refund-v2", "early") == 0.1
    reason = controller.status()["layers"][0]["last_reason"]
    assert reason.startswith("no candidate user in this step after 1770 s")
    assert "raise the step, or promote by hand" in reason


def test_a_pause_holds_against_good_numbers_and_resume_continues() -> None:
    world = World(p_candidate=0.9)
    controller = world.controller()
    controller.step()
    pause = controller.pause(operator="alice", reason="waiting for the legal review")
    assert (pause.operator, pause.action) == ("alice", "pause")
    assert world.run(controller, ticks=15) == []
    assert world.store.get_ratio("refund-v2", "early") == 0.1
    controller.resume(operator="alice")
    assert "promote" in world.run(controller, ticks=12)


def test_automation_never_undoes_a_human_ratio() -> None:
    world = World(p_candidate=0.4)
    controller = world.controller()
    controller.step()
    controller.set_ratio("early", 0.5, operator="bob", reason="the sales team insists")
    actions = world.run(controller, ticks=20)
    assert "rollback" not in actions
    assert actions.count("alert") == 1  # a persisting alert is audited once, not every tick
    assert world.store.get_ratio("refund-v2", "early") == 0.5
    alert = next(e for e in controller.audit() if e.action == "alert")
    assert "a human set this layer's ratio" in alert.reason


def test_a_human_rollback_stays_until_restart() -> None:
    world = World(p_candidate=0.9)
    controller = world.controller()
    world.run(controller, ticks=5)
    entry = controller.rollback("customer reports", operator="carol")
    assert (entry.operator, entry.action) == ("carol", "rollback")
    assert world.run(controller, ticks=10) == []
    assert controller.status()["status"] == PlanStatus.ROLLED_BACK.value
    with pytest.raises(PlanStateError, match="restart"):
        controller.resume(operator="carol")
    controller.restart(operator="carol", reason="fixed the refund rule")
    assert world.run(controller, ticks=1) == ["start_layer"]


def test_manual_promote_moves_one_step() -> None:
    world = World(p_candidate=0.9)
    controller = world.controller()
    controller.step()
    entry = controller.promote("early", operator="dave")
    assert (entry.old_ratio, entry.new_ratio, entry.operator) == (0.1, 0.5, "dave")
    assert controller.status()["layers"][0]["manual"] is True


def test_only_one_of_two_controllers_acts_and_a_crashed_leader_is_replaced() -> None:
    world = World(p_candidate=0.9)
    a = world.controller(holder="replica-a", lease_ttl=60)
    b = world.controller(holder="replica-b", lease_ttl=60)
    assert [e.action for e in a.step()] == ["start_layer"]
    assert b.step() == []  # a holds the lease
    assert world.store.lease_holder("controller:refund-v2") == "replica-a"
    world.now += 61  # a crashed: its lease lapses
    world.traffic()
    assert b.step() != [] or world.store.lease_holder("controller:refund-v2") == "replica-b"
    assert a.step() == []


class FailingCommitStore(MemoryStore):
    def commit(self, plan_id: str, **kw: Any) -> None:  # type: ignore[override]
        raise StoreError("commit: connection reset")


def test_a_store_outage_means_no_action() -> None:
    world = World(p_candidate=0.9)
    world.store = FailingCommitStore(clock=world.clock)
    controller = world.controller()
    assert controller.step() == []
    assert world.store.get_ratios("refund-v2") == {}
    assert world.store.read_audit("refund-v2") == []


def test_status_and_runnable_interface() -> None:
    world = World(p_candidate=0.9)
    controller = world.controller()
    entries = controller.invoke(None)
    assert entries[0]["action"] == "start_layer"
    status = controller.status()
    assert status["plan"] == "refund-v2"
    assert [layer["phase"] for layer in status["layers"]] == [
        LayerPhase.ACTIVE.value, LayerPhase.PENDING.value
    ]  # fmt: skip
    assert status["layers"][0]["ratio"] == 0.1


@pytest.mark.parametrize("instrument", [True, False], ids=["with-metrics", "journal-alone"])
def test_rollback_lists_the_candidates_side_effecting_tool_calls(instrument: bool) -> None:
    @tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        return f"refunded {amount} on {order_id}"

    plan = make_plan(judging={"side_effect_tools": ["issue_refund"]})
    world = World(p_candidate=0.9, plan=plan)
    candidate = RunnableLambda(lambda q: issue_refund.invoke({"order_id": "A-17", "amount": 42.0}))
    router: GrayRouter[str, str] = GrayRouter(
        stable=RunnableLambda(str), candidate=candidate, plan=plan, store=world.store,
        metrics=world.metrics, clock=world.clock, instrument=instrument,
    )  # fmt: skip
    controller = world.controller()
    controller.step()
    user = next(u for u in world.users[:400] if router.route(u).version is Version.CANDIDATE)
    router.invoke("q", {"configurable": {"user_id": user, "session_id": "chat-1"}})
    controller.rollback("refund rule is wrong", operator="erin")
    report = controller.last_rollback_report
    assert report is not None
    [call] = report.compensation
    assert call["tool"] == "issue_refund"
    assert call["arguments"] == {"order_id": "A-17", "amount": 42.0}
    assert call["session"] == "chat-1"
    assert call["layer"] == "early"


def test_a_layer_that_starts_at_100_percent_completes_and_opens_the_next() -> None:
    plan = make_plan(layers=[
        {"name": "early", "members": [f"u{i}" for i in range(400)], "steps": [1.0]},
        {"name": "late", "score_range": [0, 1], "steps": [0.1, 1.0]},
    ])  # fmt: skip
    world = World(p_candidate=0.9, plan=plan)
    controller = world.controller()
    assert world.run(controller, ticks=2) == ["start_layer", "start_layer"]
    assert world.store.get_ratios("refund-v2") == {"early": 1.0, "late": 0.1}


FIRST_STEPS = [
    # steps, users the layer reaches in a step's time (None: unknown), minimum, index opened at
    ((0.01, 0.1, 0.5, 1.0), None, 30, 0),  # no measurement yet: the plan's first step
    ((0.01, 0.1, 0.5, 1.0), 3000.0, 30, 0),  # 30 users at 1 %
    ((0.01, 0.1, 0.5, 1.0), 2999.0, 30, 1),  # 29.99 at 1 %: 10 %
    ((0.01, 0.1, 0.5, 1.0), 300.0, 30, 1),
    ((0.01, 0.1, 0.5, 1.0), 60.0, 30, 2),
    ((0.01, 0.1, 0.5, 1.0), 5.0, 30, 2),  # never enough: the last step below 100 %
    ((0.01, 0.1, 0.5, 1.0), 0.0, 30, 2),  # an empty pre step
    ((0.01, 1.0), 10.0, 30, 0),
    ((1.0,), 10.0, 30, 0),  # a single step: nothing to choose
    ((0.05, 0.2, 1.0), 150.0, 30, 1),
    ((0.05, 0.2, 1.0), 600.0, 30, 0),
]


@pytest.mark.parametrize(("steps", "reach", "minimum", "expected"), FIRST_STEPS)
def test_first_step_from_a_table(
    steps: tuple[float, ...], reach: float | None, minimum: int, expected: int
) -> None:
    assert first_step(steps, reach, minimum) == expected


def test_a_layer_opens_at_the_first_step_its_traffic_can_fill() -> None:
    plan = make_plan(
        layers=[
            {"name": "early", "members": [f"u{i}" for i in range(400)], "steps": [0.5, 1.0]},
            {"name": "late", "score_range": [0, 1], "steps": [0.001, 0.2, 1.0]},
        ]
    )
    world = World(p_candidate=0.9, plan=plan)
    controller = world.controller()
    world.run(controller, ticks=40)
    start = next(e for e in controller.audit() if e.action == "start_layer" and e.layer == "late")
    # its stable users, counted under the "pre" step while "early" rolled out, say that 0.1%
    # would see about one candidate user in a step's 300 s: it opens at 20%
    assert start.new_ratio == 0.2
    assert start.details["first_step"] == 1
    assert start.details["reach"] > 100
    assert "sized to its traffic" in start.reason


def test_a_step_that_times_out_starved_moves_to_a_step_its_traffic_fills() -> None:
    plan = make_plan(
        layers=[
            {"name": "early", "members": [f"u{i}" for i in range(400)],
             "steps": [0.005, 0.5, 1.0]},
            {"name": "late", "score_range": [0, 1], "steps": [0.1, 1.0]},
        ]
    )  # fmt: skip
    world = World(p_candidate=0.9, plan=plan)
    controller = world.controller()
    world.run(controller, ticks=12)  # 360 s: past the 300 s step time, with ~2 candidate users
    resized = [e for e in controller.audit() if e.reason.startswith("resized to the layer's")]
    assert [(e.layer, e.old_ratio, e.new_ratio) for e in resized] == [("early", 0.005, 0.5)]
    assert resized[0].verdict is not None
    assert resized[0].verdict["rule"] in ("timeout_too_few_users", "no_candidate_traffic")
    assert resized[0].verdict["alert"] is True
