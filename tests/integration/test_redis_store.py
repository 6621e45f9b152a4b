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

from langchain_graylayer.decision import SessionPin, Version
from langchain_graylayer.errors import ConfigurationError, StoreError
from langchain_graylayer.layering import LayerAssignment, LayerReason, UserProfile
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
        "forget_layer": lambda: store.forget_layer("u1"),
        "get_pin": lambda: store.get_pin("p", "s1"),
        "pin_session": lambda: store.pin_session("p", "s1", pin, 60),
        "unpin_session": lambda: store.unpin_session("p", "s1"),
        "pinned_sessions": lambda: store.pinned_sessions("p"),
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
    assert raw.hgetall("gl:ratios:p") == {"vip": "0.1"}
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
    raw.hset("graylayer:ratios:p", "vip", "not a number")
    raw.set("graylayer:profile:u1", "{")
    raw.set("graylayer:pin:p:s1", "nonsense")
    raw.close()
    with pytest.raises(StoreError, match="graylayer:ratios:p"):
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
