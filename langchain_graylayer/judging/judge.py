"""The judge: candidate vs concurrent stable of the same layer and step, one pure function.

:func:`judge` turns one layer's per-arm evidence at the current step — per-user sufficient
statistics, :class:`~langchain_graylayer.store.evidence.ArmTotals` — into a :class:`Verdict`:
``promote``, ``hold`` or ``rollback``, with its reason and, per guardrail, the estimate, the
always-valid interval, the users behind it and what was concluded. Users are the unit of
analysis (what is randomised, and what comes back); ``docs/statistics.md`` says why and how.
The first rule that applies wins:

1. no candidate user in the step → **hold** (silence is never a reason to act);
2. the candidate alone is significantly above a hard floor (error rate over ``max_error_rate``,
   an always-valid one-sample bound with its share of alpha) → **rollback**, unless stable
   fails too (above half the floor) in the same step: an upstream outage;
3. no concurrent stable user → **hold**;
4. the users' split is not what the ratio says, overall or within an activity class
   (sequential SRM, once ``srm_min_users`` are in) → **hold** and alert: a comparison over a
   broken split cannot be trusted, so no guardrail may roll back on it;
5. any guardrail shows significant harm (always-valid one-sided test over users; for rare
   events the exact test on users with an event shares the guardrail's error budget) →
   **rollback**;
6. promotion needs ``min_samples`` candidate users, ``bake_time`` at the step, the longest
   feedback ``delay`` of the guardrails past the bake, and non-inferiority within each
   guardrail's margin → **promote**; otherwise **hold**, until ``max_step_time``, when the
   timeout policy promotes if no harm was found, at least ``min_users_at_timeout`` candidate
   users were seen — absence of harm in a handful of users is not evidence — and no guardrail
   is *behind* (trailing by more than its margin at the plan's alpha), or holds with an alert
   saying what would unblock it.

The source article's QoS score is computed for both arms and reported in every verdict; it gates
promotion only when the plan says so (``judging.qos_gate``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.judging.cost import cost_comparison
from langchain_graylayer.judging.qos import QosInputs, QosWeights, qos_score
from langchain_graylayer.judging.stats import (
    Comparison,
    RatioMoments,
    compare_ratios,
    exceeds_floor,
    rare_event_harm,
    srm_check_strata,
)
from langchain_graylayer.plan.evaluators import EvaluatorMetric
from langchain_graylayer.plan.gates import Gates, Guardrail, GuardrailMetric, Judging
from langchain_graylayer.store.evidence import ArmTotals

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
    """Hold: fewer than ``min_samples`` candidate users."""
    WAITING_FOR_FEEDBACK = "waiting_for_feedback"
    """Hold: a guardrail's feedback arrives late and its delay has not passed yet."""
    TIMEOUT_TOO_FEW_USERS = "timeout_too_few_users"
    """Hold and alert: the step timed out with too few candidate users to call it harmless."""
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
    behind: bool
    """The candidate's estimate trails stable by more than the margin, and it is worse than
    stable at the plan's (unsplit) alpha: not enough to roll back, enough to stop a timeout
    from promoting."""
    note: str
    """What was concluded, in words."""
    unit: str = ""
    """A relative metric's unit (``cost_per_request``: the plan's currency, or ``tokens``),
    whose estimate and bounds are then relative changes (+0.5: 50 % more than stable); empty
    for a rate, whose are differences in rate units."""


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
    def key(self) -> tuple[Action, Rule, str, bool]:
        """What makes a verdict news: a verdict with the same key as the last one is remembered,
        not audited again (a hold that persists for hours is one audit entry; the same hold
        turning into an alert at the step's timeout is news)."""
        return self.action, self.rule, self.detail, self.alert

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
    candidate: ArmTotals | None
    """Candidate evidence of the current step (``None``: no user yet)."""
    stable: ArmTotals | None
    ratio: float
    elapsed: float
    """Seconds since the step started."""
    tests: int = 1
    """How many steps' worth of tests share ``judging.alpha`` (Bonferroni): the plan's total
    number of steps across layers, so the whole rollout's false-rollback rate stays ≤ alpha."""
    currency: str = "money"
    """The plan's price table's currency (how a cost in money is shown)."""


