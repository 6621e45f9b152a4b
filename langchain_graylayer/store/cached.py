"""``CachedStore``: a networked store as the request path sees it.

Routers wrap a networked store (``store.networked``) once, with :func:`for_requests`, instead of
asking at every call whether it is one:

* ratios (and each layer's step key) are read from memory and re-read from the store at most
  every ``ratio_refresh`` seconds, so every replica sees a change within about that long without
  a round trip per request; when a refresh fails the last known ratios stay in force (logged),
  and only when nothing was ever loaded does the failure reach the caller (who then serves
  stable);
* the candidate's tool-call journal and the evidence of every run are written by one background
  thread, every ``flush_interval`` seconds, from bounded buffers, so a request never waits on
  them (when a buffer is full, entries are dropped and counted);
* profiles, cached layers and session pins are read from the store on every request, through a
  :class:`~.breaker.CircuitBreaker`, and the last value seen of each is remembered (up to
  ``max_known`` of them, for at most ``stale_for`` seconds);
* when the store hangs or fails — a few slow or failed calls in a row — the breaker opens and
  the request path stops asking it: ratios, pins, layers and profiles come from the last known
  values; a session not known here counts as unpinned and a new pin is kept here until the
  store is back (it is written at the session's next request then); a request whose layer or
  ratios are not known gets stable (``StoreUnavailableError`` reaches the router, which serves
  stable); buffered writes wait (bounded) and a background probe closes the breaker when the
  store answers again.

A networked store that can make a copy of itself with shorter timeouts
(:class:`TimeoutScoped`, as ``RedisStore`` does) is called on the request path through that
copy (``request_timeout``, 0.1 s by default): the request path never waits the long timeouts
the controller and the admin API use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from langchain_graylayer._cache import ExpiringLRU
from langchain_graylayer.plan.assignment import LayerAssignment
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store.breaker import CircuitBreaker
from langchain_graylayer.store.evidence import ArmTotals, UnitDelta
from langchain_graylayer.store.protocols import RoutingStore, SessionPin, Store

__all__ = ["CachedStore", "TimeoutScoped", "for_requests"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@runtime_checkable
class TimeoutScoped(Protocol):
    """A networked store that can hand out a copy of itself with shorter network timeouts."""

    def with_timeout(self, seconds: float) -> Store:
        """The same store, on its own connections, waiting at most ``seconds`` a call."""
        ...


class _Known:
    """The last value the store gave for each key, bounded and expiring; thread-safe."""

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self._values: ExpiringLRU[Hashable, tuple[Any]] = ExpiringLRU(max_entries, clock)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[Any] | None:
        """``(value,)`` (the value may be ``None``: known to be absent), or ``None``."""
        with self._lock:
            return self._values.get(key)

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        with self._lock:
            self._values.set(key, (value,), self.ttl if ttl is None else min(ttl, self.ttl))

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._values.pop(key)


class _Ratios:
    """One plan's ratios and step keys, refreshed from the store at most every ``interval``."""

    def __init__(self) -> None:
        self.ratios: dict[str, float] | None = None
        self.steps: dict[str, str] = {}
        self.loaded_at = float("-inf")
        self.lock = threading.Lock()


