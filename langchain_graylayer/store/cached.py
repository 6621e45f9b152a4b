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
* profiles, the layer cache and session pins go straight to the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from langchain_graylayer.plan.assignment import LayerAssignment
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store.evidence import ArmTotals, UnitDelta
from langchain_graylayer.store.protocols import RoutingStore, SessionPin, Store

__all__ = ["CachedStore", "for_requests"]

logger = logging.getLogger(__name__)


class _Ratios:
    """One plan's ratios and step keys, refreshed from the store at most every ``interval``."""

    def __init__(self) -> None:
        self.ratios: dict[str, float] | None = None
        self.steps: dict[str, str] = {}
        self.loaded_at = float("-inf")
        self.lock = threading.Lock()


class CachedStore:
    """Ratios from memory and journal writes in the background, in front of a networked store.

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
        ratio_refresh: float = 0.5,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 0.5,
        max_buffered: int = 100_000,
    ) -> None:
        self.store = store
        self.ratio_refresh = ratio_refresh
        self.clock = clock
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.dropped = 0
        """Journal entries and evidence not written because a buffer was full (the store too
        slow or down for long)."""
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
            try:
                ratios, steps = self.store.get_ratios(plan_id), self.store.get_steps(plan_id)
                cached.ratios, cached.steps = ratios, steps
            except Exception:
                if cached.ratios is None:
                    raise
                logger.warning("ratio refresh failed; keeping the last known ratios", exc_info=True)
            cached.loaded_at = now
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

    # profiles, the layer cache and pins: straight to the store ---------------------------
    def get_profile(self, user_id: str) -> UserProfile | None:
        return self.store.get_profile(user_id)

    def put_profile(self, user_id: str, profile: UserProfile) -> None:
        self.store.put_profile(user_id, profile)

    def get_cached_layer(self, plan_id: str, user_id: str) -> LayerAssignment | None:
        return self.store.get_cached_layer(plan_id, user_id)

    def cache_layer(
        self, plan_id: str, user_id: str, assignment: LayerAssignment, ttl: float
    ) -> None:
        self.store.cache_layer(plan_id, user_id, assignment, ttl)

    def get_pin(self, plan_id: str, session_id: str) -> SessionPin | None:
        return self.store.get_pin(plan_id, session_id)

    def pin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> SessionPin:
        return self.store.pin_session(plan_id, session_id, pin, ttl)

    def pinned_sessions(
        self, plan_id: str, version: Version | None = None
    ) -> dict[str, SessionPin]:
        return self.store.pinned_sessions(plan_id, version)

    def repin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> None:
        self.store.repin_session(plan_id, session_id, pin, ttl)

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
                journal, evidence = self._journal, self._evidence
                self._journal, self._evidence = [], {}
                self._writing, self._buffered = self._buffered, 0
            for plan_id, entry in journal:
                try:
                    self.store.record_tool_call(plan_id, entry)
                except Exception:
                    logger.exception("could not journal a candidate tool call")
            for plan_id, deltas in evidence.items():
                try:
                    self.store.add_evidence(plan_id, deltas)
                except Exception:
                    self.dropped += len(deltas)
                    logger.warning("could not write %d evidence deltas", len(deltas), exc_info=True)
            with self._pending:
                self._writing = 0
                self._pending.notify_all()

    # feedback nonces ----------------------------------------------------------------------
    def claim_once(self, key: str, ttl: float) -> bool:
        return self.store.claim_once(key, ttl)


def for_requests(
    store: Store, *, ratio_refresh: float = 0.5, clock: Callable[[], float] = time.time
) -> RoutingStore:
    """``store`` as the request path should use it: a networked store wrapped in a
    :class:`CachedStore`, an in-process one as it is."""
    if not store.networked:
        return store
    return CachedStore(store, ratio_refresh=ratio_refresh, clock=clock)
