"""``RolloutPlan``: one rollout of one candidate against one stable version, layer by layer.

A plan loads from YAML or a dict and fails at load, never later, with a
:class:`~langchain_graylayer.errors.ConfigurationError` that names the field, the value and what
would be valid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.errors import ConfigurationError, add_note
from langchain_graylayer.plan._config import (
    MAX_YAML_BYTES,
    ConfigModel,
    Seconds,
    load_yaml,
    to_configuration_error,
)
from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason, activity_class
from langchain_graylayer.plan.bucketing import BUCKETS
from langchain_graylayer.plan.chaos import Chaos
from langchain_graylayer.plan.evaluators import EvaluatorMetric, EvaluatorSpec
from langchain_graylayer.plan.gates import Gates, Judging
from langchain_graylayer.plan.pricing import Pricing
from langchain_graylayer.plan.profile import (
    WEIGHT_TOLERANCE,
    LayerScorer,
    ScoringConfig,
    UserProfile,
)
from langchain_graylayer.plan.rules import TagRule

__all__ = ["DEFAULT_STEPS", "LayerSpec", "RolloutPlan", "VersionInfo"]

DEFAULT_STEPS: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)
"""The default ratio steps of a layer: 1% → 10% → 50% → 100%."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
_NAME_RULE = "1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(_NAME_RULE)
    return value


class Version(StrEnum):
    """The two versions a plan compares."""

    STABLE = "stable"
    CANDIDATE = "candidate"


class VersionInfo(ConfigModel):
    """Describes one version of the agent (for audit, dashboards and traces)."""

    code: str = Field(min_length=1)
    """Short identifier, e.g. a git sha or ``"v2.3"``."""
    model_name: str = ""
    changelog: str = ""


class LayerSpec(ConfigModel):
    """A risk tier of users, with its membership and the ratio steps the candidate moves along.

    A layer has a score range, explicit membership (user ids, tag rules), or both; explicit
    membership is checked before any score.

    Example:
        >>> LayerSpec(name="internal", members=["alice"], rules=['group == "staff"']).steps
        (0.01, 0.1, 0.5, 1.0)
    """

    name: str
    """Layer name; used as a metric label, so it is restricted to ``[a-z0-9_-]``."""
    score_range: tuple[float, float] | None = None
    """``[low, high)`` of the A-RFM score (the top of the last range includes 1.0)."""
    members: frozenset[str] = frozenset()
    """User ids that belong to this layer whatever their score."""
    rules: tuple[str, ...] = ()
    """Tag rules (any that matches puts the user in the layer), e.g. ``group == "staff"``."""
    steps: tuple[float, ...] = DEFAULT_STEPS
    """Candidate ratios, strictly increasing in ``(0, 1]``, at a resolution of 0.0001."""
    description: str = ""
    gates: Gates | None = None
    """This layer's gates; ``None`` uses the plan's."""

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @field_validator("score_range")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            low, high = value
            if not (0.0 <= low < high <= 1.0):
                raise ValueError("[low, high] with 0 <= low < high <= 1")
        return value

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, text in enumerate(value):
            try:
                TagRule.parse(text)
            except ConfigurationError as exc:
                raise ConfigurationError(f"[{index}]", exc.value, exc.expected) from None
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        valid = "strictly increasing values in (0, 1], each a multiple of 0.0001"
        if not value:
            raise ValueError(valid)
        previous = 0.0
        for step in value:
            fine = math.isclose(step * BUCKETS, round(step * BUCKETS), abs_tol=1e-6)
            if not (previous < step <= 1.0) or not fine:
                raise ValueError(valid)
            previous = step
        return value

    @model_validator(mode="after")
    def _has_membership(self) -> LayerSpec:
        if self.score_range is None and not self.members and not self.rules:
            raise ConfigurationError(
                "", self.name, "a layer with a score_range, members or rules (it has none)"
            )
        return self

    @property
    def tag_rules(self) -> tuple[TagRule, ...]:
        """The parsed ``rules``."""
        return tuple(TagRule.parse(text) for text in self.rules)

    def is_member(self, user_id: str, profile: UserProfile | None) -> bool:
        """True when an explicit rule (user id or tag) puts the user in this layer."""
        if user_id in self.members:
            return True
        tags = profile.tags if profile is not None else {}
        return any(rule.matches(tags) for rule in self._parsed_rules)

    def contains_score(self, score: float, *, top: bool) -> bool:
        """True when ``score`` is in ``[low, high)``, or ``[low, high]`` for the top range."""
        if self.score_range is None:
            return False
        low, high = self.score_range
        return low <= score < high or (top and score == high)

    @property
    def _parsed_rules(self) -> tuple[TagRule, ...]:
        cached: tuple[TagRule, ...] | None = self.__dict__.get("_tag_rules_cache")
        if cached is None:
            cached = self.tag_rules
            self.__dict__["_tag_rules_cache"] = cached
        return cached


