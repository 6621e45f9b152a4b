"""A user's layer and why: the result of layering, cached by stores and explained by routing."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_graylayer._compat import StrEnum

__all__ = ["ACTIVITY_CLASSES", "LayerAssignment", "LayerReason", "activity_class"]

ACTIVITY_CLASSES = 5
"""Users fall in one of five activity classes, from their profile's use count before the rollout:
sample-ratio checks compare the split class by class, so a routing bug that sends heavy users to
the candidate shows even when the overall user split looks right."""

_ACTIVITY_BOUNDS = (5, 20, 60)


def activity_class(use_count: int | None) -> int:
    """The activity class of a user with ``use_count`` uses (``None``: no profile, class 0).

    Example:
        >>> [activity_class(n) for n in (None, 0, 3, 10, 30, 100)]
        [0, 0, 1, 2, 3, 4]
    """
    if not use_count:
        return 0
    return 1 + sum(use_count >= bound for bound in _ACTIVITY_BOUNDS)


class LayerReason(StrEnum):
    """Why a user is in a layer (or in none)."""

    MEMBERSHIP = "membership"
    """An explicit rule: the user id is listed, or a tag rule matched."""
    SCORE = "score"
    """The A-RFM score fell in the layer's range."""
    NO_PROFILE = "no_profile"
    """No profile is known; the plan's default layer applies."""
    NO_MATCH = "no_match"
    """A profile exists but no layer matched; the plan's default layer applies."""
    OPT_OUT = "opt_out"
    """``allow_gray`` is false: no layer, always stable."""


@dataclass(frozen=True, slots=True)
class LayerAssignment:
    """A user's layer (``None`` when opted out), why, and the score when one was computed."""

    layer: str | None
    reason: LayerReason
    score: float | None = None
    activity: int = 0
    """The user's activity class before the rollout (:func:`activity_class`)."""

    def encode(self) -> str:
        """Compact form for the layer cache: ``layer|reason|score|activity``."""
        score = "" if self.score is None else repr(self.score)
        return f"{self.layer or ''}|{self.reason.value}|{score}|{self.activity}"

    @classmethod
    def decode(cls, text: str) -> LayerAssignment:
        """Inverse of :meth:`encode` (older entries without an activity class read as 0)."""
        layer, reason, score, *activity = text.split("|")
        return cls(
            layer or None,
            LayerReason(reason),
            float(score) if score else None,
            int(activity[0]) if activity and activity[0] else 0,
        )