class CachedStore:
    """A networked store as the request path sees it: ratios from memory, writes in the
    background, reads through a circuit breaker, the last known state when the store is away.

    Example:
        >>> from langchain_graylayer.store.memory import MemoryStore
        >>> backend = MemoryStore()
        >>> backend.set_ratio("p", "vip", 0.5)
        >>> store = CachedStore(backend, ratio_refresh=60)
        >>> store.get_ratio("p", "vip")
        0.5
        >>> backend.set_ratio("p", "vip", 1.0)  # another replica moved it
        >>> store.get_ratio("p", "vip")  # seen at the next refresh, within 60 s
        0.5
    """

    networked = True

    def __init__(
        self,
        store: Store,
        *,
        requests: RoutingStore | None = None,
        ratio_refresh: float = 0.5,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 0.5,
        max_buffered: int = 100_000,
        breaker: CircuitBreaker | None = None,
        stale_for: float = 300.0,
        max_known: int = 100_000,
    ) -> None:
        """Args:
        store: The store; the background writer and every call outside the request path
            (profiles put, pins listed, evidence read) use it as it is.
        requests: The same store as the request path should call it (short timeouts);
            default ``store``.
        ratio_refresh: Seconds between reads of a plan's ratios and steps.
        clock: POSIX seconds (ratio refresh, how old a known value is).
        flush_interval: Seconds the writer gathers a batch.
        max_buffered: Journal entries and evidence deltas buffered at most; more are dropped
            (and counted) while the store is away.
        breaker: Guards the request path's calls; default: open after 3 calls in a row that
            fail or take 100 ms or more, probe every second in the background.
        stale_for: Seconds a known pin, layer or profile may be served while the store is
            away (the next request of the user, when the store answers, refreshes it).
        max_known: Pins, layers and profiles remembered at most (least recently used go).
        """
        self.store = store
        self.requests: RoutingStore = store if requests is None else requests
        self.ratio_refresh = ratio_refresh
        self.clock = clock
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.breaker = breaker or CircuitBreaker(
            slow_call=0.1, probe=self._probe, name="graylayer store"
        )
        self.dropped = 0
        """Journal entries and evidence not written: a buffer was full while the store was
        away, or a write failed (a write that timed out may still land: it is never retried,
        so nothing is counted twice)."""
        self.stale_reads = 0
        """Reads answered from the last known state because the store did not answer."""
        self._stale_lock = threading.Lock()
        self._known = _Known(max_known, stale_for, clock)
        self._plans: dict[str, _Ratios] = {}
        self._plans_lock = threading.Lock()
        self._journal: list[tuple[str, str]] = []
        self._evidence: dict[str, list[UnitDelta]] = {}
        self._buffered = 0
        self._writing = 0
        self._pending = threading.Condition()
        self._writer: threading.Thread | None = None

    # ratios -------------------------------------------------------------------------------
    def _cached(self, plan_id: str) -> _Ratios:
        with self._plans_lock:
            cached = self._plans.setdefault(plan_id, _Ratios())
        now = self.clock()
        if cached.ratios is not None and now - cached.loaded_at < self.ratio_refresh:
            return cached
        with cached.lock:
            if cached.ratios is not None and now - cached.loaded_at < self.ratio_refresh:
                return cached
            cached.loaded_at = now  # the next attempt at the next refresh, success or not
            try:
                ratios = self.breaker.call(self.requests.get_ratios, plan_id)
                steps = self.breaker.call(self.requests.get_steps, plan_id)
            except Exception:
                if cached.ratios is None:
                    raise
                self._stale()
                logger.debug("ratio refresh failed; keeping the last known ratios", exc_info=True)
            else:
                cached.ratios, cached.steps = ratios, steps
            return cached

    def get_ratios(self, plan_id: str) -> dict[str, float]:
        ratios = self._cached(plan_id).ratios
        assert ratios is not None  # loaded, or _cached raised
        return ratios

    def get_ratio(self, plan_id: str, layer: str) -> float:
        return self.get_ratios(plan_id).get(layer, 0.0)

    def get_steps(self, plan_id: str) -> dict[str, str]:
        return self._cached(plan_id).steps

    def set_ratio(self, plan_id: str, layer: str, ratio: float) -> None:
        self.store.set_ratio(plan_id, layer, ratio)
        with self._plans_lock:
            self._plans.pop(plan_id, None)  # read again at the next request

    # the store's health ------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False while the breaker is open (or half open): requests get the last known state.
        Asking starts the background probe when one is due (so an idle replica, scraped by
        Prometheus, finds out too)."""
        return self.breaker.available()

    def health(self) -> dict[str, Any]:
        """The breaker's state and counters, reads served stale, writes buffered and dropped."""
        with self._pending:
            buffered, dropped = self._buffered, self.dropped
        return {
            "available": self.available,
            "breaker": self.breaker.snapshot(),
            "stale_reads": self.stale_reads,
            "buffered": buffered,
            "dropped": dropped,
        }

    def _stale(self) -> None:
        with self._stale_lock:
            self.stale_reads += 1

    def _probe(self) -> None:
        ping = getattr(self.requests, "ping", None)
        if callable(ping):
            ping()
        else:
            self.requests.get_steps(next(iter(self._plans), "graylayer-probe"))

    def _read(self, key: Hashable, read: Callable[..., T], *args: Any) -> T:
        """``read(*args)`` through the breaker, remembered; the last known value when the store
        does not answer (its error when nothing is known)."""
        try:
            value = self.breaker.call(read, *args)
        except Exception:
            known = self._known.get(key)
            if known is None:
                raise
            self._stale()
            return known[0]  # type: ignore[no-any-return]
        self._known.set(key, value)
        return value

    # profiles, the layer cache and pins: read through the breaker -----------------------
    def get_profile(self, user_id: str) -> UserProfile | None:
        return self._read(("profile", user_id), self.requests.get_profile, user_id)

    def put_profile(self, user_id: str, profile: UserProfile) -> None:
        self.store.put_profile(user_id, profile)
        self._known.pop(("profile", user_id))
        with self._plans_lock:
            plans = list(self._plans)
        for plan_id in plans:
            self._known.pop(("layer", plan_id, user_id))

    def get_cached_layer(self, plan_id: str, user_id: str) -> LayerAssignment | None:
        key = ("layer", plan_id, user_id)
        return self._read(key, self.requests.get_cached_layer, plan_id, user_id)

    def cache_layer(
        self, plan_id: str, user_id: str, assignment: LayerAssignment, ttl: float
    ) -> None:
        """Cache the layer in the store and here; while the store is away, only here (it is a
        cache: the layer is computed again when it is missing)."""
        self._known.set(("layer", plan_id, user_id), assignment, ttl)
        try:
            self.breaker.call(self.requests.cache_layer, plan_id, user_id, assignment, ttl)
        except Exception:
            logger.debug("could not cache a layer in the store", exc_info=True)

    def get_pin(self, plan_id: str, session_id: str) -> SessionPin | None:
        """The session's pin; while the store is away, the last one known here, else ``None``
        (the request is routed by its layer and ratio, as a new session would be)."""
        key = ("pin", plan_id, session_id)
        try:
            return self._read(key, self.requests.get_pin, plan_id, session_id)
        except Exception:
            self._stale()
            return None

    def pin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> SessionPin:
        """Pin through the store (first writer wins across replicas). While the store is away
        the pin is kept here only: the session stays on its version in this replica, and is
        pinned in the store at its first request once the store answers."""
        key = ("pin", plan_id, session_id)
        try:
            held = self.breaker.call(self.requests.pin_session, plan_id, session_id, pin, ttl)
        except Exception:
            logger.debug("could not pin a session in the store; pinned here", exc_info=True)
            known = self._known.get(key)
            held = pin if known is None or known[0] is None else known[0]
            self._stale()
            self._known.set(key, held, ttl)
            return held
        self._known.set(key, held, ttl)
        return held

    def pinned_sessions(
        self, plan_id: str, version: Version | None = None
    ) -> dict[str, SessionPin]:
        return self.store.pinned_sessions(plan_id, version)

    def repin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> None:
        self.store.repin_session(plan_id, session_id, pin, ttl)
        self._known.set(("pin", plan_id, session_id), pin, ttl)

    # the journal and the evidence: written in the background ---------------------------
    def record_tool_call(self, plan_id: str, entry: str) -> None:
        self._buffer(lambda: self._journal.append((plan_id, entry)))

    def tool_calls(self, plan_id: str) -> list[str]:
        return self.store.tool_calls(plan_id)

    def add_evidence(self, plan_id: str, deltas: Sequence[UnitDelta]) -> None:
        self._buffer(lambda: self._evidence.setdefault(plan_id, []).extend(deltas), len(deltas))

    def read_evidence(self, plan_id: str, layer: str, step: str) -> dict[str, ArmTotals]:
        return self.store.read_evidence(plan_id, layer, step)

    def _buffer(self, add: Callable[[], None], count: int = 1) -> None:
        with self._pending:
            if self._buffered + count > self.max_buffered:
                self.dropped += count
                return
            add()
            self._buffered += count
            if self._buffered == count:  # was empty: wake the writer (it gathers a batch)
                self._pending.notify_all()
        if self._writer is None:
            with self._plans_lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write, name="graylayer-writer", daemon=True
                    )
                    self._writer.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Write what is buffered now (for tests and shutdown); False if the store failed or it
        took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._pending:
            self._pending.notify_all()
            while (self._buffered or self._writing) and time.monotonic() < deadline:
                self._pending.wait(0.01)
            return not (self._buffered or self._writing)

    def _write(self) -> None:
        while True:
            with self._pending:
                while not self._buffered:
                    self._pending.wait()
                self._pending.wait(self.flush_interval)  # gather a batch
                if not self.breaker.available():  # the store is away: keep the batch, bounded
                    continue
                journal, evidence = self._journal, self._evidence
                self._journal, self._evidence = [], {}
                self._writing, self._buffered = self._buffered, 0
            lost = 0
            for plan_id, entry in journal:
                try:
                    self.store.record_tool_call(plan_id, entry)
                except Exception:
                    lost += 1
                    self.breaker.record_failure()
                    logger.warning("could not journal a candidate tool call", exc_info=True)
            for plan_id, deltas in evidence.items():
                try:
                    self.store.add_evidence(plan_id, deltas)
                except Exception:  # never retried: a write that timed out may still land
                    lost += len(deltas)
                    self.breaker.record_failure()
                    logger.warning("could not write %d evidence deltas", len(deltas), exc_info=True)
            with self._pending:
                self.dropped += lost
                self._writing = 0
                self._pending.notify_all()

    # feedback nonces ----------------------------------------------------------------------
    def claim_once(self, key: str, ttl: float) -> bool:
        return self.store.claim_once(key, ttl)


def for_requests(
    store: Store,
    *,
    ratio_refresh: float = 0.5,
    clock: Callable[[], float] = time.time,
    request_timeout: float = 0.1,
) -> RoutingStore:
    """``store`` as the request path should use it: a networked store wrapped in a
    :class:`CachedStore` (called through a copy with ``request_timeout`` seconds of network
    timeout when it is :class:`TimeoutScoped`), an in-process one as it is."""
    if not store.networked:
        return store
    requests = store.with_timeout(request_timeout) if isinstance(store, TimeoutScoped) else None
    return CachedStore(store, requests=requests, ratio_refresh=ratio_refresh, clock=clock)
