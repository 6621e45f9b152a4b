"""The rollout's next state, as pure functions: no store, no clock, no metrics.

Each function takes the plan, the current :class:`~langchain_graylayer.rollout.state.PlanState`,
the current ratios and the time, and returns a :class:`Transition`: the next state, the ratios
that change, and the audit entries — which the controller commits in one atomic write. A rollback
also asks for its cleanup (moving sessions, running hooks), which is I/O and the shell's to do.

:func:`transition` is automation's step (the Argo Rollouts shape: the reconciler computes the next
state from the current one and a verdict, and writes once); the others are human commands.
Automation never undoes a human: a paused or rolled-back plan stays so, and a layer whose ratio a
human set is not rolled back automatically (the harm is alerted instead).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_graylayer.errors import ConfigurationError, PlanStateError
from langchain_graylayer.judging.judge import Action, Rule, Verdict
from langchain_graylayer.plan.plan import RolloutPlan
from langchain_graylayer.rollout.state import (
    AUTOMATION,
    AuditAction,
    AuditEntry,
    LayerPhase,
    PlanState,
    PlanStatus,
)

__all__ = [
    "STATUS_CHANGES",
    "Cleanup",
    "Transition",
    "active_layer",
    "pause",
    "promote",
    "recover",
    "restart",
    "restore",
    "resume",
    "revert_stray_ratios",
    "rollback",
    "set_ratio",
    "transition",
]


@dataclass(frozen=True, slots=True)
class Cleanup:
    """What a rollback asks the shell to clean: the candidate's sessions and tool calls of
    ``layers`` (``None``: every layer) since ``since``."""

    layers: tuple[str, ...] | None
    since: float | None


@dataclass(frozen=True, slots=True)
class Transition:
    """The next state, the ratios that change, what to audit, and a cleanup to run."""

    state: PlanState
    ratios: Mapping[str, float] = field(default_factory=dict)
    entries: tuple[AuditEntry, ...] = ()
    cleanup: Cleanup | None = None
    counts: bool = True
    """False for a restore: the state is written at the version it was seen at, so a replica
    that saw a later version still finds it older and restores its own."""

    def then(self, other: Transition) -> Transition:
        """This transition followed by ``other`` (computed from this one's state)."""
        return Transition(
            other.state,
            {**self.ratios, **other.ratios},
            (*self.entries, *other.entries),
            other.cleanup or self.cleanup,
            self.counts or other.counts,
        )


@dataclass(frozen=True, slots=True)
class _Now:
    """What every function needs besides the state: the plan, the ratios in force, the time."""

    plan: RolloutPlan
    ratios: Mapping[str, float]
    now: float
    reach: Mapping[str, float] = field(default_factory=dict)
    """Per layer, the users it is expected to see within its ``max_step_time`` (measured on its
    stable traffic before it opened; absent: unknown)."""

    def ratio(self, layer: str) -> float:
        return self.ratios.get(layer, 0.0)

    def entry(
        self,
        action: AuditAction,
        layer: str | None,
        old: float | None,
        new: float | None,
        reason: str,
        *,
        verdict: Verdict | None = None,
        operator: str = AUTOMATION,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            time=self.now, operator=operator, plan=self.plan.id, action=action, layer=layer,
            old_ratio=old, new_ratio=new, reason=reason,
            verdict=verdict.to_dict() if verdict else None, details=details or {},
        )  # fmt: skip


def active_layer(plan: RolloutPlan, state: PlanState) -> str | None:
    """The first layer not yet completed, low risk first (``None``: every layer is done)."""
    for name in plan.layer_names:
        if state.layer(name).phase is not LayerPhase.COMPLETED:
            return name
    return None


def _stamped(state: PlanState, now: float) -> PlanState:
    return replace(state, updated_at=now)


# ----------------------------------------------------------------------------- automation
def transition(
    plan: RolloutPlan,
    state: PlanState,
    ratios: Mapping[str, float],
    verdict: Verdict | None,
    now: float,
    reach: Mapping[str, float] | None = None,
) -> Transition | None:
    """Automation's step: open the active layer, act on its verdict, or complete the plan.

    ``verdict`` is the judge's verdict on the active layer (``None`` when it is not open yet).
    ``reach`` sizes a layer's first step (see :func:`first_step`).
    Returns ``None`` when there is nothing to write (the plan is not running).
    """
    if state.status is not PlanStatus.RUNNING:
        return None
    at = _Now(plan, ratios, now, reach or {})
    active = active_layer(plan, state)
    if active is None:
        done = replace(state, status=PlanStatus.COMPLETED)
        entry = at.entry(AuditAction.COMPLETE, None, None, None, "every layer is at 100%")
        return Transition(_stamped(done, now), {}, (entry,))
    if state.layer(active).phase is LayerPhase.PENDING or verdict is None:
        return _open(at, state, active, AUTOMATION)

    layer = state.layer(active)
    repeated = layer.remembers(verdict)
    state = state.with_layer_state(active, layer.remember(verdict))
    ratio = at.ratio(active)
    if verdict.action is Action.ROLLBACK:
        if not layer.manual:
            return _rollback(at, state, verdict.reason, AUTOMATION, verdict, active)
        if repeated:
            return Transition(_stamped(state, now))
        reason = f"harm found but a human set this layer's ratio; not acting: {verdict.reason}"
        entry = at.entry(AuditAction.ALERT, active, ratio, ratio, reason, verdict=verdict)
        return Transition(_stamped(state, now), {}, (entry,))
    if verdict.action is Action.PROMOTE:
        return _advance(at, state, active, AUTOMATION, verdict, None)
    resized = _resize(at, state, active, verdict)
    if resized is not None:
        return resized
    # A verdict that says what the last one said is remembered, not audited again: a hold or an
    # alert that persists for hours is one entry, not one per tick.
    if repeated:
        return Transition(_stamped(state, now))
    action = AuditAction.ALERT if verdict.alert else AuditAction.HOLD
    entry = at.entry(action, active, ratio, ratio, verdict.reason, verdict=verdict)
    return Transition(_stamped(state, now), {}, (entry,))


def first_step(steps: Sequence[float], reach: float | None, min_users: int) -> int:
    """The index of the step a layer opens at: the first whose bucket range can gather
    ``min_users`` candidate users within the step's maximum time, when the layer's ``reach``
    (users seen in that time) is known — a layer so small that 1 % holds nobody starts where
    the minimum fits (Uber's risk- and power-based ramps, arXiv 1905.10493, size steps to the
    traffic the same way). Never 100 % at once: at most the last step below it.

    Example:
        >>> first_step((0.01, 0.1, 0.5, 1.0), 300.0, 30)  # 3 users at 1 %, 30 at 10 %
        1
        >>> first_step((0.01, 0.1, 0.5, 1.0), None, 30), first_step((0.01, 0.1, 1.0), 20.0, 30)
        (0, 1)
    """
    if reach is None or len(steps) < 2:
        return 0
    below = [i for i, ratio in enumerate(steps) if ratio < 1.0]
    for index in below:
        if steps[index] * reach >= min_users:
            return index
    return below[-1] if below else 0


def _open(at: _Now, state: PlanState, layer: str, operator: str) -> Transition:
    spec = at.plan.layer(layer)
    if state.started_at is None:
        state = replace(state, started_at=at.now)
    gates = at.plan.gates_for(layer)
    reach = at.reach.get(layer) if gates.size_steps and operator == AUTOMATION else None
    index = first_step(spec.steps, reach, gates.min_users_at_timeout)
    ratio = spec.steps[index]
    # A layer whose first step is 100% has no stable arm to compare with: it is done at once.
    phase = LayerPhase.COMPLETED if ratio >= 1.0 else LayerPhase.ACTIVE
    state = state.with_layer(
        layer, phase=phase, step=index, step_started_at=at.now, last_action=None,
        last_rule=None, last_detail="", last_alert=False,
    )  # fmt: skip
    if operator != AUTOMATION:
        reason = "opened by a human"
    elif at.plan.layer_names.index(layer) == 0:
        reason = "first layer"
    else:
        reason = "the layer before it is at 100%"
    details: dict[str, Any] = {}
    if reach is not None:
        details = {"reach": round(reach, 1), "first_step": index}
        if index:
            reason += (
                f"; sized to its traffic: about {reach:.0f} users come in "
                f"{gates.max_step_time / 3600:g} h, so {spec.steps[0]:.0%} would see "
                f"{spec.steps[0] * reach:.1f} candidate users of the "
                f"{gates.min_users_at_timeout} needed; starting at {ratio:.0%}"
            )
    entry = at.entry(
        AuditAction.START_LAYER, layer, at.ratio(layer), ratio, reason, operator=operator,
        details=details,
    )  # fmt: skip
    return Transition(_stamped(state, at.now), {layer: ratio}, (entry,))


def _resize(at: _Now, state: PlanState, layer: str, verdict: Verdict) -> Transition | None:
    """A step that timed out with too few candidate users (or none) moves to the first later
    step that its measured traffic can fill, when the plan sizes steps (never to 100 %)."""
    gates, spec, current = at.plan.gates_for(layer), at.plan.layer(layer), state.layer(layer)
    starved = verdict.rule in (Rule.TIMEOUT_TOO_FEW_USERS, Rule.NO_CANDIDATE_TRAFFIC)
    if not (starved and verdict.alert and gates.size_steps) or current.manual:
        return None
    reach = (verdict.n_candidate + verdict.n_stable) * gates.max_step_time / max(verdict.elapsed, 1)
    later = spec.steps[current.step + 1 :]
    if reach <= 0:  # nobody came at all: a larger step would not help (the alert says so)
        return None
    index = current.step + 1 + first_step(later, reach, gates.min_users_at_timeout)
    if index >= len(spec.steps) or spec.steps[index] >= 1.0 or not later:
        return None
    reason = (
        f"resized to the layer's traffic: about {reach:.0f} users come in "
        f"{gates.max_step_time / 3600:g} h, too few for {gates.min_users_at_timeout} candidate "
        f"users at {at.ratio(layer):.0%} ({verdict.reason})"
    )
    return _advance(at, state, layer, AUTOMATION, verdict, reason, to=index)


def _advance(
    at: _Now,
    state: PlanState,
    layer: str,
    operator: str,
    verdict: Verdict | None,
    reason: str | None,
    to: int | None = None,
) -> Transition:
    spec = at.plan.layer(layer)
    old = at.ratio(layer)
    step = state.layer(layer).step + 1 if to is None else to
    reason = reason or (verdict.reason if verdict else "promoted")
    if step >= len(spec.steps):
        state = state.with_layer(layer, phase=LayerPhase.COMPLETED)
        entry = at.entry(
            AuditAction.COMPLETE_LAYER, layer, old, old, reason, verdict=verdict, operator=operator
        )
        return Transition(_stamped(state, at.now), {}, (entry,))
    new = spec.steps[step]
    done = new >= 1.0
    state = state.with_layer(
        layer, step=step, step_started_at=at.now, last_action=None, last_rule=None,
        last_detail="", last_alert=False, last_reason=None,
        phase=LayerPhase.COMPLETED if done else state.layer(layer).phase,
    )  # fmt: skip
    entry = at.entry(
        AuditAction.PROMOTE, layer, old, new, reason, verdict=verdict, operator=operator
    )
    moved = Transition(_stamped(state, at.now), {layer: new}, (entry,))
    if done and operator == AUTOMATION:
        following = active_layer(at.plan, state)
        if following is not None and state.layer(following).phase is LayerPhase.PENDING:
            return moved.then(_open(at, state, following, operator))
    return moved


def _rollback(
    at: _Now,
    state: PlanState,
    reason: str,
    operator: str,
    verdict: Verdict | None,
    layer: str | None,
) -> Transition:
    plan_wide = at.plan.judging.rollback_scope == "plan" or layer is None
    layers: Sequence[str] = at.plan.layer_names if plan_wide or layer is None else [layer]
    for name in layers:
        if state.layer(name).phase is not LayerPhase.PENDING:
            state = state.with_layer(name, phase=LayerPhase.ROLLED_BACK)
    state = replace(state, status=PlanStatus.ROLLED_BACK)
    before = {name: at.ratio(name) for name in layers}
    entry = at.entry(
        AuditAction.ROLLBACK, layer, before.get(layer) if layer else None, 0.0, reason,
        verdict=verdict, operator=operator,
        details={"scope": "plan" if plan_wide else "layer", "ratios_before": before},
    )  # fmt: skip
    cleanup = Cleanup(None if plan_wide else tuple(layers), state.started_at)
    return Transition(_stamped(state, at.now), dict.fromkeys(layers, 0.0), (entry,), cleanup)


# ----------------------------------------------------------------------------- humans
def pause(
    plan: RolloutPlan, state: PlanState, ratios: Mapping[str, float], now: float,
    *, operator: str, reason: str,
) -> Transition:  # fmt: skip
    """Stop automatic actions (the ratios stay as they are) until :func:`resume`. A plan that is
    not running is left as it is, and nothing is audited (pausing is idempotent)."""
    if state.status is not PlanStatus.RUNNING:
        return Transition(state)
    state = replace(state, status=PlanStatus.PAUSED)
    entry = _Now(plan, ratios, now).entry(
        AuditAction.PAUSE, None, None, None, reason, operator=operator
    )
    return Transition(_stamped(state, now), {}, (entry,))


def resume(
    plan: RolloutPlan, state: PlanState, ratios: Mapping[str, float], now: float,
    *, operator: str, reason: str,
) -> Transition:  # fmt: skip
    """Resume a paused plan.

    Raises:
        PlanStateError: the plan is not paused (a rolled-back plan needs :func:`restart`).
    """
    if state.status is not PlanStatus.PAUSED:
        after = " (restart it after a rollback)" if state.status is PlanStatus.ROLLED_BACK else ""
        raise PlanStateError(f"plan {plan.id} is {state.status.value}, not paused{after}")
    entry = _Now(plan, ratios, now).entry(
        AuditAction.RESUME, None, None, None, reason, operator=operator
    )
    return Transition(_stamped(replace(state, status=PlanStatus.RUNNING), now), {}, (entry,))


def promote(
    plan: RolloutPlan, state: PlanState, ratios: Mapping[str, float], now: float,
    *, layer: str, operator: str, reason: str,
) -> Transition:  # fmt: skip
    """Move ``layer`` to its next step now (or open it when it is pending).

    Raises:
        PlanStateError: the plan is rolled back (restart it first).
    """
    plan.layer(layer)
    _refuse_if_rolled_back(plan, state, "promote a layer")
    at = _Now(plan, ratios, now)
    state = state.with_layer(layer, manual=True)
    if state.layer(layer).phase is LayerPhase.PENDING:
        return _open(at, state, layer, operator)
    return _advance(at, state, layer, operator, None, reason)


def rollback(
    plan: RolloutPlan, state: PlanState, ratios: Mapping[str, float], now: float,
    *, operator: str, reason: str,
) -> Transition:  # fmt: skip
    """Roll the whole plan back now: ratios to 0, candidate sessions moved and cleaned. A plan
    already rolled back is left as it is, and nothing is audited (rolling back is idempotent)."""
    if state.status is PlanStatus.ROLLED_BACK:
        return Transition(state)
    return _rollback(_Now(plan, ratios, now), state, reason, operator, None, None)


def set_ratio(
    plan: RolloutPlan, state: PlanState, ratios: Mapping[str, float], now: float,
    *, layer: str, ratio: float, operator: str, reason: str,
) -> Transition:  # fmt: skip
    """Set a layer's ratio by hand; automation will not roll this layer back on its own.

    Raises:
        PlanStateError: the plan is rolled back (restart it first: a ratio set now would be
            served while nothing judges it).
    """
    steps = plan.layer(layer).steps
    _refuse_if_rolled_back(plan, state, "set a ratio")
    if isinstance(ratio, bool) or not 0.0 <= ratio <= 1.0:
        raise ConfigurationError("ratio", ratio, "a number in [0, 1]")
    at = _Now(plan, ratios, now)
    state = state.with_layer(
        layer,
        manual=True,
        phase=LayerPhase.COMPLETED if ratio >= 1.0 else LayerPhase.ACTIVE,
        step=max([i for i, s in enumerate(steps) if s <= ratio], default=0),
        step_started_at=now,
    )
    why = reason or f"ratio set to {ratio:.2%} by a human"
    entry = at.entry(AuditAction.SET_RATIO, layer, at.ratio(layer), ratio, why, operator=operator)
    return Transition(_stamped(state, now), {layer: ratio}, (entry,))


def _refuse_if_rolled_back(plan: RolloutPlan, state: PlanState, what: str) -> None:
    if state.status is PlanStatus.ROLLED_BACK:
        raise PlanStateError(
            f"plan {plan.id} is rolled back: nothing would judge the traffic; restart it (an "
            f"audited restart from its first layer) before you {what}"
        )


def restart(
    plan: RolloutPlan, state: PlanState, ratios: Mapping[str, float], now: float,
    *, operator: str, reason: str,
) -> Transition:  # fmt: skip
    """Start the plan again from its first layer (e.g. after a rollback and a fix)."""
    entry = _Now(plan, ratios, now).entry(
        AuditAction.RESTART, None, None, None, reason, operator=operator
    )
    # The same epoch and the next version: replicas that saw the old state see a newer one,
    # not a lost one.
    fresh = replace(PlanState.fresh(plan), epoch=state.epoch, version=state.version)
    return Transition(_stamped(fresh, now), dict.fromkeys(plan.layer_names, 0.0), (entry,))


# ----------------------------------------------------------------------------- the store's faults
def revert_stray_ratios(
    plan: RolloutPlan, state: PlanState, ratios: Mapping[str, float], now: float
) -> Transition | None:
    """Put back every ratio that differs from the one the controller set (someone wrote the
    store directly: no operator, no audit entry), one ``revert`` entry each, old and new ratio
    as served and as restored. ``None`` when every ratio is the controller's."""
    if state.ratios is None:  # a document from before the controller kept its ratios
        return None
    at = _Now(plan, ratios, now)
    own = {name: state.ratios.get(name, 0.0) for name in plan.layer_names}
    moved = {n: r for n, r in own.items() if not math.isclose(at.ratio(n), r, abs_tol=1e-9)}
    if not moved:
        return None
    how = "Move ratios through the controller: `graylayer ratio LAYER --set R` or POST /api/ratio"
    entries = tuple(
        at.entry(
            AuditAction.REVERT,
            name,
            at.ratio(name),
            ratio,
            f"{name}'s ratio was moved to {at.ratio(name):.2%} outside the controller (no "
            f"operator, no audit entry); put back to {ratio:.2%}. {how}",
            details={"moved_outside_controller": True},
        )
        for name, ratio in moved.items()
    )
    return Transition(_stamped(state, now), moved, entries)


def restore(
    plan: RolloutPlan,
    seen: PlanState,
    found: PlanState | None,
    ratios: Mapping[str, float],
    now: float,
) -> Transition:
    """The store lost the plan's state: it holds none (``found`` is ``None``), another epoch's,
    or an older version than ``seen``, the last state this replica saw there. Write ``seen``
    back, at its version, with its ratios, and hold: a running plan is paused (its evidence is
    gone too), a paused, rolled-back or completed one stays so — automation never starts a plan
    again on its own, and a human's rollback survives as long as one replica remembers it."""
    running = seen.status is PlanStatus.RUNNING
    held = replace(seen, status=PlanStatus.PAUSED if running else seen.status, restored_at=now)
    own = {name: (seen.ratios or {}).get(name, 0.0) for name in plan.layer_names}
    if found is None:
        what = "no state at all"
    else:
        what = f"epoch {found.epoch or '-'} version {found.version} ({found.status.value})"
    reason = (
        f"the store lost this plan's state: expected epoch {seen.epoch} at version "
        f"{seen.version} or later, found {what}; restored the state this replica last saw "
        f"({seen.status.value})" + ("; paused until a human resumes" if running else "; holding")
    )
    entry = _Now(plan, ratios, now).entry(
        AuditAction.RESTORE, None, None, None, reason, details={
            "expected": {"epoch": seen.epoch, "version": seen.version},
            "found": None if found is None else {"epoch": found.epoch, "version": found.version},
            "status_before": seen.status.value, "ratios": own,
            "served_when_found": {name: ratios.get(name, 0.0) for name in plan.layer_names},
        },
    )  # fmt: skip
    return Transition(_stamped(held, now), own, (entry,), counts=False)


_HOLD_AS = {
    AuditAction.ROLLBACK: PlanStatus.ROLLED_BACK,
    AuditAction.COMPLETE: PlanStatus.COMPLETED,
}
STATUS_CHANGES: frozenset[AuditAction] = frozenset({
    AuditAction.PAUSE, AuditAction.RESUME, AuditAction.ROLLBACK, AuditAction.RESTART,
    AuditAction.COMPLETE, AuditAction.RESTORE,
})  # fmt: skip
"""The audit actions that change a plan's status."""


def recover(
    plan: RolloutPlan,
    history: Sequence[AuditEntry],
    ratios: Mapping[str, float],
    now: float,
) -> Transition:
    """The store holds the plan's audit log (``history``, oldest first) but no state, and no
    replica remembers one: part of the store was lost (an evicted key, a partial restore). Hold
    what the log says: rolled back (every ratio 0) when its latest change of status is a
    rollback, completed when it is the end, else paused at the ratios served — never a plan
    started again on its own. Layers are shown pending: their steps are not known."""
    latest = next((e for e in reversed(history) if e.action in STATUS_CHANGES), None)
    status = PlanStatus.PAUSED if latest is None else _HOLD_AS.get(latest.action, PlanStatus.PAUSED)
    own = {name: ratios.get(name, 0.0) for name in plan.layer_names}
    if status is PlanStatus.ROLLED_BACK:
        own = dict.fromkeys(plan.layer_names, 0.0)
    # Not marked restored: a replica that remembers the lost state finds this one older (another
    # epoch, never restored) and writes back its own.
    held = replace(PlanState.fresh(plan), status=status, started_at=now)
    said = (
        "no change of status" if latest is None else f"{latest.action.value} by {latest.operator}"
    )
    reason = (
        f"the store holds this plan's audit log but not its state, and no replica remembers it; "
        f"the log's latest change of status is {said}: holding {status.value}"
        + (" until a human resumes or restarts it" if status is PlanStatus.PAUSED else "")
    )
    entry = _Now(plan, ratios, now).entry(
        AuditAction.RESTORE, None, None, None, reason,
        details={"found": None, "from_audit": True, "status": status.value, "ratios": own},
    )  # fmt: skip
    return Transition(_stamped(held, now), own, (entry,))
