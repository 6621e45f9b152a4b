"""Promises only a shared Redis store makes: replicas agree, races resolve, outages are errors."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from _servers import free_port, wait_until

from langchain_graylayer.errors import ConfigurationError, StoreError
from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store.protocols import SessionPin
from langchain_graylayer.store.redis import RedisStore

MakeRedisStore = Callable[..., RedisStore]
"""The ``make_redis_store`` fixture (tests/integration/conftest.py)."""


def test_replicas_see_each_others_writes(make_redis_store: MakeRedisStore) -> None:
    replica_a, replica_b = make_redis_store(), make_redis_store()

    replica_a.set_ratio("p", "vip", 0.05)
    assert replica_b.get_ratio("p", "vip") == 0.05
    replica_b.set_ratio("p", "vip", 0.1)
    assert replica_a.get_ratios("p") == {"vip": 0.1}

    pin = SessionPin(Version.CANDIDATE, "vip", 1.5)
    replica_a.pin_session("p", "s1", pin, ttl=60)
    assert replica_b.get_pin("p", "s1") == pin
    assert replica_b.pin_session("p", "s1", SessionPin(Version.STABLE, None, 2.0), ttl=60) == pin
    assert replica_b.pinned_sessions("p") == {"s1": pin}

    replica_b.put_profile("u1", UserProfile(use_count=3))
    assert replica_a.get_profile("u1") == UserProfile(use_count=3)


def _race(replicas: list[RedisStore], session: str, threads: int) -> list[SessionPin]:
    """``threads`` callers, released together, each try to pin ``session`` to their own pin."""
    barrier = threading.Barrier(threads)

    def pin(index: int) -> SessionPin:
        mine = SessionPin(Version.CANDIDATE if index % 2 else Version.STABLE, f"l{index}", index)
        barrier.wait(5)
        return replicas[index % len(replicas)].pin_session("p", session, mine, ttl=60)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(pin, range(threads)))


def test_racing_pins_across_replicas_all_get_the_first(make_redis_store: MakeRedisStore) -> None:
    replicas = [make_redis_store(), make_redis_store()]
    for session in ("s1", "s2", "s3", "s4", "s5"):
        results = _race(replicas, session, threads=20)
        assert len(results) == 20
        assert len(set(results)) == 1, f"{session}: {len(set(results))} different pins in force"
        assert replicas[0].get_pin("p", session) == results[0]


def test_store_without_server_raises_store_error_quickly() -> None:
    port = free_port()  # nothing listens here
    store = RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2)
    pin = SessionPin(Version.STABLE, None, 1.0)
    assignment = LayerAssignment("vip", LayerReason.SCORE, 0.2)
    calls: dict[str, Callable[[], Any]] = {
        "get_ratios": lambda: store.get_ratios("p"),
        "get_ratio": lambda: store.get_ratio("p", "vip"),
        "set_ratio": lambda: store.set_ratio("p", "vip", 0.5),
        "get_profile": lambda: store.get_profile("u1"),
        "put_profile": lambda: store.put_profile("u1", UserProfile()),
        "get_cached_layer": lambda: store.get_cached_layer("p", "u1"),
        "cache_layer": lambda: store.cache_layer("p", "u1", assignment, 60),
        "get_pin": lambda: store.get_pin("p", "s1"),
        "pin_session": lambda: store.pin_session("p", "s1", pin, 60),
        "claim_once": lambda: store.claim_once("n1", 60),
        "pinned_sessions": lambda: store.pinned_sessions("p"),
        "repin_session": lambda: store.repin_session("p", "s1", pin, 60),
        "get_plan_state": lambda: store.get_plan_state("p"),
        "commit": lambda: store.commit("p", ratios={"vip": 0.5}, state="{}", audit=["{}"]),
        "read_audit": lambda: store.read_audit("p"),
        "try_lease": lambda: store.try_lease("ctl", "a", 60),
        "release_lease": lambda: store.release_lease("ctl", "a"),
        "lease_holder": lambda: store.lease_holder("ctl"),
        "record_tool_call": lambda: store.record_tool_call("p", "{}"),
        "tool_calls": lambda: store.tool_calls("p"),
        "ping": store.ping,
    }
    for operation, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StoreError, match=operation) as info:
            call()
        assert time.monotonic() - started < 1.0, operation
        assert isinstance(info.value.__cause__, (redis.RedisError, OSError)), operation
        assert "graylayer" in str(info.value), f"{operation}: the message names no key"
    store.close()


def test_prefixes_keep_deployments_apart(make_redis_store: MakeRedisStore, redis_url: str) -> None:
    blue, green = make_redis_store(prefix="blue"), make_redis_store(prefix="green")
    blue.set_ratio("p", "vip", 0.5)
    blue.put_profile("u1", UserProfile(use_count=1))
    blue.cache_layer("p", "u1", LayerAssignment("vip", LayerReason.SCORE, 0.1), ttl=60)
    blue.pin_session("p", "s1", SessionPin(Version.CANDIDATE, "vip", 1.0), ttl=60)

    assert green.get_ratios("p") == {}
    assert green.get_profile("u1") is None
    assert green.get_cached_layer("p", "u1") is None
    assert green.get_pin("p", "s1") is None
    assert green.pinned_sessions("p") == {}
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    assert all(key.startswith("blue:") for key in raw.scan_iter())
    raw.close()


def test_key_layout_is_as_documented(make_redis_store: MakeRedisStore, redis_url: str) -> None:
    store = make_redis_store(prefix="gl")
    pin = SessionPin(Version.CANDIDATE, "vip", 1.25)
    assignment = LayerAssignment("vip", LayerReason.SCORE, 0.125)
    profile = UserProfile(use_count=7, tags={"group": "staff"})
    store.set_ratio("p", "vip", 0.1)
    store.put_profile("u1", profile)
    store.cache_layer("p", "u1", assignment, ttl=30)
    store.pin_session("p", "s1", pin, ttl=0.0001)  # below a millisecond: rounded up to 1 ms
    store.pin_session("p", "s2", pin, ttl=30)
    time.sleep(0.01)

    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    assert raw.hgetall("gl:{p}:ratios") == {"vip": "0.1"}
    assert UserProfile.model_validate_json(raw.get("gl:profile:u1") or "") == profile
    assert raw.hgetall("gl:layer:u1") == {"p": assignment.encode()}
    assert 29_000 < raw.pttl("gl:layer:u1") <= 30_000
    assert raw.get("gl:pin:p:s1") is None
    assert raw.get("gl:pin:p:s2") == pin.encode()
    assert 29_000 < raw.pttl("gl:pin:p:s2") <= 30_000
    raw.close()


def test_client_without_decoding_works(make_redis_store: MakeRedisStore, redis_url: str) -> None:
    store = make_redis_store(client=redis.Redis.from_url(redis_url))  # replies are bytes
    pin = SessionPin(Version.CANDIDATE, "vip", 1.0)
    assignment = LayerAssignment(None, LayerReason.OPT_OUT)
    store.set_ratio("p", "vip", 0.3)
    store.put_profile("u1", UserProfile(tags={"group": "staff"}))
    store.cache_layer("p", "u1", assignment, ttl=60)

    assert store.get_ratios("p") == {"vip": 0.3}
    assert store.get_ratio("p", "vip") == 0.3
    assert store.get_profile("u1") == UserProfile(tags={"group": "staff"})
    assert store.get_cached_layer("p", "u1") == assignment
    assert store.pin_session("p", "s1", pin, ttl=60) == pin
    assert store.pin_session("p", "s1", SessionPin(Version.STABLE, None, 2.0), ttl=60) == pin
    assert store.get_pin("p", "s1") == pin
    assert store.pinned_sessions("p", Version.CANDIDATE) == {"s1": pin}
    store.ping()


def test_close_disconnects_only_a_client_the_store_built(
    make_redis_store: MakeRedisStore, redis_url: str
) -> None:
    observer = redis.Redis.from_url(redis_url)

    def connected() -> int:  # clients connected to the server, the observer included
        return len(observer.client_list())

    baseline = connected()

    owned = make_redis_store()
    owned.ping()
    assert connected() == baseline + 1
    owned.close()
    wait_until(lambda: connected() == baseline, 2.0, "the owned client's disconnection")

    client = redis.Redis.from_url(redis_url)
    client.ping()
    make_redis_store(client=client).close()
    time.sleep(0.05)
    assert connected() == baseline + 1
    client.close()
    observer.close()


def test_corrupt_values_raise_store_error(make_redis_store: MakeRedisStore, redis_url: str) -> None:
    store = make_redis_store()
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    raw.hset("graylayer:{p}:ratios", "vip", "not a number")
    raw.set("graylayer:profile:u1", "{")
    raw.set("graylayer:pin:p:s1", "nonsense")
    raw.close()
    with pytest.raises(StoreError, match=r"graylayer:\{p\}:ratios"):
        store.get_ratio("p", "vip")
    with pytest.raises(StoreError, match="graylayer:profile:u1"):
        store.get_profile("u1")
    with pytest.raises(StoreError, match="graylayer:pin:p:s1"):
        store.get_pin("p", "s1")


def test_exactly_one_of_url_and_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with pytest.raises(ConfigurationError, match=r"client: .*either url= or client=, not both"):
        RedisStore(redis_url, client=client)
    with pytest.raises(ConfigurationError, match="url: got None; expected a Redis URL"):
        RedisStore()
    with pytest.raises(
        ConfigurationError, match=r"url: got 'http://127\.0\.0\.1/'; expected a redis"
    ):
        RedisStore("http://127.0.0.1/")
    client.close()


def test_missing_redis_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    monkeypatch.delitem(sys.modules, "langchain_graylayer.store.redis")
    with pytest.raises(ImportError, match=r'pip install "langchain-graylayer\[redis\]"'):
        importlib.import_module("langchain_graylayer.store.redis")


def _race_lease(replicas: list[RedisStore], threads: int) -> list[bool]:
    """``threads`` callers, released together, each try to take the lease "ctl" as ``h{i}``."""
    barrier = threading.Barrier(threads)

    def take(index: int) -> bool:
        barrier.wait(5)
        return replicas[index % len(replicas)].try_lease("ctl", f"h{index}", ttl=60)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(take, range(threads)))


def test_racing_leases_across_replicas_have_one_winner(make_redis_store: MakeRedisStore) -> None:
    replicas = [make_redis_store(), make_redis_store()]
    for round_ in range(10):
        won = _race_lease(replicas, threads=10)
        assert won.count(True) == 1, f"round {round_}: {won.count(True)} winners"
        winner = f"h{won.index(True)}"
        assert replicas[0].lease_holder("ctl") == replicas[1].lease_holder("ctl") == winner
        replicas[1].release_lease("ctl", winner)
        assert replicas[0].lease_holder("ctl") is None


def test_controller_key_layout_is_as_documented(
    make_redis_store: MakeRedisStore, redis_url: str
) -> None:
    store = make_redis_store(prefix="gl")
    for i in range(3):
        store.commit("p", ratios={"vip": 0.25}, state=f'{{"v": {i}}}', audit=[f"a{i}"])
        store.record_tool_call("p", f"t{i}")
    store.try_lease("ctl:p", "me", ttl=30)
    store.repin_session("p", "s1", SessionPin(Version.STABLE, None, 1.0), ttl=30)

    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    assert raw.hgetall("gl:{p}:ratios") == {"vip": "0.25"}
    assert raw.get("gl:{p}:state") == '{"v": 2}'
    assert raw.type("gl:{p}:audit") == "stream"
    assert raw.xlen("gl:{p}:audit") == 3
    assert [fields for _, fields in raw.xrange("gl:{p}:audit")] == [
        {"entry": f"a{i}"} for i in range(3)
    ]
    assert raw.type("gl:toolcalls:p") == "stream"
    assert raw.xlen("gl:toolcalls:p") == 3
    assert raw.get("gl:lease:ctl:p") == "me"
    assert 29_000 < raw.pttl("gl:lease:ctl:p") <= 30_000
    assert 29_000 < raw.pttl("gl:pin:p:s1") <= 30_000
    raw.close()


def test_commit_refused_by_the_server_writes_nothing(
    make_redis_store: MakeRedisStore, redis_url: str
) -> None:
    # Out of memory (noeviction), Redis refuses writes when they are queued: EXEC then aborts
    # the whole transaction, so neither ratios nor state nor audit entry may be applied.
    store = make_redis_store()
    store.commit("p", ratios={"vip": 0.1}, state="S1", audit=["a1"])
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    policy = admin.config_get("maxmemory-policy")["maxmemory-policy"]
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        with pytest.raises(StoreError, match="commit") as info:
            store.commit("p", ratios={"vip": 0.9, "normal": 0.5}, state="S2", audit=["a2"])
        assert isinstance(info.value.__cause__, redis.RedisError)
    finally:
        admin.config_set("maxmemory", "0")
        admin.config_set("maxmemory-policy", policy)
    assert store.get_ratios("p") == {"vip": 0.1}
    assert store.get_plan_state("p") == "S1"
    assert store.read_audit("p") == ["a1"]
    admin.close()


def test_audit_stream_is_trimmed_approximately(
    make_redis_store: MakeRedisStore, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import langchain_graylayer.store.redis as redis_store

    monkeypatch.setattr(redis_store, "_STREAM_MAXLEN", 100)
    store = make_redis_store()
    for i in range(1000):
        store.commit("p", ratios={}, state="s", audit=[f"a{i}"])
        store.record_tool_call("p", f"t{i}")
    raw = redis.Redis.from_url(redis_url)
    for key in ("graylayer:{p}:audit", "graylayer:toolcalls:p"):
        assert 100 <= raw.xlen(key) < 300, key  # MAXLEN ~ trims whole stream nodes only
    raw.close()
    assert store.read_audit("p", limit=2) == ["a998", "a999"]
    assert store.tool_calls("p")[-1] == "t999"


def test_controller_methods_without_decoding(
    make_redis_store: MakeRedisStore, redis_url: str
) -> None:
    store = make_redis_store(client=redis.Redis.from_url(redis_url))  # replies are bytes
    store.commit("p", ratios={"vip": 0.5}, state='{"é": 1}', audit=["a1"])
    store.commit("p", ratios={}, state='{"é": 2}', audit=["a2"])
    store.record_tool_call("p", "t1")
    assert store.get_plan_state("p") == '{"é": 2}'
    assert store.read_audit("p") == ["a1", "a2"]
    assert store.read_audit("p", limit=1) == ["a2"]
    assert store.tool_calls("p") == ["t1"]
    assert store.try_lease("ctl", "me", ttl=60)
    assert store.try_lease("ctl", "me", ttl=60)
    assert not store.try_lease("ctl", "you", ttl=60)
    assert store.lease_holder("ctl") == "me"
    store.release_lease("ctl", "me")
    assert store.lease_holder("ctl") is None


def test_unreadable_controller_values_raise_store_error(
    make_redis_store: MakeRedisStore, redis_url: str
) -> None:
    store = make_redis_store()
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    raw.xadd("graylayer:{p}:audit", {"not-entry": "x"})
    raw.hset("graylayer:{p}:state", "a", "b")  # a hash where a string belongs
    raw.close()
    with pytest.raises(
        StoreError, match=r"read_audit of 'graylayer:\{p\}:audit'.*no 'entry' field"
    ):
        store.read_audit("p")
    with pytest.raises(StoreError, match=r"graylayer:\{p\}:state"):
        store.get_plan_state("p")


def test_commit_is_one_transaction(make_redis_store: MakeRedisStore, redis_url: str) -> None:
    # A user who may HSET and SET but not XADD: the refused XADD aborts the whole MULTI/EXEC,
    # where separate commands (or a plain pipeline) would have applied the ratios and the state.
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    admin.acl_setuser("no-xadd", enabled=True, nopass=True, keys=["*"], commands=["+@all", "-xadd"])
    try:
        url = redis_url.replace("redis://", "redis://no-xadd:any@", 1)
        store = make_redis_store(url=url)
        store.set_ratio("p", "vip", 0.1)
        with pytest.raises(StoreError, match="commit") as info:
            store.commit("p", ratios={"vip": 0.9}, state="S2", audit=["a2"])
        assert isinstance(info.value.__cause__, redis.RedisError)
        assert store.get_ratios("p") == {"vip": 0.1}
        assert store.get_plan_state("p") is None
        assert admin.exists("graylayer:{p}:audit") == 0
    finally:
        admin.acl_deluser("no-xadd")
        admin.close()
