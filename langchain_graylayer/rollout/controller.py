"""``RolloutController``: judges each active layer and moves its ratio, with an audit trail.

A thin shell around pure parts. One tick (:meth:`RolloutController.step`):

* takes the leader lease (several controller replicas may run; exactly one acts);
* loads the plan's state and ratios, reads the active layer's evidence from the store — per-user
  statistics of the candidate and of the concurrent stable of the same layer, at the current
  step — and judges it (:func:`~langchain_graylayer.judging.judge.judge`);
* computes the next state with :func:`~langchain_graylayer.rollout.transition.transition` and
  commits it — ratios with their step keys, state and audit entries — in one atomic write: a
  store outage means no action, never a half-applied one;
* after a rollback, moves the candidate's sessions back to stable, runs the cleanup hooks and
  audits what they did.

Before judging, a tick checks the store: a plan state lost (none, another epoch, an older
version than this replica last saw) is written back from this replica's memory and held
(``restore``: a running plan is paused, a rolled-back one stays so — a plan is never started
again on its own), or held as its audit log says when no replica remembers it; a ratio moved
outside the controller is put back (``revert``). Replicas that are not the leader read the state
each tick too, so the one that saw the latest state wins.

Humans pause, resume, promote, roll back, set ratios and restart through the same shape; the
automation never undoes a human decision.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from typing_extensions import override

from langchain_graylayer._types import posix_clock
from langchain_graylayer.errors import (
    ConfigurationError,
    ControllerBusyError,
    GraylayerError,
    PlanStateError,
)
from langchain_graylayer.judging.judge import Action, JudgeInput, Rule, Verdict, judge
from langchain_graylayer.plan._config import to_configuration_error
from langchain_graylayer.plan.plan import RolloutPlan, Version
from langchain_graylayer.rollout import transition as tx
from langchain_graylayer.rollout.cleanup import (
    CleanupHook,
    RollbackReport,
    clean_up_after_rollback,
)
from langchain_graylayer.rollout.state import (
    AuditAction,
    AuditEntry,
    LayerPhase,
    PlanState,
    PlanStatus,
)
from langchain_graylayer.store.evidence import PRE_STEP
from langchain_graylayer.store.protocols import Store

__all__ = ["Outcome", "RolloutController", "replica_name"]

logger = logging.getLogger(__name__)

_CONTROLLERS = itertools.count(1)

_WRITE_LOCK_TTL = 10.0
"""Seconds the write lock lasts unless renewed (a crashed writer blocks others this long)."""


def _pre_key(state: PlanState) -> str:
    return "" if state.started_at is None else f"{PRE_STEP}{state.started_at:.3f}"


def replica_name() -> str:
    """``$GRAYLAYER_REPLICA``, else ``host:pid``; ``#n`` marks the n-th controller of a process."""
    name = os.environ.get("GRAYLAYER_REPLICA") or f"{socket.gethostname()}:{os.getpid()}"
    count = next(_CONTROLLERS)
    return name if count == 1 else f"{name}#{count}"


