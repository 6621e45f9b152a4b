"""The ``Store`` contract, checked against every implementation: MemoryStore and a real Redis."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

import pytest

from langchain_graylayer.decision import SessionPin, Version
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.layering import LayerAssignment, LayerReason, UserProfile
from langchain_graylayer.store import MemoryStore, Store

SHORT_TTL = 0.15
"""Seconds: long enough to read an entry back, short enough to sleep past it."""


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    made: Store = request.getfixturevalue("make_redis_store")()
    return made


def _pin(version: Version = Version.CANDIDATE, layer: str | None = "vip") -> SessionPin:
    return SessionPin(version, layer, created_at=time.time())


def test_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)


# ratios -----------------------------------------------------------------------------------
def test_ratios_default_to_zero(store: Store) -> None:
    assert store.get_ratio("p", "vip") == 0.0
    assert store.get_ratios("p") == {}


def test_ratios_round_trip_as_floats(store: Store) -> None:
    store.set_ratio("p", "early_adopter", 0.1)
    store.set_ratio("p", "vip", 1)
    store.set_ratio("p", "normal", 1 / 3)
    store.set_ratio("other", "vip", 0.5)

    assert store.get_ratio("p", "early_adopter") == 0.1
    ratios = store.get_ratios("p")
    assert ratios == {"early_adopter": 0.1, "vip": 1.0, "normal": 1 / 3}
    assert all(type(r) is float for r in ratios.values())
    assert store.get_ratios("other") == {"vip": 0.5}


def test_set_ratio_overwrites(store: Store) -> None:
    store.set_ratio("p", "vip", 0.1)
    store.set_ratio("p", "vip", 0.0)
    assert store.get_ratio("p", "vip") == 0.0
    assert store.get_ratios("p") == {"vip": 0.0}


@pytest.mark.parametrize("bad", [-0.1, 1.5, "x", True, math.nan, math.inf, None])
def test_bad_ratio_is_rejected_and_keeps_the_old_value(store: Store, bad: object) -> None:
    store.set_ratio("p", "vip", 0.25)
    with pytest.raises(ConfigurationError, match="ratio"):
        store.set_ratio("p", "vip", bad)  # type: ignore[arg-type]
    assert store.get_ratio("p", "vip") == 0.25
    assert store.get_ratios("p") == {"vip": 0.25}


# profiles and the layer cache -------------------------------------------------------------
def test_profiles_round_trip(store: Store) -> None:
    profile = UserProfile(
        last_use_time=datetime(2026, 11, 1, 8, 30, 15, 123456, tzinfo=timezone.utc),
        use_count=50,
        user_value=1234.5,
        accept_score=9,
        allow_gray=False,
        tags={"group": "staff", "region": "eu:west"},
    )
    assert store.get_profile("u1") is None
    store.put_profile("u1", profile)
    assert store.get_profile("u1") == profile
    assert store.get_profile("u2") is None

    store.put_profile("u1", UserProfile())
    assert store.get_profile("u1") == UserProfile()


def test_layer_cache_round_trip_per_plan(store: Store) -> None:
    scored = LayerAssignment("early_adopter", LayerReason.SCORE, 0.8666666666666667)
    opted_out = LayerAssignment(None, LayerReason.OPT_OUT)
    store.cache_layer("p", "u1", scored, ttl=60)
    store.cache_layer("q", "u1", opted_out, ttl=60)

    assert store.get_cached_layer("p", "u1") == scored
    assert store.get_cached_layer("q", "u1") == opted_out
    assert store.get_cached_layer("r", "u1") is None
    assert store.get_cached_layer("p", "u2") is None


def test_put_profile_forgets_cached_layers_in_every_plan(store: Store) -> None:
    store.cache_layer("p", "u1", LayerAssignment("vip", LayerReason.SCORE, 0.1), ttl=60)
    store.cache_layer("q", "u1", LayerAssignment("vip", LayerReason.NO_PROFILE), ttl=60)
    store.cache_layer("p", "u2", LayerAssignment("vip", LayerReason.NO_PROFILE), ttl=60)

    store.put_profile("u1", UserProfile(allow_gray=False))

    assert store.get_cached_layer("p", "u1") is None
    assert store.get_cached_layer("q", "u1") is None
    assert store.get_cached_layer("p", "u2") is not None


def test_forget_layer(store: Store) -> None:
    store.cache_layer("p", "u1", LayerAssignment("vip", LayerReason.NO_MATCH), ttl=60)
    store.cache_layer("q", "u1", LayerAssignment("vip", LayerReason.NO_MATCH), ttl=60)
    store.forget_layer("u1")
    store.forget_layer("never-seen")
    assert store.get_cached_layer("p", "u1") is None
    assert store.get_cached_layer("q", "u1") is None


def test_cached_layers_expire(store: Store) -> None:
    assignment = LayerAssignment("vip", LayerReason.MEMBERSHIP)
    store.cache_layer("p", "u1", assignment, ttl=SHORT_TTL)
    store.cache_layer("p", "u2", assignment, ttl=60)
    assert store.get_cached_layer("p", "u1") == assignment
    time.sleep(SHORT_TTL + 0.1)
    assert store.get_cached_layer("p", "u1") is None
    assert store.get_cached_layer("p", "u2") == assignment


# session pins -----------------------------------------------------------------------------
def test_first_pin_wins(store: Store) -> None:
    first = SessionPin(Version.CANDIDATE, "early_adopter", 1000.5)
    second = SessionPin(Version.STABLE, None, 2000.25)

    assert store.get_pin("p", "s1") is None
    assert store.pin_session("p", "s1", first, ttl=60) == first
    assert store.pin_session("p", "s1", second, ttl=60) == first
    assert store.get_pin("p", "s1") == first
    # another plan, another session: independent
    assert store.pin_session("q", "s1", second, ttl=60) == second
    assert store.pin_session("p", "s2", second, ttl=60) == second


def test_pins_expire(store: Store) -> None:
    old, new = _pin(Version.CANDIDATE), _pin(Version.STABLE, None)
    store.pin_session("p", "s1", old, ttl=SHORT_TTL)
    assert store.get_pin("p", "s1") == old
    time.sleep(SHORT_TTL + 0.1)
    assert store.get_pin("p", "s1") is None
    assert store.pinned_sessions("p") == {}
    assert store.pin_session("p", "s1", new, ttl=60) == new


def test_unpin_session(store: Store) -> None:
    old, new = _pin(Version.CANDIDATE), _pin(Version.STABLE, None)
    store.pin_session("p", "s1", old, ttl=60)
    store.unpin_session("p", "s1")
    store.unpin_session("p", "never-pinned")
    assert store.get_pin("p", "s1") is None
    assert store.pin_session("p", "s1", new, ttl=60) == new


def test_pinned_sessions_filters_by_plan_and_version(store: Store) -> None:
    candidate, stable = _pin(Version.CANDIDATE), _pin(Version.STABLE, "normal")
    store.pin_session("p", "s1", candidate, ttl=60)
    store.pin_session("p", "s2", stable, ttl=60)
    store.pin_session("p", "chat:42", candidate, ttl=60)  # session ids may contain ':'
    store.pin_session("q", "s3", candidate, ttl=60)

    assert store.pinned_sessions("p") == {"s1": candidate, "s2": stable, "chat:42": candidate}
    assert store.pinned_sessions("p", Version.CANDIDATE) == {"s1": candidate, "chat:42": candidate}
    assert store.pinned_sessions("p", Version.STABLE) == {"s2": stable}
    assert store.pinned_sessions("q") == {"s3": candidate}
    assert store.pinned_sessions("none") == {}


@pytest.mark.parametrize("plan_id", ["p*", "p[1]", "p?", "p\\"])
def test_pinned_sessions_matches_plan_ids_literally(store: Store, plan_id: str) -> None:
    # Unescaped, "p*" would match pins of "px" and "p[1]" those of "p1" (Redis MATCH is a glob).
    own, foreign = _pin(Version.CANDIDATE), _pin(Version.STABLE)
    store.pin_session(plan_id, "mine", own, ttl=60)
    for other in ("p", "px", "p1", "pa", "p\\x"):
        store.pin_session(other, "theirs", foreign, ttl=60)

    assert store.pinned_sessions(plan_id) == {"mine": own}
    assert store.pinned_sessions(plan_id, Version.STABLE) == {}


def test_many_pins_are_all_listed(store: Store) -> None:
    pins = {f"s{i}": _pin(Version.CANDIDATE if i % 3 else Version.STABLE) for i in range(2500)}
    for session, pin in pins.items():
        store.pin_session("p", session, pin, ttl=60)
    assert store.pinned_sessions("p") == pins
    expected_stable = {s: p for s, p in pins.items() if p.version is Version.STABLE}
    assert store.pinned_sessions("p", Version.STABLE) == expected_stable
