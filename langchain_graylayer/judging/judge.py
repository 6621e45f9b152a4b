"""The judge: candidate vs concurrent stable of the same layer, one pure function.

:func:`judge` turns one layer's per-arm statistics over the current step into a :class:`Verdict`
— ``promote``, ``hold`` or ``rollback`` — with its reason and, per guardrail, the estimate, the
always-valid interval, the sample sizes and what was concluded. The worst finding wins:

1. no candidate traffic in the step → **hold** (silence is never a reason to act);
2. the candidate alone breaks a hard floor (error rate above ``max_error_rate``) → **rollback**,
   unless stable fails too (above half the floor) in the same window: an upstream outage;
3. any guardrail shows significant harm (always-valid one-sided test; the exact conditional test
   too for rare events) → **rollback**;
4. the traffic split is not what the ratio says (sequential SRM) → **hold** and alert;
5. promotion needs ``min_samples`` candidate requests, ``bake_time`` at the step and
   non-inferiority within each guardrail's margin → **promote**; otherwise **hold**, until
   ``max_step_time``, when the timeout policy promotes if no harm was found (or keeps holding).
   The timeout needs candidate data but not ``min_samples``: a quiet layer's small step limits
   exposure, and waiting for samples there would stall the rollout for days.

The article's QoS score is computed for both arms and reported in every verdict; it gates
promotion only when the plan says so (``judging.qos_gate``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.judging.qos import QosInputs, QosWeights, qos_score
from langchain_graylayer.judging.readmodel import ArmStats
from langchain_graylayer.judging.stats import (
    ArmCounts,
    Comparison,
    compare_proportions,
    rare_event_harm,
    srm_check,
)
from langchain_graylayer.plan.gates import Gates, Guardrail, GuardrailMetric, Judging

__all__ = ["Action", "GuardrailResult", "JudgeInput", "Rule", "Verdict", "judge", "qos_inputs"]


class Action(StrEnum):
    """What the judge recommends for a layer's current step."""

    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"


class Rule(StrEnum):
    """Which rule decided a verdict: what the controller and the audit log key on (never the
    reason's wording)."""

    NO_CANDIDATE_TRAFFIC = "no_candidate_traffic"
    """Hold: no candidate traffic in this step yet."""
    HARD_FLOOR = "hard_floor"
    """Roll back: the candidate alone broke the error-rate floor."""
    NO_STABLE_TRAFFIC = "no_stable_traffic"
    """Hold: no concurrent stable traffic in the layer to compare with."""
    HARM = "harm"
    """Roll back: a guardrail shows significant harm."""
    SAMPLE_RATIO_MISMATCH = "sample_ratio_mismatch"
    """Hold and alert: the split is not what the ratio says."""
    TIMEOUT_NO_HARM = "timeout_no_harm"
    """Promote: the step timed out and no harm was found (``promote_if_no_harm``)."""
    WAITING_FOR_SAMPLES = "waiting_for_samples"
    """Hold: fewer than ``min_samples`` candidate requests."""
    BAKING = "baking"
    """Hold: less than ``bake_time`` at the step."""
    NON_INFERIOR = "non_inferior"
    """Promote: no harm, and non-inferior on every guardrail."""
    NOT_YET_NON_INFERIOR = "not_yet_non_inferior"
    """Hold: no harm, not yet shown non-inferior on some guardrail."""
    TIMEOUT_NOT_NON_INFERIOR = "timeout_not_non_inferior"
    """Hold and alert: the step timed out without showing non-inferiority (``hold`` policy)."""
    METRICS_UNAVAILABLE = "metrics_unavailable"
    """Hold and alert: the metric source could not answer."""


