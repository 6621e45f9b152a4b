"""``CachedStore``: a networked store as the request path sees it.

Routers wrap a networked store (``store.networked``) once, with :func:`for_requests`, instead of
asking at every call whether it is one:

* ratios are read from memory and re-read from the store at most every ``ratio_refresh``
  seconds, so every replica sees a change within about that long without a round trip per
  request; when a refresh fails the last known ratios stay in force (logged), and only when
  nothing was ever loaded does the failure reach the caller (who then serves stable);
* the candidate's tool-call journal is written by one background thread from a bounded queue, so
  a request never waits on it (when the queue is full, entries are dropped and counted);
* profiles, the layer cache and session pins go straight to the store.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from langchain_graylayer.plan.assignment import LayerAssignment
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store.protocols import RoutingStore, SessionPin, Store

__all__ = ["CachedStore", "for_requests"]

logger = logging.getLogger(__name__)


class _Ratios:
    """One plan's ratios, refreshed from the store at most every ``interval`` seconds."""

    def __init__(self) -> None:
        self.ratios: dict[str, float] | None = None
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
        journal_queue: int = 10_000,
    ) -> None:
        self.store = store
        self.ratio_refresh = ratio_refresh
        self.clock = clock
        self.journal_dropped = 0
        """Tool calls not journaled because the queue was full (the store too slow or down)."""
        self._plans: dict[str, _Ratios] = {}
        self._plans_lock = threading.Lock()
        self._journal: queue.Queue[tuple[str, str]] = queue.Queue(journal_queue)
        self._writer: threading.Thread | None = None

    # ratios -------------------------------------------------------------------------------
    def get_ratios(self, plan_id: str) -> dict[str, float]:
        with self._plans_lock:
            cached = self._plans.setdefault(plan_id, _Ratios())
        now = self.clock()
        ratios = cached.ratios
        if ratios is not None and now - cached.loaded_at < self.ratio_refresh:
            return ratios
        with cached.lock:
            if cached.ratios is not None and now - cached.loaded_at < self.ratio_refresh:
                return cached.ratios
            try:
                cached.ratios = self.store.get_ratios(plan_id)
            except Exception:
                if cached.ratios is None:
                    raise
                logger.warning("ratio refresh failed; keeping the last known ratios", exc_info=True)
            cached.loaded_at = now
            return cached.ratios

    def get_ratio(self, plan_id: str, layer: str) -> float:
        return self.get_ratios(plan_id).get(layer, 0.0)

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

    # the journal: written in the background ----------------------------------------------
    def record_tool_call(self, plan_id: str, entry: str) -> None:
        try:
            self._journal.put_nowait((plan_id, entry))
        except queue.Full:
            self.journal_dropped += 1
            return
        if self._writer is None:
            with self._plans_lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_journal, name="graylayer-journal", daemon=True
                    )
                    self._writer.start()

    def tool_calls(self, plan_id: str) -> list[str]:
        return self.store.tool_calls(plan_id)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the journal queue is written (for tests and shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._journal.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._journal.unfinished_tasks

    def _write_journal(self) -> None:
        while True:
            plan_id, entry = self._journal.get()
            try:
                self.store.record_tool_call(plan_id, entry)
            except Exception:
                logger.exception("could not journal a candidate tool call")
            finally:
                self._journal.task_done()

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
