"""A rollback finds the candidate's pins from the plan's index of them, not by scanning every
pin: with a million users the scan took minutes (``benchmarks/cluster_figures.py``), while
the rolled-back candidate kept serving its pinned conversations."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from langchain_graylayer import RolloutPlan
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.store.protocols import SessionPin, conversation_key
from langchain_graylayer.store.redis import RedisStore

PLAN = RolloutPlan.default("refund-v2")
TTL = 3600.0


def _nodes(store: RedisStore) -> list[Any]:
    import redis

    client: Any = store._client  # the test reads the servers' own counters
    if hasattr(client, "get_nodes"):
        return [redis.Redis(host=n.host, port=n.port) for n in client.get_nodes()]
    return [client]


def _scans(store: RedisStore) -> int:
    return sum(int(n.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))
               for n in _nodes(store))  # fmt: skip


def _index_covers_everything(store: RedisStore, plan_id: str) -> None:
    """As if one pin TTL had passed since the index was first written (every pin from before
    it has expired by then)."""
    store._client.hset(f"graylayer:{{{plan_id}}}:candidate-pins-since", "complete", 0)


def _pin_many(store: RedisStore, sessions: int, every: int) -> dict[str, SessionPin]:
    candidates = {}
    for n in range(sessions):
        version = Version.CANDIDATE if n % every == 0 else Version.STABLE
        pin = SessionPin(version, "normal", 1.7e9, f"user-{n}")
        key = conversation_key(f"user-{n}", f"chat-{n}")
        store.pin_session(PLAN.id, key, pin, TTL)
        if version is Version.CANDIDATE:
            candidates[key] = pin
    return candidates


@pytest.fixture(params=["server", "cluster"])
def store(request: pytest.FixtureRequest) -> RedisStore:
    factory: Callable[..., RedisStore] = request.getfixturevalue(
        "make_redis_store" if request.param == "server" else "make_cluster_store"
    )
    return factory()


def test_candidate_pins_are_read_from_the_index_without_a_scan(store: RedisStore) -> None:
    candidates = _pin_many(store, 300, every=10)
    _index_covers_everything(store, PLAN.id)
    before = _scans(store)

    assert store.pinned_sessions(PLAN.id, Version.CANDIDATE) == candidates
    assert _scans(store) == before  # no SCAN: the time does not grow with all users' pins


def test_a_rollback_moves_every_candidate_session_found_in_the_index(store: RedisStore) -> None:
    candidates = _pin_many(store, 200, every=5)
    _index_covers_everything(store, PLAN.id)
    controller = RolloutController(plan=PLAN, store=store, holder="leader")
    controller.step()
    before = _scans(store)
    controller.rollback("harm", operator="alice")

    report = controller.last_rollback_report
    assert report is not None
    assert sorted(report.sessions_moved) == sorted(candidates)
    assert store.pinned_sessions(PLAN.id, Version.CANDIDATE) == {}
    assert all(store.get_pin(PLAN.id, key).version is Version.STABLE for key in candidates)  # type: ignore[union-attr]
    assert _scans(store) == before


def test_pins_written_before_the_index_are_still_found_until_they_expire(
    store: RedisStore,
) -> None:
    old = SessionPin(Version.CANDIDATE, "vip", 1.7e9, "alice")
    # a candidate pin as the version before the index wrote it: the pin key alone
    store._client.set(f"graylayer:pin:{PLAN.id}:alice:chat-1", old.encode(), px=int(TTL * 1000))
    new = _pin_many(store, 10, every=2)

    assert store.pinned_sessions(PLAN.id, Version.CANDIDATE) == {"alice:chat-1": old, **new}


def test_the_index_forgets_expired_and_repinned_sessions(store: RedisStore) -> None:
    pin = SessionPin(Version.CANDIDATE, "vip", 1.7e9, "bob")
    store.pin_session(PLAN.id, "bob:short", pin, ttl=0.2)
    store.pin_session(PLAN.id, "bob:long", pin, ttl=TTL)
    store.repin_session(PLAN.id, "bob:long", SessionPin(Version.STABLE, "vip", 1.7e9, "bob"), TTL)
    _index_covers_everything(store, PLAN.id)
    time.sleep(0.3)

    assert store.pinned_sessions(PLAN.id, Version.CANDIDATE) == {}
    assert store._client.zcard(f"graylayer:{{{PLAN.id}}}:candidate-pins") == 0