class RolloutController(RunnableSerializable[Any, list[dict[str, Any]]]):
    """Runs one plan's rollout: judge, promote layer after layer, hold, or roll back.

    It is a Runnable: ``invoke`` performs one :meth:`step` and returns its audit entries as dicts.

    Example:
        >>> from langchain_graylayer import MemoryStore, RolloutPlan
        >>> plan, store = RolloutPlan.default("refund-v2"), MemoryStore()
        >>> controller = RolloutController(plan=plan, store=store)
        >>> [e.action.value for e in controller.step()]  # opens the first layer at 1%
        ['start_layer']
        >>> store.get_ratio("refund-v2", "early_adopter")
        0.01
    """

    plan: RolloutPlan
    store: Store
    """Where the state, the ratios and the evidence the routers record live: the same store
    as the routers' (a ``MemoryStore`` for one process, Redis across replicas)."""
    clock: Callable[[], float] = time.time
    cleanup_hooks: Sequence[CleanupHook] = ()
    """Called with the candidate's session ids after a rollback (chat histories, checkpointers)."""
    holder: str = Field(default_factory=lambda: replica_name())
    """This replica's name: in the leader lease, in ``status()["leader"]`` and in every audit
    entry it writes. Default: ``$GRAYLAYER_REPLICA``, else ``host:pid`` (``#2``, ``#3``... for
    further controllers of the same process)."""
    lease_ttl: float = Field(default=30.0, gt=0)
    """A crashed leader's lease lapses after this long and another replica takes over."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(
                "RolloutController takes keyword arguments only: RolloutController(plan=..., "
                f"store=...); got {len(args)} positional argument(s)"
            )
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:  # name the field, the value and what is valid
            raise to_configuration_error(exc) from None

    _clock = field_validator("clock")(classmethod(lambda cls, value: posix_clock(value)))

    _stop: threading.Event = PrivateAttr(default_factory=threading.Event)
    _last_report: RollbackReport | None = PrivateAttr(default=None)
    _seen: PlanState | None = PrivateAttr(default=None)
    _held: threading.local = PrivateAttr(default_factory=threading.local)
    """The renewal of the write lock this thread holds (``renew``), for a long cleanup."""
    """The last state this replica read or wrote in the store: if the store loses it (a Redis
    restarted without persistence), this replica writes it back and holds."""

    # ------------------------------------------------------------------ Runnable
    @override
    def invoke(
        self, input: Any = None, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """One :meth:`step`; returns its audit entries as dicts."""
        return self._call_with_config(lambda _: [e.to_dict() for e in self.step()], input, config)

    # ------------------------------------------------------------------ automation
    def step(self) -> list[AuditEntry]:
        """Judge the active layer once and act. Returns what was done (may be empty).

        A replica that is not the leader reads the plan's state, to remember it (and writes it
        back if the store lost it). A tick that finds the state lost writes back the state it
        saw and holds (``restore``); one that finds a ratio moved outside the controller puts it
        back (``revert``); either is all the tick does. Never raises for a store or metrics
        outage: the tick is skipped (logged).
        """
        try:
            if not self.store.try_lease(self._lease_name, self.holder, self.lease_ttl):
                return self._watch()
            with self._write_lock():
                state, ratios, fix = self._load_and_check()
                if fix is not None:
                    return self._apply(fix)
                verdict = self._judge_active(state, ratios)
                opening = verdict is None or verdict.action is Action.PROMOTE
                reach = self._reach(state) if opening else None
                change = tx.transition(self.plan, state, ratios, verdict, self.clock(), reach)
                return [] if change is None else self._apply(change)
        except (GraylayerError, OSError) as exc:
            logger.warning("controller tick skipped (%s); nothing was changed", exc)
            return []

    def _watch(self) -> list[AuditEntry]:
        """A follower's tick: read the plan's state so this replica remembers it, and write it
        back if the store lost it (whichever replica saw the latest state wins)."""
        if self._load()[2] is None:
            return []
        with self._write_lock():
            lost = self._load()[2]
            return [] if lost is None else self._apply(lost)

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

    def _judge_active(self, state: PlanState, ratios: dict[str, float]) -> Verdict | None:
        """The verdict on the active layer, when it is at a step (else ``None``)."""
        layer = tx.active_layer(self.plan, state)
        if layer is None or state.layer(layer).phase is not LayerPhase.ACTIVE:
            return None
        now = self.clock()
        at = state.layer(layer)
        elapsed = now - (now if at.step_started_at is None else at.step_started_at)
        ratio = ratios.get(layer, 0.0)
        try:
            arms = self.store.read_evidence(self.plan.id, layer, at.step_key)
        except GraylayerError as exc:
            return Verdict(
                Action.HOLD, Rule.METRICS_UNAVAILABLE,
                f"evidence unavailable ({exc}); holding", layer, ratio, elapsed, 0, 0, alert=True,
            )  # fmt: skip
        return judge(
            JudgeInput(
                layer=layer,
                gates=self.plan.gates_for(layer),
                judging=self.plan.judging,
                candidate=arms.get(Version.CANDIDATE.value),
                stable=arms.get(Version.STABLE.value),
                ratio=ratio,
                elapsed=elapsed,
                tests=sum(len(spec.steps) for spec in self.plan.layers),
                currency=self.plan.pricing.currency,
            )
        )

    def _reach(self, state: PlanState) -> dict[str, float]:
        """The users the next layer to open is expected to see within its maximum step time,
        from its stable traffic since the plan started (recorded under the layer's ``pre``
        step): distinct users so far, scaled linearly to the step's time. Empty when unknown
        (the first layer, or less data than an hour or the step's time)."""
        pending = [n for n in self.plan.layer_names if state.layer(n).phase is LayerPhase.PENDING]
        if not pending or state.started_at is None:
            return {}
        layer = pending[0]
        seen, horizon = self.clock() - state.started_at, self.plan.gates_for(layer).max_step_time
        if seen < min(3600.0, horizon):
            return {}
        arms = self.store.read_evidence(self.plan.id, layer, _pre_key(state))
        users = sum(arm.users for arm in arms.values())
        return {layer: users * horizon / seen}

    def _apply(self, change: tx.Transition) -> list[AuditEntry]:
        """Commit a transition in one write; then run the cleanup it asks for, and audit it."""
        entries = [replace(entry, replica=self.holder) for entry in change.entries]
        change = replace(change, entries=tuple(entries))
        state = self._commit(change.state, change.ratios, change.entries, count=change.counts)
        if change.cleanup is not None:
            entries.append(self._clean_up(change, state))
        return entries

    def _clean_up(self, change: tx.Transition, state: PlanState) -> AuditEntry:
        rollback = change.entries[-1]
        cleanup = change.cleanup
        assert cleanup is not None
        report = clean_up_after_rollback(
            self.store, self.plan, self.cleanup_hooks, layers=cleanup.layers,
            since=cleanup.since, now=self.clock(), heartbeat=self._renew_write_lock,
        )  # fmt: skip
        self._last_report = report
        entry = AuditEntry(
            time=self.clock(), operator=rollback.operator, plan=self.plan.id,
            action=AuditAction.CLEANUP, layer=rollback.layer, old_ratio=None, new_ratio=None,
            reason=report.summary(), details=report.to_dict(), replica=self.holder,
        )  # fmt: skip
        written = self.store.get_plan_state(self.plan.id)
        if written is not None and written != state.to_json():
            # Someone changed the plan while the cleanup ran (it outlasted the write lock, or a
            # human acted in between): keep their state, add only the cleanup's entry.
            logger.warning("plan %s changed during the rollback's cleanup; kept", self.plan.id)
            state = PlanState.from_json(written, self.plan)
            self._commit(state, {}, (entry,), count=False)
        else:
            self._commit(state, {}, (entry,))
        return entry

    def _renew_write_lock(self) -> None:
        """Renew the write lock this thread holds, at most once a second."""
        renew, now = getattr(self._held, "renew", None), self.clock()
        if renew is None or now - self._held.renewed < 1.0:
            return
        self._held.renewed = now
        if not renew():
            logger.warning("plan %s: the write lock lapsed during a cleanup", self.plan.id)

    # ------------------------------------------------------------------ humans
    def pause(self, *, operator: str, reason: str = "paused by a human") -> AuditEntry:
        """Stop automatic actions (the ratios stay as they are) until :meth:`resume`."""
        return self.act("pause", operator=operator, reason=reason).entry

    def resume(self, *, operator: str, reason: str = "resumed by a human") -> AuditEntry:
        """Resume a paused plan."""
        return self.act("resume", operator=operator, reason=reason).entry

    def promote(
        self, layer: str, *, operator: str, reason: str = "promoted by a human"
    ) -> AuditEntry:
        """Move ``layer`` to its next step now (or open it when it is pending)."""
        return self.act("promote", operator=operator, layer=layer, reason=reason).entry

    def rollback(self, reason: str, *, operator: str) -> AuditEntry:
        """Roll the whole plan back now: ratios to 0, candidate sessions moved and cleaned."""
        return self.act("rollback", operator=operator, reason=reason).entry

    def set_ratio(self, layer: str, ratio: float, *, operator: str, reason: str = "") -> AuditEntry:
        """Set a layer's ratio by hand; automation will not roll this layer back on its own."""
        args = {"layer": layer, "ratio": ratio, "reason": reason}
        return self.act("set_ratio", operator=operator, **args).entry

    def restart(self, *, operator: str, reason: str = "restarted by a human") -> AuditEntry:
        """Start the plan again from its first layer (e.g. after a rollback and a fix)."""
        return self.act("restart", operator=operator, reason=reason).entry

    def act(self, command: str, *, operator: str, **args: Any) -> Outcome:
        """Run a human command by name (``pause``, ``resume``, ``promote``, ``rollback``,
        ``set_ratio``, ``restart``; ``args`` as the method of that name takes them) and say
        whether it changed anything: pausing a plan that is not running and rolling back a
        rolled-back one change nothing and write nothing; their outcome carries the entry
        that put the plan where it is.

        Raises:
            ConfigurationError: an unknown command, no operator, or a bad argument.
            PlanStateError: the command is not possible in the plan's state (409 in the API).
            StoreError: the store is down (503 in the API); nothing was changed.
        """
        if not operator:
            raise ConfigurationError("operator", operator, "the name of the person acting")
        run = _COMMANDS.get(command)
        if run is None:
            raise ConfigurationError("command", command, f"one of {', '.join(_COMMANDS)}")
        with self._write_lock(wait=5.0):
            state, ratios, fix = self._load_and_check()
            if fix is not None:
                state, ratios = fix.state, {**ratios, **fix.ratios}
            try:
                change = run(self.plan, state, ratios, self.clock(), operator=operator, **args)
            except GraylayerError:
                if fix is not None:  # refused, but what the store lost is written back anyway
                    self._apply(fix)
                raise
            own = bool(change.entries)
            before = 0 if fix is None else len(fix.entries)
            if fix is not None:
                change = fix.then(change)
            written = self._apply(change) if change.entries else []
        if own:
            return Outcome(written[before], True, change.state.status)
        # Nothing to do (pausing a paused plan, rolling a rolled-back one back): nothing of
        # the command's is written, and the answer is the entry that put the plan there.
        return Outcome(self._why(change.state), False, change.state.status)

    def _why(self, state: PlanState) -> AuditEntry:
        for entry in reversed(self.audit(limit=200)):
            if entry.action in tx.STATUS_CHANGES:
                return entry
        latest = self.audit(limit=1)
        if not latest:
            raise PlanStateError(f"plan {self.plan.id} is {state.status.value} with no audit log")
        return latest[0]

    # ------------------------------------------------------------------ reading
    def status(self) -> dict[str, Any]:
        """Per layer: the ratio served (the store's), the one the controller set, step, phase,
        latest verdict and reason; the plan's status, and an ``alert`` when the store lost the
        plan's state (the state shown is then the one this replica remembers, held)."""
        state, ratios, lost = self._load()
        own = state.ratios or {}
        layers = []
        for spec in self.plan.layers:
            layer = state.layer(spec.name)
            served = ratios.get(spec.name, 0.0)
            layers.append({
                "layer": spec.name,
                "phase": layer.phase.value,
                "ratio": served,
                "controller_ratio": own.get(spec.name, 0.0),
                "moved_outside": not math.isclose(served, own.get(spec.name, 0.0), abs_tol=1e-9),
                "step": layer.step,
                "steps": list(spec.steps),
                "manual": layer.manual,
                "last_action": None if layer.last_action is None else layer.last_action.value,
                "last_rule": None if layer.last_rule is None else layer.last_rule.value,
                "last_reason": layer.last_reason,
                "step_started_at": layer.step_started_at,
            })  # fmt: skip
        versions = {"stable": self.plan.stable.model_dump(),
                    "candidate": self.plan.candidate.model_dump()}  # fmt: skip
        return {"plan": self.plan.id, "status": state.status.value, "versions": versions,
                "layers": layers, "leader": self.store.lease_holder(self._lease_name),
                "epoch": state.epoch, "version": state.version,
                "alert": None if lost is None else lost.entries[0].reason}  # fmt: skip

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
        while not self.store.try_lease(name, holder, _WRITE_LOCK_TTL):
            if time.monotonic() >= deadline:
                raise ControllerBusyError(f"plan {self.plan.id} is being changed; retry shortly")
            time.sleep(0.05)
        self._held.renew = lambda: self.store.try_lease(name, holder, _WRITE_LOCK_TTL)
        self._held.renewed = self.clock()
        try:
            yield
        finally:
            self._held.renew = None
            self.store.release_lease(name, holder)

    def _load(self) -> tuple[PlanState, dict[str, float], tx.Transition | None]:
        """The plan's state and the ratios served; and, when the store lost the state this
        replica saw there, the restore to write (its state is the one returned)."""
        text = self.store.get_plan_state(self.plan.id)
        ratios = self.store.get_ratios(self.plan.id)
        found = None if text is None else PlanState.from_json(text, self.plan)
        seen = self._seen
        if seen is not None and (found is None or found.regressed_from(seen)):
            lost = tx.restore(self.plan, seen, found, ratios, self.clock())
            logger.error("plan %s: %s", self.plan.id, lost.entries[0].reason)
            return lost.state, ratios, lost
        if found is None:
            history = self.audit(limit=50)  # a plan that never started has none
            if not history:
                return PlanState.fresh(self.plan), ratios, None
            lost = tx.recover(self.plan, history, ratios, self.clock())
            logger.error("plan %s: %s", self.plan.id, lost.entries[0].reason)
            return lost.state, ratios, lost
        if found.ratios is None:  # a document from before the controller kept its ratios
            served = {name: ratios.get(name, 0.0) for name in self.plan.layer_names}
            found = replace(found, ratios=MappingProxyType(served))
        self._seen = found
        return found, ratios, None

    def _load_and_check(self) -> tuple[PlanState, dict[str, float], tx.Transition | None]:
        """:meth:`_load`, and what must be written before anything else: the restore of a
        lost state, or the revert of ratios moved outside the controller."""
        state, ratios, lost = self._load()
        fix = lost or tx.revert_stray_ratios(self.plan, state, ratios, self.clock())
        return state, ratios, fix

    def _commit(
        self,
        state: PlanState,
        ratios: Mapping[str, float],
        entries: Sequence[AuditEntry],
        *,
        count: bool = True,
    ) -> PlanState:
        """Write ``state`` (one version more unless ``count`` is false) with ``ratios`` and
        ``entries``; return it as written, and remember it."""
        state = state.committed(ratios, count=count)
        # A ratio that moves starts a step: routers attribute runs to its key from now on. A
        # layer not open yet collects its stable traffic under a "pre" step, which sizes its
        # first step when it opens.
        steps = {
            name: state.layer(name).step_key or _pre_key(state) for name in self.plan.layer_names
        }
        self.store.commit(
            self.plan.id,
            ratios=ratios,
            state=state.to_json(),
            audit=[entry.to_json() for entry in entries],
            steps=steps,
        )
        self._seen = state
        return state


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a human command did (:meth:`RolloutController.act`)."""

    entry: AuditEntry
    """The command's audit entry; when nothing changed, the entry that put the plan where
    it is (a rollback's, a pause's)."""
    changed: bool
    """False when the command had nothing to do and wrote nothing."""
    status: PlanStatus
    """The plan's status after the command."""


_COMMANDS: dict[str, Callable[..., tx.Transition]] = {
    "pause": tx.pause,
    "resume": tx.resume,
    "promote": tx.promote,
    "rollback": tx.rollback,
    "set_ratio": tx.set_ratio,
    "restart": tx.restart,
}
