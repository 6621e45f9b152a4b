"""``MemoryStore``: the default store, for one process, notebooks and tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from langchain_graylayer._cache import ExpiringLRU
from langchain_graylayer.decision import SessionPin, Version
from langchain_graylayer.layering import LayerAssignment, UserProfile
from langchain_graylayer.store.base import check_ratio

__all__ = ["MemoryStore"]


class MemoryStore:
    """In-process state: ratios, profiles, a bounded layer cache and bounded session pins.

    Memory stays bounded however many users pass: cached layers and pins expire (the plan's
    TTLs) and each map is capped (least recently used entries go first). Profiles are data you
    put in, and are not evicted; for millions of users keep them in your own database and give
    the router a ``profile_loader``.

    Example:
        >>> store = MemoryStore()
        >>> store.set_ratio("refund-v2", "early_adopter", 0.1)
        >>> store.get_ratio("refund-v2", "early_adopter"), store.get_ratio("refund-v2", "vip")
        (0.1, 0.0)
    """

    blocking = False

    def __init__(
        self,
        *,
        max_cached_layers: int = 100_000,
        max_pins: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._ratios: dict[str, dict[str, float]] = {}
        self._profiles: dict[str, UserProfile] = {}
        self._layers: ExpiringLRU[str, dict[str, LayerAssignment]] = ExpiringLRU(
            max_cached_layers, clock
        )
        self._pins: ExpiringLRU[tuple[str, str], SessionPin] = ExpiringLRU(max_pins, clock)

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
            self._layers.set(user_id, per_plan, ttl)

    def forget_layer(self, user_id: str) -> None:
        with self._lock:
            self._layers.pop(user_id)

    # session pins -------------------------------------------------------------------------
    def get_pin(self, plan_id: str, session_id: str) -> SessionPin | None:
        with self._lock:
            return self._pins.get((plan_id, session_id))

    def pin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> SessionPin:
        with self._lock:
            existing = self._pins.get((plan_id, session_id))
            if existing is not None:
                return existing
            self._pins.set((plan_id, session_id), pin, ttl)
            return pin

    def unpin_session(self, plan_id: str, session_id: str) -> None:
        with self._lock:
            self._pins.pop((plan_id, session_id))

    def pinned_sessions(
        self, plan_id: str, version: Version | None = None
    ) -> dict[str, SessionPin]:
        with self._lock:
            return {
                session: pin
                for (plan, session), pin in self._pins.items()
                if plan == plan_id and (version is None or pin.version == version)
            }

    # introspection ------------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        """Entry counts, for tests and debugging: profiles, cached_layers, pins, evictions."""
        with self._lock:
            return {
                "profiles": len(self._profiles),
                "cached_layers": len(self._layers),
                "pins": len(self._pins),
                "evictions": self._layers.evictions + self._pins.evictions,
            }
