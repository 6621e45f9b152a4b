"""The ``Store`` contract, checked against every implementation: MemoryStore and a real Redis
(one server, a three-node Redis Cluster, a Sentinel-managed primary)."""

from __future__ import annotations

import math
import random
import time
from datetime import datetime, timezone

import pytest

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store import MemoryStore, Store
from langchain_graylayer.store.evidence import FIELDS, ArmKey, UnitDelta, accumulate
from langchain_graylayer.store.protocols import SessionPin

SHORT_TTL = 0.15
"""Seconds: long enough to read an entry back, short enough to sleep past it."""


_FACTORIES = {
    "redis": "make_redis_store",
    "redis-cluster": "make_cluster_store",
    "redis-sentinel": "make_sentinel_store",
}


@pytest.fixture(params=["memory", *_FACTORIES])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    made: Store = request.getfixturevalue(_FACTORIES[request.param])()
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


def test_repin_session_overwrites_an_existing_pin(store: Store) -> None:
    candidate, stable = _pin(Version.CANDIDATE), _pin(Version.STABLE, None)
    store.pin_session("p", "s1", candidate, ttl=60)
    store.repin_session("p", "s1", stable, ttl=60)
    assert store.get_pin("p", "s1") == stable
    assert store.pin_session("p", "s1", candidate, ttl=60) == stable  # the new pin is in force
    assert store.pinned_sessions("p", Version.CANDIDATE) == {}

    store.repin_session("p", "s2", candidate, ttl=60)  # no pin before: repin pins
    assert store.get_pin("p", "s2") == candidate


def test_repin_session_sets_a_new_ttl(store: Store) -> None:
    candidate, stable = _pin(Version.CANDIDATE), _pin(Version.STABLE, None)
    store.pin_session("p", "s1", candidate, ttl=60)
    store.repin_session("p", "s1", stable, ttl=SHORT_TTL)
    assert store.get_pin("p", "s1") == stable
    time.sleep(SHORT_TTL + 0.1)
    assert store.get_pin("p", "s1") is None


# controller state -------------------------------------------------------------------------
STATE = '{"phase": "ramping", "step": 2, "note": "späť: ok"}'


def test_plan_state_is_none_until_committed(store: Store) -> None:
    assert store.get_plan_state("p") is None
    assert store.read_audit("p") == []


def test_commit_applies_ratios_state_and_audit(store: Store) -> None:
    store.set_ratio("p", "normal", 0.01)
    store.commit("p", ratios={"vip": 0.1, "early_adopter": 1}, state=STATE, audit=['{"n": 1}'])

    assert store.get_ratios("p") == {"normal": 0.01, "vip": 0.1, "early_adopter": 1.0}
    assert all(type(r) is float for r in store.get_ratios("p").values())
    assert store.get_plan_state("p") == STATE
    assert store.read_audit("p") == ['{"n": 1}']

    store.commit("p", ratios={"vip": 0.0}, state='{"phase": "rolled_back"}', audit=['{"n": 2}'])
    assert store.get_ratios("p") == {"normal": 0.01, "vip": 0.0, "early_adopter": 1.0}
    assert store.get_plan_state("p") == '{"phase": "rolled_back"}'  # replaced, not merged
    assert store.read_audit("p") == ['{"n": 1}', '{"n": 2}']


def test_commit_without_ratios_or_audit_entry(store: Store) -> None:
    store.set_ratio("p", "vip", 0.2)
    store.commit("p", ratios={}, state='{"v": 1}', audit=['{"n": 1}'])
    store.commit("p", ratios={}, state='{"v": 2}', audit=[])  # []: no audit entry
    assert store.get_ratios("p") == {"vip": 0.2}
    assert store.get_plan_state("p") == '{"v": 2}'
    assert store.read_audit("p") == ['{"n": 1}']


@pytest.mark.parametrize("bad", [-0.1, 1.5, "x", True, math.nan, math.inf, None])
def test_commit_with_a_bad_ratio_writes_nothing(store: Store, bad: object) -> None:
    store.commit("p", ratios={"vip": 0.1}, state='{"v": 1}', audit=['{"n": 1}'])
    with pytest.raises(ConfigurationError, match="ratio"):
        store.commit(
            "p",
            ratios={"normal": 0.5, "vip": bad, "early_adopter": 0.2},  # type: ignore[dict-item]
            state='{"v": 2}',
            audit='{"n": 2}',
        )
    assert store.get_ratios("p") == {"vip": 0.1}
    assert store.get_plan_state("p") == '{"v": 1}'
    assert store.read_audit("p") == ['{"n": 1}']


