"""``RedisStore`` on a Sentinel-managed primary: the controller survives a failover.

The contract suite runs on the session's Sentinel setup (``test_store_contract.py``); this test
starts its own primary, replica and sentinel, because it kills the primary.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from _redis_topologies import SENTINEL_SERVICE, redis_sentinel

from langchain_graylayer import RolloutPlan
from langchain_graylayer.errors import StoreError
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.store.redis import RedisStore

PLAN = RolloutPlan.default("refund-v2")


def test_the_controller_carries_on_after_the_primary_fails_over(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found")  # conftest's fixtures fail in CI instead
    import redis
    from redis.sentinel import Sentinel

    with redis_sentinel(binary, tmp_path) as (sentinel_port, (primary, replica)):
        sentinel = Sentinel([("127.0.0.1", sentinel_port)], socket_timeout=0.5)
        client = sentinel.master_for(SENTINEL_SERVICE, decode_responses=True, socket_timeout=0.5)
        store = RedisStore(client=client)
        leader = RolloutController(plan=PLAN, store=store, holder="leader")
        assert [e.action for e in leader.step()] == ["start_layer"]
        assert client.wait(1, 2000) == 1  # the replica has it before the primary dies

        doomed = redis.Redis(port=primary)
        pid = int(doomed.info("server")["process_id"])
        doomed.close()
        os.kill(pid, signal.SIGKILL)  # a crash, not a polite SHUTDOWN (which waits for replicas)
        started, answered = time.monotonic(), False
        while not answered and time.monotonic() - started < 20:  # bounded: ~1 s down-after
            try:  # a write: the old replica refuses them until it is promoted
                answered = store.try_lease("probe", "test", ttl=1.0)
            except StoreError:
                time.sleep(0.2)
        recovered = time.monotonic() - started

        assert answered, "the store did not answer from the new primary within 20 s"
        assert sentinel.discover_master(SENTINEL_SERVICE) == ("127.0.0.1", replica)
        assert leader.status()["status"] == "running"  # the state survived the failover
        leader.rollback("after the failover", operator="alice")
        assert set(store.get_ratios(PLAN.id).values()) == {0.0}
        actions = [e.action for e in leader.audit()]
        assert actions.count("start_layer") == 1  # nothing acted twice
        assert "rollback" in actions
        print(f"recovered {recovered:.1f} s after the primary died")
        client.close()