@dataclass(frozen=True, slots=True)
class GuardrailResult:
    """One guardrail's comparison: ``candidate − stable`` with its always-valid bounds."""

    metric: str
    candidate_rate: float
    stable_rate: float
    estimate: float
    lower: float
    upper: float
    n_candidate: int
    n_stable: int
    margin: float
    harm: bool
    non_inferior: bool
    applicable: bool
    """False when neither arm has trials for this metric (e.g. an agent without tools)."""
    note: str
    """What was concluded, in words."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's answer for one layer at one step, with everything needed to audit it."""

    action: Action
    rule: Rule
    reason: str
    """The verdict in words, for people."""
    layer: str
    ratio: float
    elapsed: float
    n_candidate: int
    n_stable: int
    guardrails: tuple[GuardrailResult, ...] = ()
    srm: dict[str, Any] | None = None
    qos: dict[str, float | None] | None = None
    alert: bool = False
    """True when a human should look (sample-ratio mismatch, timeout on hold)."""
    detail: str = ""
    """What else tells two verdicts of the same rule apart: the harmed guardrail, or the
    guardrails not yet shown non-inferior (comma-separated)."""

    @property
    def key(self) -> tuple[Action, Rule, str]:
        """What makes a verdict news: a verdict with the same key as the last one is remembered,
        not audited again (a hold that persists for hours is one audit entry)."""
        return self.action, self.rule, self.detail

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN and infinities become ``None``)."""
        cleaned: dict[str, Any] = _clean(asdict(self))
        return cleaned


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


@dataclass(frozen=True, slots=True)
class JudgeInput:
    """Everything :func:`judge` looks at for one layer."""

    layer: str
    gates: Gates
    judging: Judging
    candidate: ArmStats | None
    """Candidate statistics since the step started (``None``: no data)."""
    stable: ArmStats | None
    ratio: float
    elapsed: float
    """Seconds since the step started."""
    tests: int = 1
    """How many steps' worth of tests share ``judging.alpha`` (Bonferroni): the plan's total
    number of steps across layers, so the whole rollout's false-rollback rate stays ≤ alpha."""


def _events(metric: GuardrailMetric, arm: ArmStats, guardrail: Guardrail) -> tuple[int, int]:
    """(events, trials) of ``metric``: successes for higher-is-better, bad events otherwise."""
    if metric is GuardrailMetric.COMPLETION_RATE:
        return arm.completions, arm.requests
    if metric is GuardrailMetric.TOOL_SUCCESS_RATE:
        return arm.tool_calls - arm.tool_errors, arm.tool_calls
    if metric is GuardrailMetric.ERROR_RATE:
        return arm.failures, arm.requests
    if metric is GuardrailMetric.BAD_FEEDBACK_RATE:
        return min(arm.feedback_bad, arm.requests), arm.requests
    if metric is GuardrailMetric.COMPLAINT_RATE:
        return min(arm.feedback_complaint, arm.requests), arm.requests
    slow = round(arm.latency.slower_than(guardrail.slo_seconds))
    return min(slow, arm.latency.count), arm.latency.count


def _rate(events: int, trials: int) -> float:
    return events / trials if trials else math.nan


def _guardrail(
    guardrail: Guardrail,
    cand: ArmStats,
    stable: ArmStats,
    alphas: tuple[float, float],
    n_stars: tuple[float, float],
) -> GuardrailResult:
    """Harm at the split ``alphas[0]`` (a false rollback is costly), non-inferiority at the
    unsplit ``alphas[1]`` (a wrong promotion only moves one step and stays watched)."""
    metric = guardrail.metric
    xc, nc = _events(metric, cand, guardrail)
    xs, ns = _events(metric, stable, guardrail)

    def result(
        comparison: Comparison | None, harm: bool, non_inferior: bool, note: str
    ) -> GuardrailResult:
        return GuardrailResult(
            metric=metric.value,
            candidate_rate=_rate(xc, nc),
            stable_rate=_rate(xs, ns),
            estimate=comparison.estimate if comparison else math.nan,
            lower=comparison.lower if comparison else -1.0,
            upper=comparison.upper if comparison else 1.0,
            n_candidate=nc,
            n_stable=ns,
            margin=guardrail.margin,
            harm=harm,
            non_inferior=non_inferior,
            applicable=comparison is not None,
            note=note,
        )

    if nc == 0 and ns == 0:
        return result(None, False, False, "not applicable: no trials in either arm")

    def compare(alpha: float, tuning: float) -> Comparison:
        return compare_proportions(
            ArmCounts(xc, nc),
            ArmCounts(xs, ns),
            alpha=alpha,
            n_star=tuning,
            higher_is_better=metric.higher_is_better,
            margin=guardrail.margin,
        )

    harm_test, ni_test = compare(alphas[0], n_stars[0]), compare(alphas[1], n_stars[1])
    harm, note = harm_test.harm, harm_test.inconclusive_reason or ""
    if metric.rare and not harm:
        rare = rare_event_harm(xc, nc, xs, ns, alphas[0])
        if rare.harm:
            harm, note = True, f"exact test: {rare.observed_share:.1%} of events vs {rare.pi:.1%}"
    if harm:
        worse = "lower" if metric.higher_is_better else "higher"
        note = note or f"significantly {worse} than stable"
    elif not note:
        note = "non-inferior" if ni_test.non_inferior else "not yet shown non-inferior"
    return result(harm_test, harm, ni_test.non_inferior and not harm, note)


