"""``graylayer redis-migrate``: plan keys written in the layout before cluster support move to
the hash-tagged names, on a real Redis server and a real three-node cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from langchain_graylayer import RolloutPlan
from langchain_graylayer.cli.main import main
from langchain_graylayer.errors import StoreError
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.store.redis import RedisStore

PLAN = RolloutPlan.default("refund-v2")
KINDS = ("ratios", "steps", "state", "audit")


def old(kind: str, plan_id: str = PLAN.id) -> str:
    return f"graylayer:{kind}:{plan_id}"


def new(kind: str, plan_id: str = PLAN.id) -> str:
    return f"graylayer:{{{plan_id}}}:{kind}"


def write_old_deployment(store: RedisStore, raw: Any) -> dict[str, Any]:
    """A controller's real keys, renamed to where the old layout kept them; its status."""
    leader = RolloutController(plan=PLAN, store=store, holder="old-version")
    leader.step()
    leader.pause(operator="alice", reason="before the upgrade")
    status = leader.status()
    for kind in KINDS:
        raw.rename(new(kind), old(kind))
    raw.set(old("state", "other-plan"), "{}")  # a second plan with only a state
    return status


def test_an_old_deployment_moves_and_its_controller_carries_on(
    make_redis_store: Callable[..., RedisStore], redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = make_redis_store()
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    status = write_old_deployment(store, raw)
    pin = raw.set(f"graylayer:pin:{PLAN.id}:u1:s1", "untouched")
    assert pin
    assert store.get_ratios(PLAN.id) == {}
    with pytest.raises(StoreError, match="redis-migrate"):  # never started from scratch
        RolloutController(plan=PLAN, store=store, holder="new-version").status()

    assert main(["redis-migrate", "--redis-url", redis_url]) == 0
    assert "moved 5 key(s)" in capsys.readouterr().out

    assert not any(raw.exists(old(kind)) for kind in KINDS)
    assert raw.get(f"graylayer:pin:{PLAN.id}:u1:s1") == "untouched"
    upgraded = RolloutController(plan=PLAN, store=store, holder="new-version")
    assert upgraded.status() == {**status, "leader": upgraded.status()["leader"]}
    assert [(e.operator, e.action) for e in upgraded.audit()] == [
        ("controller", "start_layer"),
        ("alice", "pause"),
    ]
    assert store.get_plan_state("other-plan") == "{}"
    assert main(["redis-migrate", "--redis-url", redis_url]) == 0  # again: nothing to do
    assert "moved 0 key(s)" in capsys.readouterr().out
    raw.close()


def test_a_conflict_keeps_both_keys_and_fails_the_command(
    make_redis_store: Callable[..., RedisStore], redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    raw.hset(old("ratios"), "vip", "0.5")
    raw.hset(new("ratios"), "vip", "0.1")  # written by the new version meanwhile
    raw.set(old("state"), "old state")

    assert main(["redis-migrate", "--redis-url", redis_url]) == 1
    assert f"conflict: {old('ratios')} kept" in capsys.readouterr().out
    assert raw.hgetall(old("ratios")) == {"vip": "0.5"}
    assert raw.hgetall(new("ratios")) == {"vip": "0.1"}
    assert raw.get(new("state")) == "old state"
    assert not raw.exists(old("state"))
    raw.close()


def test_a_copy_interrupted_before_the_delete_completes_on_the_next_run(
    make_redis_store: Callable[..., RedisStore], redis_url: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    raw.xadd(old("audit"), {"entry": "e1"})
    raw.restore(new("audit"), 0, raw.dump(old("audit")))  # copied, then the process died

    done = make_redis_store().migrate_layout()

    assert done.moved == (old("audit"),)
    assert done.complete
    assert not raw.exists(old("audit"))
    assert raw.xlen(new("audit")) == 1
    raw.close()


def test_an_old_deployment_moves_on_the_cluster_and_its_controller_rolls_back(
    make_cluster_store: Callable[..., RedisStore],
    redis_cluster_ports: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = make_cluster_store()
    raw = store._client  # the cluster client the fixture made
    # on a cluster RENAME cannot cross slots: write the old keys from the real values
    leader = RolloutController(plan=PLAN, store=store, holder="old-version")
    leader.step()
    for kind in KINDS:
        payload = raw.dump(new(kind))
        raw.delete(new(kind))
        raw.restore(old(kind), 0, payload)

    url = f"redis+cluster://127.0.0.1:{redis_cluster_ports[2]}/0"
    assert main(["redis-migrate", "--redis-url", url]) == 0

    assert "moved 4 key(s)" in capsys.readouterr().out
    assert not any(raw.exists(old(kind)) for kind in KINDS)
    upgraded = RolloutController(plan=PLAN, store=store, holder="old-version")
    upgraded.rollback("after the upgrade", operator="alice")
    assert set(store.get_ratios(PLAN.id).values()) == {0.0}