_METRIC_FIELDS: dict[GuardrailMetric, tuple[dict[str, float], str, str | None]] = {
    # metric: (numerator as a combination of per-user fields, denominator, rare-event field)
    GuardrailMetric.COMPLETION_RATE: ({"completions": 1.0}, "requests", None),
    GuardrailMetric.TOOL_SUCCESS_RATE: (
        {"tool_calls": 1.0, "tool_errors": -1.0},
        "tool_calls",
        None,
    ),
    GuardrailMetric.ERROR_RATE: ({"failures": 1.0}, "requests", "failures"),
    GuardrailMetric.BAD_FEEDBACK_RATE: ({"bad": 1.0}, "requests", "bad"),
    GuardrailMetric.COMPLAINT_RATE: ({"complaints": 1.0}, "requests", "complaints"),
    GuardrailMetric.SLOW_RATE: ({"slow": 1.0}, "requests", None),
    # in money; judging/cost.py compares tokens instead when a request was unpriced
    GuardrailMetric.COST_PER_REQUEST: ({"cost": 1.0}, "requests", None),
}


def _fields(metric: GuardrailMetric | EvaluatorMetric) -> tuple[dict[str, float], str, str | None]:
    """The metric's numerator, denominator and rare-event field: an evaluator's pass rate is
    its passes over its evaluated runs (a run not evaluated counts in neither), and its users
    with a failure are its rare events."""
    if isinstance(metric, EvaluatorMetric):
        return {metric.pass_field: 1.0}, metric.count_field, metric.fail_field
    return _METRIC_FIELDS[metric]


def moments(arm: ArmTotals, metric: GuardrailMetric | EvaluatorMetric) -> RatioMoments:
    """The ratio-metric moments of ``metric`` over the arm's users, from its sums and products.

    Example:
        >>> from langchain_graylayer.store.evidence import accumulate_users
        >>> arm = accumulate_users([{"requests": 2, "completions": 2}, {"requests": 1}])
        >>> m = moments(arm, GuardrailMetric.COMPLETION_RATE)
        >>> m.users, m.y, m.x, m.y_sq, m.x_sq, m.xy
        (2, 2.0, 3.0, 4.0, 5.0, 4.0)
    """
    numerator, denominator, _ = _fields(metric)
    terms = numerator.items()
    y = math.fsum(c * arm.total(f) for f, c in terms)
    y_sq = math.fsum(cf * cg * arm.product(f, g) for f, cf in terms for g, cg in terms)
    xy = math.fsum(c * arm.product(f, denominator) for f, c in terms)
    x_sq = arm.product(denominator, denominator)
    users = arm.users if arm.total(denominator) > 0 else 0
    return RatioMoments(users, y, arm.total(denominator), y_sq, x_sq, xy)


