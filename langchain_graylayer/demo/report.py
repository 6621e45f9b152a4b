"""What a finished run prints: the layers, the decisions (each with the candidate users it was
decided on), the rollback, and whether the source article's three requirements were met."""

from __future__ import annotations

import math
import textwrap

from langchain_graylayer._tables import table
from langchain_graylayer.demo.decisions import PLAN_WIDE, Decision, pct
from langchain_graylayer.demo.run import DemoResult
from langchain_graylayer.demo.world import DEFAULT, QUICK, at_day, day_time
from langchain_graylayer.plan.gates import Gates

FEW_USERS = Gates().min_users_at_timeout
"""Below this many candidate users (the product's default minimum before a timeout may promote),
a promotion is flagged as decided on few users."""
MAX_EXPOSURE = 0.001
"""The source article's requirement: a fault reaches at most 0.1% of users."""
FULL_ROLLOUT_DAY = 10
MIN_RESOLUTION = 0.85


def summary_lines(r: DemoResult) -> list[str]:
    """The summary :func:`~langchain_graylayer.demo.run_demo` prints after the run."""
    return [
        *_layer_table(r),
        *decision_table(r),
        "",
        f"real agent calls: {r.requests} in {r.wall_seconds:.1f} s; complaints: {r.complaints}; "
        f"audit: {len(r.audit)} entries over both plans",
        *rollback_lines(r),
        *requirement_lines(r),
    ]


def _layer_table(r: DemoResult) -> list[str]:
    lines = ["", "layer          users   share  requests  v1.8 done  v2.1 done  ratio"]
    for name, row in r.layers.items():
        lines.append(
            f"{name:<13} {int(row['users']):>6} {row['share']:>7.2%} {int(row['requests']):>9} "
            f"{row['stable_completion']:>10.1%} {row['candidate_completion']:>10.1%} "
            f"{pct(row['ratio']):>6}"
        )
    return lines


def decision_table(r: DemoResult) -> list[str]:
    """Every promotion, alert and rollback row, with the candidate users behind it."""
    rows = [
        (day_time(d.time), d.plan, d.layer, d.change, d.action, _rule(d), _users(d))
        for d in r.decisions
    ]
    header = ("when", "plan", "layer", "ratio", "decision", "rule", "candidate users")
    lines = ["", "decisions (candidate users: the users v2.x served at the step that was judged):"]
    lines += ["  " + line for line in table(rows, header).splitlines()]
    if any(_few(d) for d in r.decisions):
        minimum = (QUICK if r.quick else DEFAULT).min_users_at_timeout
        lines += _note(
            f"few = fewer than {FEW_USERS} candidate users, the product's default minimum before "
            "a step timeout may promote on 'no harm found' (timeout_no_harm); this demo's thin "
            "sample lowers it per layer ("
            + ", ".join(f"{name} {n}" for name, n in minimum.items())
            + "), so such a promotion rests on a handful of users"
        )
    if any(d.resized for d in r.decisions):
        lines += _note(
            "resized = the step timed out with too few users even for that, and moved up to the "
            "first step its traffic can fill (never to 100%), to gather users"
        )
    return lines


def _note(text: str) -> list[str]:
    return textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent="    ")


def _rule(d: Decision) -> str:
    return f"{d.rule} (resized)" if d.resized else d.rule


def _few(d: Decision) -> bool:
    return d.action == "promote" and (d.candidate_users or 0) < FEW_USERS


def _users(d: Decision) -> str:
    if d.rule == PLAN_WIDE:
        return "- (not judged)"
    users = str(d.candidate_users)
    if d.action == "rollback":
        return f"{users} (stable {d.stable_users})"
    return f"{users} (few)" if _few(d) else users


def rollback_lines(r: DemoResult) -> list[str]:
    """Act one's rollback: every layer it moved, and what triggered it."""
    if not r.rollback:
        return ["act one: no rollback"]
    moved = ", ".join(f"{name} {pct(ratio)} → 0%" for name, ratio in r.rollback["layers"].items())
    return [
        f"act one: v2.0 rolled back {day_time(r.rollback['time'])} in every layer that had it "
        f"(plan-wide): {moved}",
        f"  triggered in {r.rollback['layer']}: {r.rollback['reason']}",
    ]


def requirement_lines(r: DemoResult) -> list[str]:
    """The source article's three requirements, each met or missed, and by how much."""
    exposure = (
        f"  exposure to the bug ≤ {MAX_EXPOSURE:.1%} of users: {r.exposure_share:.3%} "
        f"({r.exposed_users} of {r.users} users got a wrong refund answer, "
        f"{len(r.wrong_answers)} answers; source: 0.09% of 5M): "
        + _against(r.exposure_share, MAX_EXPOSURE, at_most=True, digits=3)
    )
    resolution = (
        f"  resolution ≥ {MIN_RESOLUTION:.0%} after the rollout: {r.completion_after:.1%} "
        f"(v2.1 at 100%, layer-share weighted; before: {r.completion_before:.1%} with v1.8; "
        "source: 60% → 87%): " + _against(r.completion_after, MIN_RESOLUTION, at_most=False)
    )
    head = "requirements (the source article's case study, docs/background.md):"
    return [head, exposure, _rollout_line(r), resolution]


def _rollout_line(r: DemoResult) -> str:
    head = f"  full rollout by day {FULL_ROLLOUT_DAY}: "
    if r.complete_day is None:
        return head + "missed: not every layer reached 100% in the simulated window"
    day = int(r.complete_day)
    when = f"every layer at 100% {day_time(at_day(r.complete_day))}"
    if day <= FULL_ROLLOUT_DAY:
        return f"{head}{when}: met, {FULL_ROLLOUT_DAY - day} days to spare"
    return f"{head}{when}: missed by {day - FULL_ROLLOUT_DAY} days"


def _against(value: float, limit: float, *, at_most: bool, digits: int = 1) -> str:
    """``met, 0.010 points to spare`` or ``missed by 0.010 points`` (shares, in % points)."""
    if math.isnan(value):
        return "missed: not measured"
    spare = (limit - value if at_most else value - limit) * 100
    if spare >= 0:
        return f"met, {spare:.{digits}f} points to spare"
    return f"missed by {-spare:.{digits}f} points"
