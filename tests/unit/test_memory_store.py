"""MemoryStore stays bounded however many users pass, and expires entries on its clock."""

from __future__ import annotations

from langchain_graylayer.decision import SessionPin, Version
from langchain_graylayer.layering import LayerAssignment, LayerReason
from langchain_graylayer.store import MemoryStore

VIP = LayerAssignment("vip", LayerReason.SCORE, 0.1)


class FakeClock:
    """Seconds that only move when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_layer_cache_is_capped_and_counts_evictions() -> None:
    store = MemoryStore(max_cached_layers=100)
    for i in range(1000):
        store.cache_layer("p", f"u{i}", VIP, ttl=3600)
        assert store.sizes()["cached_layers"] <= 100

    assert store.sizes()["cached_layers"] == 100
    assert store.sizes()["evictions"] == 900
    assert store.get_cached_layer("p", "u0") is None  # the oldest went first
    assert store.get_cached_layer("p", "u999") == VIP


def test_layer_cache_evicts_the_least_recently_used() -> None:
    store = MemoryStore(max_cached_layers=3)
    for user in ("a", "b", "c"):
        store.cache_layer("p", user, VIP, ttl=3600)
    assert store.get_cached_layer("p", "a") == VIP  # "a" is now the most recently used
    store.cache_layer("p", "d", VIP, ttl=3600)

    assert store.get_cached_layer("p", "b") is None
    assert store.get_cached_layer("p", "a") == VIP
    assert store.get_cached_layer("p", "d") == VIP


def test_pins_are_capped() -> None:
    store = MemoryStore(max_pins=10)
    for i in range(50):
        store.pin_session("p", f"s{i}", SessionPin(Version.STABLE, None, float(i)), ttl=3600)
    assert store.sizes()["pins"] == 10
    assert store.sizes()["evictions"] == 40
    assert sorted(store.pinned_sessions("p")) == sorted(f"s{i}" for i in range(40, 50))


def test_cached_layers_expire_on_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.cache_layer("p", "u1", VIP, ttl=60)
    clock.now += 59.9
    assert store.get_cached_layer("p", "u1") == VIP
    clock.now += 0.1
    assert store.get_cached_layer("p", "u1") is None
    assert store.sizes()["cached_layers"] == 0  # an expired entry is dropped when read


def test_caching_another_plan_restarts_the_users_ttl() -> None:
    # The TTL is per user, as in RedisStore: both stores must agree.
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.cache_layer("p", "u1", VIP, ttl=60)
    clock.now += 50
    store.cache_layer("q", "u1", VIP, ttl=60)
    clock.now += 50
    assert store.get_cached_layer("p", "u1") == VIP


def test_pins_expire_on_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    old = SessionPin(Version.CANDIDATE, "vip", clock.now)
    store.pin_session("p", "s1", old, ttl=10)
    store.pin_session("p", "s2", old, ttl=100)
    clock.now += 10
    assert store.get_pin("p", "s1") is None
    assert store.pinned_sessions("p") == {"s2": old}
    new = SessionPin(Version.STABLE, None, clock.now)
    assert store.pin_session("p", "s1", new, ttl=10) == new


def test_a_hundred_thousand_users_keep_the_layer_cache_bounded() -> None:
    cap = 1000
    store = MemoryStore(max_cached_layers=cap)
    for i in range(100_000):
        user = f"user-{i}"
        # what the router does per request: read the cache, compute and cache on a miss
        if store.get_cached_layer("refund-v2", user) is None:
            store.cache_layer("refund-v2", user, VIP, ttl=86400)
    sizes = store.sizes()
    assert sizes["cached_layers"] <= cap
    assert sizes["evictions"] == 100_000 - cap
