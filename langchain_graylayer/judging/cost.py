"""The cost guardrail: cost per request, candidate vs stable, against a relative budget.

"The candidate may not cost more than 20 % above stable" is a statement about the ratio
``θ = μ_candidate / μ_stable`` of two ratio metrics ``μ = Σy/Σx`` over users (e.g. money and
requests of each user). :func:`compare_relative` tests it on the log scale, where a ratio is a
difference and a skewed, heavy-tailed cost is closer to normal:

* each arm's ``log μ̂`` has the delta-method variance ``Var(μ̂)/μ̂²`` (Deng, Knoblich, Lu,
  "Applying the Delta Method in Metric Analytics", KDD 2018, arXiv 1803.06336: eq. 3 for the
  ratio over users, §3.3 for the percent change), so ``log θ̂ = log μ̂_c − log μ̂_s`` has the sum
  of the two;
* the bounds are the one-sided asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha,
  Kennedy and Ramdas (arXiv 2103.06476, eq. 134) with users as the sample, as for every other
  guardrail (:func:`~langchain_graylayer.judging.stats.cs_halfwidth`), so the test may be
  re-run after every batch; the variance gets the same small-sample guards as
  :func:`~langchain_graylayer.judging.stats.compare_ratios` (each arm at least the larger
  per-user relative variance of the two, the Welch–Satterthwaite t inflation);
* the bounds on ``log θ`` are mapped back to ``θ − 1`` (a relative change: +0.5 is 50 % more).

The margin ``m`` is a budget, so it is the threshold of both tests: **harm** when the lower bound
of ``θ − 1`` is above ``m`` (significantly over budget), **non-inferior** when the upper bound is
below ``m`` (significantly within it). A candidate exactly at the budget is neither.
Lower is better (a cost); pure arithmetic, like the rest of ``judging/``.

:func:`cost_comparison` picks what is compared: money when every request of the step in both
arms was priced (the evidence's ``unpriced`` counter is 0), else input plus output tokens — an
unpriced model's cost is unknown, and counting it as 0 would make a candidate on an unlisted
model look free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.judging.stats import (
    MIN_TRIALS,
    Comparison,
    RatioMoments,
    cs_halfwidth,
)
from langchain_graylayer.store.evidence import ArmTotals

__all__ = ["CostComparison", "arm_moments", "compare_relative", "cost_comparison"]

MONEY, TOKENS = {"cost": 1.0}, {"input_tokens": 1.0, "output_tokens": 1.0}


def _welch_inflation(v_c: float, n_c: int, v_s: float, n_s: int) -> float:
    """``df / (df − 2)``: the variance of a Student t with Welch–Satterthwaite's df."""
    den = v_c * v_c / max(n_c - 1, 1) + v_s * v_s / max(n_s - 1, 1)
    if den <= 0:  # no spread at all: nothing to inflate
        return 1.0
    df = (v_c + v_s) ** 2 / den
    return df / (df - 2) if df > 4 else 2.0


