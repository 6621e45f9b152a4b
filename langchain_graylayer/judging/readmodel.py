"""What a judge consumes: per-arm statistics of one plan over a window, and where they come from.

Pure data, no I/O: measuring fills it (in-process windows, Prometheus), judging reads it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from langchain_graylayer.plan.plan import Version

__all__ = ["ArmStats", "LatencySummary", "MetricSource", "Snapshot"]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Request latencies of one arm: count, sum and cumulative histogram buckets."""

    count: int = 0
    sum: float = 0.0
    buckets: tuple[tuple[float, int], ...] = ()
    """``(upper bound, cumulative count)`` pairs, as Prometheus exposes ``_bucket{le=...}``."""

    @classmethod
    def from_bins(
        cls, bounds: Sequence[float], counts: Sequence[float], total: int, seconds: float
    ) -> LatencySummary:
        """From per-bin counts (``counts[i]``: at most ``bounds[i]``, above the previous bound)
        and the total count: the cumulative buckets, ``+Inf`` last."""
        cumulative = itertools.accumulate(round(c) for c in counts)
        buckets = (*zip(bounds, cumulative, strict=True), (math.inf, total))
        return cls(total, seconds, buckets)

    @property
    def mean(self) -> float:
        """Mean latency in seconds (NaN without data)."""
        return self.sum / self.count if self.count else math.nan

    def slower_than(self, slo: float) -> float:
        """Estimated number of requests slower than ``slo`` seconds.

        Exact when ``slo`` is a bucket bound; otherwise linearly interpolated inside the bucket,
        as Prometheus' ``histogram_quantile`` does.
        """
        below, lower_bound, lower_count = 0.0, 0.0, 0
        for bound, cumulative in self.buckets:
            if slo <= bound:
                if math.isinf(bound) or bound == lower_bound:
                    below = float(lower_count if math.isinf(bound) else cumulative)
                else:
                    share = (slo - lower_bound) / (bound - lower_bound)
                    below = lower_count + share * (cumulative - lower_count)
                break
            lower_bound, lower_count = bound, cumulative
        else:
            below = float(self.count)
        return max(self.count - below, 0.0)


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Counts of one (layer, version) arm over a window: what the judge compares."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    completions: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    feedback_bad: int = 0
    feedback_complaint: int = 0
    feedback_good: int = 0
    feedback_score_count: int = 0
    feedback_score_sum: float = 0.0
    latency: LatencySummary = field(default_factory=LatencySummary)

    @property
    def failures(self) -> int:
        """Requests the version itself failed: errors plus fallbacks."""
        return self.errors + self.fallbacks

    @property
    def completion_rate(self) -> float:
        """Completed tasks per request (NaN without requests)."""
        return self.completions / self.requests if self.requests else math.nan

    @property
    def tool_success_rate(self) -> float:
        """Successful tool calls per tool call (NaN without tool calls)."""
        return 1 - self.tool_errors / self.tool_calls if self.tool_calls else math.nan


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Per-arm statistics of one plan over a window.

    An arm with no data is absent from ``arms`` (never reported as zeros); ``error`` says why a
    source could not answer at all (e.g. Prometheus unreachable), and then ``arms`` is empty.
    """

    plan_id: str
    window: float
    arms: Mapping[tuple[str, Version], ArmStats]
    error: str | None = None

    def arm(self, layer: str, version: Version) -> ArmStats | None:
        """The arm's statistics, or ``None`` when there is no data."""
        return self.arms.get((layer, version))


@runtime_checkable
class MetricSource(Protocol):
    """Where the controller reads per-arm numbers: the process itself, or Prometheus."""

    def snapshot(self, plan_id: str, window: float) -> Snapshot:
        """Statistics per (layer, version) of ``plan_id`` over the last ``window`` seconds."""
        ...
