"""The vocabulary of routing: why a request got its version, and the routing decision."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.plan.assignment import LayerReason
from langchain_graylayer.plan.bucketing import BUCKETS, ratio_threshold
from langchain_graylayer.plan.plan import Version

__all__ = ["RouteReason", "RoutingDecision"]


class RouteReason(StrEnum):
    """Why a request got the version it got."""

    IN_RATIO = "in_ratio"
    """The user's bucket is below the layer's ratio: candidate."""
    OUT_OF_RATIO = "out_of_ratio"
    """The user's bucket is at or above the layer's ratio: stable."""
    PINNED = "pinned"
    """The conversation started on this version and stays on it."""
    OPT_OUT = "opt_out"
    """The user opted out of gray release (``allow_gray`` false): stable."""
    NO_USER_ID = "no_user_id"
    """No ``user_id`` in the config: stable, counted as unrouted."""
    DEGRADED = "degraded"
    """Routing failed (e.g. the store is down): stable, logged and counted."""


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Which version serves a request, and why: the answer to "why did this user get that?".

    Example:
        >>> d = RoutingDecision("p", Version.STABLE, "vip", RouteReason.OUT_OF_RATIO,
        ...                     bucket=4321, ratio=0.01, layer_reason=LayerReason.SCORE, score=0.21)
        >>> d.explain()
        'stable: layer vip (score 0.210), bucket 4321 >= 100 of 10000 (ratio 1.00%)'
    """

    plan_id: str
    version: Version
    layer: str | None
    reason: RouteReason
    bucket: int | None = None
    ratio: float | None = None
    layer_reason: LayerReason | None = None
    score: float | None = None
    session_id: str | None = None
    detail: str = ""
    """Extra context, e.g. the error behind a ``DEGRADED`` decision."""
    step: str = ""
    """The layer's step this run counts in (empty: it counts in none, e.g. a conversation
    pinned to a version its user's bucket no longer gets)."""
    unit: str = ""
    """The user's opaque key in the evidence store (a salted hash of the user id)."""
    activity: int = 0
    """The user's activity class before the rollout (sample-ratio checks split by it)."""

    @property
    def routed(self) -> bool:
        """False for requests graylayer did not route (no user id, opt-out, degraded)."""
        return self.reason not in (
            RouteReason.NO_USER_ID,
            RouteReason.OPT_OUT,
            RouteReason.DEGRADED,
        )

    def explain(self) -> str:
        """One line a person can read."""
        head = f"{self.version.value}: "
        if self.reason is RouteReason.NO_USER_ID:
            return head + "no user id in config['configurable'], so the stable version"
        if self.reason is RouteReason.OPT_OUT:
            return head + "the user opted out of gray release (allow_gray is false)"
        if self.reason is RouteReason.DEGRADED:
            return head + f"routing failed ({self.detail}), so the stable version"
        if self.layer_reason is LayerReason.SCORE and self.score is not None:
            layer = f"layer {self.layer} (score {self.score:.3f})"
        elif self.layer_reason is not None:
            layer = f"layer {self.layer} ({self.layer_reason.value.replace('_', ' ')})"
        else:
            layer = f"layer {self.layer}"
        if self.reason is RouteReason.PINNED:
            return head + f"session {self.session_id} is pinned to it ({layer})"
        threshold = ratio_threshold(self.ratio or 0.0)
        op = "<" if self.reason is RouteReason.IN_RATIO else ">="
        return (
            head + f"{layer}, bucket {self.bucket} {op} {threshold} of {BUCKETS} "
            f"(ratio {(self.ratio or 0.0):.2%})"
        )
