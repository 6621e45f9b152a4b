"""The in-process metric source: the numbers this process measured, for one replica."""

from __future__ import annotations

from collections.abc import Callable

from langchain_graylayer.judging.readmodel import Snapshot
from langchain_graylayer.measuring.prometheus import GraylayerMetrics, default_metrics

__all__ = ["InProcessSource"]


class InProcessSource:
    """Reads the numbers this process measured: the embedded default for one replica.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> InProcessSource(GraylayerMetrics(registry=None)).snapshot("p", 60).arms
        {}
    """

    def __init__(self, metrics: GraylayerMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else default_metrics()

    @property
    def clock(self) -> Callable[[], float]:
        """The clock its windows are kept on: the controller judging from it must share it."""
        return self.metrics.clock

    def snapshot(self, plan_id: str, window: float) -> Snapshot:
        return Snapshot(plan_id, window, self.metrics.window(plan_id, window))