def _guardrail(
    guardrail: Guardrail,
    cand: ArmTotals,
    stable: ArmTotals,
    ratio: float,
    alphas: tuple[float, float],
    n_stars: tuple[float, float],
) -> GuardrailResult:
    """Harm at the split ``alphas[0]`` (a false rollback is costly), non-inferiority at the
    unsplit ``alphas[1]`` (a wrong promotion only moves one step and stays watched). A rare
    metric spends its harm budget half on the confidence sequence, half on the exact test of
    users with an event, so the family-wise bound still adds up to ``alphas[0]``."""
    metric = guardrail.metric
    if metric.relative:
        return _cost(guardrail, cand, stable, alphas, n_stars)
    mc, ms = moments(cand, metric), moments(stable, metric)
    rare_field = _fields(metric)[2]
    harm_alpha = alphas[0] / 2 if rare_field else alphas[0]

    def result(
        comparison: Comparison | None,
        harm: bool,
        non_inferior: bool,
        note: str,
        behind: bool = False,
    ) -> GuardrailResult:
        return GuardrailResult(
            metric=metric.value,
            candidate_rate=mc.rate,
            stable_rate=ms.rate,
            estimate=comparison.estimate if comparison else math.nan,
            lower=comparison.lower if comparison else -1.0,
            upper=comparison.upper if comparison else 1.0,
            n_candidate=mc.users,
            n_stable=ms.users,
            margin=guardrail.margin,
            harm=harm,
            non_inferior=non_inferior,
            applicable=comparison is not None,
            behind=behind,
            note=note,
        )

    if mc.x <= 0 and ms.x <= 0:
        return result(None, False, False, "not applicable: no trials in either arm")

    def compare(alpha: float, tuning: float) -> Comparison:
        return compare_ratios(
            mc, ms, alpha=alpha, n_star=tuning, higher_is_better=metric.higher_is_better,
            margin=guardrail.margin,
        )  # fmt: skip

    harm_test, ni_test = compare(harm_alpha, n_stars[0]), compare(alphas[1], n_stars[1])
    harm, note = harm_test.harm, harm_test.inconclusive_reason or ""
    if rare_field and not harm and 0.0 < ratio < 1.0:
        # Each user with an event lands in the candidate with probability `ratio` when the
        # versions do not differ (sticky buckets): an exact test, whatever the rate's shape.
        rare = rare_event_harm(
            cand.positive(rare_field), mc.users, stable.positive(rare_field), ms.users,
            harm_alpha, k=_RARE_K, pi=ratio,
        )  # fmt: skip
        if rare.harm:
            harm = True
            note = f"exact test: {rare.observed_share:.1%} of users with events vs {rare.pi:.1%}"
    if harm:
        worse = "lower" if metric.higher_is_better else "higher"
        note = note or f"significantly {worse} than stable"
    elif not note:
        note = "non-inferior" if ni_test.non_inferior else "not yet shown non-inferior"
    # Behind: worse than the margin on its face, and worse than stable at the plan's alpha.
    if metric.higher_is_better:
        behind = ni_test.estimate < -guardrail.margin and ni_test.upper < 0
    else:
        behind = ni_test.estimate > guardrail.margin and ni_test.lower > 0
    return result(harm_test, harm, ni_test.non_inferior and not harm, note, behind)


def _cost(
    guardrail: Guardrail,
    cand: ArmTotals,
    stable: ArmTotals,
    alphas: tuple[float, float],
    n_stars: tuple[float, float],
) -> GuardrailResult:
    """``cost_per_request`` against its relative budget (``judging/cost.py``)."""
    c = cost_comparison(cand, stable, alphas=alphas, n_stars=n_stars, margin=guardrail.margin)
    harm_test, ni_test, budget = c.harm, c.non_inferiority, guardrail.margin
    harm = harm_test is not None and harm_test.harm
    non_inferior = ni_test is not None and ni_test.non_inferior and not harm
    note, behind = "not applicable: no requests in either arm", False
    if harm_test is not None and ni_test is not None:
        note = harm_test.inconclusive_reason or (
            f"significantly more than {budget:.0%} above stable" if harm
            else "within budget" if non_inferior else "not yet shown within budget"
        )  # fmt: skip
        note += "" if c.priced else " (in tokens: a request had an unpriced model)"
        behind = ni_test.estimate > budget and ni_test.lower > 0
    return GuardrailResult(
        metric=guardrail.metric.value, candidate_rate=c.candidate.rate,
        stable_rate=c.stable.rate, estimate=harm_test.estimate if harm_test else math.nan,
        lower=harm_test.lower if harm_test else -1.0,
        upper=harm_test.upper if harm_test else math.inf, n_candidate=c.candidate.users,
        n_stable=c.stable.users, margin=budget, harm=harm, non_inferior=non_inferior,
        applicable=harm_test is not None, behind=behind, note=note, unit=c.unit,
    )  # fmt: skip


def _values(result: GuardrailResult, currency: str) -> str:
    """A guardrail's two arms in words (a rate as a percentage, a cost per request)."""
    if not result.unit:
        return f"candidate {result.candidate_rate:.1%} vs stable {result.stable_rate:.1%}"
    unit = currency if result.unit == "money" else result.unit
    return (
        f"candidate {result.candidate_rate:.4g} vs stable {result.stable_rate:.4g} {unit} per "
        f"request ({result.estimate:+.0%}, budget +{result.margin:.0%})"
    )


_RARE_K = 4.0
"""Prior concentration of the rare-event test: a diffuse alternative, powered for a several-fold
rise in a rare event within hours (see ``docs/statistics.md``)."""


