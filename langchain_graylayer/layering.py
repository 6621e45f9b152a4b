"""User layering: the A-RFM risk score, explicit membership rules, consent, and layer assignment.

The score (SPEC §2) is ``S = wR·R + wF·F + wM·M + wA·A`` with every term in ``[0, 1]``:

* ``R = 1 − min((now − last_use_time) / max_interval, 1)``: recent users score high;
* ``F = min(use_count / max_use_count, 1)``: frequent users score high;
* ``M = 1 − min(user_value / max_user_value, 1)``: low-value users score high, so they go first;
* ``A = accept_score / max_accept_score``: testers and users who rate the agent well score high.

A high score means low risk: the default plan's first layer is ``early_adopter`` (S ≥ 0.8) and its
last, the most protected, is ``vip`` (S < 0.3).
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from langchain_graylayer._compat import StrEnum
from langchain_graylayer._model import ConfigModel
from langchain_graylayer.errors import ConfigurationError

__all__ = [
    "SENSITIVE_ATTRIBUTES",
    "LayerAssignment",
    "LayerReason",
    "LayerScorer",
    "ScoreTerms",
    "ScoreWeights",
    "ScoringConfig",
    "TagRule",
    "UserProfile",
]

Clock = Callable[[], float]
"""A function returning the current time as POSIX seconds (``time.time`` by default)."""

WEIGHT_TOLERANCE = 1e-9

SENSITIVE_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "race", "racial", "ethnicity", "ethnic", "nationality", "caste",
        "gender", "sex", "sexual", "sexuality",
        "religion", "religious", "faith",
        "health", "medical", "disability", "diagnosis", "pregnancy", "pregnant",
        "political", "politics", "genetic", "biometric", "trade_union",
    }
)  # fmt: skip
"""Words that make a tag unusable for layering (special categories of personal data)."""


def sensitive_word(attribute: str) -> str | None:
    """Return the sensitive word that ``attribute`` contains, if any.

    The attribute is split into words at ``.``, ``_``, ``-``, spaces and camelCase, so
    ``"user.sexualOrientation"`` and ``"trade-union"`` are caught while ``"usage"`` is not.
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", attribute)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]
    pairs = [f"{a}_{b}" for a, b in itertools.pairwise(words)]
    return next((w for w in [*words, *pairs] if w in SENSITIVE_ATTRIBUTES), None)


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
        from langchain_graylayer._model import parse_duration

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


@dataclass(frozen=True, slots=True)
class ScoreTerms:
    """The four A-RFM terms of one user and the weighted score."""

    recency: float
    frequency: float
    value: float
    acceptance: float
    score: float


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
        self.clock = clock

    def terms(self, profile: UserProfile) -> ScoreTerms:
        """The four terms and the score for ``profile`` at the clock's current time."""
        cfg = self.config
        last = profile.last_use_timestamp()
        recency = 0.0 if last is None else 1.0 - _unit((self.clock() - last) / cfg.max_interval)
        frequency = _unit(profile.use_count / cfg.max_use_count)
        value = 1.0 - _unit(profile.user_value / cfg.max_user_value)
        acceptance = _unit(profile.accept_score / cfg.max_accept_score)
        w = cfg.weights
        score = (
            w.recency * recency
            + w.frequency * frequency
            + w.value * value
            + w.acceptance * acceptance
        )
        return ScoreTerms(recency, frequency, value, acceptance, _unit(score))

    def score(self, profile: UserProfile) -> float:
        """The A-RFM score in ``[0, 1]``; high means low risk."""
        return self.terms(profile).score


_RULE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(==|!=|not\s+in|in)\s*(.+?)\s*$")


@dataclass(frozen=True, slots=True)
class TagRule:
    """A membership rule on one profile tag: ``group == "staff"``, ``tier in [beta, alpha]``.

    Example:
        >>> rule = TagRule.parse('group == "staff"')
        >>> rule.matches({"group": "staff"}), rule.matches({"group": "x"}), rule.matches({})
        (True, False, False)
    """

    attribute: str
    operator: Literal["==", "!=", "in", "not in"]
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> TagRule:
        """Parse ``ATTR == VALUE``, ``ATTR != VALUE``, ``ATTR in [V, ...]``, ``ATTR not in [...]``.

        Raises:
            ConfigurationError: on bad syntax, or when the attribute is sensitive.
        """
        match = _RULE.match(text)
        if match is None:
            raise ConfigurationError(
                "", text, 'a rule such as group == "staff" or tier in [beta, alpha]'
            )
        attribute, operator, raw = match.group(1), " ".join(match.group(2).split()), match.group(3)
        word = sensitive_word(attribute)
        if word is not None:
            raise ConfigurationError(
                "",
                text,
                f"a rule on an allowed attribute: {attribute!r} is sensitive ({word!r}); "
                "layering may not use race, ethnicity, gender, religion, health, sexual "
                "orientation, political opinion or similar attributes",
            )
        try:
            parsed = yaml.safe_load(raw)
        except yaml.YAMLError:
            parsed = None
        if operator in ("in", "not in"):
            if not isinstance(parsed, list) or not parsed:
                raise ConfigurationError("", text, f"a non-empty list after '{operator}'")
            values = tuple(str(v) for v in parsed)
        else:
            if parsed is None or isinstance(parsed, (list, dict)):
                raise ConfigurationError("", text, f"a single value after '{operator}'")
            values = (str(parsed),)
        return cls(attribute, operator, values)  # type: ignore[arg-type]

    def matches(self, tags: Mapping[str, str]) -> bool:
        """True when ``tags`` satisfy the rule; a missing attribute never matches."""
        if self.attribute not in tags:
            return False
        inside = str(tags[self.attribute]) in self.values
        return inside if self.operator in ("==", "in") else not inside

    def __str__(self) -> str:
        if self.operator in ("==", "!="):
            return f"{self.attribute} {self.operator} {self.values[0]!r}"
        return f"{self.attribute} {self.operator} {list(self.values)!r}"


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