def _default_layers() -> list[LayerSpec]:
    return [
        LayerSpec(name="early_adopter", score_range=(0.8, 1.0), description="S >= 0.8"),
        LayerSpec(name="normal", score_range=(0.6, 0.8), description="0.6 <= S < 0.8"),
        LayerSpec(name="high_value", score_range=(0.3, 0.6), description="0.3 <= S < 0.6"),
        LayerSpec(name="vip", score_range=(0.0, 0.3), description="S < 0.3"),
    ]


class RolloutPlan(ConfigModel):
    """One rollout: the two versions, the ordered layers (low risk first) and their steps.

    Example:
        >>> plan = RolloutPlan.default("refund-agent-v2")
        >>> [layer.name for layer in plan.layers], plan.default_layer_name
        (['early_adopter', 'normal', 'high_value', 'vip'], 'vip')
        >>> plan = RolloutPlan.from_dict({"id": "p", "layers": [{"name": "all", "members": ["a"]}]})
        >>> plan.effective_salt, plan.default_layer_name
        ('p', 'all')
    """

    id: str
    """Plan id; part of metric labels and store keys."""
    stable: VersionInfo = Field(default_factory=lambda: VersionInfo(code="stable"))
    candidate: VersionInfo = Field(default_factory=lambda: VersionInfo(code="candidate"))
    layers: tuple[LayerSpec, ...] = Field(min_length=1)
    """Ordered low risk first; a layer opens only when the one before it is at 100%."""
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    default_layer: str | None = None
    """Layer for users with no profile; ``None`` means the last (most protected) layer."""
    layer_cache_ttl: Seconds = 86400.0
    """How long a computed layer is cached in the store (default 24 h)."""
    session_ttl: Seconds = 86400.0
    """How long a conversation stays pinned to the version it started on (default 24 h)."""
    fallback_to_stable: bool = True
    """When the candidate raises, run the same input on stable and return that answer."""
    salt: str | None = None
    """Bucketing salt; defaults to the plan id. Changing it reshuffles every user."""
    gates: Gates = Field(default_factory=Gates)
    """Default gates of every layer (min samples, bake time, guardrails, timeout policy)."""
    judging: Judging = Field(default_factory=Judging)
    """Plan-wide judging: error budget, hard floors, QoS, rollback scope."""
    pricing: Pricing = Field(default_factory=Pricing)
    """Price per million tokens of the models the versions call; used for cost guardrails and
    reports. Empty (the default): tokens are counted, money is unknown."""
    evaluators: tuple[EvaluatorSpec, ...] = ()
    """Named evaluators of run (or conversation) quality; the guardrail ``eval:<name>`` gates
    on one (see :mod:`~langchain_graylayer.plan.evaluators`)."""
    chaos: Chaos | None = None
    """Faults to inject into a version, for a rehearsal in staging; ``None`` (the default):
    none. A router refuses a plan with chaos unless ``GRAYLAYER_ALLOW_CHAOS=1`` is set."""

    _id = field_validator("id")(classmethod(lambda cls, v: _check_name(v)))

    @model_validator(mode="after")
    def _check_layers(self) -> RolloutPlan:
        names = [layer.name for layer in self.layers]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ConfigurationError(f"layers[{index}].name", name, "unique layer names")
        if self.default_layer is not None and self.default_layer not in names:
            raise ConfigurationError("default_layer", self.default_layer, f"one of {names}")
        self._check_coverage()
        self._check_evaluators()
        return self

    def _check_evaluators(self) -> None:
        names = [spec.name for spec in self.evaluators]
        for index, spec in enumerate(self.evaluators):
            if spec.name in names[:index]:
                raise ConfigurationError(
                    f"evaluators[{index}].name", spec.name, "unique evaluator names"
                )
            if spec.max_cost_per_hour is not None and not self.pricing.models:
                raise ConfigurationError(
                    f"evaluators[{index}].max_cost_per_hour", spec.max_cost_per_hour,
                    "a cap in tokens (max_tokens_per_hour), or a pricing table with the judge "
                    "model's price",
                )  # fmt: skip
        owners = [("gates", self.gates)] + [
            (f"layers[{i}].gates", layer.gates)
            for i, layer in enumerate(self.layers)
            if layer.gates is not None
        ]
        for where, gates in owners:
            for index, guardrail in enumerate(gates.guardrails):
                metric = guardrail.metric
                if isinstance(metric, EvaluatorMetric) and metric.evaluator not in names:
                    raise ConfigurationError(
                        f"{where}.guardrails[{index}].metric", metric.value,
                        f"an evaluator the plan declares in 'evaluators' ({names or 'none'})",
                    )  # fmt: skip

    def _check_coverage(self) -> None:
        ranged = sorted(
            (layer.score_range, index)
            for index, layer in enumerate(self.layers)
            if layer.score_range is not None
        )
        if not ranged:
            return
        expected_low = 0.0
        for (low, high), index in ranged:
            field = f"layers[{index}].score_range"
            if low < expected_low - WEIGHT_TOLERANCE:
                raise ConfigurationError(
                    field,
                    [low, high],
                    f"no overlap: another layer already covers up to {expected_low}",
                )
            if low > expected_low + WEIGHT_TOLERANCE:
                raise ConfigurationError(
                    field, [low, high], f"no gap: scores from {expected_low} to {low} have no layer"
                )
            expected_low = high
        if expected_low < 1.0 - WEIGHT_TOLERANCE:
            (low, high), index = ranged[-1]
            raise ConfigurationError(
                f"layers[{index}].score_range",
                [low, high],
                f"score ranges covering [0, 1]; scores from {high} to 1 have no layer",
            )

    @property
    def effective_salt(self) -> str:
        """The salt used for bucketing: ``salt`` or, by default, the plan id."""
        return self.salt if self.salt is not None else self.id

    @property
    def default_layer_name(self) -> str:
        """The layer for users without a profile."""
        return self.default_layer if self.default_layer is not None else self.layers[-1].name

    @property
    def layer_names(self) -> list[str]:
        """Layer names, low risk first."""
        return [layer.name for layer in self.layers]

    def gates_for(self, layer: str) -> Gates:
        """The gates of ``layer``: its own, else the plan's."""
        return self.layer(layer).gates or self.gates

    def layer(self, name: str) -> LayerSpec:
        """The layer called ``name``.

        Raises:
            ConfigurationError: when the plan has no such layer.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigurationError("layer", name, f"one of {self.layer_names}")

    def assign_layer(
        self, user_id: str, profile: UserProfile | None, scorer: LayerScorer
    ) -> LayerAssignment:
        """The user's layer: opt-out, then explicit membership, then score, else the default."""
        if profile is not None and not profile.allow_gray:
            return LayerAssignment(None, LayerReason.OPT_OUT)
        activity = activity_class(profile.use_count if profile is not None else None)
        for layer in self.layers:
            if layer.is_member(user_id, profile):
                return LayerAssignment(layer.name, LayerReason.MEMBERSHIP, activity=activity)
        if profile is None:
            return LayerAssignment(self.default_layer_name, LayerReason.NO_PROFILE)
        score = scorer.score(profile)
        top = max((lay.score_range[1] for lay in self.layers if lay.score_range), default=1.0)
        for layer in self.layers:
            if layer.contains_score(
                score, top=layer.score_range is not None and layer.score_range[1] == top
            ):
                return LayerAssignment(layer.name, LayerReason.SCORE, score, activity)
        return LayerAssignment(self.default_layer_name, LayerReason.NO_MATCH, score, activity)

    @classmethod
    def default(cls, id: str, **overrides: Any) -> RolloutPlan:
        """The article's four layers: early_adopter, normal, high_value, vip (vip is the default).

        Example:
            >>> RolloutPlan.default("p").layer("normal").score_range
            (0.6, 0.8)
        """
        return cls(id=id, layers=overrides.pop("layers", _default_layers()), **overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutPlan:
        """Validate a plan from a mapping (e.g. parsed JSON or YAML).

        Raises:
            ConfigurationError: naming the field, the value and what would be valid.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError("<plan>", data, "a mapping with at least 'id' and 'layers'")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise to_configuration_error(exc) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RolloutPlan:
        """Load a plan from a YAML file.

        Raises:
            ConfigurationError: on invalid YAML or an invalid plan; the message names the file.
        """
        path = Path(path)
        try:
            with path.open("rb") as file:  # never more than the limit, whatever the file is
                raw = file.read(MAX_YAML_BYTES + 1)
        except OSError as exc:
            raise ConfigurationError(str(path), "<file>", f"a readable YAML file ({exc})") from None
        data = load_yaml(raw, field=str(path))  # bounded: size, nesting, alias expansion
        try:
            return cls.from_dict(data)
        except ConfigurationError as exc:
            add_note(exc, f"in plan file {path}")
            raise
