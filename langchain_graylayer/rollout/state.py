"""The state of a rollout: typed, frozen values, and the audit entries that record every change.

The controller keeps one :class:`PlanState` per plan in the store (a JSON document beside the
ratios); :func:`~langchain_graylayer.rollout.transition.transition` computes the next one.
Documents written before ``last_action``/``last_rule`` existed are read as they were.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.judging.judge import Action, Rule, Verdict
from langchain_graylayer.plan.plan import RolloutPlan

__all__ = [
    "AUTOMATION",
    "AuditAction",
    "AuditEntry",
    "LayerPhase",
    "LayerState",
    "PlanState",
    "PlanStatus",
]

AUTOMATION = "controller"
"""The operator name of automatic actions."""


class PlanStatus(StrEnum):
    """Where a plan's rollout stands."""

    RUNNING = "running"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"


class LayerPhase(StrEnum):
    """Where one layer stands: waiting for the layer before it, at a step, done, or rolled back."""

    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"


class AuditAction(StrEnum):
    """What an audit entry records."""

    START_LAYER = "start_layer"
    PROMOTE = "promote"
    COMPLETE_LAYER = "complete_layer"
    COMPLETE = "complete"
    HOLD = "hold"
    ALERT = "alert"
    ROLLBACK = "rollback"
    CLEANUP = "cleanup"
    PAUSE = "pause"
    RESUME = "resume"
    SET_RATIO = "set_ratio"
    RESTART = "restart"
    REVERT = "revert"
    """A ratio moved outside the controller, put back to the one the controller set."""
    RESTORE = "restore"
    """The store lost the plan's state; a replica wrote back the state it had seen, held."""


