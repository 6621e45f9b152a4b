"""``MemoryStore``: the default store, for one process, notebooks and tests."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_graylayer._cache import ExpiringLRU
from langchain_graylayer._types import posix_clock
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan.assignment import LayerAssignment
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store.evidence import (
    PRE_STEP,
    ArmAccumulator,
    ArmKey,
    ArmTotals,
    UnitDelta,
    product_changes,
)
from langchain_graylayer.store.protocols import SessionPin, check_ratio

__all__ = ["MemoryStore"]

logger = logging.getLogger(__name__)

_EVICTED = {
    "max_cached_layers": "the least recently seen users' cached layers are dropped (scored "
    "again on their next request: the same layer unless their profile changed)",
    "max_pins": "the least recently used session pins are dropped (such a conversation is "
    "routed again by its user's layer and bucket: the same version unless the ratio moved)",
    "max_nonces": "the oldest claimed feedback tokens are forgotten (one of them could be "
    "counted again until it expires)",
}

_WARN_EVERY = 600.0
"""Seconds between two log lines about the same cap."""


class _UserSet:
    """The distinct users of a ``pre`` arm, least recently seen first, and how many were
    forgotten (still counted)."""

    __slots__ = ("forgotten", "users")

    def __init__(self) -> None:
        self.users: dict[str, None] = {}
        self.forgotten = 0

    def add(self, user: str) -> None:
        self.users.pop(user, None)
        self.users[user] = None

    def forget(self, count: int) -> int:
        gone = list(itertools.islice(self.users, max(count, 0)))
        for user in gone:
            del self.users[user]
        self.forgotten += len(gone)
        return len(gone)

    def __len__(self) -> int:
        return len(self.users)


class MemoryStore:
    """In-process state: ratios, profiles, a bounded layer cache and session pins, controller state.

    Memory stays bounded however many users pass: cached layers and pins expire (the plan's
    TTLs), and what is kept per user is capped, least recently used first: about 71 MB at the
    default caps of 50 000 cached layers, session pins, users' evidence records and feedback
    nonces (``tests/unit/test_memory_store_caps.py`` measures it with ``tracemalloc``). A cap
    that is hit is logged (a warning, at most every 10 minutes); past it, move to
    :class:`~.redis.RedisStore`. Nothing else is ever evicted: ratios, plan states, leases, and
    each plan's audit log and tool-call journal (their newest ``max_audit`` and
    ``max_tool_calls`` entries). Profiles are data you put in, and are not evicted either; for
    many users keep them in your own database and give the router a ``profile_loader``.

    Evicting a user's evidence record (``max_evidence_users``, over all arms) keeps what the
    user added in the arm's totals, so the judge's sums, rates and user counts do not move. If
    that user comes back to the same arm, they start a new record and count as one more user:
    the user count overstates by the returning forgotten users, and the variance treats their
    two periods as independent users (slightly optimistic when a user's behaviour persists).
    Arms idle for a minute (past steps) are drained first, then the largest arm's least
    recently active users.

    Example:
        >>> store = MemoryStore()
        >>> store.set_ratio("refund-v2", "early_adopter", 0.1)
        >>> store.get_ratio("refund-v2", "early_adopter"), store.get_ratio("refund-v2", "vip")
        (0.1, 0.0)
    """

    networked = False

    def __init__(
        self,
        *,
        max_cached_layers: int = 50_000,
        max_pins: int = 50_000,
        max_evidence_users: int = 50_000,
        max_nonces: int = 50_000,
        max_audit: int = 100_000,
        max_tool_calls: int = 100_000,
        evidence_ttl: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        bounds = {"max_cached_layers": max_cached_layers, "max_pins": max_pins,
                  "max_evidence_users": max_evidence_users, "max_nonces": max_nonces,
                  "max_audit": max_audit, "max_tool_calls": max_tool_calls}  # fmt: skip
        for field, bound in bounds.items():
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
                raise ConfigurationError(field, bound, "a positive number of entries")
        self._lock = threading.Lock()
        self._clock = clock = posix_clock(clock)
        self._max_audit = max_audit
        self._max_tool_calls = max_tool_calls
        self._ratios: dict[str, dict[str, float]] = {}
        self._steps: dict[str, dict[str, str]] = {}
        # Each arm's user records and totals; an arm nobody wrote to for evidence_ttl is dropped.
        self._evidence: dict[tuple[str, ArmKey], tuple[ArmAccumulator, float]] = {}
        self._evidence_ttl = evidence_ttl
        self._evidence_swept = float("-inf")
        self._max_evidence_users = max_evidence_users
        self._records = 0  # user records held over all arms (counting and ``pre``)
        self._forgotten = 0
        self._fold_lock = threading.Lock()
        self._seen: dict[tuple[str, ArmKey], tuple[_UserSet, float]] = {}
        self._warned: dict[str, float] = {}
        self._profiles: dict[str, UserProfile] = {}
        self._layers: ExpiringLRU[str, dict[str, LayerAssignment]] = ExpiringLRU(
            max_cached_layers, clock
        )
        self._pins: ExpiringLRU[tuple[str, str], SessionPin] = ExpiringLRU(max_pins, clock)
        self._states: dict[str, str] = {}
        self._audit: dict[str, deque[str]] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (holder, expires at)
        self._tool_calls: dict[str, deque[str]] = {}
        # Claimed keys, evicted when they expire (or, past ``max_nonces``, oldest first).
        self._nonces: ExpiringLRU[str, bool] = ExpiringLRU(max_nonces, clock)

    # ratios -------------------------------------------------------------------------------
    def get_ratios(self, plan_id: str) -> dict[str, float]:
        with self._lock:
            return dict(self._ratios.get(plan_id, {}))

    def get_ratio(self, plan_id: str, layer: str) -> float:
        with self._lock:
            return self._ratios.get(plan_id, {}).get(layer, 0.0)

    def set_ratio(self, plan_id: str, layer: str, ratio: float) -> None:
        ratio = check_ratio(ratio)
        with self._lock:
            self._ratios.setdefault(plan_id, {})[layer] = ratio

    def get_steps(self, plan_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._steps.get(plan_id, {}))

    # profiles and the layer cache ---------------------------------------------------------
    def get_profile(self, user_id: str) -> UserProfile | None:
        with self._lock:
            return self._profiles.get(user_id)

    def put_profile(self, user_id: str, profile: UserProfile) -> None:
        with self._lock:
            self._profiles[user_id] = profile
            self._layers.pop(user_id)

    def get_cached_layer(self, plan_id: str, user_id: str) -> LayerAssignment | None:
        with self._lock:
            per_plan = self._layers.get(user_id)
            return None if per_plan is None else per_plan.get(plan_id)

    def cache_layer(
        self, plan_id: str, user_id: str, assignment: LayerAssignment, ttl: float
    ) -> None:
        with self._lock:
            per_plan = dict(self._layers.get(user_id) or {})
            per_plan[plan_id] = assignment
            self._set(self._layers, user_id, per_plan, ttl, "max_cached_layers")

    # session pins -------------------------------------------------------------------------
    def get_pin(self, plan_id: str, session_id: str) -> SessionPin | None:
        with self._lock:
            return self._pins.get((plan_id, session_id))

    def pin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> SessionPin:
        with self._lock:
            existing = self._pins.get((plan_id, session_id))
            if existing is not None:
                return existing
            self._set(self._pins, (plan_id, session_id), pin, ttl, "max_pins")
            return pin

    def pinned_sessions(
        self, plan_id: str, version: Version | None = None
    ) -> dict[str, SessionPin]:
        with self._lock:
            return {
                session: pin
                for (plan, session), pin in self._pins.items()
                if plan == plan_id and (version is None or pin.version == version)
            }

    def repin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> None:
        with self._lock:
            self._set(self._pins, (plan_id, session_id), pin, ttl, "max_pins")

    # controller state ---------------------------------------------------------------------
    def get_plan_state(self, plan_id: str) -> str | None:
        with self._lock:
            return self._states.get(plan_id)

    def commit(
        self,
        plan_id: str,
        *,
        ratios: Mapping[str, float],
        state: str,
        audit: Sequence[str],
        steps: Mapping[str, str] | None = None,
    ) -> None:
        checked = {layer: check_ratio(ratio) for layer, ratio in ratios.items()}  # before writes
        with self._lock:
            self._ratios.setdefault(plan_id, {}).update(checked)
            self._steps.setdefault(plan_id, {}).update(steps or {})
            self._states[plan_id] = state
            if audit:
                self._audit.setdefault(plan_id, deque(maxlen=self._max_audit)).extend(audit)

    def read_audit(self, plan_id: str, limit: int | None = None) -> list[str]:
        if limit is not None and limit < 0:
            raise ConfigurationError("limit", limit, "None or a non-negative number of entries")
        with self._lock:
            entries = list(self._audit.get(plan_id, ()))
        skip = 0 if limit is None else max(0, len(entries) - limit)
        return entries[skip:]

    def try_lease(self, name: str, holder: str, ttl: float) -> bool:
        with self._lock:
            now = self._clock()
            current = self._leases.get(name)
            if current is not None and current[0] != holder and current[1] > now:
                return False
            self._leases[name] = (holder, now + ttl)
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self._lock:
            current = self._leases.get(name)
            if current is not None and current[0] == holder:
                del self._leases[name]

    def lease_holder(self, name: str) -> str | None:
        with self._lock:
            current = self._leases.get(name)
            return None if current is None or current[1] <= self._clock() else current[0]

    # candidate tool-call journal ----------------------------------------------------------
    def record_tool_call(self, plan_id: str, entry: str) -> None:
        with self._lock:
            journal = self._tool_calls.setdefault(plan_id, deque(maxlen=self._max_tool_calls))
            journal.append(entry)

    def tool_calls(self, plan_id: str) -> list[str]:
        with self._lock:
            return list(self._tool_calls.get(plan_id, ()))

    # evidence -----------------------------------------------------------------------------
    def add_evidence(self, plan_id: str, deltas: Sequence[UnitDelta]) -> None:
        with self._lock:
            now = self._clock()
            for delta in deltas:
                key = (plan_id, delta.arm)
                if delta.arm.counts_users_only:  # a pre arm: who came, nothing else
                    users = self._seen.get(key, (_UserSet(), now))[0]
                    before = len(users)
                    users.add(delta.user)
                    self._seen[key] = (users, now)
                    self._records += len(users) - before
                    continue
                held = self._evidence.get(key)
                arm = held[0] if held is not None else ArmAccumulator()
                before = len(arm)
                arm.add(delta.user, delta.activity, delta.counts)
                self._evidence[key] = (arm, now)
                self._records += len(arm) - before
            if now - self._evidence_swept > 60.0:  # at most once a minute, not per request
                self._evidence_swept = now
                horizon = now - self._evidence_ttl
                for holders in (self._evidence, self._seen):
                    for key in [k for k, (_, at) in holders.items() if at < horizon]:
                        self._records -= len(holders.pop(key)[0])
            if self._records > self._max_evidence_users:
                self._forget_users(now)

    def _forget_users(self, now: float) -> None:
        """Drop the least recently active users' evidence records down to 90 % of the cap (in
        one go, not one per request): arms idle for a minute first, oldest first, then the
        largest arms. Their counts stay in the totals (see the class docstring)."""
        excess = self._records - self._max_evidence_users * 9 // 10
        held: list[tuple[ArmAccumulator | _UserSet, float]] = [
            *self._evidence.values(),
            *self._seen.values(),
        ]
        idle = now - 60.0
        held.sort(key=lambda item: (item[1] > idle, min(item[1], idle), -len(item[0])))
        for holder, _ in held:
            if excess <= 0:
                break
            gone = holder.forget(excess)
            excess -= gone
            self._records -= gone
            self._forgotten += gone
        self._warn_cap(
            "max_evidence_users", self._max_evidence_users,
            "the least recently active users' evidence records are forgotten (their counts "
            "stay in the totals; one who comes back counts as a new user)",
        )  # fmt: skip

    def _set(self, lru: ExpiringLRU[Any, Any], key: Any, value: Any, ttl: float, cap: str) -> None:
        """``lru.set``, and a log line when that evicted a live entry to stay under ``cap``."""
        evicted = lru.evictions
        lru.set(key, value, ttl)
        if lru.evictions != evicted:
            self._warn_cap(cap, lru.max_entries, _EVICTED[cap])

    def _warn_cap(self, cap: str, bound: int, meaning: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(cap, float("-inf")) < _WARN_EVERY:
            return
        self._warned[cap] = now
        logger.warning(
            "MemoryStore reached %s=%d: %s. Past this many active users, pass a larger cap "
            "or move to RedisStore (README, Stores).", cap, bound, meaning,
        )  # fmt: skip

    def read_evidence(self, plan_id: str, layer: str, step: str) -> dict[str, ArmTotals]:
        # The products are brought up to date here, outside the store's lock, so a request
        # adding evidence never waits for a read (readers take turns on their own lock).
        if step.startswith(PRE_STEP):
            with self._lock:
                return {
                    arm.version: ArmTotals(users=len(users) + users.forgotten)
                    for (plan, arm), (users, _) in self._seen.items()
                    if plan == plan_id and arm.layer == layer and arm.step == step
                }
        with self._fold_lock:
            with self._lock:
                arms = [
                    (arm.version, held[0], held[0].take_changes())
                    for (plan, arm), held in self._evidence.items()
                    if plan == plan_id and arm.layer == layer and arm.step == step
                ]
            folds = [(version, held, product_changes(changes)) for version, held, changes in arms]
            with self._lock:
                for _, held, changes in folds:
                    held.fold(changes)
                return {version: held.totals(fold=False) for version, held, _ in folds}

    # nonces -------------------------------------------------------------------------------
    def claim_once(self, key: str, ttl: float) -> bool:
        with self._lock:
            if self._nonces.get(key) is not None:
                return False
            self._set(self._nonces, key, True, ttl, "max_nonces")
            return True

    # introspection ------------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        """Entry counts, for tests and debugging: profiles, cached_layers, pins, nonces,
        evidence_users (user records over all arms), evictions (of cached layers and pins)
        and evidence_forgotten (user records forgotten at ``max_evidence_users``)."""
        with self._lock:
            return {
                "profiles": len(self._profiles),
                "cached_layers": len(self._layers),
                "pins": len(self._pins),
                "nonces": len(self._nonces),
                "evidence_users": self._records,
                "evictions": self._layers.evictions + self._pins.evictions,
                "evidence_forgotten": self._forgotten,
            }
