"""What routed runs add to the judge's evidence: per user, per arm (layer, step, version).

Real routers over real runnables and a real MemoryStore; the controller opens and moves the
steps, so the step keys are the ones production uses.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_graylayer import (
    GrayRouter,
    MemoryStore,
    RolloutController,
    RolloutPlan,
    StoreError,
    UserProfile,
    Version,
)
from langchain_graylayer.plan.bucketing import unit_key
from langchain_graylayer.store.evidence import UnitDelta

PLAN = RolloutPlan.from_dict(
    {
        "id": "refund-v2",
        "layers": [{"name": "everyone", "score_range": [0, 1], "steps": [0.5, 1.0]}],
        "default_layer": "everyone",
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def world(
    store: MemoryStore | None = None, candidate: Any = None
) -> tuple[GrayRouter[str, str], RolloutController, MemoryStore, Clock]:
    clock = Clock()
    store = store if store is not None else MemoryStore(clock=clock)
    router: GrayRouter[str, str] = GrayRouter(
        stable=RunnableLambda(lambda q: f"stable answer to {q}"),
        candidate=candidate or RunnableLambda(lambda q: f"candidate answer to {q}"),
        plan=PLAN,
        store=store,
        clock=clock,
    )
    controller = RolloutController(plan=PLAN, store=store, clock=clock)
    controller.step()  # opens "everyone" at 50%
    return router, controller, store, clock


def ask(router: GrayRouter[str, str], user: str, session: str | None = None) -> uuid.UUID:
    run_id = uuid.uuid4()
    configurable = {"user_id": user, **({"session_id": session} if session else {})}
    router.invoke("where is my parcel?", {"configurable": configurable, "run_id": run_id})
    return run_id


def step_of(store: MemoryStore) -> str:
    return store.get_steps(PLAN.id)["everyone"]


def users_of(router: GrayRouter[str, str], version: Version, n: int) -> list[str]:
    found = [f"u{i}" for i in range(400) if router.route(f"u{i}").version is version]
    return found[:n]


def test_each_request_adds_to_its_users_record_in_the_arm_it_was_served_by() -> None:
    router, _, store, _ = world()
    cand, stable = users_of(router, Version.CANDIDATE, 3), users_of(router, Version.STABLE, 2)
    for user in cand + stable:
        ask(router, user)
    ask(router, cand[0])  # a user who comes back is the same unit
    arms = store.read_evidence(PLAN.id, "everyone", step_of(store))
    assert arms["candidate"].users == 3
    assert arms["candidate"].total("requests") == 4
    assert arms["candidate"].total("completions") == 4
    assert arms["candidate"].product("requests", "requests") == 2**2 + 1 + 1
    assert arms["stable"].users == 2
    assert arms["stable"].total("requests") == 2


def test_the_store_never_holds_a_user_id() -> None:
    store = MemoryStore()
    seen: list[UnitDelta] = []
    original = store.add_evidence

    def spy(plan_id: str, deltas: Sequence[UnitDelta]) -> None:
        seen.extend(deltas)
        original(plan_id, deltas)

    store.add_evidence = spy  # type: ignore[method-assign]
    router, _, _, _ = world(store)
    ask(router, "alice@example.com")
    assert [d.user for d in seen] == [unit_key(PLAN.effective_salt, "alice@example.com")]
    assert "alice" not in repr(seen)


def test_a_users_activity_class_comes_from_their_profile_before_the_rollout() -> None:
    router, _, store, _ = world()
    heavy = users_of(router, Version.CANDIDATE, 1)[0]
    store.put_profile(heavy, UserProfile(use_count=200))
    ask(router, heavy)
    arms = store.read_evidence(PLAN.id, "everyone", step_of(store))
    assert arms["candidate"].classes == (0, 0, 0, 0, 1)


def test_a_conversation_pinned_before_the_step_moved_counts_in_no_step() -> None:
    router, controller, store, _ = world()
    user = users_of(router, Version.STABLE, 1)[0]
    ask(router, user, session="chat-1")  # stable at 50%: pinned to stable
    first = step_of(store)
    controller.set_ratio("everyone", 1.0, operator="ops", reason="go")  # a new step
    second = step_of(store)
    assert second != first
    ask(router, user, session="chat-1")  # still stable (pinned), but the bucket says candidate
    ask(router, user, session="chat-2")  # a new conversation: candidate, in the new step
    assert store.read_evidence(PLAN.id, "everyone", first)["stable"].total("requests") == 1
    now = store.read_evidence(PLAN.id, "everyone", second)
    assert set(now) == {"candidate"}
    assert now["candidate"].total("requests") == 1


def test_a_pinned_conversation_that_agrees_with_the_bucket_counts_in_the_step() -> None:
    router, _, store, _ = world()
    user = users_of(router, Version.CANDIDATE, 1)[0]
    for _ in range(3):
        ask(router, user, session="chat-1")
    arm = store.read_evidence(PLAN.id, "everyone", step_of(store))["candidate"]
    assert (arm.users, arm.total("requests")) == (1, 3)


def test_late_feedback_counts_in_the_step_its_run_was_served_in() -> None:
    router, controller, store, clock = world()
    user = users_of(router, Version.CANDIDATE, 1)[0]
    run_id = ask(router, user)
    first = step_of(store)
    controller.set_ratio("everyone", 1.0, operator="ops")
    clock.now += 6 * 3600  # the complaint comes six hours later, in another step
    router.feedback(run_id, "complaint")
    router.feedback(run_id, None, score=3)
    arm = store.read_evidence(PLAN.id, "everyone", first)["candidate"]
    assert arm.total("complaints") == 1
    assert arm.positive("complaints") == 1
    assert (arm.total("scores"), arm.total("score_sum")) == (1, 3)
    assert store.read_evidence(PLAN.id, "everyone", step_of(store)) == {}


def test_a_failed_candidate_that_fell_back_counts_as_a_candidate_failure() -> None:
    def broken(question: str) -> str:
        raise RuntimeError("tool backend down")

    router, _, store, _ = world(candidate=RunnableLambda(broken))
    user = users_of(router, Version.CANDIDATE, 1)[0]
    assert router.invoke("q", {"configurable": {"user_id": user}}).startswith("stable answer")
    arm = store.read_evidence(PLAN.id, "everyone", step_of(store))["candidate"]
    assert (arm.total("requests"), arm.total("failures"), arm.total("completions")) == (1, 1, 0)


class FailingEvidence(MemoryStore):
    """A store whose evidence writes fail (the rest works): fault injection."""

    def add_evidence(self, plan_id: str, deltas: Sequence[UnitDelta]) -> None:
        raise StoreError("evidence backend down")


def test_an_evidence_write_that_fails_never_fails_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router, _, _, _ = world(FailingEvidence())
    for i in range(3):
        assert router.invoke("q", {"configurable": {"user_id": f"u{i}"}}).endswith("q")
    assert "could not record evidence (1 so far)" in caplog.text
    assert caplog.text.count("could not record evidence") == 1  # rate-limited


def test_unrouted_requests_add_no_evidence() -> None:
    router, _, store, _ = world()
    router.invoke("q", {})  # no user id: stable, unrouted
    assert store.read_evidence(PLAN.id, "everyone", step_of(store)) == {}


def _cancelled_world(candidate: Any) -> tuple[GrayRouter[str, str], MemoryStore, Any, str]:
    from prometheus_client import CollectorRegistry

    from langchain_graylayer import GraylayerMetrics

    metrics = GraylayerMetrics(registry=CollectorRegistry())
    router, _, store, _ = world(candidate=candidate)
    router = GrayRouter(
        stable=RunnableLambda(lambda q: "stable"), candidate=candidate, plan=PLAN, store=store,
        metrics=metrics,
    )  # fmt: skip
    return router, store, metrics.registry, users_of(router, Version.CANDIDATE, 1)[0]


def _outcomes(registry: Any) -> dict[str, float | None]:
    labels = {"plan": PLAN.id, "version": "candidate", "layer": "everyone"}
    return {
        outcome: registry.get_sample_value(
            "graylayer_requests_total", {**labels, "outcome": outcome}
        )
        for outcome in ("cancelled", "error")
    }


def test_a_cancelled_run_is_not_a_candidate_failure() -> None:
    """asyncio cancels the request (the client went away): its own outcome, no evidence."""
    import asyncio

    async def slow(question: str) -> str:
        await asyncio.sleep(10)
        return "never"

    router, store, registry, user = _cancelled_world(RunnableLambda(slow))

    async def cancel_mid_run() -> None:
        task = asyncio.ensure_future(router.ainvoke("q", {"configurable": {"user_id": user}}))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_mid_run())
    assert store.read_evidence(PLAN.id, "everyone", step_of(store)) == {}
    assert _outcomes(registry) == {"cancelled": 1.0, "error": 0.0}


def test_a_stream_its_client_closed_is_not_a_candidate_failure() -> None:
    def chunks(question: str) -> Any:
        yield from ("one ", "two ", "three")

    router, store, registry, user = _cancelled_world(RunnableLambda(chunks))
    stream = router.stream("q", {"configurable": {"user_id": user}})
    assert next(stream) == "one "
    stream.close()  # the client went away after the first chunk
    assert store.read_evidence(PLAN.id, "everyone", step_of(store)) == {}
    assert _outcomes(registry) == {"cancelled": 1.0, "error": 0.0}