def qos_inputs(arm: ArmTotals, *, no_tool_calls: float = 1.0) -> QosInputs:
    """The article's QoS inputs of one arm. Without requests every rate reads as zero (the
    article's way, which its rule then punishes); ``no_tool_calls`` is the tool success of an arm
    that called no tool. NPS is approximated from the mean feedback score (5 when none)."""
    n = arm.total("requests")
    scores = arm.total("scores")
    mean_score = arm.total("score_sum") / scores if scores else 5

    def share(name: str) -> float:
        return min(arm.total(name) / n, 1.0) if n else 0.0

    tools = arm.total("tool_calls")
    return QosInputs(
        bad_rate=share("bad"),
        nps=max(-100.0, min(100.0, (mean_score - 5) * 20)),
        availability=1 - share("failures") if n else 0.0,
        latency_s=arm.total("latency_seconds") / n if n else 0.0,
        tool_success=1 - arm.total("tool_errors") / tools if tools else no_tool_calls,
        completion=share("completions"),
        complaint_rate=share("complaints"),
    )


def _qos(arm: ArmTotals | None, judging: Judging) -> float | None:
    """The article's QoS of one arm; ``None`` without requests (never scored as zeros)."""
    if arm is None or arm.total("requests") == 0:
        return None
    weights = QosWeights(*judging.qos_weights)
    return qos_score(qos_inputs(arm), weights, max_latency_s=judging.max_latency).qos