def qos_inputs(arm: ArmStats, *, no_tool_calls: float = 1.0) -> QosInputs:
    """The article's QoS inputs of one arm. Without requests every rate reads as zero (the
    article's way, which its rule then punishes); ``no_tool_calls`` is the tool success of an arm
    that called no tool. NPS is approximated from the mean feedback score (5 when none)."""
    n = arm.requests
    mean_score = (
        arm.feedback_score_sum / arm.feedback_score_count if arm.feedback_score_count else 5
    )
    return QosInputs(
        bad_rate=min(arm.feedback_bad / n, 1.0) if n else 0.0,
        nps=max(-100.0, min(100.0, (mean_score - 5) * 20)),
        availability=1 - min(arm.failures / n, 1.0) if n else 0.0,
        latency_s=arm.latency.mean if arm.latency.count else 0.0,
        tool_success=no_tool_calls if not arm.tool_calls else arm.tool_success_rate,
        completion=min(arm.completions / n, 1.0) if n else 0.0,
        complaint_rate=min(arm.feedback_complaint / n, 1.0) if n else 0.0,
    )


def _qos(arm: ArmStats | None, judging: Judging) -> float | None:
    """The article's QoS of one arm; ``None`` without requests (never scored as zeros)."""
    if arm is None or arm.requests == 0:
        return None
    weights = QosWeights(*judging.qos_weights)
    return qos_score(qos_inputs(arm), weights, max_latency_s=judging.max_latency).qos