def test_plan_states_and_audits_of_two_plans_are_independent(store: Store) -> None:
    store.commit("p", ratios={"vip": 0.1}, state="P1", audit=["p-1"])
    store.commit("q", ratios={"vip": 0.5}, state="Q1", audit=["q-1"])
    store.commit("p", ratios={}, state="P2", audit=["p-2"])

    assert (store.get_plan_state("p"), store.get_plan_state("q")) == ("P2", "Q1")
    assert store.read_audit("p") == ["p-1", "p-2"]
    assert store.read_audit("q") == ["q-1"]
    assert store.get_ratios("q") == {"vip": 0.5}
    assert store.get_plan_state("r") is None


def test_audit_is_oldest_first_and_limit_keeps_the_newest(store: Store) -> None:
    entries = [f'{{"n": {i}}}' for i in range(7)]
    for i, entry in enumerate(entries):
        store.commit("p", ratios={"vip": i / 10}, state=str(i), audit=[entry])

    assert store.read_audit("p") == entries
    assert store.read_audit("p", limit=3) == entries[-3:]
    assert store.read_audit("p", limit=1) == entries[-1:]
    assert store.read_audit("p", limit=7) == entries
    assert store.read_audit("p", limit=100) == entries
    assert store.read_audit("p", limit=0) == []
    assert store.read_audit("other", limit=3) == []
    with pytest.raises(ConfigurationError, match="limit"):
        store.read_audit("p", limit=-1)


# leases -----------------------------------------------------------------------------------
def test_lease_first_holder_wins_and_renews(store: Store) -> None:
    assert store.lease_holder("ctl:p") is None
    assert store.try_lease("ctl:p", "a", ttl=60)
    assert store.lease_holder("ctl:p") == "a"
    assert not store.try_lease("ctl:p", "b", ttl=60)
    assert store.try_lease("ctl:p", "a", ttl=60)  # the holder renews
    assert store.lease_holder("ctl:p") == "a"
    assert store.try_lease("ctl:q", "b", ttl=60)  # another lease: independent
    assert (store.lease_holder("ctl:p"), store.lease_holder("ctl:q")) == ("a", "b")


def test_release_lease_only_by_its_holder(store: Store) -> None:
    store.try_lease("ctl", "a", ttl=60)
    store.release_lease("ctl", "b")  # not the holder: a no-op
    store.release_lease("never-taken", "a")
    assert store.lease_holder("ctl") == "a"
    assert not store.try_lease("ctl", "b", ttl=60)

    store.release_lease("ctl", "a")
    assert store.lease_holder("ctl") is None
    assert store.try_lease("ctl", "b", ttl=60)
    assert store.lease_holder("ctl") == "b"


def test_a_lapsed_lease_can_be_taken(store: Store) -> None:
    assert store.try_lease("ctl", "a", ttl=SHORT_TTL)
    assert not store.try_lease("ctl", "b", ttl=60)
    time.sleep(SHORT_TTL + 0.1)
    assert store.lease_holder("ctl") is None
    assert store.try_lease("ctl", "b", ttl=60)
    assert store.lease_holder("ctl") == "b"
    store.release_lease("ctl", "a")  # the old holder cannot release its successor's lease
    assert store.lease_holder("ctl") == "b"
    assert not store.try_lease("ctl", "a", ttl=60)


def test_renewing_extends_the_lease(store: Store) -> None:
    assert store.try_lease("ctl", "a", ttl=0.4)
    time.sleep(0.25)
    assert store.try_lease("ctl", "a", ttl=0.4)  # now lives until ~0.65 s
    time.sleep(0.25)  # 0.5 s after the first take: lapsed, had it not been renewed
    assert store.lease_holder("ctl") == "a"
    assert not store.try_lease("ctl", "b", ttl=60)


# candidate tool-call journal --------------------------------------------------------------
def test_tool_calls_are_journaled_in_order_per_plan(store: Store) -> None:
    assert store.tool_calls("p") == []
    calls = [f'{{"tool": "refund", "args": {{"order": "o:{i}"}}}}' for i in range(5)]
    for i, call in enumerate(calls):
        store.record_tool_call("p", call)
        store.record_tool_call("q", f"q-{i}")
    assert store.tool_calls("p") == calls
    assert store.tool_calls("q") == [f"q-{i}" for i in range(5)]
    assert store.tool_calls("other") == []


# nonces -----------------------------------------------------------------------------------
def test_a_nonce_is_claimed_once_until_it_expires(store: Store) -> None:
    assert store.claim_once("feedback:t1", ttl=SHORT_TTL)
    assert not store.claim_once("feedback:t1", ttl=SHORT_TTL)
    assert store.claim_once("feedback:t2", ttl=60)
    time.sleep(SHORT_TTL + 0.1)
    assert store.claim_once("feedback:t1", ttl=60)
    assert not store.claim_once("feedback:t2", ttl=60)


