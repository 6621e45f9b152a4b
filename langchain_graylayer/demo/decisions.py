"""The controller's decisions, read from the audit log: what the progress lines, the summary's
table and the plot all show, so they cannot disagree.

A decision is one layer's judged change: a promotion, an alert (the step held) or a rollback.
A rollback is plan-wide by default (``judging.rollback_scope: plan``): its audit entry names the
harmed layer, and ``details.ratios_before`` every layer's ratio before it; each layer that had a
ratio above 0 is one decision row, the harmed one with the judge's rule, the others ``plan-wide``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from langchain_graylayer.demo.world import day_number, day_time

PLAN_WIDE = "plan-wide"
"""The rule of a layer a rollback took along: not judged itself, moved with the harmed one."""
STARVED = ("timeout_too_few_users", "no_candidate_traffic")
"""Rules of a step that timed out with too few candidate users; promoted, it was resized."""


def pct(ratio: float | None) -> str:
    """``50%``; ``-`` for no ratio."""
    return "-" if ratio is None else f"{ratio * 100:g}%"


@dataclass(frozen=True, slots=True)
class Decision:
    """One layer's judged change, from one audit entry."""

    plan: str
    time: float
    layer: str
    action: str
    """``promote``, ``alert`` or ``rollback``."""
    old_ratio: float
    new_ratio: float
    rule: str
    """The judge's rule (``timeout_no_harm``, ``harm``, …); ``plan-wide`` for a layer a rollback
    took along."""
    candidate_users: int | None
    """Candidate users at the step the judge decided on (``None``: not judged, plan-wide)."""
    stable_users: int | None
    reason: str

    @property
    def day(self) -> float:
        """The 1-based day number (see :func:`~langchain_graylayer.demo.world.day_number`)."""
        return day_number(self.time)

    @property
    def resized(self) -> bool:
        """A starved step moved up to the first step its traffic can fill (never to 100%): a
        promotion to gather users, not one on evidence."""
        return self.action == "promote" and self.rule in STARVED

    @property
    def change(self) -> str:
        """``50% → 100%``, or ``50% held`` for an alert."""
        if self.action == "alert":
            return f"{pct(self.old_ratio)} held"
        return f"{pct(self.old_ratio)} → {pct(self.new_ratio)}"


def decisions(audit: Iterable[Mapping[str, Any]]) -> list[Decision]:
    """The judged changes in ``audit`` (audit entries as dicts), in its order."""
    rows: list[Decision] = []
    for entry in audit:
        if entry["action"] == "rollback":
            rows += rolled_back(entry)
        elif entry["action"] in ("promote", "alert"):
            rows.append(_decision(entry, entry["layer"], entry["old_ratio"], entry["new_ratio"]))
    return rows


def rolled_back(entry: Mapping[str, Any]) -> list[Decision]:
    """A rollback's rows: the harmed layer first, then every other layer it moved to 0."""
    before: Mapping[str, float] = entry["details"].get("ratios_before") or {
        entry["layer"]: entry["old_ratio"]
    }
    moved = [name for name, ratio in before.items() if ratio > 0]
    moved.sort(key=lambda name: name != entry["layer"])
    rows = [_decision(entry, name, before[name], entry["new_ratio"]) for name in moved]
    return [row if row.layer == entry["layer"] else _along(row, entry["layer"]) for row in rows]


def harmed_guardrail(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The guardrail a rollback's verdict found harm on (``None`` for other rollbacks)."""
    verdict = entry.get("verdict") or {}
    return next((g for g in verdict.get("guardrails", ()) if g["harm"]), None)


def progress_lines(entry: Mapping[str, Any]) -> list[str]:
    """What the run prints for one audit entry as it happens (nothing for holds)."""
    action = entry["action"]
    if action == "hold":
        return []
    if action == "rollback":
        return [
            _line(
                row.time,
                row.layer,
                _ratio_pair(row.old_ratio, row.new_ratio),
                f"rollback: {row.reason}",
            )
            for row in rolled_back(entry)
        ]
    ratios = " " * 13
    if action not in ("cleanup", "complete"):
        ratios = _ratio_pair(entry["old_ratio"], entry["new_ratio"])
    what = f"{action}: {entry['reason']}"
    return [_line(entry["time"], entry["layer"] or "all layers", ratios, what)]


def _decision(entry: Mapping[str, Any], layer: str, old: float, new: float) -> Decision:
    verdict = entry.get("verdict") or {}
    return Decision(
        plan=entry["plan"],
        time=entry["time"],
        layer=layer,
        action=str(entry["action"]),
        old_ratio=old,
        new_ratio=new,
        rule=verdict.get("rule") or "by hand",
        candidate_users=verdict.get("n_candidate"),
        stable_users=verdict.get("n_stable"),
        reason=entry["reason"],
    )


def _along(row: Decision, harmed: str) -> Decision:
    reason = f"{PLAN_WIDE}, with {harmed}"
    return replace(row, rule=PLAN_WIDE, candidate_users=None, stable_users=None, reason=reason)


def _ratio_pair(old: float | None, new: float | None) -> str:
    return f"{pct(old):>5} → {pct(new):<5}"


def _line(t: float, layer: str, ratios: str, what: str) -> str:
    return f"  {day_time(t)}  {layer:<13} {ratios} {what}"
