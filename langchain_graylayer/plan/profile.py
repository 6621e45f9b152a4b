"""User profiles and the A-RFM risk score.

The score (docs/background.md, "User layers") is ``S = wR·R + wF·F + wM·M + wA·A`` with every
term in ``[0, 1]``:

* ``R = 1 − min((now − last_use_time) / max_interval, 1)``: recent users score high;
* ``F = min(use_count / max_use_count, 1)``: frequent users score high;
* ``M = 1 − min(user_value / max_user_value, 1)``: low-value users score high, so they go first;
* ``A = accept_score / max_accept_score``: testers and users who rate the agent well score high.

A high score means low risk: the default plan's first layer is ``early_adopter`` (S ≥ 0.8) and its
last, the most protected, is ``vip`` (S < 0.3).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from langchain_graylayer._types import Clock, posix_clock
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan._config import ConfigModel

__all__ = [
    "WEIGHT_TOLERANCE",
    "LayerScorer",
    "ScoreWeights",
    "ScoringConfig",
    "UserProfile",
]

WEIGHT_TOLERANCE = 1e-9


class UserProfile(ConfigModel):
    """What graylayer knows about a user: the A-RFM features, consent and tags.

    Example:
        >>> from datetime import datetime, timezone
        >>> UserProfile(last_use_time=datetime(2026, 11, 1, tzinfo=timezone.utc), use_count=50,
        ...             user_value=1000, accept_score=9, tags={"group": "staff"}).allow_gray
        True
    """

    last_use_time: datetime | None = None
    """When the user last used the agent (naive datetimes are UTC); ``None``: never, R = 0."""
    use_count: int = Field(default=0, ge=0)
    """Uses over the scoring window (30 days by default)."""
    user_value: float = Field(default=0.0, ge=0)
    """Business value of the user, e.g. spend; high-value users are rolled out to last."""
    accept_score: float = Field(default=0.0, ge=0)
    """Acceptance of AI changes, 0 to ``max_accept_score`` (opted-in testers score high)."""
    allow_gray: bool = True
    """Consent: ``False`` (opt-out, or consent not given) means always the stable version."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Free attributes for membership rules, e.g. ``{"group": "staff"}``."""

    def last_use_timestamp(self) -> float | None:
        """``last_use_time`` as POSIX seconds (naive values are taken as UTC)."""
        if self.last_use_time is None:
            return None
        moment = self.last_use_time
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()


class ScoreWeights(ConfigModel):
    """Weights of the four A-RFM terms; they must sum to 1 (within 1e-9)."""

    recency: float = Field(default=0.2, ge=0, le=1)
    frequency: float = Field(default=0.2, ge=0, le=1)
    value: float = Field(default=0.3, ge=0, le=1)
    acceptance: float = Field(default=0.3, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> ScoreWeights:
        total = self.recency + self.frequency + self.value + self.acceptance
        if not math.isclose(total, 1.0, rel_tol=0.0, abs_tol=WEIGHT_TOLERANCE):
            raise ConfigurationError(
                "",
                self.model_dump(),
                f"weights summing to 1 within {WEIGHT_TOLERANCE:g} (they sum to {total!r})",
            )
        return self


def _emphasise(field: str, weight: float) -> ScoreWeights:
    """Default weights with one term set to ``weight`` and the other three scaled to fit."""
    base = ScoreWeights().model_dump()
    rest = 1.0 - base[field]
    scaled = {k: (weight if k == field else v * (1.0 - weight) / rest) for k, v in base.items()}
    return ScoreWeights(**scaled)


class ScoringConfig(ConfigModel):
    """A-RFM weights and maxima; every maximum is configuration, not a constant.

    Example:
        >>> ScoringConfig.preset("high_risk").weights.value
        0.5
    """

    weights: ScoreWeights = Field(default_factory=ScoreWeights)
    max_interval: float = Field(default=30 * 86400.0, gt=0)
    """Seconds after which recency is 0 (30 days)."""
    max_use_count: float = Field(default=100.0, gt=0)
    max_user_value: float = Field(default=100_000.0, gt=0)
    max_accept_score: float = Field(default=10.0, gt=0)

    @field_validator("max_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        from langchain_graylayer.plan._config import parse_duration

        return parse_duration(value)

    @classmethod
    def preset(cls, name: Literal["default", "high_risk", "consumer"]) -> ScoringConfig:
        """Named weight presets: ``high_risk`` (wM = 0.5), ``consumer`` (wA = 0.4), ``default``.

        In a preset the emphasised weight is set and the other three keep their default
        proportions, so the weights still sum to 1.
        """
        if name == "default":
            return cls()
        if name == "high_risk":
            return cls(weights=_emphasise("value", 0.5))
        if name == "consumer":
            return cls(weights=_emphasise("acceptance", 0.4))
        raise ConfigurationError("preset", name, "one of 'default', 'high_risk', 'consumer'")


def _unit(x: float) -> float:
    return min(max(x, 0.0), 1.0)


class LayerScorer:
    """Computes the A-RFM score with an injectable clock.

    Example:
        >>> from datetime import datetime, timezone
        >>> now = datetime(2026, 11, 23, 12, tzinfo=timezone.utc).timestamp()
        >>> scorer = LayerScorer(clock=lambda: now)
        >>> profile = UserProfile(last_use_time=datetime(2026, 11, 23, 11, tzinfo=timezone.utc),
        ...                       use_count=50, user_value=1000, accept_score=9)
        >>> round(scorer.score(profile), 4)
        0.8667
    """

    def __init__(self, config: ScoringConfig | None = None, clock: Clock = time.time) -> None:
        self.config = config or ScoringConfig()
        self.clock = posix_clock(clock)

    def score(self, profile: UserProfile) -> float:
        """The A-RFM score in ``[0, 1]`` at the clock's current time; high means low risk."""
        cfg = self.config
        last = profile.last_use_timestamp()
        recency = 0.0 if last is None else 1.0 - _unit((self.clock() - last) / cfg.max_interval)
        frequency = _unit(profile.use_count / cfg.max_use_count)
        value = 1.0 - _unit(profile.user_value / cfg.max_user_value)
        acceptance = _unit(profile.accept_score / cfg.max_accept_score)
        w = cfg.weights
        return _unit(
            w.recency * recency
            + w.frequency * frequency
            + w.value * value
            + w.acceptance * acceptance
        )
