"""``RolloutController``: judges each active layer and moves its ratio, with an audit trail.

One tick (:meth:`RolloutController.step`) does, for the plan:

* take the leader lease (several controller replicas may run; exactly one acts);
* find the active layer — the first not yet completed, low risk first; a layer opens (at its first
  step) only when the one before it is at 100%;
* read candidate and stable numbers of that layer since its step started, and judge them
  (:func:`~langchain_graylayer.judging.judge.judge`);
* act: the next step, the next layer, hold, or roll back — and append an audit entry.

State (status, each layer's phase and step) lives in the store beside the ratios, and every change
is one atomic ``commit`` of ratios + state + audit entry: a store outage means no action, never a
half-applied one. Humans can pause, resume, promote, roll back and set ratios; automation never
undoes a human decision: a layer whose ratio a human set is not rolled back automatically (the
harm is recorded and alerted instead), and a plan a human paused or rolled back stays so.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.errors import ConfigurationError, ControllerBusyError, GraylayerError
from langchain_graylayer.judging.judge import Decision, JudgeInput, Verdict, judge
from langchain_graylayer.judging.readmodel import MetricSource
from langchain_graylayer.plan.plan import RolloutPlan, Version
from langchain_graylayer.rollout.cleanup import CleanupHook, RollbackReport, clean_up_after_rollback
from langchain_graylayer.store.protocols import Store

__all__ = ["AuditEntry", "LayerPhase", "PlanStatus", "RolloutController"]

logger = logging.getLogger(__name__)

AUTOMATION = "controller"
"""The operator name of automatic actions."""


class PlanStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"


class LayerPhase(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change (or alert) in a plan's history."""

    time: float
    operator: str
    plan: str
    action: str
    """``start_layer``, ``promote``, ``complete_layer``, ``hold``, ``rollback``, ``pause``,
    ``resume``, ``set_ratio``, ``alert``, ``cleanup``, ``restart``."""
    layer: str | None
    old_ratio: float | None
    new_ratio: float | None
    reason: str
    verdict: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> AuditEntry:
        return cls(**json.loads(text))


def _kind(reason: str | None) -> str | None:
    """A reason without its numbers ("waiting for samples: 12 of 200" → "waiting for samples"),
    so a hold is audited once per kind, not at every tick as the counts grow."""
    return None if reason is None else reason.split(":", 1)[0]


def _new_state(plan: RolloutPlan) -> dict[str, Any]:
    return {
        "status": PlanStatus.RUNNING.value,
        "started_at": None,
        "layers": {
            name: {"phase": LayerPhase.PENDING.value, "step": -1, "step_started_at": None,
                   "manual": False, "last_decision": None, "last_reason": None}
            for name in plan.layer_names
        },
    }  # fmt: skip


