"""A hung Redis (``SIGSTOP``): requests are served at once from the last known state, then the
circuit breaker closes and evidence flows again after ``SIGCONT``.

Each test runs its own ``redis-server`` (the session's server is shared with other tests and must
never hang); every pause is bounded and always ends with ``SIGCONT``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _servers import ManagedProcess, can_ping_redis, free_port, wait_until
from langchain_core.runnables import RunnableLambda
from prometheus_client import CollectorRegistry

from langchain_graylayer import GraylayerMetrics, GrayRouter, RolloutPlan, Version
from langchain_graylayer.errors import StoreError
from langchain_graylayer.routing.decision import RouteReason
from langchain_graylayer.store.breaker import BreakerState
from langchain_graylayer.store.cached import CachedStore
from langchain_graylayer.store.evidence import ArmKey, UnitDelta
from langchain_graylayer.store.protocols import conversation_key

redis = pytest.importorskip("redis", reason='pip install "langchain-graylayer[redis]"')
from langchain_graylayer.store.redis import RedisStore  # noqa: E402

PLAN = RolloutPlan.default("refund-v2")
USERS = [f"user-{i}" for i in range(40)]


@dataclass
class PausableRedis:
    url: str
    process: ManagedProcess

    @contextmanager
    def hung(self, at_most: float = 15.0) -> Iterator[None]:
        """``SIGSTOP`` the server for the block (at most ``at_most`` seconds), then ``SIGCONT``."""
        started = time.monotonic()
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)
        assert time.monotonic() - started < at_most, "the hang outlasted its bound"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PausableRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server not found (CI must not skip the Redis tests)")
        pytest.skip("redis-server not found; install it with: apt-get install -y redis-server")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = ManagedProcess(
        args, name="redis-server", ready=lambda: can_ping_redis(url), cwd=tmp_path
    )
    with process:
        try:
            yield PausableRedis(url, process)
        finally:
            os.kill(process.pid, signal.SIGCONT)  # never leave a stopped server behind


def replica(store: RedisStore) -> GrayRouter[str, str]:
    return GrayRouter(
        stable=RunnableLambda(lambda q: f"stable:{q}"),
        candidate=RunnableLambda(lambda q: f"candidate:{q}"),
        plan=PLAN,
        store=store,
        instrument=False,
    )


def cfg(user: str) -> dict[str, Any]:
    return {"configurable": {"user_id": user, "session_id": f"chat-{user}"}}


def cached(router: GrayRouter[Any, Any]) -> CachedStore:
    store = router._state.assigner.store
    assert isinstance(store, CachedStore)
    return store


async def paced(router: GrayRouter[str, str], seconds: float, rate: float) -> list[Any]:
    """``ainvoke`` at ``rate`` requests a second for ``seconds``, users in turn; per request
    (user, answer or exception, seconds it took), and the event loop's worst lag."""
    results: list[Any] = []

    async def one(user: str) -> None:
        started = time.perf_counter()
        try:
            answer: Any = await router.ainvoke("q", cfg(user))
        except Exception as exc:  # a failed request is a finding, not a crash of the test
            answer = exc
        results.append((user, answer, time.perf_counter() - started))

    tasks, start = [], time.perf_counter()
    for n in range(int(seconds * rate)):
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(USERS[n % len(USERS)])))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    return results


async def loop_lag(stop: asyncio.Event) -> float:
    """The longest the event loop was late for a 5 ms tick until ``stop``."""
    worst = 0.0
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.005)
        worst = max(worst, time.perf_counter() - before - 0.005)
    return worst