# steps and evidence -----------------------------------------------------------------------
def test_steps_are_committed_with_ratios(store: Store) -> None:
    assert store.get_steps("p") == {}
    store.commit("p", ratios={"vip": 0.1}, state="{}", audit=[], steps={"vip": "0@1.000"})
    store.commit("p", ratios={"normal": 0.5}, state="{}", audit=[], steps={"normal": "1@2.000"})
    assert store.get_steps("p") == {"vip": "0@1.000", "normal": "1@2.000"}
    assert store.get_steps("other") == {}


def _deltas(seed: int, n: int) -> list[UnitDelta]:
    """Random per-user increments over two steps and both versions, users coming back."""
    rng = random.Random(seed)
    deltas = []
    for _ in range(n):
        arm = ArmKey(
            "normal", rng.choice(["0@1.000", "1@2.000"]), rng.choice(["stable", "candidate"])
        )
        counts = {name: float(rng.randint(0, 3)) for name in rng.sample(FIELDS, 4)}
        counts["requests"] = 1.0
        if rng.random() < 0.3:
            counts["latency_seconds"] = rng.uniform(0.1, 9.0)
        user = f"user-{rng.randint(0, 40)}"
        deltas.append(UnitDelta(arm, user, activity=sum(map(ord, user)) % 5, counts=counts))
    return deltas


def test_evidence_totals_are_exact_sums_over_users(store: Store) -> None:
    deltas = _deltas(7, 400)
    for start in range(0, len(deltas), 37):  # several writes, as replicas and batches do
        store.add_evidence("p", deltas[start : start + 37])
    expected = accumulate(deltas)
    for step in ("0@1.000", "1@2.000"):
        arms = store.read_evidence("p", "normal", step)
        assert set(arms) == {"stable", "candidate"}
        for version, got in arms.items():
            want = expected[ArmKey("normal", step, version)]
            assert got.users == want.users
            assert got.classes == want.classes
            nonzero = {k: v for k, v in want.positives.items() if v}
            assert {k: v for k, v in got.positives.items() if v} == nonzero
            for name in FIELDS:
                assert got.total(name) == pytest.approx(want.total(name), rel=1e-9, abs=1e-9)
                for other in FIELDS:
                    assert got.product(name, other) == pytest.approx(
                        want.product(name, other), rel=1e-9, abs=1e-9
                    )
    assert store.read_evidence("p", "normal", "2@3.000") == {}
    assert store.read_evidence("other", "normal", "0@1.000") == {}


def test_named_evidence_fields_add_up_like_the_others(store: Store) -> None:
    """An evaluator's fields (``eval.<name>.n`` / ``.pass``) are kept for the users that have
    them, in every store: sums, users with a pass, and their products with each other."""
    rng = random.Random(3)
    arm = ArmKey("normal", "0@1.000", "candidate")
    deltas = []
    for _i in range(300):
        counts = {"requests": 1.0}
        if rng.random() < 0.4:
            counts.update({"eval.policy.n": 1.0, "eval.policy.pass": float(rng.random() < 0.7)})
        deltas.append(UnitDelta(arm, f"user-{rng.randint(0, 30)}", 1, counts))
    store.add_evidence("p", deltas[:150])
    store.add_evidence("p", deltas[150:])
    want = accumulate(deltas)[arm]
    got = store.read_evidence("p", "normal", "0@1.000")["candidate"]
    named = ("eval.policy.n", "eval.policy.pass")
    for name in named:
        assert got.total(name) == pytest.approx(want.total(name))
        assert want.total(name) > 0
        assert got.positive(name) == want.positive(name)
        for other in named:
            assert got.product(name, other) == pytest.approx(want.product(name, other))
            assert got.product(other, name) == got.product(name, other)


def test_a_pre_arm_counts_distinct_users_only(store: Store) -> None:
    arm = ArmKey("normal", "pre@1.000", "stable")
    deltas = [UnitDelta(arm, f"user-{i % 40}", 1, {"requests": 1.0}) for i in range(100)]
    store.add_evidence("p", deltas[:60])
    store.add_evidence("p", deltas[60:])
    got = store.read_evidence("p", "normal", "pre@1.000")
    assert set(got) == {"stable"}
    # exact in memory; a HyperLogLog in Redis (standard error 0.81 %; 39 for these 40 keys)
    assert abs(got["stable"].users - 40) <= 1
    assert got["stable"].total("requests") == 0  # nothing else is kept for a pre arm