def compare_relative(
    cand: RatioMoments,
    stable: RatioMoments,
    *,
    alpha: float,
    n_star: float,
    margin: float,
    min_users: int = MIN_TRIALS,
) -> Comparison:
    """Anytime-valid harm and non-inferiority tests of ``μ_c / μ_s − 1`` against ``margin``.

    Args:
        cand: Candidate moments (``y``: cost, ``x``: requests, per user); ``stable``: the
            concurrent stable of the same layer and step.
        alpha: Level of each one-sided bound, in (0, 0.5).
        n_star: Tuning N*, in users of both arms.
        margin: The relative budget ``m ≥ 0`` (0.2: up to 20 % more than stable).
        min_users: With fewer users (with requests) in either arm, or a zero cost in either
            arm, the result is inconclusive.

    Returns:
        A :class:`Comparison` on the relative scale: ``estimate``, ``lower`` and ``upper`` are
        ``θ − 1``; inconclusive bounds are ``−1`` and ``inf``.

    Example:
        >>> stable = RatioMoments(400, 400.0, 800, 800.0, 2000, 1000.0)      # 0.5 per request
        >>> costly = RatioMoments(400, 600.0, 800, 1800.0, 2000, 1500.0)     # 0.75 per request
        >>> c = compare_relative(costly, stable, alpha=0.01, n_star=500, margin=0.2)
        >>> round(c.estimate, 2), c.harm, c.non_inferior
        (0.5, True, False)
        >>> same = RatioMoments(400, 400.0, 800, 800.0, 2000, 1000.0)
        >>> c = compare_relative(same, stable, alpha=0.01, n_star=500, margin=0.2)
        >>> c.harm, c.non_inferior, round(c.upper, 2)   # within +20 % needs more users
        (False, False, 0.23)
    """
    if not 0.0 < alpha < 0.5:
        raise ConfigurationError("alpha", alpha, "a level in (0, 0.5)")
    if not n_star > 0:
        raise ConfigurationError("n_star", n_star, "a positive number")
    if not margin >= 0:
        raise ConfigurationError("margin", margin, "a relative margin >= 0 (0.2 = 20 % more)")
    if min_users < 2:
        raise ConfigurationError("min_users", min_users, "an integer >= 2")
    nc = cand.users if cand.x > 0 else 0
    ns = stable.users if stable.x > 0 else 0
    n = (nc, ns)
    reason = None
    for arm, users in (("candidate", nc), ("stable", ns)):
        if users < min_users:
            reason = f"{arm} has {users} users with requests; need at least {min_users} per arm"
            break
    else:
        if not (cand.y > 0 and stable.y > 0):
            reason = "no cost in one of the arms: the ratio is undefined"
    if reason is not None:
        estimate = cand.rate / stable.rate - 1 if nc and ns and stable.y > 0 else math.nan
        return Comparison(estimate, -1.0, math.inf, math.nan, False, False, *n, reason)
    r_c, r_s = cand.rate, stable.rate
    # Under "no difference but scale" both arms' users vary alike relative to their mean.
    unit = max(cand.unit_variance / (r_c * r_c), stable.unit_variance / (r_s * r_s))
    v_c = max(cand.variance / (r_c * r_c), unit / nc)
    v_s = max(stable.variance / (r_s * r_s), unit / ns)
    se = math.sqrt((v_c + v_s) * _welch_inflation(v_c, nc, v_s, ns))
    log_ratio = math.log(r_c) - math.log(r_s)
    hw = cs_halfwidth(se, nc + ns, alpha, n_star, one_sided=True)
    lower, upper = math.expm1(log_ratio - hw), math.expm1(log_ratio + hw)
    harm, non_inferior = lower > margin, upper < margin
    return Comparison(math.expm1(log_ratio), lower, upper, se, harm, non_inferior, *n)


def arm_moments(arm: ArmTotals, numerator: Mapping[str, float], denominator: str) -> RatioMoments:
    """The ratio-metric moments of ``Σ(numerator)/Σ denominator`` over the arm's users, where
    the numerator is a weighted sum of evidence fields, from the arm's sums and products.

    Example:
        >>> from langchain_graylayer.store.evidence import accumulate_users
        >>> arm = accumulate_users([{"requests": 2, "cost": 0.5}, {"requests": 1, "cost": 0.1}])
        >>> m = arm_moments(arm, MONEY, "requests")
        >>> m.users, m.y, m.x, round(m.y_sq, 2), m.x_sq, round(m.xy, 2)
        (2, 0.6, 3.0, 0.26, 5.0, 1.1)
    """
    terms = numerator.items()
    y = math.fsum(c * arm.total(f) for f, c in terms)
    y_sq = math.fsum(cf * cg * arm.product(f, g) for f, cf in terms for g, cg in terms)
    xy = math.fsum(c * arm.product(f, denominator) for f, c in terms)
    users = arm.users if arm.total(denominator) > 0 else 0
    x_sq = arm.product(denominator, denominator)
    return RatioMoments(users, y, arm.total(denominator), y_sq, x_sq, xy)


@dataclass(frozen=True, slots=True)
class CostComparison:
    """One layer's cost per request, candidate vs stable, with the harm and the
    non-inferiority test (``None``: no request in either arm)."""

    unit: str
    """``money`` (the plan's currency) or ``tokens``."""
    candidate: RatioMoments
    stable: RatioMoments
    harm: Comparison | None
    non_inferiority: Comparison | None
    priced: bool
    """Every request of both arms was priced."""


def cost_comparison(
    cand: ArmTotals,
    stable: ArmTotals,
    *,
    alphas: tuple[float, float],
    n_stars: tuple[float, float],
    margin: float,
) -> CostComparison:
    """Cost per request of both arms, compared at ``alphas[0]``/``n_stars[0]`` for harm and at
    ``alphas[1]``/``n_stars[1]`` for non-inferiority, both against the relative ``margin``."""
    priced = cand.total("unpriced") == 0 and stable.total("unpriced") == 0
    money = priced and cand.total("cost") > 0 and stable.total("cost") > 0
    numerator = MONEY if money else TOKENS
    mc, ms = arm_moments(cand, numerator, "requests"), arm_moments(stable, numerator, "requests")
    unit = "money" if money else "tokens"
    if mc.x <= 0 and ms.x <= 0:
        return CostComparison(unit, mc, ms, None, None, priced)
    harm, non_inferiority = (
        compare_relative(mc, ms, alpha=a, n_star=n, margin=margin)
        for a, n in zip(alphas, n_stars, strict=True)
    )
    return CostComparison(unit, mc, ms, harm, non_inferiority, priced)