async def test_a_router_serves_every_request_during_a_hang_without_waiting_on_it(
    server: PausableRedis,
) -> None:
    store = RedisStore(server.url)
    store.set_ratio(PLAN.id, "vip", 0.5)
    router = replica(store)
    try:
        before = await paced(router, 1.0, 50)  # every user's session pinned, layer known
        versions = {user: answer for user, answer, _ in before}
        baseline = statistics.median([seconds for *_, seconds in before])

        stop = asyncio.Event()
        lag = asyncio.create_task(loop_lag(stop))
        with server.hung():
            during = await paced(router, 5.0, 50)
            assert cached(router).breaker.state is not BreakerState.CLOSED
        stop.set()

        failed = [r for r in during if isinstance(r[1], BaseException)]
        assert not failed, failed[:3]
        # the same answer as before the hang: its pin, from this replica's last known state
        assert all(answer == versions[user] for user, answer, _ in during)
        # Without the breaker every request waits for the request path's 0.1 s timeout at
        # least once; with it the typical request does not touch the store. (The p95 goal,
        # ≤ 50 ms added, is measured by benchmarks/faults_store_hang.py on a quiet machine: a
        # timed p95 here would fail whenever another job shares the cores.)
        added = statistics.median([seconds for *_, seconds in during]) - baseline
        slowest = sorted(round(seconds * 1000) for *_, seconds in during)[-15:]
        assert added <= 0.05, f"median added {added * 1000:.0f} ms; slowest (ms): {slowest}"
        assert max(seconds for *_, seconds in during) < 1.0
        # A store call made on the event loop would block it for the 0.1 s timeout; a busy
        # shared CPU alone has delayed a 5 ms tick by 54 ms (CI), so the bar sits between.
        assert await lag < 0.09, "the event loop was blocked by a store call"
        assert router.counts()["stale"] >= len(during) - 10
        assert router.counts()["degraded"] == 0
    finally:
        store.close()


def test_the_breaker_closes_after_the_hang_and_evidence_resumes(server: PausableRedis) -> None:
    store = RedisStore(server.url)
    store.commit(PLAN.id, ratios={"vip": 1.0}, state="{}", audit=[], steps={"vip": "0@1.000"})
    registry = CollectorRegistry()
    router = GrayRouter(
        stable=RunnableLambda(lambda q: f"stable:{q}"),
        candidate=RunnableLambda(lambda q: f"candidate:{q}"),
        plan=PLAN,
        store=store,
        metrics=GraylayerMetrics(registry=registry),
    )
    requests = cached(router)

    def gauge() -> float | None:
        return registry.get_sample_value("graylayer_store_available", {"plan": PLAN.id})

    def served(user: str) -> Any:
        return router.invoke("q", cfg(user))

    def evidence() -> float:
        arm = store.read_evidence(PLAN.id, "vip", "0@1.000").get(Version.CANDIDATE.value)
        return 0.0 if arm is None else arm.total("requests")

    try:
        assert [served(u) for u in USERS] == ["candidate:q"] * len(USERS)
        assert requests.flush()
        assert evidence() == len(USERS)

        with server.hung():
            started = time.monotonic()
            while time.monotonic() - started < 2.0:  # the breaker opens, requests go on
                assert all(served(u) == "candidate:q" for u in USERS[:10])
            assert requests.breaker.state is not BreakerState.CLOSED
            assert gauge() == 0.0
            assert not requests.flush(timeout=0.2)  # the writer holds its batch
            during = router.counts()["requests"] - len(USERS)
        wait_until(lambda: requests.available, 5.0, "the breaker closing after SIGCONT")
        assert gauge() == 1.0
        assert served(USERS[0]) == "candidate:q"
        assert requests.flush()

        health = requests.health()
        assert health["available"]
        assert health["breaker"]["opened"] == 1
        # Nothing was buffered when the hang began, so nothing was lost: every run counts once.
        assert health["dropped"] == 0
        assert evidence() == len(USERS) + during + 1
        decision = router.route(USERS[0], f"chat-{USERS[0]}")
        assert decision.reason is RouteReason.PINNED
        assert decision.version is Version.CANDIDATE
    finally:
        store.close()


