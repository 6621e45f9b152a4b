"""GrayRouter on RedisStore: replicas agree, see ratio changes within a second, survive outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from _servers import free_port
from langchain_core.runnables import RunnableLambda

from langchain_graylayer import GrayRouter, RolloutPlan, UserProfile, Version
from langchain_graylayer.routing.decision import RouteReason
from langchain_graylayer.store.redis import RedisStore

PLAN = RolloutPlan.default("refund-v2")


def replica(store: Any) -> GrayRouter[str, str]:
    return GrayRouter(
        stable=RunnableLambda(lambda q: f"stable:{q}"),
        candidate=RunnableLambda(lambda q: f"candidate:{q}"),
        plan=PLAN,
        store=store,
    )


def cfg(user: str, session: str | None = None) -> dict[str, Any]:
    return {"configurable": {"user_id": user, **({"session_id": session} if session else {})}}


def test_two_replicas_agree_and_see_a_ratio_change_within_a_second(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    a, b = replica(make_redis_store()), replica(make_redis_store())
    admin = make_redis_store()
    users = [f"u{i}" for i in range(300)]
    admin.set_ratio(PLAN.id, "vip", 0.3)
    time.sleep(0.6)
    assert [a.route(u).version for u in users] == [b.route(u).version for u in users]
    share = sum(a.route(u).version is Version.CANDIDATE for u in users) / len(users)
    assert 0.2 < share < 0.4

    admin.set_ratio(PLAN.id, "vip", 1.0)
    changed_at = time.monotonic()
    while a.route("u1").ratio != 1.0 or b.route("u1").ratio != 1.0:
        assert time.monotonic() - changed_at < 1.0, "a replica did not see the change within 1 s"
        time.sleep(0.02)


def test_a_session_pinned_by_one_replica_holds_on_the_other(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    store_a, store_b = make_redis_store(), make_redis_store()
    store_a.set_ratio(PLAN.id, "vip", 1.0)
    a, b = replica(store_a), replica(store_b)
    assert a.invoke("q", cfg("u1", "chat-1")) == "candidate:q"
    store_a.set_ratio(PLAN.id, "vip", 0.0)
    time.sleep(0.6)
    assert b.invoke("q", cfg("u1", "chat-1")) == "candidate:q"
    assert b.route("u1", "chat-1").reason is RouteReason.PINNED
    assert b.invoke("q", cfg("u1", "chat-2")) == "stable:q"


def test_profiles_put_on_one_replica_layer_the_user_on_the_other(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    store_a, store_b = make_redis_store(), make_redis_store()
    store_a.put_profile("u1", UserProfile(use_count=100, accept_score=10))
    # never used (R = 0) but frequent, low value, keen: 0.2 + 0.3 + 0.3 = 0.8
    assert replica(store_b).route("u1").layer == "early_adopter"
    store_a.put_profile("u1", UserProfile(allow_gray=False))
    assert replica(store_b).route("u1").reason is RouteReason.OPT_OUT


def test_redis_down_serves_stable_and_never_fails_a_request() -> None:
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    router = replica(dead)
    started = time.monotonic()
    assert router.invoke("q", cfg("u1", "chat-1")) == "stable:q"
    assert asyncio.run(router.ainvoke("q", cfg("u2"))) == "stable:q"
    assert list(router.stream("q", cfg("u3"))) == ["stable:q"]
    assert time.monotonic() - started < 5
    assert router.counts()["degraded"] == 3
    assert router.route("u1").reason is RouteReason.DEGRADED


async def test_async_requests_route_through_redis_off_the_event_loop(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    store = make_redis_store()
    store.set_ratio(PLAN.id, "vip", 0.5)
    router = replica(store)
    users = [f"user-{i}" for i in range(40)]
    answers = await asyncio.gather(*(router.ainvoke("q", cfg(u, f"s-{u}")) for u in users))
    for user, answer in zip(users, answers, strict=True):
        assert answer == f"{router.route(user).version.value}:q"
    assert len(store.pinned_sessions(PLAN.id)) == len(users)


def test_evidence_from_two_replicas_adds_up_exactly_in_redis(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    """Each replica writes its users' evidence from a background thread; the controller's store
    reads the sum over both, per user: a user served by both replicas is one user."""
    from langchain_graylayer import RolloutController

    admin = make_redis_store()
    controller = RolloutController(plan=PLAN, store=admin)
    controller.step()  # opens the first layer (early_adopter) at its first step
    controller.set_ratio("early_adopter", 0.5, operator="test")
    step = admin.get_steps(PLAN.id)["early_adopter"]
    a, b = replica(make_redis_store()), replica(make_redis_store())
    profile = UserProfile(last_use_time=time.time(), use_count=60, accept_score=9)  # early
    users = [f"u{i}" for i in range(40)]
    for user in users:
        admin.put_profile(user, profile)
    time.sleep(0.6)  # both replicas see the new ratio and step
    for user in users:
        a.invoke("q", cfg(user))
        b.invoke("q", cfg(user))  # the same user again, on the other replica
    b.invoke("q", cfg(users[0]))
    deadline = time.monotonic() + 5.0
    while True:
        arms = admin.read_evidence(PLAN.id, "early_adopter", step)
        requests = sum(arm.total("requests") for arm in arms.values())
        if requests == 2 * len(users) + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert requests == 2 * len(users) + 1
    assert sum(arm.users for arm in arms.values()) == len(users)
    cand = sum(a.route(u).version is Version.CANDIDATE for u in users)
    assert arms["candidate"].users == cand
    # u0 made three requests: its square is in the Gram matrix of its arm
    squares = sum(arm.product("requests", "requests") for arm in arms.values())
    assert squares == 4 * (len(users) - 1) + 9
