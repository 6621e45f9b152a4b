"""Per-arm counts in fixed time slots, kept in the process, so any recent window can be summed
into the read model (:class:`~langchain_graylayer.judging.readmodel.ArmStats`)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from dataclasses import fields

from langchain_graylayer.judging.readmodel import ArmStats, LatencySummary
from langchain_graylayer.measuring.labels import RunLabels
from langchain_graylayer.plan.plan import Version

__all__ = ["DURATION_BUCKETS", "WindowStore"]

DURATION_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
"""Latency buckets for agents, in seconds (0.05 s to 120 s)."""


# ----------------------------------------------------------------------------- accumulators
_COUNTS = [f.name for f in fields(ArmStats) if f.name not in ("latency", "feedback_score_sum")]


class _Slot:
    """One time slot of one arm: counts, the score sum and latency histogram counts."""

    __slots__ = ("counts", "latency_buckets", "latency_count", "latency_sum", "score_sum")

    def __init__(self, n_buckets: int) -> None:
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.score_sum = 0.0
        self.latency_count = 0
        self.latency_sum = 0.0
        self.latency_buckets = [0] * n_buckets


class WindowStore:
    """Per-arm counts in fixed time slots, so any recent window can be summed."""

    def __init__(self, clock: Callable[[], float], resolution: float, retention: float) -> None:
        self.clock = clock
        self.resolution = resolution
        self.retention = retention
        self._slots: dict[tuple[str, str, str], dict[int, _Slot]] = {}
        self._lock = threading.Lock()

    def _slot(self, labels: RunLabels) -> _Slot:
        index = int(self.clock() // self.resolution)
        key = (labels.plan, labels.layer, labels.version)
        slots = self._slots.setdefault(key, {})
        slot = slots.get(index)
        if slot is None:
            slot = slots[index] = _Slot(len(DURATION_BUCKETS))
            oldest = index - int(self.retention // self.resolution)
            for stale in [i for i in slots if i < oldest]:
                del slots[stale]
        return slot

    def add(self, labels: RunLabels, **counts: int) -> None:
        with self._lock:
            slot = self._slot(labels)
            for name, value in counts.items():
                slot.counts[name] += value

    def add_request(self, labels: RunLabels, seconds: float, **counts: int) -> None:
        """A request's counts and its latency, under one lock."""
        with self._lock:
            slot = self._slot(labels)
            for name, value in counts.items():
                slot.counts[name] += value
            slot.latency_count += 1
            slot.latency_sum += seconds
            position = bisect.bisect_left(DURATION_BUCKETS, seconds)
            if position < len(DURATION_BUCKETS):
                slot.latency_buckets[position] += 1

    def add_score(self, labels: RunLabels, score: float) -> None:
        with self._lock:
            slot = self._slot(labels)
            slot.counts["feedback_score_count"] += 1
            slot.score_sum += score

    def window(self, plan_id: str, window: float) -> dict[tuple[str, Version], ArmStats]:
        first = int((self.clock() - window) // self.resolution)
        arms: dict[tuple[str, Version], ArmStats] = {}
        with self._lock:
            for (plan, layer, version), slots in self._slots.items():
                if plan != plan_id:
                    continue
                recent = [slot for index, slot in slots.items() if index >= first]
                if not recent:
                    continue
                arms[(layer, Version(version))] = _merge(recent)
        return arms


def _merge(slots: Iterable[_Slot]) -> ArmStats:
    counts = dict.fromkeys(_COUNTS, 0)
    score_sum, latency_count, latency_sum = 0.0, 0, 0.0
    buckets = [0] * len(DURATION_BUCKETS)
    for slot in slots:
        for name, value in slot.counts.items():
            counts[name] += value
        score_sum += slot.score_sum
        latency_count += slot.latency_count
        latency_sum += slot.latency_sum
        buckets = [a + b for a, b in zip(buckets, slot.latency_buckets, strict=True)]
    latency = LatencySummary.from_bins(DURATION_BUCKETS, buckets, latency_count, latency_sum)
    return ArmStats(**counts, feedback_score_sum=score_sum, latency=latency)
