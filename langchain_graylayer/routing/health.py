"""What happened to a router's requests: totals since start, and counts over a recent window.

Totals only grow, so an incident an hour ago would look alarming forever; operators read the
recent window (dashboards and ``graylayer status`` show the last five minutes).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["KINDS", "RouterHealth"]

KINDS = ("requests", "unrouted", "degraded", "stale", "fallback")
"""``requests``: every request the router saw; ``unrouted``: no user id, or opted out (stable by
design); ``degraded``: routing failed inside graylayer (stable by necessity); ``stale``: routed
while the store did not answer (its circuit breaker open), from this replica's last known
ratios, layers and pins; ``fallback``: the candidate raised and stable answered."""


class RouterHealth:
    """Counts of :data:`KINDS`, in slots of ``resolution`` seconds kept for ``horizon`` seconds.

    Example:
        >>> now = [1000.0]
        >>> health = RouterHealth(clock=lambda: now[0])
        >>> health.add("requests"); health.add("degraded")
        >>> now[0] += 600
        >>> health.add("requests")
        >>> health.totals()["requests"], health.recent(300)["requests"]
        (2, 1)
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        resolution: float = 10.0,
        horizon: float = 3600.0,
    ) -> None:
        self._clock = clock
        self._resolution = resolution
        self._horizon = horizon
        self._totals = dict.fromkeys(KINDS, 0)
        self._slots: deque[tuple[int, dict[str, int]]] = deque()
        self._lock = threading.Lock()

    def add(self, kind: str) -> None:
        """Count one ``kind`` now."""
        index = int(self._clock() // self._resolution)
        with self._lock:
            self._totals[kind] += 1
            if not self._slots or self._slots[-1][0] != index:
                self._slots.append((index, dict.fromkeys(KINDS, 0)))
                oldest = index - int(self._horizon // self._resolution)
                while self._slots[0][0] < oldest:
                    self._slots.popleft()
            self._slots[-1][1][kind] += 1

    def totals(self) -> dict[str, int]:
        """Counts since the router started."""
        with self._lock:
            return dict(self._totals)

    def recent(self, window: float = 300.0) -> dict[str, int]:
        """Counts over the last ``window`` seconds (rounded out to the resolution)."""
        first = int((self._clock() - window) // self._resolution)
        counts = dict.fromkeys(KINDS, 0)
        with self._lock:
            for index, slot in self._slots:
                if index >= first:
                    for kind, value in slot.items():
                        counts[kind] += value
        return counts
