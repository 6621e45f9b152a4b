"""MemoryStore's default caps fit a notebook or a small service, and what they evict is only
per-user caches, pins, nonces and evidence records: never ratios, plan state, audit or totals."""

from __future__ import annotations

import logging
import time
import tracemalloc

import pytest

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.store import MemoryStore
from langchain_graylayer.store.evidence import ArmKey, UnitDelta, accumulate
from langchain_graylayer.store.protocols import SessionPin, conversation_key

ARM = ArmKey("normal", "0@1700000000.000", "candidate")
PRE = ArmKey("vip", "pre@1700000000.000", "stable")
LAYER = LayerAssignment("normal", LayerReason.SCORE, 0.41)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _counts(n: int) -> dict[str, float]:
    """A first request's counters, varied so that products and positives are not trivial."""
    return {"requests": 1.0 + n % 3, "completions": float(n % 2), "tool_calls": float(n % 4),
            "latency_seconds": 0.5 + n % 7 / 10, "input_tokens": 900.0, "output_tokens": 300.0,
            "bad": float(n % 11 == 0)}  # fmt: skip


def _same_totals(store: MemoryStore, deltas: list[UnitDelta]) -> None:
    expected = accumulate(deltas)[ARM]
    got = store.read_evidence("refund-v2", ARM.layer, ARM.step)["candidate"]
    assert (got.users, got.classes, got.positives) == (
        expected.users, expected.classes, expected.positives
    )  # fmt: skip
    assert got.sums == pytest.approx(expected.sums)
    assert got.products == pytest.approx(expected.products)


def _first_request(n: int) -> UnitDelta:
    return UnitDelta(ARM, f"{n:016x}", n % 5, _counts(n))


def test_default_caps_hold_a_service_under_85_mb_however_many_users_come() -> None:
    """65 000 users, each with a cached layer, a pinned session, a first request's evidence and
    one feedback token: past 50 000 (every per-user cap) the store stops growing, at ~71 MB
    (the caps before grew ~1.7 KB a user, up to ~1 GB)."""
    users, full, began = 65_000, 50_000, time.monotonic()
    at_caps = 0
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        store = MemoryStore()
        store.commit("refund-v2", ratios={"normal": 0.05}, state="s1", audit=["opened"])
        batch = []
        for n in range(users):
            user = f"user-{n:06d}"
            store.cache_layer("refund-v2", user, LAYER, ttl=86400)
            pin = SessionPin(Version.CANDIDATE, "normal", 1.7e9, user)
            store.pin_session("refund-v2", conversation_key(user, f"chat-{n}"), pin, ttl=3600)
            store.claim_once(f"feedback:{n:032x}", ttl=7 * 86400)
            batch.append(_first_request(n))
            if len(batch) == 500:  # as the background writer batches them
                store.add_evidence("refund-v2", batch)
                batch = []
            if n + 1 == full:
                at_caps = tracemalloc.get_traced_memory()[0] - baseline
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()

    assert held < 85 * 2**20, f"{held / 2**20:.0f} MB for {users} users"
    grown = held - at_caps  # 15 000 more users
    assert grown < 4 * 2**20, f"+{grown / 2**20:.1f} MB from {full} to {users} users"
    sizes = store.sizes()
    assert sizes["cached_layers"] == sizes["pins"] == sizes["nonces"] == 50_000
    assert 45_000 <= sizes["evidence_users"] <= 50_000
    # what a cap never touches: the plan's ratios, state and audit, and the judge's totals
    assert store.get_ratios("refund-v2") == {"normal": 0.05}
    assert (store.get_plan_state("refund-v2"), store.read_audit("refund-v2")) == ("s1", ["opened"])
    _same_totals(store, [_first_request(n) for n in range(users)])
    assert time.monotonic() - began < 180  # bounded: tracemalloc slows every allocation