def test_a_new_conversation_during_the_hang_is_routed_and_pinned_once_the_store_is_back(
    server: PausableRedis,
) -> None:
    store = RedisStore(server.url)
    store.set_ratio(PLAN.id, "vip", 1.0)
    router = replica(store)
    requests = cached(router)
    try:
        assert router.invoke("q", cfg("u1")) == "candidate:q"  # u1's layer is known here
        with server.hung():
            for _ in range(3):  # the breaker opens on the first requests that meet the hang
                router.invoke("q", cfg("u0"))
            assert not requests.available
            new = {"configurable": {"user_id": "u1", "session_id": "chat-new"}}
            assert router.invoke("q", new) == "candidate:q"  # routed by its layer and ratio
            assert router.invoke("q", new) == "candidate:q"  # pinned here meanwhile
            # a user this replica never saw: no layer known, so stable (degraded)
            stranger = {"configurable": {"user_id": "u-stranger", "session_id": "chat-x"}}
            assert router.invoke("q", stranger) == "stable:q"
        assert router.counts()["degraded"] >= 1
        key = conversation_key("u1", "chat-new")
        assert store.get_pin(PLAN.id, key) is None  # not written while away
        wait_until(lambda: requests.available, 5.0, "the breaker closing after SIGCONT")
        assert router.invoke("q", new) == "candidate:q"
        pin = store.get_pin(PLAN.id, key)
        assert pin is not None
        assert pin.version is Version.CANDIDATE
    finally:
        store.close()


def test_the_writer_buffer_is_bounded_while_the_store_is_away(server: PausableRedis) -> None:
    store = RedisStore(server.url)
    buffered = CachedStore(store, requests=store.with_timeout(0.1), max_buffered=100)
    arm = ArmKey("vip", "0@1.000", Version.CANDIDATE.value)

    def delta(n: int) -> list[UnitDelta]:
        return [UnitDelta(arm, f"unit-{n}", 0, {"requests": 1})]

    try:
        with server.hung():
            for n in range(3):  # requests meet the hang first: the breaker opens
                with pytest.raises(StoreError):
                    buffered.get_profile(f"user-{n}")
            assert not buffered.available
            started = time.perf_counter()
            for n in range(1000):
                buffered.add_evidence(PLAN.id, delta(n))
            assert time.perf_counter() - started < 0.5  # never waits on the store
            assert buffered.health()["buffered"] == 100
            assert buffered.dropped == 900
        wait_until(lambda: buffered.available, 5.0, "the breaker closing after SIGCONT")
        assert buffered.flush()
        assert store.read_evidence(PLAN.id, "vip", "0@1.000")["candidate"].users == 100
    finally:
        store.close()


def test_a_call_that_timed_out_is_not_retried(server: PausableRedis) -> None:
    store = RedisStore(server.url, socket_timeout=0.3)
    try:
        with server.hung():
            started = time.monotonic()
            with pytest.raises(StoreError):
                store.record_tool_call(PLAN.id, '{"tool": "issue_refund"}')
            waited = time.monotonic() - started
        assert waited < 0.5, f"one timeout, no retry: waited {waited:.2f} s"
        time.sleep(0.2)  # the server runs what it received while it was stopped
        assert len(store.tool_calls(PLAN.id)) <= 1  # a write is never sent twice
    finally:
        store.close()


def test_the_request_path_gets_its_own_short_timeout(server: PausableRedis) -> None:
    store = RedisStore(server.url, socket_timeout=2.0)
    fast = store.with_timeout(0.1)
    assert store.with_timeout(0.1) is fast  # one copy, however many routers ask
    client = redis.Redis.from_url(server.url)
    assert RedisStore(client=client).with_timeout(0.1).ping() is None  # its own client's
    client.close()
    try:
        with server.hung():
            started = time.monotonic()
            with pytest.raises(StoreError):
                fast.get_ratios(PLAN.id)
            assert time.monotonic() - started < 0.5
    finally:
        store.close()
