"""A user's layer and why: the result of layering, cached by stores and explained by routing."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_graylayer._compat import StrEnum

__all__ = ["LayerAssignment", "LayerReason"]


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

    def encode(self) -> str:
        """Compact form for the layer cache: ``layer|reason|score``."""
        score = "" if self.score is None else repr(self.score)
        return f"{self.layer or ''}|{self.reason.value}|{score}"

    @classmethod
    def decode(cls, text: str) -> LayerAssignment:
        """Inverse of :meth:`encode`."""
        layer, reason, score = text.split("|")
        return cls(layer or None, LayerReason(reason), float(score) if score else None)