def test_forgotten_evidence_stays_in_the_totals_and_a_returning_user_counts_anew(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore(max_evidence_users=100)
    deltas = [UnitDelta(ARM, f"u{n}", n % 5, _counts(n)) for n in range(300)]
    with caplog.at_level(logging.WARNING, logger="langchain_graylayer.store.memory"):
        for start in range(0, 300, 10):
            store.add_evidence("refund-v2", deltas[start : start + 10])
            assert store.sizes()["evidence_users"] <= 100
    _same_totals(store, deltas)  # exact, though 200 users' records were forgotten
    assert store.sizes()["evidence_forgotten"] >= 200

    again = UnitDelta(ARM, "u0", 0, {"requests": 2.0})  # u0's record was forgotten
    store.add_evidence("refund-v2", [again])
    got = store.read_evidence("refund-v2", ARM.layer, ARM.step)["candidate"]
    assert got.users == 301  # counted as one more user: the documented cost of the cap
    assert got.total("requests") == pytest.approx(sum(d.counts["requests"] for d in deltas) + 2)

    warnings = [r.getMessage() for r in caplog.records if "max_evidence_users=100" in r.message]
    assert len(warnings) == 1  # logged once, not per request
    assert "RedisStore" in warnings[0]
    assert "counts stay in the totals" in warnings[0]


def test_the_records_of_a_past_step_go_before_the_current_steps() -> None:
    clock = FakeClock()
    store = MemoryStore(max_evidence_users=100, clock=clock)
    past = ArmKey("normal", "0@1.000", "candidate")
    store.add_evidence(
        "refund-v2", [UnitDelta(past, f"p{n}", 0, {"requests": 1}) for n in range(60)]
    )
    clock.now += 120  # the controller moved on; nobody writes to the past step any more
    current = [UnitDelta(ARM, f"u{n}", 0, {"requests": 1.0}) for n in range(50)]
    store.add_evidence("refund-v2", current)

    assert store.sizes()["evidence_users"] == 90  # shed to 90 % of the cap, at once
    assert store.sizes()["evidence_forgotten"] == 20  # all from the past step
    assert store.read_evidence("refund-v2", "normal", "0@1.000")["candidate"].users == 60
    store.add_evidence("refund-v2", current[:1])  # a current user: still known, not a new one
    assert store.read_evidence("refund-v2", ARM.layer, ARM.step)["candidate"].users == 50


def test_a_pre_arm_counts_forgotten_users_too() -> None:
    store = MemoryStore(max_evidence_users=50)
    seen = [UnitDelta(PRE, f"u{n}", 0, {"requests": 1.0}) for n in range(200)]
    store.add_evidence("refund-v2", seen)
    assert store.sizes()["evidence_users"] <= 50
    assert store.read_evidence("refund-v2", "vip", PRE.step)["stable"].users == 200


def test_a_cache_cap_that_is_hit_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore(max_cached_layers=10, max_pins=10)
    with caplog.at_level(logging.WARNING, logger="langchain_graylayer.store.memory"):
        for n in range(50):
            store.cache_layer("refund-v2", f"u{n}", LAYER, ttl=3600)
            store.pin_session("refund-v2", f"s{n}", SessionPin(Version.STABLE, None, 0.0), 3600)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "max_cached_layers=10" in messages[0]
    assert "RedisStore" in messages[0]
    assert "max_pins=10" in messages[1]


@pytest.mark.parametrize("field", ["max_cached_layers", "max_pins", "max_evidence_users",
                                   "max_nonces"])  # fmt: skip
@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_caps_must_be_positive(field: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        MemoryStore(**{field: bad})  # type: ignore[arg-type]


def test_forgetting_a_user_drops_their_evaluator_fields_too_and_keeps_the_totals() -> None:
    from langchain_graylayer.store.evidence import ArmAccumulator

    arm = ArmAccumulator()
    for n in range(10):
        arm.add(f"u{n}", 1, {"requests": 1, "eval.policy.n": 1, "eval.policy.pass": n % 2})
    before = arm.totals()
    assert arm.forget(6) == 6
    after = arm.totals()
    assert after == before
    assert len(arm._named) == 4  # the forgotten users' evaluator records are gone
