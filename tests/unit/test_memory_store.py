"""MemoryStore stays bounded however many users pass, and expires entries on its clock."""

from __future__ import annotations

import pytest

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.store import MemoryStore
from langchain_graylayer.store.protocols import SessionPin

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


def test_audit_log_keeps_the_newest_max_audit_entries() -> None:
    store = MemoryStore(max_audit=5)
    for i in range(12):
        store.commit("p", ratios={"vip": 0.1}, state=str(i), audit=[f"a{i}"])
        if i < 3:
            store.commit("q", ratios={}, state="q", audit=[f"q{i}"])
    assert store.read_audit("p") == [f"a{i}" for i in range(7, 12)]  # the oldest were dropped
    assert store.read_audit("p", limit=2) == ["a10", "a11"]
    assert store.read_audit("p", limit=50) == [f"a{i}" for i in range(7, 12)]
    assert store.read_audit("q") == ["q0", "q1", "q2"]  # bounded per plan
    assert store.get_plan_state("p") == "11"


def test_tool_call_journal_keeps_the_newest_max_tool_calls_entries() -> None:
    store = MemoryStore(max_tool_calls=3)
    for i in range(10):
        store.record_tool_call("p", f"t{i}")
    store.record_tool_call("q", "other")
    assert store.tool_calls("p") == ["t7", "t8", "t9"]
    assert store.tool_calls("q") == ["other"]


@pytest.mark.parametrize("field", ["max_audit", "max_tool_calls"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_journal_bounds_must_be_positive(field: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        MemoryStore(**{field: bad})  # type: ignore[arg-type]


def test_leases_expire_on_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    assert store.try_lease("ctl", "a", ttl=10)
    clock.now += 9.9
    assert store.lease_holder("ctl") == "a"
    assert not store.try_lease("ctl", "b", ttl=10)
    clock.now += 0.1  # clock() + ttl reached: lapsed
    assert store.lease_holder("ctl") is None
    assert store.try_lease("ctl", "b", ttl=10)
    assert not store.try_lease("ctl", "a", ttl=10)


def test_renewing_a_lease_counts_its_ttl_from_the_renewal() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.try_lease("ctl", "a", ttl=10)
    clock.now += 8
    assert store.try_lease("ctl", "a", ttl=10)  # now expires at +18
    clock.now += 9
    assert store.lease_holder("ctl") == "a"
    assert not store.try_lease("ctl", "b", ttl=10)
    clock.now += 1
    assert store.try_lease("ctl", "b", ttl=10)


def test_repinned_sessions_expire_on_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.pin_session("p", "s1", SessionPin(Version.CANDIDATE, "vip", clock.now), ttl=100)
    stable = SessionPin(Version.STABLE, None, clock.now)
    store.repin_session("p", "s1", stable, ttl=10)
    clock.now += 9
    assert store.get_pin("p", "s1") == stable
    clock.now += 1
    assert store.get_pin("p", "s1") is None


def test_evidence_of_an_arm_nobody_wrote_to_for_its_ttl_is_dropped() -> None:
    from langchain_graylayer.store.evidence import ArmKey, UnitDelta

    clock = FakeClock()
    store = MemoryStore(clock=clock, evidence_ttl=3600)
    old, fresh = ArmKey("vip", "0@1.000", "candidate"), ArmKey("vip", "1@2.000", "candidate")
    store.add_evidence("p", [UnitDelta(old, "a", 0, {"requests": 1})])
    clock.now += 1800
    store.add_evidence("p", [UnitDelta(fresh, "b", 0, {"requests": 1})])
    clock.now += 1801  # the old arm is past its ttl; the fresh one is not
    store.add_evidence("p", [UnitDelta(fresh, "b", 0, {"requests": 2})])
    assert store.read_evidence("p", "vip", "0@1.000") == {}
    assert store.read_evidence("p", "vip", "1@2.000")["candidate"].total("requests") == 3
