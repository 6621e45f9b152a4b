"""The Sentinel failover scenario, shared by its test and ``benchmarks/cluster_figures.py``.

Two routers serve a bounded load (each request a real ``GrayRouter.invoke`` over its own
``RedisStore`` on a Sentinel-managed primary) while two controllers tick against the same
primary, promoting a one-layer plan a step a second. Once the plan has moved, the primary is
SIGKILLed; the sentinel promotes the replica. The scenario measures what a user and an
operator would: requests that failed, how long until a store write succeeds again, and what
the audit log says the controllers did (each automated action at most once).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _redis_topologies import SENTINEL_SERVICE, redis_sentinel
from langchain_core.runnables import RunnableLambda

from langchain_graylayer import GrayRouter, RolloutPlan
from langchain_graylayer.errors import StoreError
from langchain_graylayer.plan.gates import Gates
from langchain_graylayer.plan.plan import LayerSpec
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.rollout.state import AuditEntry
from langchain_graylayer.store.redis import RedisStore

__all__ = ["FailoverRun", "failover_under_load"]

STEPS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

PLAN = RolloutPlan(
    id="failover",
    layers=[LayerSpec(name="all", score_range=(0.0, 1.0), steps=STEPS)],
    gates=Gates(bake_time=1.0, max_step_time=1.0, min_samples=1, min_users_at_timeout=1,
                size_steps=False),
)  # fmt: skip
"""One layer for everyone, a step a second: the controllers act all through the failover."""

AUTOMATED = {"start_layer", "promote", "complete_layer", "complete", "rollback"}


@dataclass
class FailoverRun:
    """What one run saw."""

    requests: int = 0
    failed: list[str] = field(default_factory=list)
    """The error of every request that raised (goal: none)."""
    recovered: float = float("nan")
    """Seconds from the SIGKILL to the first store write that succeeded."""
    audit: list[AuditEntry] = field(default_factory=list)
    router_counts: list[dict[str, int]] = field(default_factory=list)
    actions_before_kill: int = 0
    requests_during: int = 0
    """Requests sent between the SIGKILL and the first successful write."""
    requests_after: int = 0
    """Requests sent after the first successful write."""

    @property
    def duplicates(self) -> list[tuple[Any, ...]]:
        """Automated actions the audit log holds more than once (same action, layer, ratios)."""
        seen = Counter(
            (e.action.value, e.layer, e.old_ratio, e.new_ratio)
            for e in self.audit
            if e.action.value in AUTOMATED
        )
        return [key for key, count in seen.items() if count > 1]

    @property
    def actions(self) -> list[str]:
        return [e.action.value for e in self.audit]


def _sentinel_store(port: int, timeout: float) -> RedisStore:
    from redis.sentinel import Sentinel

    sentinel = Sentinel([("127.0.0.1", port)], socket_timeout=timeout)
    client = sentinel.master_for(SENTINEL_SERVICE, decode_responses=True, socket_timeout=timeout,
                                 socket_connect_timeout=timeout)  # fmt: skip
    return RedisStore(client=client)


def failover_under_load(
    binary: str, data_dir: Path, *, seconds: float = 14.0, max_requests: int = 4000
) -> FailoverRun:
    """Run the scenario: about ``seconds`` of load, at most ``max_requests`` requests."""
    import redis

    run = FailoverRun()
    with redis_sentinel(binary, data_dir) as (sentinel_port, (primary, _replica)):
        routers = [
            GrayRouter(
                stable=RunnableLambda(lambda q: f"v1: {q}"),
                candidate=RunnableLambda(lambda q: f"v2: {q}"),
                plan=PLAN,
                store=_sentinel_store(sentinel_port, 0.1),  # the request path's timeout
                instrument=False,
                journal_tool_calls=False,
            )
            for _ in range(2)
        ]
        controllers = [
            RolloutController(plan=PLAN, store=_sentinel_store(sentinel_port, 0.5), holder=name)
            for name in ("controller-a", "controller-b")
        ]
        stop, lock = threading.Event(), threading.Lock()
        deadline = time.monotonic() + seconds
        killed, healed = [math.inf], [math.inf]  # set by the main thread

        def serve(router: GrayRouter[Any, Any], worker: int) -> None:
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if run.requests >= max_requests:
                        return
                    run.requests += 1
                    now = time.monotonic()
                    run.requests_during += killed[0] <= now < healed[0]
                    run.requests_after += healed[0] <= now
                user = f"user-{worker}-{n % 150}"
                configurable = {"user_id": user}
                if n % 2:
                    configurable["session_id"] = f"chat-{n % 40}"
                try:
                    router.invoke("where is my refund?", {"configurable": configurable})
                except Exception as exc:  # what the test counts: a request that failed
                    with lock:
                        run.failed.append(f"{type(exc).__name__}: {exc}")
                n += 1
                time.sleep(0.005)

        def tick(controller: RolloutController) -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                controller.step()  # never raises for a store outage: the tick is skipped
                stop.wait(0.25)

        threads = [
            threading.Thread(target=serve, args=(router, 2 * i + k), daemon=True)
            for i, router in enumerate(routers)
            for k in range(2)
        ]
        threads += [threading.Thread(target=tick, args=(c,), daemon=True) for c in controllers]
        for thread in threads:
            thread.start()
        try:
            probe = _sentinel_store(sentinel_port, 0.2)
            while time.monotonic() < deadline - seconds / 2:  # let the plan move first
                if len(probe.read_audit(PLAN.id)) >= 4:
                    break
                time.sleep(0.1)
            run.actions_before_kill = len(probe.read_audit(PLAN.id))
            doomed = redis.Redis(port=primary)
            pid = int(doomed.info("server")["process_id"])
            doomed.close()
            os.kill(pid, signal.SIGKILL)  # a crash, not a SHUTDOWN that waits for replicas
            killed[0] = time.monotonic()
            while time.monotonic() - killed[0] < 30:  # bounded: ~1 s down-after, then election
                try:
                    if probe.try_lease("failover-probe", "probe", ttl=1.0):
                        healed[0] = time.monotonic()
                        run.recovered = healed[0] - killed[0]
                        break
                except StoreError:
                    pass
                time.sleep(0.05)
            for thread in threads:
                thread.join(timeout=seconds + 30)
        finally:
            stop.set()
        run.audit = controllers[0].audit()
        run.router_counts = [router.counts() for router in routers]
    return run
