"""The controller and the router on a real three-node Redis Cluster (fixtures in conftest)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _redis_topologies import redis_cluster
from langchain_core.runnables import RunnableLambda

from langchain_graylayer import GrayRouter, RolloutPlan
from langchain_graylayer.errors import ConfigurationError, StoreError
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.store.redis import RedisStore

PLAN = RolloutPlan.default("refund-v2")


def controller(store: RedisStore, holder: str, **kw: Any) -> RolloutController:
    return RolloutController(plan=PLAN, store=store, holder=holder, **kw)


def test_the_controller_steps_and_rolls_back_on_the_cluster(
    make_cluster_store: Callable[..., RedisStore],
) -> None:
    store = make_cluster_store()
    leader = controller(store, "leader")

    assert [e.action for e in leader.step()] == ["start_layer"]
    assert store.get_ratios(PLAN.id)["early_adopter"] > 0

    leader.rollback("p99 latency doubled", operator="alice")

    assert set(store.get_ratios(PLAN.id).values()) == {0.0}
    assert leader.status()["status"] == "rolled_back"
    actions = [(e.operator, e.action) for e in leader.audit()]
    assert actions[:2] == [("controller", "start_layer"), ("alice", "rollback")]


def test_two_controllers_on_the_cluster_never_both_act(
    make_cluster_store: Callable[..., RedisStore],
) -> None:
    replicas = [controller(make_cluster_store(), f"replica-{i}") for i in range(2)]
    acted: list[str] = []
    lock = threading.Lock()

    def tick(replica: RolloutController) -> None:
        for _ in range(10):
            for _entry in replica.step():
                with lock:
                    acted.append(replica.holder)

    threads = [threading.Thread(target=tick, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(set(acted)) == 1
    audit = replicas[1].audit()
    assert [e.action for e in audit].count("start_layer") == 1
    assert replicas[0].status() == replicas[1].status()


def test_a_redis_cluster_url_finds_every_node(
    make_cluster_store: Callable[..., RedisStore], redis_cluster_ports: list[int]
) -> None:
    store = make_cluster_store(url=f"redis+cluster://127.0.0.1:{redis_cluster_ports[1]}/0")
    plans = [f"plan-{i}" for i in range(12)]  # spread over the three nodes' slots
    for plan_id in plans:
        store.commit(plan_id, ratios={"vip": 0.5}, state="{}", audit=["started"])
    assert all(store.get_ratios(p) == {"vip": 0.5} for p in plans)
    assert all(store.read_audit(p) == ["started"] for p in plans)


def test_a_prefix_with_a_brace_is_refused(make_cluster_store: Callable[..., RedisStore]) -> None:
    with pytest.raises(ConfigurationError, match=r"prefix: .*without '\{' or '\}'"):
        make_cluster_store(prefix="team{a}")


def test_two_routers_on_the_cluster_route_alike_and_share_session_pins(
    make_cluster_store: Callable[..., RedisStore], redis_cluster_ports: list[int]
) -> None:
    from langchain_graylayer.plan.plan import Version

    # URL stores, as `graylayer serve` builds them: the request path's copy is a cluster too
    first, second = (
        make_cluster_store(url=f"redis+cluster://127.0.0.1:{port}/0")
        for port in redis_cluster_ports[:2]
    )
    first.commit(PLAN.id, ratios=dict.fromkeys(PLAN.layer_names, 0.5), state="{}", audit=[])
    routers = [
        GrayRouter(
            stable=RunnableLambda(lambda q: f"v1: {q}"),
            candidate=RunnableLambda(lambda q: f"v2: {q}"),
            plan=PLAN,
            store=store,
            instrument=False,
        )
        for store in (first, second)
    ]
    users = [f"user-{n}" for n in range(200)]
    by_first = {u: routers[0].route_request(u, f"chat-{u}").version for u in users}
    by_second = {u: routers[1].route_request(u, f"chat-{u}").version for u in users}

    assert by_first == by_second
    assert set(by_first.values()) == {Version.STABLE, Version.CANDIDATE}  # both arms on show
    assert len(second.pinned_sessions(PLAN.id)) == len(users)  # pins over all three nodes


def test_a_cluster_outage_is_a_store_error_and_requests_get_stable_at_once(
    tmp_path: Path,
) -> None:
    """Its own cluster, since it kills every node; the client's RedisClusterException (not a
    RedisError) must become a StoreError like every other client failure."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found")  # conftest's fixtures fail in CI instead
    import redis

    with redis_cluster(binary, tmp_path) as ports:
        store = RedisStore(f"redis+cluster://127.0.0.1:{ports[0]}/0")
        store.commit(PLAN.id, ratios=dict.fromkeys(PLAN.layer_names, 1.0), state="{}", audit=[])
        router = GrayRouter(
            stable=RunnableLambda(lambda q: "v1"),
            candidate=RunnableLambda(lambda q: "v2"),
            plan=PLAN,
            store=store,
            instrument=False,
        )
        assert router.invoke("q", {"configurable": {"user_id": "u0"}}) == "v2"
        for port in ports:
            node = redis.Redis(port=port)
            pid = int(node.info("server")["process_id"])
            node.close()
            os.kill(pid, signal.SIGKILL)

        with pytest.raises(StoreError, match="get_ratios"):
            store.get_ratios(PLAN.id)
        for n in range(1, 6):
            began = time.monotonic()
            assert router.invoke("q", {"configurable": {"user_id": f"u{n}"}}) == "v1"
            assert time.monotonic() - began < 1.0
        with pytest.raises(StoreError, match="Redis Cluster"):
            RedisStore(f"redis+cluster://127.0.0.1:{ports[0]}/0")
        store.close()
