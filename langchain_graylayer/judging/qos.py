"""The source article's QoS score (docs/background.md), kept to explain every decision, not to
make it.

``U = clip(1 − min(bad_rate·3, 1) + min(nps·0.01, 1), 0, 1)``,
``T = availability·0.4 + (1 − min(latency / max_latency, 1))·0.3 + tool_success·0.3``,
``B = completion·0.6 + (1 − min(complaint_rate·10, 1))·0.4`` and ``QoS = wU·U + wT·T + wB·B``.
Alone the article's rule (QoS < 0.6 roll back, < 0.8 hold, else promote) ignores sample size,
reads missing data as zeros and barely moves for a 5-point completion drop; the statistical judge
in :mod:`~langchain_graylayer.judging.judge` decides, and this score is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from langchain_graylayer.errors import ConfigurationError

__all__ = [
    "HIGH_RISK_QOS_WEIGHTS",
    "ArticleVerdict",
    "QosBreakdown",
    "QosInputs",
    "QosWeights",
    "article_qos_verdict",
    "qos_score",
]

ArticleVerdict = Literal["rollback", "hold", "promote"]


@dataclass(frozen=True)
class QosWeights:
    """Weights (wU, wT, wB) of the user, technical and business sub-scores, summing to 1.

    Example:
        >>> HIGH_RISK_QOS_WEIGHTS
        QosWeights(user=0.3, technical=0.2, business=0.5)
    """

    user: float
    technical: float
    business: float

    def __post_init__(self) -> None:
        parts = (self.user, self.technical, self.business)
        if any(not w >= 0 for w in parts) or abs(math.fsum(parts) - 1) > 1e-9:
            raise ConfigurationError("weights", parts, "three weights >= 0 summing to 1")


HIGH_RISK_QOS_WEIGHTS = QosWeights(0.3, 0.2, 0.5)
"""The article's weights for high-risk layers."""


@dataclass(frozen=True)
class QosInputs:
    """The article's QoS inputs for one version over one window; rates are fractions in [0, 1].

    Example:
        >>> QosInputs(bad_rate=0.05, nps=30, availability=0.99, latency_s=2.0,
        ...           tool_success=0.97, completion=0.85, complaint_rate=0.005).nps
        30
    """

    bad_rate: float
    """Share of negative feedback."""
    nps: float
    """Net promoter score in [−100, 100]."""
    availability: float
    latency_s: float
    """Response latency in seconds (the article does not fix the statistic: mean or p95)."""
    tool_success: float
    completion: float
    complaint_rate: float

    def __post_init__(self) -> None:
        for field in ("bad_rate", "availability", "tool_success", "completion", "complaint_rate"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(field, value, "a rate in [0, 1]")
        if not -100.0 <= self.nps <= 100.0:
            raise ConfigurationError("nps", self.nps, "a net promoter score in [-100, 100]")
        if not self.latency_s >= 0:
            raise ConfigurationError("latency_s", self.latency_s, "seconds >= 0")


@dataclass(frozen=True)
class QosBreakdown:
    """Sub-scores U, T, B and the weighted QoS, each in [0, 1]."""

    user: float
    technical: float
    business: float
    qos: float


def qos_score(
    inputs: QosInputs, weights: QosWeights, *, max_latency_s: float = 5.0
) -> QosBreakdown:
    """The source article's QoS score, kept to explain decisions, not to make them.

    * ``U = clip(1 − min(bad_rate·3, 1) + min(nps·0.01, 1), 0, 1)``
    * ``T = availability·0.4 + (1 − min(latency/max_latency, 1))·0.3 + tool_success·0.3``
    * ``B = completion·0.6 + (1 − min(complaint_rate·10, 1))·0.4``
    * ``QoS = wU·U + wT·T + wB·B``

    A 5-point completion drop moves QoS by only ``0.6·wB·0.05`` (0.015 with high-risk weights).

    Example:
        >>> inputs = QosInputs(0.05, 30, 0.99, 2.0, 0.97, 0.85, 0.005)
        >>> round(qos_score(inputs, HIGH_RISK_QOS_WEIGHTS).qos, 4)
        0.9184
    """
    if not max_latency_s > 0:
        raise ConfigurationError("max_latency_s", max_latency_s, "a number > 0")
    u = min(max(1 - min(inputs.bad_rate * 3, 1) + min(inputs.nps * 0.01, 1), 0.0), 1.0)
    latency_term = 1 - min(inputs.latency_s / max_latency_s, 1)
    t = inputs.availability * 0.4 + latency_term * 0.3 + inputs.tool_success * 0.3
    b = inputs.completion * 0.6 + (1 - min(inputs.complaint_rate * 10, 1)) * 0.4
    qos = weights.user * u + weights.technical * t + weights.business * b
    return QosBreakdown(u, t, b, qos)


def article_qos_verdict(
    qos: float, rollback_below: float = 0.6, promote_at: float = 0.8
) -> ArticleVerdict:
    """The article's rule: QoS < 0.6 roll back, < 0.8 hold, else promote (for comparison only).

    Example:
        >>> article_qos_verdict(0.59), article_qos_verdict(0.6), article_qos_verdict(0.8)
        ('rollback', 'hold', 'promote')
    """
    if not rollback_below <= promote_at:
        raise ConfigurationError("rollback_below", rollback_below, f"<= promote_at ({promote_at})")
    if qos < rollback_below:
        return "rollback"
    return "hold" if qos < promote_at else "promote"