class RolloutController(RunnableSerializable[Any, list[dict[str, Any]]]):
    """Runs one plan's rollout: judge, promote layer after layer, hold, or roll back.

    It is a Runnable: ``invoke`` performs one :meth:`step` and returns its audit entries as dicts.

    Example:
        >>> from langchain_graylayer import MemoryStore, RolloutPlan
        >>> from langchain_graylayer.measuring.prometheus import GraylayerMetrics
        >>> from langchain_graylayer.measuring.sources import InProcessSource
        >>> plan, store = RolloutPlan.default("refund-v2"), MemoryStore()
        >>> source = InProcessSource(GraylayerMetrics(registry=None))
        >>> controller = RolloutController(plan=plan, store=store, source=source)
        >>> [e.action for e in controller.step()]  # opens the first layer at 1%
        ['start_layer']
        >>> store.get_ratio("refund-v2", "early_adopter")
        0.01
    """

    plan: RolloutPlan
    store: Store
    source: MetricSource
    clock: Callable[[], float] = time.time
    cleanup_hooks: Sequence[CleanupHook] = ()
    """Called with the candidate's session ids after a rollback (chat histories, checkpointers)."""
    holder: str = Field(default_factory=lambda: f"controller-{uuid.uuid4().hex[:8]}")
    """This replica's name in the leader lease."""
    lease_ttl: float = Field(default=30.0, gt=0)
    """A crashed leader's lease lapses after this long and another replica takes over."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _stop: threading.Event = PrivateAttr(default_factory=threading.Event)
    _last_report: RollbackReport | None = PrivateAttr(default=None)

    # ------------------------------------------------------------------ Runnable
    def invoke(
        self, input: Any = None, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """One :meth:`step`; returns its audit entries as dicts."""
        return self._call_with_config(lambda _: [asdict(e) for e in self.step()], input, config)

    # ------------------------------------------------------------------ automation
    def step(self) -> list[AuditEntry]:
        """Judge the active layer once and act. Returns what was done (may be empty).

        Never raises for a store or metrics outage: the tick is skipped (logged).
        """
        try:
            if not self.store.try_lease(self._lease_name, self.holder, self.lease_ttl):
                return []
            with self._write_lock():
                return self._step(self._load())
        except (GraylayerError, OSError) as exc:
            logger.warning("controller tick skipped (%s); nothing was changed", exc)
            return []

    def run(self, interval: float = 30.0, *, max_steps: int | None = None) -> None:
        """Step every ``interval`` seconds until :meth:`stop` (or ``max_steps``)."""
        steps = 0
        try:
            while not self._stop.is_set() and (max_steps is None or steps < max_steps):
                self.step()
                steps += 1
                self._stop.wait(interval)
        finally:
            self._stop.clear()  # here, not at the start: a stop() sent before run() is honoured

    def stop(self) -> None:
        """Ask :meth:`run` to return, and give the leader lease up."""
        self._stop.set()
        try:
            self.store.release_lease(self._lease_name, self.holder)
        except GraylayerError:
            logger.warning("could not release the controller lease", exc_info=True)

    def _step(self, state: dict[str, Any]) -> list[AuditEntry]:
        if state["status"] != PlanStatus.RUNNING.value:
            return []
        now = self.clock()
        active = self._active_layer(state)
        if active is None:
            state["status"] = PlanStatus.COMPLETED.value
            entry = self._entry("complete", None, None, None, "every layer is at 100%")
            self._commit(state, {}, entry)
            return [entry]
        layer_state = state["layers"][active]
        if layer_state["phase"] == LayerPhase.PENDING.value:
            return [self._open_layer(state, active, now, AUTOMATION)]

        started = layer_state["step_started_at"]
        elapsed = now - (now if started is None else started)
        verdict = self._judge(active, layer_state, elapsed)
        previous = layer_state.get("last_decision"), _kind(layer_state.get("last_reason"))
        layer_state["last_decision"] = verdict.decision.value
        layer_state["last_reason"] = verdict.reason
        # A verdict of the same kind as the last one is remembered, not audited again: a hold or
        # an alert that persists for hours is one entry, not one per tick.
        repeated = previous == (verdict.decision.value, _kind(verdict.reason))
        ratio = self._ratio_of(active)
        if verdict.decision is Decision.ROLLBACK:
            if layer_state["manual"]:
                if repeated:
                    self._commit(state, {}, None)
                    return []
                reason = (
                    f"harm found but a human set this layer's ratio; not acting: {verdict.reason}"
                )
                entry = self._entry("alert", active, ratio, ratio, reason, verdict)
                self._commit(state, {}, entry)
                return [entry]
            return self._rollback(state, verdict.reason, AUTOMATION, verdict, layer=active)
        if verdict.decision is Decision.PROMOTE:
            return self._advance(state, active, now, AUTOMATION, verdict)
        if repeated:
            self._commit(state, {}, None)
            return []
        action = "alert" if verdict.alert else "hold"
        entry = self._entry(action, active, ratio, ratio, verdict.reason, verdict)
        self._commit(state, {}, entry)
        return [entry]

    def _judge(self, layer: str, layer_state: dict[str, Any], elapsed: float) -> Verdict:
        snapshot = self.source.snapshot(self.plan.id, max(elapsed, 1.0))
        ratio = self._ratio_of(layer)
        data = JudgeInput(
            layer=layer,
            gates=self.plan.gates_for(layer),
            judging=self.plan.judging,
            candidate=snapshot.arm(layer, Version.CANDIDATE),
            stable=snapshot.arm(layer, Version.STABLE),
            ratio=ratio,
            elapsed=elapsed,
            tests=sum(len(spec.steps) for spec in self.plan.layers),
        )
        if snapshot.error:
            return Verdict(
                Decision.HOLD, f"metrics unavailable ({snapshot.error}); holding", layer, ratio,
                elapsed, 0, 0, alert=True,
            )  # fmt: skip
        return judge(data)

    # ------------------------------------------------------------------ actions
    def _open_layer(
        self, state: dict[str, Any], layer: str, now: float, operator: str
    ) -> AuditEntry:
        spec = self.plan.layer(layer)
        if state["started_at"] is None:
            state["started_at"] = now
        # A layer whose first step is 100% has no stable arm to compare with: it is done at once.
        phase = LayerPhase.COMPLETED if spec.steps[0] >= 1.0 else LayerPhase.ACTIVE
        state["layers"][layer].update(
            phase=phase.value, step=0, step_started_at=now, last_decision=None
        )
        if operator != AUTOMATION:
            reason = "opened by a human"
        elif self.plan.layer_names.index(layer) == 0:
            reason = "first layer"
        else:
            reason = "the layer before it is at 100%"
        entry = self._entry("start_layer", layer, 0.0, spec.steps[0], reason, None, operator)
        self._commit(state, {layer: spec.steps[0]}, entry)
        return entry

    def _advance(
        self,
        state: dict[str, Any],
        layer: str,
        now: float,
        operator: str,
        verdict: Verdict | None,
        reason: str | None = None,
    ) -> list[AuditEntry]:
        spec, layer_state = self.plan.layer(layer), state["layers"][layer]
        old = self._ratio_of(layer)
        step = layer_state["step"] + 1
        reason = reason or (verdict.reason if verdict else "promoted")
        if step >= len(spec.steps):
            layer_state.update(phase=LayerPhase.COMPLETED.value)
            entry = self._entry("complete_layer", layer, old, old, reason, verdict, operator)
            self._commit(state, {}, entry)
            return [entry]
        new = spec.steps[step]
        layer_state.update(step=step, step_started_at=now, last_decision=None, last_reason=None)
        done = new >= 1.0
        if done:
            layer_state["phase"] = LayerPhase.COMPLETED.value
        entry = self._entry("promote", layer, old, new, reason, verdict, operator)
        self._commit(state, {layer: new}, entry)
        entries = [entry]
        if done and operator == AUTOMATION:
            following = self._active_layer(state)
            if following is not None and state["layers"][following]["phase"] == "pending":
                entries.append(self._open_layer(state, following, now, operator))
        return entries

    def _rollback(
        self,
        state: dict[str, Any],
        reason: str,
        operator: str,
        verdict: Verdict | None,
        layer: str | None,
    ) -> list[AuditEntry]:
        scope_plan = self.plan.judging.rollback_scope == "plan" or layer is None
        layers = self.plan.layer_names if scope_plan or layer is None else [layer]
        ratios = dict.fromkeys(layers, 0.0)
        for name in layers:
            if state["layers"][name]["phase"] != LayerPhase.PENDING.value:
                state["layers"][name]["phase"] = LayerPhase.ROLLED_BACK.value
        state["status"] = PlanStatus.ROLLED_BACK.value
        old = {name: self.store.get_ratio(self.plan.id, name) for name in layers}
        entry = self._entry(
            "rollback", layer, old.get(layer) if layer else None, 0.0, reason, verdict, operator,
            details={"scope": "plan" if scope_plan else "layer", "ratios_before": old},
        )  # fmt: skip
        self._commit(state, ratios, entry)
        report = clean_up_after_rollback(
            self.store, self.plan, self.cleanup_hooks, layers=None if scope_plan else layers,
            since=state.get("started_at"), now=self.clock(),
        )  # fmt: skip
        self._last_report = report
        cleanup = self._entry(
            "cleanup", layer, None, None, report.summary(), None, operator, details=report.to_dict()
        )
        self._commit(state, {}, cleanup)
        return [entry, cleanup]

    # ------------------------------------------------------------------ humans
    def pause(self, operator: str, reason: str = "paused by a human") -> AuditEntry:
        """Stop automatic actions (the ratios stay as they are) until :meth:`resume`."""
        return self._manual(operator, "pause", reason, self._do_pause)

    def resume(self, operator: str, reason: str = "resumed by a human") -> AuditEntry:
        """Resume a paused plan."""
        return self._manual(operator, "resume", reason, self._do_resume)

    def promote(self, layer: str, operator: str, reason: str = "promoted by a human") -> AuditEntry:
        """Move ``layer`` to its next step now (or open it when it is pending)."""
        self.plan.layer(layer)

        def act(state: dict[str, Any]) -> list[AuditEntry]:
            layer_state = state["layers"][layer]
            layer_state["manual"] = True
            if layer_state["phase"] == LayerPhase.PENDING.value:
                return [self._open_layer(state, layer, self.clock(), operator)]
            return self._advance(state, layer, self.clock(), operator, None, reason)

        return self._manual(operator, "promote", reason, act)

    def rollback(self, reason: str, operator: str) -> AuditEntry:
        """Roll the whole plan back now: ratios to 0, candidate sessions moved and cleaned."""
        return self._manual(
            operator, "rollback", reason,
            lambda state: self._rollback(state, reason, operator, None, None),
        )  # fmt: skip

    def set_ratio(self, layer: str, ratio: float, operator: str, reason: str = "") -> AuditEntry:
        """Set a layer's ratio by hand; automation will not roll this layer back on its own."""
        self.plan.layer(layer)
        if not 0.0 <= ratio <= 1.0:
            raise ConfigurationError("ratio", ratio, "a number in [0, 1]")

        def act(state: dict[str, Any]) -> list[AuditEntry]:
            layer_state = state["layers"][layer]
            old = self._ratio_of(layer)
            steps = self.plan.layer(layer).steps
            layer_state.update(
                manual=True,
                phase=LayerPhase.COMPLETED.value if ratio >= 1.0 else LayerPhase.ACTIVE.value,
                step=max([i for i, s in enumerate(steps) if s <= ratio], default=0),
                step_started_at=self.clock(),
            )
            why = reason or f"ratio set to {ratio:.2%} by a human"
            entry = self._entry("set_ratio", layer, old, ratio, why, None, operator)
            self._commit(state, {layer: ratio}, entry)
            return [entry]

        return self._manual(operator, "set_ratio", reason, act)

    def restart(self, operator: str, reason: str = "restarted by a human") -> AuditEntry:
        """Start the plan again from its first layer (e.g. after a rollback and a fix)."""

        def act(state: dict[str, Any]) -> list[AuditEntry]:
            fresh = _new_state(self.plan)
            state.clear()
            state.update(fresh)
            ratios = dict.fromkeys(self.plan.layer_names, 0.0)
            entry = self._entry("restart", None, None, None, reason, None, operator)
            self._commit(state, ratios, entry)
            return [entry]

        return self._manual(operator, "restart", reason, act)

    def _do_pause(self, state: dict[str, Any]) -> list[AuditEntry]:
        if state["status"] == PlanStatus.RUNNING.value:
            state["status"] = PlanStatus.PAUSED.value
        return []

    def _do_resume(self, state: dict[str, Any]) -> list[AuditEntry]:
        if state["status"] != PlanStatus.PAUSED.value:
            raise ConfigurationError(
                "status", state["status"], "a paused plan (use restart() after a rollback)"
            )
        state["status"] = PlanStatus.RUNNING.value
        return []

    def _manual(
        self,
        operator: str,
        action: str,
        reason: str,
        act: Callable[[dict[str, Any]], list[AuditEntry]],
    ) -> AuditEntry:
        if not operator:
            raise ConfigurationError("operator", operator, "the name of the person acting")
        with self._write_lock(wait=5.0):
            state = self._load()
            entries = act(state)
            if entries:
                return entries[0]
            entry = self._entry(action, None, None, None, reason, None, operator)
            self._commit(state, {}, entry)
            return entry

    # ------------------------------------------------------------------ reading
    def status(self) -> dict[str, Any]:
        """Per layer: ratio, step, phase, latest verdict and reason; and the plan's status."""
        state = self._load()
        layers = []
        for spec in self.plan.layers:
            layer_state = state["layers"][spec.name]
            layers.append({
                "layer": spec.name,
                "phase": layer_state["phase"],
                "ratio": self.store.get_ratio(self.plan.id, spec.name),
                "step": layer_state["step"],
                "steps": list(spec.steps),
                "manual": layer_state["manual"],
                "last_decision": layer_state.get("last_decision"),
                "last_reason": layer_state.get("last_reason"),
                "step_started_at": layer_state.get("step_started_at"),
            })  # fmt: skip
        return {"plan": self.plan.id, "status": state["status"], "layers": layers,
                "leader": self.store.lease_holder(self._lease_name)}  # fmt: skip

    def audit(self, limit: int | None = None) -> list[AuditEntry]:
        """The plan's audit log, oldest first (the newest ``limit`` entries when given)."""
        return [AuditEntry.from_json(text) for text in self.store.read_audit(self.plan.id, limit)]

    @property
    def last_rollback_report(self) -> RollbackReport | None:
        """Sessions moved, hooks run and tool calls to review, of the last rollback here."""
        return self._last_report

    # ------------------------------------------------------------------ plumbing
    @property
    def _lease_name(self) -> str:
        return f"controller:{self.plan.id}"

    @contextmanager
    def _write_lock(self, wait: float = 0.0) -> Iterator[None]:
        """Serialise state writers (the leader's tick and humans) across replicas."""
        name, holder = f"write:{self.plan.id}", f"{self.holder}:{threading.get_ident()}"
        deadline = time.monotonic() + wait
        while not self.store.try_lease(name, holder, 10.0):
            if time.monotonic() >= deadline:
                raise ControllerBusyError(f"plan {self.plan.id} is being changed; retry shortly")
            time.sleep(0.05)
        try:
            yield
        finally:
            self.store.release_lease(name, holder)

    def _load(self) -> dict[str, Any]:
        text = self.store.get_plan_state(self.plan.id)
        state = _new_state(self.plan) if text is None else json.loads(text)
        for name, fresh in _new_state(self.plan)["layers"].items():  # layers added to the plan
            state["layers"].setdefault(name, fresh)
        return state

    def _ratio_of(self, layer: str) -> float:
        return self.store.get_ratio(self.plan.id, layer)

    def _active_layer(self, state: dict[str, Any]) -> str | None:
        for name in self.plan.layer_names:
            if state["layers"][name]["phase"] != LayerPhase.COMPLETED.value:
                return name
        return None

    def _entry(
        self,
        action: str,
        layer: str | None,
        old: float | None,
        new: float | None,
        reason: str,
        verdict: Verdict | None = None,
        operator: str = AUTOMATION,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            time=self.clock(), operator=operator, plan=self.plan.id, action=action, layer=layer,
            old_ratio=old, new_ratio=new, reason=reason,
            verdict=verdict.to_dict() if verdict else None, details=details or {},
        )  # fmt: skip

    def _commit(
        self, state: dict[str, Any], ratios: dict[str, float], entry: AuditEntry | None
    ) -> None:
        state["updated_at"] = self.clock()
        audit = entry.to_json() if entry else None
        self.store.commit(
            self.plan.id, ratios=ratios, state=json.dumps(state), audit=[audit] if audit else []
        )