def judge(data: JudgeInput) -> Verdict:
    """Judge one layer's current step. Pure: same input, same verdict.

    Example:
        >>> from langchain_graylayer.plan.gates import Gates, Judging
        >>> from langchain_graylayer.judging.readmodel import ArmStats
        >>> bad = ArmStats(requests=300, completions=180)      # 60% completion
        >>> good = ArmStats(requests=2700, completions=2295)   # 85% completion
        >>> v = judge(JudgeInput("normal", Gates(), Judging(), bad, good, 0.1, 600.0))
        >>> v.action.value, v.rule.value
        ('rollback', 'harm')
        >>> v.reason
        'harm on completion_rate: candidate 60.0% vs stable 85.0% (n=300/2700)'
    """
    gates, judging = data.gates, data.judging
    cand, stable = data.candidate, data.stable
    n_c = cand.requests if cand else 0
    n_s = stable.requests if stable else 0
    qos = {"candidate": _qos(cand, judging), "stable": _qos(stable, judging)}

    def verdict(action: Action, rule: Rule, reason: str, **extra: Any) -> Verdict:
        where = (data.layer, data.ratio, data.elapsed, n_c, n_s)
        return Verdict(action, rule, reason, *where, qos=qos, **extra)

    if cand is None or n_c == 0:
        return verdict(
            Action.HOLD, Rule.NO_CANDIDATE_TRAFFIC, "no candidate traffic in this step yet"
        )
    floor = judging.max_error_rate
    # The floor judges the candidate alone, unless stable is failing too in the same layer and
    # window: then it is an outage upstream of both versions, and the comparative tests decide.
    stable_failing = bool(floor and stable and n_s and stable.failures / n_s > floor / 2)
    if (
        floor is not None
        and n_c >= judging.floor_min_samples
        and cand.failures / n_c > floor
        and not stable_failing
    ):
        return verdict(
            Action.ROLLBACK,
            Rule.HARD_FLOOR,
            f"hard floor: candidate error rate {cand.failures / n_c:.1%} > {floor:.0%} (n={n_c})",
        )
    if stable is None or n_s == 0:
        reason = "no concurrent stable traffic in this layer to compare with"
        return verdict(Action.HOLD, Rule.NO_STABLE_TRAFFIC, reason)

    split = judging.alpha / (max(len(gates.guardrails), 1) * max(data.tests, 1))
    alphas = (split, judging.alpha)
    n_stars = (judging.n_star, judging.ni_n_star)
    results = tuple(_guardrail(g, cand, stable, alphas, n_stars) for g in gates.guardrails)
    harmed = [r for r in results if r.harm]
    if harmed:
        first = harmed[0]
        reason = (
            f"harm on {first.metric}: candidate {first.candidate_rate:.1%} vs stable "
            f"{first.stable_rate:.1%} (n={first.n_candidate}/{first.n_stable})"
        )
        return verdict(Action.ROLLBACK, Rule.HARM, reason, guardrails=results, detail=first.metric)

    srm = None
    if 0.0 < data.ratio < 1.0:
        check = srm_check(n_c, n_s, data.ratio, alpha=judging.srm_alpha)
        srm = {"mismatch": check.mismatch, "observed": check.observed_ratio,
               "expected": check.expected_ratio, "log_bf": check.log_bf}  # fmt: skip
        if check.mismatch:
            reason = (
                f"sample-ratio mismatch: candidate got {check.observed_ratio:.2%} of requests, "
                f"the ratio is {data.ratio:.2%}; check routing before trusting any comparison"
            )
            return verdict(
                Action.HOLD, Rule.SAMPLE_RATIO_MISMATCH, reason, guardrails=results, srm=srm,
                alert=True,
            )  # fmt: skip

    timed_out = data.elapsed >= gates.max_step_time
    if timed_out and gates.timeout_policy == "promote_if_no_harm":
        # A small step limits who is exposed, not how much evidence piles up: in a quiet layer
        # min_samples may never come, so the timeout needs only some data and no harm.
        reason = f"step timeout ({gates.max_step_time:.0f} s) with no harm found (n={n_c})"
        return verdict(Action.PROMOTE, Rule.TIMEOUT_NO_HARM, reason, guardrails=results, srm=srm)
    if n_c < gates.min_samples:
        reason = f"waiting for samples: {n_c} of {gates.min_samples} candidate requests"
        return verdict(
            Action.HOLD, Rule.WAITING_FOR_SAMPLES, reason, guardrails=results, srm=srm,
            alert=timed_out,
        )  # fmt: skip
    if data.elapsed < gates.bake_time:
        reason = f"baking: {data.elapsed:.0f} s of {gates.bake_time:.0f} s at this step"
        return verdict(Action.HOLD, Rule.BAKING, reason, guardrails=results, srm=srm)

    blockers = [r.metric for r in results if r.applicable and not r.non_inferior]
    if judging.qos_gate and (qos["candidate"] or 0.0) < judging.qos_threshold:
        blockers.append(f"qos<{judging.qos_threshold:g}")
    if not blockers:
        return verdict(
            Action.PROMOTE,
            Rule.NON_INFERIOR,
            "no harm; non-inferior on every guardrail",
            guardrails=results,
            srm=srm,
        )
    if timed_out:
        reason = f"step timeout ({gates.max_step_time:.0f} s): not shown non-inferior on " + (
            ", ".join(blockers)
        )
        return verdict(
            Action.HOLD, Rule.TIMEOUT_NOT_NON_INFERIOR, reason, guardrails=results, srm=srm,
            alert=True,
        )  # fmt: skip
    reason = "no harm, not yet shown non-inferior on " + ", ".join(blockers)
    return verdict(
        Action.HOLD, Rule.NOT_YET_NON_INFERIOR, reason, guardrails=results, srm=srm,
        detail=",".join(blockers),
    )  # fmt: skip