def judge(data: JudgeInput) -> Verdict:
    """Judge one layer's current step. Pure: same input, same verdict.

    Example:
        >>> from langchain_graylayer.plan.gates import Gates, Judging
        >>> from langchain_graylayer.store.evidence import accumulate_users
        >>> bad = accumulate_users([{"requests": 2, "completions": 1}] * 150)   # 50 %
        >>> good = accumulate_users([{"requests": 2, "completions": 2}] * 1200
        ...                         + [{"requests": 2}] * 150)                   # 89 %
        >>> v = judge(JudgeInput("normal", Gates(), Judging(), bad, good, 0.1, 600.0))
        >>> v.action.value, v.rule.value
        ('rollback', 'harm')
        >>> v.reason
        'harm on completion_rate: candidate 50.0% vs stable 88.9% (users 150/1350)'
    """
    gates, judging = data.gates, data.judging
    cand, stable = data.candidate, data.stable
    n_c = cand.users if cand else 0
    n_s = stable.users if stable else 0
    qos = {"candidate": _qos(cand, judging), "stable": _qos(stable, judging)}

    def verdict(action: Action, rule: Rule, reason: str, **extra: Any) -> Verdict:
        where = (data.layer, data.ratio, data.elapsed, n_c, n_s)
        return Verdict(action, rule, reason, *where, qos=qos, **extra)

    timed_out = data.elapsed >= gates.max_step_time
    if cand is None or n_c == 0:
        reason = "no candidate user in this step yet"
        if timed_out:
            reason = (
                f"no candidate user in this step after {data.elapsed:.0f} s (the step's bucket "
                f"range, {data.ratio:.2%} of the layer, may hold nobody who comes): raise the "
                "step, or promote by hand"
            )
        return verdict(Action.HOLD, Rule.NO_CANDIDATE_TRAFFIC, reason, alert=timed_out)
    # Each step's tests share alpha: its guardrails' harm tests and the hard floor.
    split = judging.alpha / ((len(gates.guardrails) + 1) * max(data.tests, 1))
    floor = judging.max_error_rate
    errors_c = moments(cand, GuardrailMetric.ERROR_RATE)
    # The floor judges the candidate alone, unless stable is failing too in the same layer and
    # step: then it is an outage upstream of both versions, and the comparative tests decide.
    errors_s = moments(stable, GuardrailMetric.ERROR_RATE) if stable else None
    stable_failing = bool(floor and errors_s and errors_s.x and errors_s.rate > floor / 2)
    if floor is not None and not stable_failing:
        broken, lower = exceeds_floor(
            errors_c, floor, alpha=split, n_star=judging.n_star,
            min_users=judging.floor_min_samples,
        )  # fmt: skip
        if broken:
            return verdict(
                Action.ROLLBACK,
                Rule.HARD_FLOOR,
                f"hard floor: candidate error rate {errors_c.rate:.1%}, significantly above "
                f"{floor:.0%} (lower bound {lower:.1%}, {n_c} users)",
            )
    if stable is None or n_s == 0:
        reason = "no concurrent stable user in this layer to compare with"
        return verdict(Action.HOLD, Rule.NO_STABLE_TRAFFIC, reason, alert=timed_out)

    srm = None
    if 0.0 < data.ratio < 1.0 and n_c + n_s >= judging.srm_min_users:
        check = srm_check_strata(cand.classes, stable.classes, data.ratio, judging.srm_alpha)
        srm = {"mismatch": check.mismatch, "observed": check.observed_ratio,
               "expected": check.expected_ratio, "log_bf": check.log_bf}  # fmt: skip
        if check.mismatch:
            reason = (
                f"sample-ratio mismatch: candidate got {check.observed_ratio:.2%} of users "
                f"(ratio {data.ratio:.2%}), or a skewed share of some activity class; check "
                "routing before trusting any comparison"
            )
            return verdict(
                Action.HOLD, Rule.SAMPLE_RATIO_MISMATCH, reason, srm=srm, alert=True,
            )  # fmt: skip

    alphas = (split, judging.alpha)
    n_stars = (judging.n_star, judging.ni_n_star)
    results = tuple(
        _guardrail(g, cand, stable, data.ratio, alphas, n_stars) for g in gates.guardrails
    )
    harmed = [r for r in results if r.harm]
    if harmed:
        first = harmed[0]
        reason = (
            f"harm on {first.metric}: {_values(first, data.currency)} "
            f"(users {first.n_candidate}/{first.n_stable})"
        )
        return verdict(
            Action.ROLLBACK, Rule.HARM, reason, guardrails=results, srm=srm, detail=first.metric
        )

    if data.elapsed < gates.bake_time:  # (a timed-out step has baked: validated)
        reason = f"baking: {data.elapsed:.0f} s of {gates.bake_time:.0f} s at this step"
        return verdict(Action.HOLD, Rule.BAKING, reason, guardrails=results, srm=srm)
    late = max((g.delay for g in gates.guardrails), default=0.0)
    if data.elapsed < gates.bake_time + late:
        reason = (
            f"waiting for late feedback: {data.elapsed:.0f} s of {gates.bake_time + late:.0f} s "
            "(the bake time plus the longest guardrail delay)"
        )
        return verdict(
            Action.HOLD, Rule.WAITING_FOR_FEEDBACK, reason, guardrails=results, srm=srm,
            alert=timed_out,
        )  # fmt: skip
    if timed_out and gates.timeout_policy == "promote_if_no_harm":
        if n_c < gates.min_users_at_timeout:
            reason = (
                f"step timeout ({gates.max_step_time:.0f} s) with only {n_c} candidate users of "
                f"the {gates.min_users_at_timeout} needed to call it harmless: wait longer, "
                "raise the step, or promote by hand"
            )
            return verdict(Action.HOLD, Rule.TIMEOUT_TOO_FEW_USERS, reason, guardrails=results,
                           srm=srm, alert=True)  # fmt: skip
        # No harm found is not "no harm" when the candidate trails by more than the margin and
        # is worse at the plan's alpha (a looser level than the harm tests').
        behind = [r.metric for r in results if r.applicable and r.behind]
        if not behind:
            reason = (
                f"step timeout ({gates.max_step_time:.0f} s) with no harm found "
                f"({n_c} candidate users)"
            )
            return verdict(
                Action.PROMOTE, Rule.TIMEOUT_NO_HARM, reason, guardrails=results, srm=srm
            )
        reason = (
            f"step timeout ({gates.max_step_time:.0f} s): no harm proven, but the candidate "
            f"trails stable by more than the margin on {', '.join(behind)}; holding until the "
            "evidence settles it, or a human does"
        )
        return verdict(Action.HOLD, Rule.TIMEOUT_NOT_NON_INFERIOR, reason, guardrails=results,
                       srm=srm, alert=True, detail=",".join(behind))  # fmt: skip
    if n_c < gates.min_samples:
        reason = f"waiting for samples: {n_c} of {gates.min_samples} candidate users"
        return verdict(
            Action.HOLD, Rule.WAITING_FOR_SAMPLES, reason, guardrails=results, srm=srm,
            alert=timed_out,
        )  # fmt: skip

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
