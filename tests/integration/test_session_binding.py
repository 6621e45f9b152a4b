"""A session belongs to its user: pins are keyed by (user, session), in memory and in Redis.

Another user who sends the same session id — by chance, or because they read it somewhere —
never gets the version it is pinned to, never changes that pin, never keeps its owner from being
pinned, and keeps a pin of their own. The rollback cleanup moves every user's pin and hands the
hooks each conversation's key.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_graylayer import GrayRouter, RolloutPlan, Version
from langchain_graylayer.rollout.cleanup import clean_up_after_rollback
from langchain_graylayer.routing.decision import RouteReason
from langchain_graylayer.store import MemoryStore, Store
from langchain_graylayer.store.protocols import (
    SessionPin,
    conversation_key,
    split_conversation_key,
)

PLAN = RolloutPlan.default("refund-v2")  # users without a profile are in "vip"


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    made: Store = request.getfixturevalue("make_redis_store")()
    return made


def router_on(store: Store) -> GrayRouter[str, str]:
    return GrayRouter(
        stable=RunnableLambda(lambda q: f"stable:{q}"),
        candidate=RunnableLambda(lambda q: f"candidate:{q}"),
        plan=PLAN,
        store=store,
        ratio_refresh_interval=0,  # a networked store: see each ratio change at once
        instrument=False,
    )


def ask(router: GrayRouter[str, str], user: str, session: str) -> str:
    return router.invoke("q", {"configurable": {"user_id": user, "session_id": session}})


def test_another_users_session_id_never_serves_its_pinned_version(store: Store) -> None:
    router = router_on(store)
    store.set_ratio(PLAN.id, "vip", 1.0)
    assert ask(router, "alice", "chat-1") == "candidate:q"
    store.set_ratio(PLAN.id, "vip", 0.0)

    assert ask(router, "bob", "chat-1") == "stable:q"
    assert store.get_pin(PLAN.id, conversation_key("alice", "chat-1")).version is Version.CANDIDATE  # type: ignore[union-attr]
    assert ask(router, "alice", "chat-1") == "candidate:q"


def test_a_user_who_sends_your_session_id_first_does_not_keep_you_from_your_pin(
    store: Store,
) -> None:
    router = router_on(store)
    assert ask(router, "mallory", "alices-chat") == "stable:q"  # ratio 0: pinned to stable
    store.set_ratio(PLAN.id, "vip", 1.0)
    assert ask(router, "alice", "alices-chat") == "candidate:q"
    store.set_ratio(PLAN.id, "vip", 0.0)

    assert ask(router, "alice", "alices-chat") == "candidate:q"  # her conversation stays
    assert router.route("alice", "alices-chat").reason is RouteReason.PINNED


def test_each_user_keeps_their_own_pin_under_a_shared_session_id(store: Store) -> None:
    router = router_on(store)
    store.set_ratio(PLAN.id, "vip", 1.0)
    assert ask(router, "alice", "chat-1") == "candidate:q"
    store.set_ratio(PLAN.id, "vip", 0.0)
    assert ask(router, "bob", "chat-1") == "stable:q"
    store.set_ratio(PLAN.id, "vip", 1.0)

    assert ask(router, "bob", "chat-1") == "stable:q"  # bob's conversation stays on stable
    store.set_ratio(PLAN.id, "vip", 0.0)
    assert ask(router, "alice", "chat-1") == "candidate:q"
    pins = store.pinned_sessions(PLAN.id)
    assert pins[conversation_key("alice", "chat-1")].version is Version.CANDIDATE
    assert pins[conversation_key("bob", "chat-1")].version is Version.STABLE


def test_a_stored_pin_without_its_user_is_followed_by_nobody(store: Store) -> None:
    """Pins written before pins were keyed by user (under the bare session id, some without a
    user): never followed; each conversation is routed by its user's bucket until they expire."""
    router = router_on(store)
    store.pin_session(PLAN.id, "chat-1", SessionPin(Version.CANDIDATE, "vip", time.time()), 60)
    store.pin_session(
        PLAN.id, "chat-2", SessionPin(Version.CANDIDATE, "vip", time.time(), "bob"), 60
    )

    assert ask(router, "bob", "chat-1") == "stable:q"
    assert ask(router, "bob", "chat-2") == "stable:q"
    assert ask(router, "carol", "chat-2") == "stable:q"


def test_a_rollback_moves_every_users_pin_and_hands_hooks_their_conversation_keys(
    store: Store,
) -> None:
    router = router_on(store)
    store.set_ratio(PLAN.id, "vip", 1.0)
    for user in ("alice", "bob"):
        assert ask(router, user, "chat-1") == "candidate:q"
    seen: list[str] = []

    class Hook:
        name = "record"

        def __call__(self, session_ids: Any) -> None:
            seen.extend(session_ids)

    report = clean_up_after_rollback(store, PLAN, [Hook()])

    keys = {conversation_key("alice", "chat-1"), conversation_key("bob", "chat-1")}
    assert set(report.sessions_moved) == set(seen) == keys
    store.set_ratio(PLAN.id, "vip", 1.0)
    assert ask(router, "alice", "chat-1") == ask(router, "bob", "chat-1") == "stable:q"


def test_redis_keys_each_pin_by_plan_user_and_session(make_redis_store: Any) -> None:
    store = make_redis_store()
    router = router_on(store)
    store.set_ratio(PLAN.id, "vip", 1.0)
    ask(router, "jörg@example.com", "chat:1")
    keys = sorted(
        k.decode() if isinstance(k, bytes) else k
        for k in store._client.scan_iter(match="graylayer:pin:*")
    )
    assert keys == ["graylayer:pin:refund-v2:j%C3%B6rg%40example.com:chat:1"]


@pytest.mark.parametrize(
    ("user", "session"),
    [
        ("alice", "chat-1"),
        ("a:b", "c"),
        ("a", "b:c"),
        ("", "s"),
        ("100%", "x"),
        ("jörg", "会話-1"),
        ("o'brien", "a b"),
        ("ユーザー", ""),
    ],
)
def test_conversation_keys_are_one_to_one(user: str, session: str) -> None:
    key = conversation_key(user, session)
    assert split_conversation_key(key) == (user, session)


def test_conversation_keys_of_different_pairs_differ() -> None:
    pairs = [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("", "a:b:c"), ("a", "b%3Ac")]
    assert len({conversation_key(u, s) for u, s in pairs}) == len(pairs)
