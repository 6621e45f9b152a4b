"""The simulator's scenarios: how the candidate differs from stable, and what happens to both.

Each :class:`Scenario` is data that :class:`~langchain_graylayer.simulate.traffic.Traffic`
draws from; :data:`SCENARIOS` holds them by id (the ids the README's evidence table uses).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QUICK_SCENARIOS", "SCENARIOS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    """How the candidate differs from stable (and what happens to both arms)."""

    id: str
    description: str
    bad: bool
    """A candidate that must not reach everyone (escape / exposure are measured)."""
    completion_delta: float = 0.0
    affected_layers: tuple[str, ...] = ()
    """Layers where the candidate differs; empty means every layer."""
    slow_share: float = 0.0
    """Share of candidate requests that take ``slow_extra_s`` longer."""
    slow_extra_s: float = 10.0
    burst_tool_success: float | None = None
    """Candidate tool success during bursts of ``burst_minutes`` every ``burst_period_minutes``,
    at a random phase."""
    burst_minutes: float = 20.0
    burst_period_minutes: float = 120.0
    lost_share: float = 0.0
    """Share of candidate sessions that reach users but are never recorded (a logging bug):
    a sample-ratio alert counts as catching it."""
    heavy_skew: float = 0.0
    """A routing bug: users of the top activity class whose bucket lies within this share above
    the ratio also get the candidate, and as many light users (classes 0–1) below it get stable
    (the user split stays right; who is in it does not)."""
    bad_feedback: float | None = None
    """Candidate's share of bad feedback (``None``: as stable)."""
    complaint_factor: float = 1.0
    """Candidate's complaints per request, as a multiple of stable's mean. The extra complaints
    are the candidate's doing, so they fall on every user it serves alike: each user's own
    propensity plus ``(factor − 1) × the population's mean``. (Multiplying each user's own
    propensity instead would put the harm on the 2 % of users who carry most complaints at
    icc 0.3 — clipped at 1, a ×5 there is ×3.7 in aggregate and visible in a handful of users.)"""
    feedback_delay_h: float = 0.0
    """Feedback and complaints of both arms arrive uniformly 0..this many hours late."""
    completion_cycle: float = 0.0
    """Both arms' completion ± this over a 24 h cycle (random phase)."""
    outage_error: float | None = None
    """Both arms' error rate during one ``outage_minutes`` upstream outage in the first 12 h."""
    outage_minutes: float = 30.0
    population: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of the population (e.g. ``{"icc": 0.1}``, ``{"sessions_per_hour": 50}``)."""
    plan: str = "sim"
    """Which plan rolls it out: ``sim`` (the simulator's, steps sized to its traffic),
    ``sim-late`` (the same, declaring that feedback and complaints come up to 6 h late: the
    guardrails' ``delay``), ``sim-cost`` (the same plus a ``cost_per_request`` guardrail with a
    20 % budget) or ``default`` (``RolloutPlan.default``'s steps and gates)."""
    hours: float | None = None
    """The horizon of this scenario's runs (``None``: the simulation's)."""
    token_factor: float = 1.0
    """Candidate's model tokens per request (and so its cost), as a multiple of stable's."""

    def affects(self, layer: str) -> bool:
        return not self.affected_layers or layer in self.affected_layers


def _scenarios() -> dict[str, Scenario]:
    drops = {
        f"S2-{d}": Scenario(f"S2-{d}", f"global completion −{d} points", True, -d / 100)
        for d in (2, 5, 10, 25)
    }
    return {
        "S0": Scenario("S0", "A/A: candidate = stable", False),
        "S1": Scenario("S1", "better: completion +3 points", False, 0.03),
        **drops,
        "S3": Scenario("S3", "completion −10 points in normal only", True, -0.10, ("normal",)),
        "S4": Scenario("S4", "latency tail: 4% of candidate requests +10 s", True, slow_share=0.04),
        "S5": Scenario(
            "S5",
            "tool success 0.70 for 20 min every 2 h (random phase)",
            True,
            burst_tool_success=0.70,
        ),
        "S6": Scenario(
            "S6", "logging bug: 10% of candidate sessions never recorded", True, lost_share=0.1
        ),
        "S7": Scenario(
            "S7",
            "A/A with ±5 points daily completion and a 30-min outage (errors 30%)",
            False,
            completion_cycle=0.05,
            outage_error=0.30,
        ),
        "S8": Scenario(
            "S8",
            "bad feedback 5% → 10% of feedback, feedback 0–6 h late",
            True,
            bad_feedback=0.10,
            feedback_delay_h=6.0,
        ),
        "U1": Scenario(
            "U1",
            "A/A, default plan (96 h), per-user correlation 0.3",
            False,
            plan="default",
            hours=96.0,
        ),
        "U2": Scenario(
            "U2",
            "A/A, default plan (96 h), per-user correlation 0.1",
            False,
            plan="default",
            population={"icc": 0.1},
            hours=96.0,
        ),
        "U3": Scenario(
            "U3",
            "routing bug: heavy users skewed to the candidate (user split right)",
            True,
            heavy_skew=0.3,
        ),
        "U4": Scenario(
            "U4",
            "complaints ×5 in high_value and vip only, 0–3 h late (the plan declares 6 h)",
            True,
            affected_layers=("high_value", "vip"),
            complaint_factor=5.0,
            feedback_delay_h=3.0,
            plan="sim-late",
        ),
        "S8L": Scenario(
            "S8L",
            "S8 on a plan that declares its feedback up to 6 h late",
            True,
            bad_feedback=0.10,
            feedback_delay_h=6.0,
            plan="sim-late",
        ),
        "T1": Scenario(
            "T1",
            "tiny traffic (50 sessions/h, 1 000 users): completion −10 points",
            True,
            -0.10,
            population={"sessions_per_hour": 50.0, "users": 1000},
            hours=96.0,
        ),
        "T2": Scenario(
            "T2",
            "tiny traffic (50 sessions/h, 1 000 users): A/A",
            False,
            population={"sessions_per_hour": 50.0, "users": 1000},
            hours=96.0,
        ),
        "T3": Scenario(
            "T3",
            "tiny traffic (50 sessions/h, 1 000 users): A/A, default plan",
            False,
            population={"sessions_per_hour": 50.0, "users": 1000},
            plan="default",
            hours=96.0,
        ),
        "C1": Scenario(
            "C1",
            "cost regression: candidate uses 1.5× tokens (a +20 % cost budget)",
            True,
            token_factor=1.5,
            plan="sim-cost",
        ),
        "C2": Scenario(
            "C2",
            "candidate uses 1.1× tokens, within a +20 % cost budget",
            False,
            token_factor=1.1,
            plan="sim-cost",
        ),
        "C0": Scenario(
            "C0",
            "A/A with heavy-tailed per-user cost (log-normal σ 1.2), a +20 % cost budget",
            False,
            population={"token_sigma": 1.2},
            plan="sim-cost",
        ),
        "U5": Scenario(
            "U5",
            "completion −5 points, default plan (96 h)",
            True,
            -0.05,
            plan="default",
            hours=96.0,
        ),
    }


SCENARIOS: dict[str, Scenario] = _scenarios()
QUICK_SCENARIOS: tuple[str, ...] = ("S0", "S1", "S2-5", "S2-25", "S3", "U1", "U3")