@dataclass(frozen=True, slots=True)
class LayerState:
    """One layer's place in the rollout, and the latest verdict about it."""

    phase: LayerPhase = LayerPhase.PENDING
    step: int = -1
    """Index into the layer's steps (-1: not opened)."""
    step_started_at: float | None = None
    manual: bool = False
    """A human set this layer's ratio: automation does not roll it back on its own."""
    last_action: Action | None = None
    last_rule: Rule | None = None
    last_detail: str = ""
    last_alert: bool = False
    last_reason: str | None = None

    @property
    def step_key(self) -> str:
        """The step's identity in the evidence store: its index and when it started (a ratio
        set by hand starts a new step too). Empty before the layer opens."""
        if self.step_started_at is None:
            return ""
        return f"{self.step}@{self.step_started_at:.3f}"

    def remembers(self, verdict: Verdict) -> bool:
        """True when ``verdict`` says what the last one said (see ``Verdict.key``)."""
        return (self.last_action, self.last_rule, self.last_detail, self.last_alert) == verdict.key

    def remember(self, verdict: Verdict) -> LayerState:
        return replace(
            self,
            last_action=verdict.action,
            last_rule=verdict.rule,
            last_detail=verdict.detail,
            last_alert=verdict.alert,
            last_reason=verdict.reason,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: getattr(v, "value", v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerState:
        action = data.get("last_action", data.get("last_decision"))  # older documents
        rule = data.get("last_rule")
        return cls(
            phase=LayerPhase(data.get("phase", LayerPhase.PENDING.value)),
            step=int(data.get("step", -1)),
            step_started_at=data.get("step_started_at"),
            manual=bool(data.get("manual", False)),
            last_action=None if action is None else Action(action),
            last_rule=None if rule is None else Rule(rule),
            last_detail=str(data.get("last_detail") or ""),
            last_alert=bool(data.get("last_alert", False)),
            last_reason=data.get("last_reason"),
        )


@dataclass(frozen=True, slots=True)
class PlanState:
    """A plan's rollout: its status and every layer's state, low risk first.

    Example:
        >>> from langchain_graylayer.plan.plan import RolloutPlan
        >>> state = PlanState.fresh(RolloutPlan.default("p"))
        >>> state.status.value, state.layer("vip").phase.value
        ('running', 'pending')
        >>> PlanState.from_json(state.to_json(), RolloutPlan.default("p")) == state
        True
    """

    status: PlanStatus
    layers: Mapping[str, LayerState]
    started_at: float | None = None
    updated_at: float | None = None
    epoch: str = ""
    """Who this state is: drawn once when the plan's state is first created, kept by every
    commit (a restart included). A replica that finds another epoch, or none, in the store knows
    that the state it saw was lost (``""`` in documents from before epochs)."""
    version: int = 0
    """How many commits made this state: a replica that finds a lower version than the one it
    saw knows that the store lost writes."""
    restored_at: float | None = None
    """When a replica last wrote this state back after the store lost it (``None``: never)."""
    ratios: Mapping[str, float] | None = None
    """The ratio of every layer as the controller last set it (``None`` in documents from before
    this was kept): a ratio in the store that differs was moved outside the controller."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys of the stored document this version does not know, kept as they were."""

    @classmethod
    def fresh(cls, plan: RolloutPlan) -> PlanState:
        """A plan that has not started: running, every layer pending, every ratio 0."""
        return cls(
            PlanStatus.RUNNING,
            MappingProxyType(dict.fromkeys(plan.layer_names, _PENDING)),
            epoch=uuid.uuid4().hex[:16],
            ratios=MappingProxyType(dict.fromkeys(plan.layer_names, 0.0)),
        )

    def committed(self, ratios: Mapping[str, float], *, count: bool = True) -> PlanState:
        """The state as a commit writes it: with ``ratios`` applied, one version more (unless
        ``count`` is false: a restored state keeps the version it was seen at)."""
        known = dict(self.ratios or {})
        known.update(ratios)
        return replace(
            self,
            epoch=self.epoch or uuid.uuid4().hex[:16],
            version=self.version + count,
            ratios=MappingProxyType(known),
        )

    def regressed_from(self, seen: PlanState) -> bool:
        """True when this state, found in the store, is older than ``seen``, a state this
        replica saw there before: fewer commits, or another epoch — unless that other epoch's
        state was restored after ``seen`` was (a replica that remembered more wrote it back over
        a plan started afresh; every replica then follows it)."""
        if seen.epoch and self.epoch != seen.epoch:
            later = self.restored_at is not None and (
                seen.restored_at is None or self.restored_at > seen.restored_at
            )
            return not later
        return self.version < seen.version

    def layer(self, name: str) -> LayerState:
        return self.layers[name]

    def with_layer(self, name: str, **changes: Any) -> PlanState:
        """A copy with one layer's fields changed."""
        layers = dict(self.layers)
        layers[name] = replace(layers[name], **changes)
        return replace(self, layers=MappingProxyType(layers))

    def with_layer_state(self, name: str, layer: LayerState) -> PlanState:
        layers = dict(self.layers)
        layers[name] = layer
        return replace(self, layers=MappingProxyType(layers))

    def to_json(self) -> str:
        document = {
            **self.extra,
            "status": self.status.value,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "epoch": self.epoch,
            "version": self.version,
            "restored_at": self.restored_at,
            "ratios": None if self.ratios is None else dict(self.ratios),
            "layers": {name: layer.to_dict() for name, layer in self.layers.items()},
        }
        return json.dumps(document)

    @classmethod
    def from_json(cls, text: str, plan: RolloutPlan) -> PlanState:
        """Read a stored document; layers the plan gained since start pending."""
        document = json.loads(text)
        stored = document.pop("layers", {})
        layers = {
            name: LayerState.from_dict(stored[name]) if name in stored else _PENDING
            for name in plan.layer_names
        }
        ratios = document.pop("ratios", None)
        return cls(
            status=PlanStatus(document.pop("status", PlanStatus.RUNNING.value)),
            layers=MappingProxyType(layers),
            started_at=document.pop("started_at", None),
            updated_at=document.pop("updated_at", None),
            epoch=str(document.pop("epoch", "") or ""),
            version=int(document.pop("version", 0) or 0),
            restored_at=document.pop("restored_at", None),
            ratios=None
            if ratios is None
            else MappingProxyType({str(k): float(v) for k, v in ratios.items()}),
            extra=MappingProxyType(document),
        )


_PENDING = LayerState()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change (or alert) in a plan's history."""

    time: float
    operator: str
    plan: str
    action: AuditAction
    layer: str | None
    old_ratio: float | None
    new_ratio: float | None
    reason: str
    verdict: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    replica: str = ""
    """The controller replica that wrote it (``""`` in entries from before replicas were named)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["action"] = self.action.value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> AuditEntry:
        data = json.loads(text)
        data["action"] = AuditAction(data["action"])
        return cls(**data)
