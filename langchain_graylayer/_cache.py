"""A size-capped LRU map whose entries expire: bounded state for stores and handlers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ExpiringLRU"]

K = TypeVar("K")
V = TypeVar("V")


class ExpiringLRU(Generic[K, V]):
    """A size-capped LRU map whose entries also expire; not thread-safe on its own.

    Written here rather than taken from ``cachetools`` because it needs a per-entry TTL with an
    injectable clock and nothing else, in 30 lines, without a new core dependency.
    """

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self.evictions = 0
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self.clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[0]

    def set(self, key: K, value: V, ttl: float) -> None:
        now = self.clock()
        self._data[key] = (value, now + ttl)
        self._data.move_to_end(key)
        # Expired entries at the cold end go first (amortised O(1)): with one TTL per map, the
        # map holds what is live, not ``max_entries`` of what has long expired.
        while self._data:
            oldest = next(iter(self._data.values()))
            if oldest[1] > now:
                break
            self._data.popitem(last=False)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: K) -> V | None:
        item = self._data.pop(key, None)
        if item is None or item[1] <= self.clock():
            return None
        return item[0]

    def items(self) -> list[tuple[K, V]]:
        now = self.clock()
        return [(k, v) for k, (v, expires) in self._data.items() if expires > now]

    def __len__(self) -> int:
        return len(self._data)
