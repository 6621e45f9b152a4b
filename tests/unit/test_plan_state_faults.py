"""The pure parts behind the controller's fault handling: when a state found in the store is
older than one seen there, what a restore writes, what a ratio moved outside the controller
becomes, and what a stored document of an older version reads as (issue #15, items 3 and 5)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from langchain_graylayer import RolloutPlan
from langchain_graylayer.rollout import transition as tx
from langchain_graylayer.rollout.state import (
    AuditAction,
    AuditEntry,
    LayerPhase,
    PlanState,
    PlanStatus,
)

PLAN = RolloutPlan.default("refund-v2")
NOW = 1_000_000.0


def state(epoch: str = "e1", version: int = 5, restored_at: float | None = None) -> PlanState:
    return replace(PlanState.fresh(PLAN), epoch=epoch, version=version, restored_at=restored_at)


REGRESSIONS = [
    # (found, seen, regressed, why)
    (state(version=5), state(version=5), False, "the same state"),
    (state(version=7), state(version=5), False, "newer: other replicas committed since"),
    (state(version=4), state(version=5), True, "older: the store lost writes"),
    (state("e2", 9), state("e1", 5), True, "another epoch: started afresh after a loss"),
    (state("e2", 1, restored_at=NOW), state("e1", 5), False, "another epoch restored since"),
    (state("e2", 1, NOW), state("e1", 5, NOW + 1), True, "restored before ours was"),
    (state("e1", 3), state("", 3), False, "seen before epochs existed"),
]


@pytest.mark.parametrize(
    ("found", "seen", "regressed"),
    [case[:3] for case in REGRESSIONS],
    ids=[case[3] for case in REGRESSIONS],
)
def test_a_state_found_older_than_the_one_seen_is_a_regression(
    found: PlanState, seen: PlanState, regressed: bool
) -> None:
    assert found.regressed_from(seen) is regressed


@pytest.mark.parametrize(
    ("status", "held"),
    [
        (PlanStatus.RUNNING, PlanStatus.PAUSED),
        (PlanStatus.PAUSED, PlanStatus.PAUSED),
        (PlanStatus.ROLLED_BACK, PlanStatus.ROLLED_BACK),
        (PlanStatus.COMPLETED, PlanStatus.COMPLETED),
    ],
)
def test_a_restore_writes_what_was_seen_and_holds(status: PlanStatus, held: PlanStatus) -> None:
    seen = replace(state(), status=status).with_layer(
        "early_adopter", phase=LayerPhase.ACTIVE, step=1
    )
    seen = seen.committed({"early_adopter": 0.05})

    change = tx.restore(PLAN, seen, None, {}, NOW)

    assert change.state.status is held
    assert change.state.layer("early_adopter") == seen.layer("early_adopter")
    assert (change.state.epoch, change.state.version) == (seen.epoch, seen.version)
    assert change.state.restored_at == NOW
    assert change.counts is False  # written at the version it was seen at
    assert change.ratios == {"early_adopter": 0.05, "normal": 0.0, "high_value": 0.0, "vip": 0.0}
    assert change.cleanup is None
    [entry] = change.entries
    assert (entry.action, entry.operator) == (AuditAction.RESTORE, "controller")
    assert entry.details["expected"] == {"epoch": "e1", "version": 6}
    assert entry.details["found"] is None
    assert entry.details["status_before"] == status.value


def test_a_restart_keeps_the_epoch_so_no_replica_takes_it_for_a_loss() -> None:
    seen = state(version=8)

    change = tx.restart(PLAN, seen, {}, NOW, operator="carol", reason="fixed")
    written = change.state.committed(change.ratios)

    assert (written.epoch, written.version) == ("e1", 9)
    assert not written.regressed_from(seen)
    assert written.status is PlanStatus.RUNNING


STRAY = [
    # (ratios the controller set, ratios served, expected reverts)
    ({}, {}, []),
    ({}, {"vip": 0.25}, [("vip", 0.25, 0.0)]),
    ({"early_adopter": 0.01}, {"early_adopter": 0.01}, []),
    ({"early_adopter": 0.01}, {"early_adopter": 0.5}, [("early_adopter", 0.5, 0.01)]),
    ({"early_adopter": 0.1}, {}, [("early_adopter", 0.0, 0.1)]),  # deleted behind its back
]


@pytest.mark.parametrize(("own", "served", "reverts"), STRAY)
def test_a_ratio_moved_outside_the_controller_is_put_back(
    own: dict[str, float], served: dict[str, float], reverts: list[tuple[str, float, float]]
) -> None:
    mine = PlanState.fresh(PLAN).committed(own)

    change = tx.revert_stray_ratios(PLAN, mine, served, NOW)

    if not reverts:
        assert change is None
        return
    assert change is not None
    assert [(e.layer, e.old_ratio, e.new_ratio) for e in change.entries] == reverts
    assert {e.action for e in change.entries} == {AuditAction.REVERT}
    assert change.ratios == {layer: new for layer, _, new in reverts}


def test_opening_a_layer_audits_the_ratio_served_not_zero() -> None:
    """BUG (#15, 5): the first step overwrote a hand-set 0.5 and audited the old value as 0.0."""
    change = tx.transition(PLAN, PlanState.fresh(PLAN), {"early_adopter": 0.5}, None, NOW)

    assert change is not None
    [entry] = change.entries
    assert (entry.action, entry.old_ratio, entry.new_ratio) == (AuditAction.START_LAYER, 0.5, 0.01)


def test_a_document_from_before_epochs_reads_and_gets_one_at_its_next_commit() -> None:
    layers = {"early_adopter": {"phase": "rolled_back", "step": 0}}
    old: dict[str, Any] = {"status": "rolled_back", "started_at": 5.0, "layers": layers}

    read = PlanState.from_json(json.dumps(old), PLAN)
    written = read.committed({"early_adopter": 0.0})

    assert (read.epoch, read.version, read.ratios) == ("", 0, None)
    assert read.status is PlanStatus.ROLLED_BACK
    assert (bool(written.epoch), written.version) == (True, 1)
    assert PlanState.from_json(written.to_json(), PLAN) == written


RECOVERIES = [
    # (actions in the audit log, oldest first; status held; ratios held when served is 0.1)
    (["start_layer", "rollback", "cleanup"], PlanStatus.ROLLED_BACK, 0.0),
    (["start_layer", "rollback", "restart", "start_layer"], PlanStatus.PAUSED, 0.1),
    (["start_layer", "pause"], PlanStatus.PAUSED, 0.1),
    (["start_layer", "promote"], PlanStatus.PAUSED, 0.1),
    (["start_layer", "complete_layer", "complete"], PlanStatus.COMPLETED, 0.1),
]


@pytest.mark.parametrize(("history", "status", "ratio"), RECOVERIES)
def test_a_state_lost_with_its_audit_log_kept_holds_what_the_log_says(
    history: list[str], status: PlanStatus, ratio: float
) -> None:
    entries = [
        AuditEntry(NOW, "carol", PLAN.id, AuditAction(action), None, None, None, "r")
        for action in history
    ]

    change = tx.recover(PLAN, entries, {"early_adopter": 0.1}, NOW)

    assert change.state.status is status
    assert change.ratios["early_adopter"] == ratio
    assert change.state.restored_at is None  # a replica that remembers more overrides it
    assert [e.action for e in change.entries] == [AuditAction.RESTORE]
