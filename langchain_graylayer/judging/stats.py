"""Always-valid statistics for judging a candidate against the concurrent stable version.

Pure functions of sufficient statistics (counts, means, variances). Every test may be re-run after
every batch ("peeking") without inflating its error rate. Intervals and e-values come from the
normal-mixture martingale, which is Robbins' (1970) mixture, Johari et al.'s mSPRT (arXiv
1512.04922), Waudby-Smith et al.'s asymptotic confidence sequence (AsympCS, arXiv 2103.06476) and
GrowthBook ``gbstats``' sequential tests all at once. Rare events use the conditional Beta-binomial
test and sample-ratio mismatch (SRM) the Dirichlet-multinomial Bayes factor of Lindon & Malek
(arXiv 2011.03567).

Differences are always ``candidate − stable`` on the metric's own scale; ``higher_is_better``
says which direction is harm. Too little or missing data is *inconclusive*, never harm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_graylayer.errors import ConfigurationError

__all__ = [
    "MIN_TRIALS",
    "Comparison",
    "RareEventResult",
    "RatioMoments",
    "SRMResult",
    "compare_ratios",
    "cs_halfwidth",
    "event_split_log_bf",
    "exceeds_floor",
    "mixture_rho2",
    "rare_event_harm",
    "srm_check",
    "srm_check_strata",
    "srm_log_bf",
]

MIN_TRIALS = 10
"""Default minimum observations per arm: below ~10 the normal approximation behind the AsympCS is
poor for skewed rates; a collapse (0.85 → 0.3) is still caught at the first look past the guard."""


def _check_alpha(alpha: float, one_sided: bool, field: str = "alpha") -> None:
    upper = 0.5 if one_sided else 1.0
    if not 0.0 < alpha < upper:
        raise ConfigurationError(field, alpha, f"a level in (0, {upper:g})")


def _check_positive(field: str, value: float) -> None:
    if not value > 0:
        raise ConfigurationError(field, value, "a positive number")


# --- normal-mixture confidence sequence and e-value ---------------------------------------------


def mixture_rho2(alpha: float, n_star: float, one_sided: bool) -> float:
    """Mixing variance ρ² that makes the confidence sequence tightest at ``n_star`` units.

    ``ρ² = (−2 ln a + ln(1 − 2 ln a)) / N*`` with ``a = α`` (two-sided) or ``a = 2α``
    (one-sided): Waudby-Smith et al. (arXiv 2103.06476) eq. (161), GrowthBook ``sequential_rho``.
    Johari et al.'s mixing variance is ``τ² = 2·V·ρ²`` for a per-arm outcome variance ``V``.

    Args:
        alpha: Level in (0, 1); in (0, 0.5) when ``one_sided``.
        n_star: N*, total units (both arms) at which the sequence is tightest: about the sample
            at which a decision is expected.
        one_sided: Tune for a one-sided bound.

    Example:
        >>> round(mixture_rho2(0.05, 2000, one_sided=False), 6)
        0.003968
    """
    _check_alpha(alpha, one_sided)
    _check_positive("n_star", n_star)
    log_a = math.log(2 * alpha if one_sided else alpha)
    return (-2 * log_a + math.log(1 - 2 * log_a)) / n_star


def cs_halfwidth(
    se: float, n: float, alpha: float, n_star: float, one_sided: bool = False
) -> float:
    """Half-width of the asymptotic confidence sequence for an estimate with standard error ``se``.

    With ``x = n·ρ²`` (:func:`mixture_rho2`), the two-sided half-width is Waudby-Smith et
    al. eq. (9), GrowthBook ``sequential_interval_halfwidth``:
    ``se·sqrt(2(x + 1)/x·ln(sqrt(x + 1)/α))``; the one-sided one is eq. (134),
    ``sequential_interval_halfwidth_one_sided``:
    ``se·sqrt(2(x + 1)/x·ln(1 + sqrt(x + 1)/(2α)))``. (GrowthBook writes ``s² = se²·n`` and
    ``2(nρ² + 1)/(n²ρ²)``, the same thing.) The two-sided form is Johari et al.'s always-valid CI.

    Args:
        se: Standard error of the estimated difference.
        n: Total units in both arms so far.
        alpha: Level (of each side when ``one_sided``).
        n_star: Tuning N*, same units as ``n``.
        one_sided: Half-width of a one-sided (1 − α) bound.

    Example:
        >>> round(cs_halfwidth(1.0, 1000, 0.05, 1000), 2)  # half-width / SE at n = N*
        3.04
        >>> round(cs_halfwidth(1.0, 1000, 0.05, 1000, one_sided=True), 2)
        2.78
    """
    _check_positive("n", n)
    if not se >= 0:
        raise ConfigurationError("se", se, "a standard error >= 0")
    x = n * mixture_rho2(alpha, n_star, one_sided)
    if one_sided:
        log_term = math.log(1 + math.sqrt(x + 1) / (2 * alpha))
    else:
        log_term = math.log(math.sqrt(x + 1) / alpha)
    return se * math.sqrt(2 * (x + 1) / x * log_term)


# --- two-arm comparisons -------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """An always-valid comparison of candidate vs stable on one metric.

    ``lower`` and ``upper`` are each a one-sided (1 − α) always-valid bound on
    ``candidate − stable`` (together a (1 − 2α) confidence sequence): harm uses one side,
    non-inferiority the other. When inconclusive they are ``−1, 1`` for proportions and
    ``−inf, inf`` for means, and ``harm`` and ``non_inferior`` are False.

    Example:
        >>> bad = RatioMoments(100, 30, 100, 30, 100, 30)          # 30 % of 100 users
        >>> good = RatioMoments(1000, 850, 1000, 850, 1000, 850)   # 85 % of 1 000 users
        >>> c = compare_ratios(bad, good, alpha=0.05, n_star=1100, higher_is_better=True,
        ...                    margin=0.02)
        >>> c.harm, c.non_inferior, round(c.estimate, 2)
        (True, False, -0.55)
    """

    estimate: float
    """Observed ``candidate − stable`` (NaN when an arm has no data)."""
    lower: float
    upper: float
    se: float
    """Standard error behind the bounds (NaN when inconclusive)."""
    harm: bool
    """Significant harm: ``upper < 0`` if higher is better, else ``lower > 0``."""
    non_inferior: bool
    """Within the margin: ``lower > −margin`` if higher is better, else ``upper < margin``."""
    n_candidate: int
    n_stable: int
    inconclusive_reason: str | None = None
    """Why nothing can be concluded yet; ``None`` when the bounds are meaningful."""

    @property
    def inconclusive(self) -> bool:
        """True when the data did not allow a conclusion."""
        return self.inconclusive_reason is not None


_Settings = tuple[float, float, bool, float]  # alpha, n_star, higher_is_better, margin


def _compare(
    estimate: float, se: float, n: tuple[int, int], cfg: _Settings, clip: float, why: str | None
) -> Comparison:
    """Shared tail of the comparisons: one-sided AsympCS bounds, then the harm and NI rules."""
    (nc, ns), (alpha, n_star, higher_is_better, margin) = n, cfg
    if why is not None:
        return Comparison(estimate, -clip, clip, math.nan, False, False, nc, ns, why)
    hw = cs_halfwidth(se, nc + ns, alpha, n_star, one_sided=True)
    lower, upper = max(estimate - hw, -clip), min(estimate + hw, clip)
    if higher_is_better:
        harm, non_inferior = upper < 0, lower > -margin
    else:
        harm, non_inferior = lower > 0, upper < margin
    return Comparison(estimate, lower, upper, se, harm, non_inferior, nc, ns)


def _guard(cfg: _Settings, min_n: tuple[str, int], nc: int, ns: int) -> str | None:
    """Validate the settings; return why the data is insufficient, or None."""
    alpha, n_star, _, margin = cfg
    _check_alpha(alpha, one_sided=True)
    _check_positive("n_star", n_star)
    if not margin >= 0:
        raise ConfigurationError("margin", margin, "a non-inferiority margin >= 0")
    if min_n[1] < 1:
        raise ConfigurationError(min_n[0], min_n[1], "an integer >= 1")
    if nc < 0 or ns < 0:
        raise ConfigurationError("n", (nc, ns), "observation counts >= 0")
    for arm, n in (("candidate", nc), ("stable", ns)):
        if n < min_n[1]:
            return f"{arm} has {n} observations; need at least {min_n[1]} per arm"
    return None


@dataclass(frozen=True, slots=True)
class RatioMoments:
    """One arm of a ratio metric ``Σy / Σx`` over users: the sums the delta method needs.

    ``y`` and ``x`` are per-user totals (e.g. completions and requests of each user in the
    step); ``y_sq``, ``x_sq`` and ``xy`` are Σy², Σx² and Σx·y over users.

    Example:
        >>> m = RatioMoments(users=3, y=5, x=6, y_sq=13, x_sq=14, xy=13)  # (2,2) (3,3) (0,1)
        >>> round(m.rate, 4), round(m.variance, 5)
        (0.8333, 0.04398)
    """

    users: int
    y: float
    x: float
    y_sq: float
    x_sq: float
    xy: float

    @property
    def rate(self) -> float:
        """``Σy / Σx`` (NaN without trials)."""
        return self.y / self.x if self.x > 0 else math.nan

    @property
    def unit_variance(self) -> float:
        """Variance of one user's linearised contribution, ``(s_yy − 2r·s_xy + r²·s_xx) / x̄²``
        with sample (co)variances (divisor n − 1): :attr:`variance` times ``n``. NaN with fewer
        than two users or no trials."""
        n = self.users
        if n < 2 or self.x <= 0:
            return math.nan
        y_bar, x_bar, r = self.y / n, self.x / n, self.y / self.x
        s_yy = (self.y_sq - n * y_bar * y_bar) / (n - 1)
        s_xx = (self.x_sq - n * x_bar * x_bar) / (n - 1)
        s_xy = (self.xy - n * x_bar * y_bar) / (n - 1)
        return max(s_yy - 2 * r * s_xy + r * r * s_xx, 0.0) / (x_bar * x_bar)

    @property
    def variance(self) -> float:
        """Delta-method variance of :attr:`rate` over users (Deng et al. 2018, arXiv 1803.06336,
        eq. 3): with per-user means ``ȳ, x̄``, sample (co)variances ``s_yy, s_xx, s_xy``
        (divisor n − 1) and ``r = ȳ / x̄``: ``(s_yy − 2r·s_xy + r²·s_xx) / (n·x̄²)``.
        NaN with fewer than two users or no trials."""
        return self.unit_variance / self.users if self.users >= 2 else math.nan

    def binomial_floor(self) -> float:
        """The variance the rate would have if every trial were independent, from the
        Laplace-smoothed rate: the floor under the delta method (at 0 events in both arms it
        still gives a width; clustering only ever adds to it on average)."""
        p = min(max((self.y + 1) / (self.x + 2), 0.0), 1.0)
        return p * (1 - p) / max(self.x, 1.0)


def _welch_df(v_c: float, n_c: int, v_s: float, n_s: int) -> float:
    """Welch–Satterthwaite degrees of freedom of a difference of two estimated variances."""
    den = v_c * v_c / max(n_c - 1, 1) + v_s * v_s / max(n_s - 1, 1)
    return (v_c + v_s) ** 2 / den if den > 0 else math.inf


def compare_ratios(
    cand: RatioMoments,
    stable: RatioMoments,
    *,
    alpha: float,
    n_star: float,
    higher_is_better: bool,
    margin: float,
    min_users: int = MIN_TRIALS,
) -> Comparison:
    """Anytime-valid harm and non-inferiority tests for a ratio metric, with users as the unit.

    Users are what is randomised, and a user's requests are not independent of each other: the
    variance of ``candidate − stable`` is the sum of each arm's delta-method variance
    (:attr:`RatioMoments.variance`; never below the larger of the two arms' per-user variances
    over the arm's users, nor :meth:`RatioMoments.binomial_floor`), inflated
    by ``df / (df − 2)`` — the variance of a Student t with the Welch–Satterthwaite degrees of
    freedom — so that a few dozen users, whose variance is itself uncertain, do not look like a
    thousand. The bounds are the one-sided asymptotic confidence sequence (Waudby-Smith et
    al., arXiv 2103.06476, eq. 134) with the sample counted in users, clipped to [−1, 1].

    Args:
        cand: Candidate moments; ``stable``: the concurrent stable of the same layer and step.
        alpha: Level of each one-sided bound, in (0, 0.5).
        n_star: Tuning N*, in users of both arms (:func:`mixture_rho2`).
        higher_is_better: True for success rates, False for failure rates.
        margin: Non-inferiority margin δ ≥ 0 in rate units.
        min_users: With fewer users with trials in either arm the result is inconclusive.

    Example:
        >>> bad = RatioMoments(40, 40, 80, 60, 180, 95)      # 50 % over 40 users
        >>> good = RatioMoments(400, 680, 800, 1300, 1800, 1500)  # 85 % over 400 users
        >>> c = compare_ratios(bad, good, alpha=0.01, n_star=200, higher_is_better=True,
        ...                    margin=0.03)
        >>> c.harm, round(c.estimate, 2)
        (True, -0.35)
    """
    nc, ns = cand.users, stable.users
    cfg = (alpha, n_star, higher_is_better, margin)
    reason = _guard(
        cfg, ("min_users", min_users), nc if cand.x > 0 else 0, ns if stable.x > 0 else 0
    )
    estimate = cand.rate - stable.rate if cand.x > 0 and stable.x > 0 else math.nan
    se = math.nan
    if reason is None:
        # Under "no difference" both arms' users vary alike: each arm's variance is at least
        # the larger per-user variance of the two, so a small arm whose few users happened to
        # agree (all succeeded) does not pass for a precise one.
        unit = max(cand.unit_variance, stable.unit_variance)
        v_c = max(cand.variance, unit / nc, cand.binomial_floor())
        v_s = max(stable.variance, unit / ns, stable.binomial_floor())
        df = _welch_df(v_c, nc, v_s, ns)
        inflation = df / (df - 2) if df > 4 else 2.0
        se = math.sqrt((v_c + v_s) * inflation)
    return _compare(estimate, se, (nc, ns), cfg, 1.0, reason)


def exceeds_floor(
    arm: RatioMoments, floor: float, *, alpha: float, n_star: float, min_users: int = MIN_TRIALS
) -> tuple[bool, float]:
    """Is the arm's rate significantly above ``floor``? (and the always-valid lower bound).

    A one-sample test on the arm alone, over users: the one-sided asymptotic confidence
    sequence (Waudby-Smith et al., eq. 134) around ``Σy/Σx`` with the delta-method variance
    (never below the binomial one). A raw "rate > floor" on a few unlucky users is not
    evidence; this bound is, at every look.

    Example:
        >>> failing = RatioMoments(100, 100, 200, 100, 400, 200)   # 50 % over 100 users
        >>> exceeds_floor(failing, 0.2, alpha=0.001, n_star=100)[0]
        True
        >>> exceeds_floor(RatioMoments(8, 3, 8, 3, 8, 3), 0.2, alpha=0.001, n_star=100)[0]
        False
    """
    _check_alpha(alpha, one_sided=True)
    if arm.users < min_users or arm.x <= 0:
        return False, math.nan
    variance = max(arm.variance, arm.binomial_floor())
    lower = arm.rate - cs_halfwidth(math.sqrt(variance), arm.users, alpha, n_star, one_sided=True)
    return lower > floor, lower


# --- rare events and sample-ratio mismatch (Lindon & Malek) ------------------------------------


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def event_split_log_bf(x_cand: int, x_stable: int, pi: float, k: float = 100.0) -> float:
    """Log Bayes factor against "events split between the arms in proportion ``pi``".

    If the candidate has a share π of the exposure and both arms the same per-request event
    intensity, each event lands in the candidate with probability π whatever the (bursty,
    diurnal) total rate: Lindon & Malek's conditional test for counting processes (arXiv
    2011.03567). With a Beta(kπ, k(1 − π)) mixture over the alternative,
    ``BF = B(kπ + x_c, k(1 − π) + x_s) / B(kπ, k(1 − π)) / (π^x_c·(1 − π)^x_s)``. On cumulative
    counts with a fixed π it is a test martingale; restart it when π changes.

    Args:
        x_cand: Events in the candidate arm.
        x_stable: Events in the stable arm.
        pi: Candidate exposure share in (0, 1), e.g. ``req_cand / (req_cand + req_stable)``.
        k: Prior concentration; larger means an alternative closer to π.

    Example:
        >>> event_split_log_bf(0, 0, 0.1), round(event_split_log_bf(10, 20, 0.1), 3)
        (0.0, 1.509)
    """
    if not 0.0 < pi < 1.0:
        raise ConfigurationError("pi", pi, "a candidate exposure share in (0, 1)")
    _check_positive("k", k)
    if x_cand < 0 or x_stable < 0:
        raise ConfigurationError("events", (x_cand, x_stable), "counts >= 0")
    a, b = k * pi, k * (1 - pi)
    return (
        _log_beta(a + x_cand, b + x_stable)
        - _log_beta(a, b)
        - x_cand * math.log(pi)
        - x_stable * math.log(1 - pi)
    )


@dataclass(frozen=True)
class RareEventResult:
    """Outcome of :func:`rare_event_harm`.

    Example:
        >>> r = rare_event_harm(30, 1000, 20, 9000, alpha=0.05)
        >>> r.harm, r.pi, r.observed_share
        (True, 0.1, 0.6)
    """

    harm: bool
    """The candidate has significantly more events than its exposure share."""
    log_bf: float
    pi: float
    """Candidate exposure share (NaN when an arm had no exposure)."""
    observed_share: float
    """Candidate share of the events (NaN without events)."""
    inconclusive_reason: str | None = None


def rare_event_harm(
    x_cand: int,
    n_cand: int,
    x_stable: int,
    n_stable: int,
    alpha: float,
    k: float = 100.0,
    pi: float | None = None,
) -> RareEventResult:
    """One-sided harm test for a rare bad event (errors, thumbs-down, complaints).

    ``π = n_cand/(n_cand + n_stable)``; harm iff :func:`event_split_log_bf` ≥ ``ln(1/α)`` and
    the candidate's share of the events exceeds π (fewer events than its share is never harm).
    The Bayes factor is a test martingale under H0, so by Ville's inequality the false-harm
    probability over any monitoring schedule is at most α. It is exact at small counts, where
    the normal-approximation confidence sequence is not.

    Args:
        x_cand: Candidate events; ``n_cand`` its exposure (requests or users).
        x_stable: Stable events; ``n_stable`` its exposure in the same unit.
        alpha: Level in (0, 1); ``k`` is the prior concentration of :func:`event_split_log_bf`.
        pi: The candidate's planned share (the ratio) when known: with sticky buckets each
            user lands in the candidate with exactly this probability, so the test on users
            with an event is exact. Default: the observed exposure share.
    """
    _check_alpha(alpha, one_sided=False)
    if n_cand <= 0 or n_stable <= 0:
        reason = "an arm has no exposure; the expected split is undefined"
        return RareEventResult(False, 0.0, math.nan, math.nan, reason)
    total = x_cand + x_stable
    pi = n_cand / (n_cand + n_stable) if pi is None else pi
    if total == 0:
        return RareEventResult(False, 0.0, pi, math.nan, "no events in either arm")
    log_bf, share = event_split_log_bf(x_cand, x_stable, pi, k), x_cand / total
    return RareEventResult(log_bf >= -math.log(alpha) and share > pi, log_bf, pi, share)


def srm_log_bf(counts: Sequence[int], probs: Sequence[float], k: float = 100.0) -> float:
    """Log Bayes factor of a Dirichlet-multinomial alternative against the planned split.

    ``BF = Γ(Σα₀)/Γ(Σα₀ + n) · Π Γ(α₀ᵢ + xᵢ)/Γ(α₀ᵢ) / Π θ₀ᵢ^xᵢ`` with ``α₀ = k·θ₀`` (Lindon &
    Malek, arXiv 2011.03567; Optimizely ``ssrm``; GrowthBook PR #5627 ``gbstats/ssrm.py``). On
    cumulative counts it is a test martingale (``lgamma`` keeps it exact to ~1e-8 at 10⁷ units):
    flag SRM once it reaches ``ln(1/α)``.

    Args:
        counts: Units observed per arm.
        probs: Planned share per arm, each > 0, summing to 1.
        k: Dirichlet concentration; 100–1 000 suits canary-scale samples.

    Example:
        >>> srm_log_bf([0, 0], [0.5, 0.5])
        0.0
    """
    if len(counts) != len(probs) or len(probs) < 2:
        raise ConfigurationError("probs", list(probs), "one share per arm, at least two arms")
    if any(not p > 0 for p in probs) or abs(math.fsum(probs) - 1) > 1e-9:
        raise ConfigurationError("probs", list(probs), "positive shares summing to 1")
    if any(x < 0 for x in counts):
        raise ConfigurationError("counts", list(counts), "counts >= 0")
    _check_positive("k", k)
    a0 = [k * p for p in probs]
    a_sum, n = math.fsum(a0), sum(counts)
    return (
        math.lgamma(a_sum)
        - math.lgamma(a_sum + n)
        + math.fsum(math.lgamma(a + x) - math.lgamma(a) for a, x in zip(a0, counts, strict=True))
        - math.fsum(x * math.log(p) for x, p in zip(counts, probs, strict=True))
    )


@dataclass(frozen=True)
class SRMResult:
    """Outcome of :func:`srm_check`.

    Example:
        >>> srm_check(45_000, 50_000, expected_ratio=0.5).mismatch
        True
    """

    mismatch: bool
    log_bf: float
    observed_ratio: float
    """Candidate share of the observed units (NaN without units)."""
    expected_ratio: float
    reason: str | None = None
    """Why the check does not apply (no split, no units); ``None`` otherwise."""


def srm_check(
    observed_candidate: int,
    observed_stable: int,
    expected_ratio: float,
    alpha: float = 0.001,
    k: float = 100.0,
) -> SRMResult:
    """Sequential sample-ratio-mismatch check of a candidate/stable split.

    :func:`srm_log_bf` of ``[candidate, stable]`` against ``[r, 1 − r]``; mismatch iff
    ``log BF ≥ ln(1/α)``. Valid under continuous monitoring (a repeated chi-square is not).

    Args:
        observed_candidate: Units (users) assigned to the candidate and seen in the data.
        observed_stable: Units assigned to stable and seen in the data.
        expected_ratio: Planned candidate share ``r``; 0 or 1 (no split) is not applicable.
        alpha: Level; 0.001 is GrowthBook's default SRM threshold.
        k: Dirichlet concentration.
    """
    _check_alpha(alpha, one_sided=False)
    if not 0.0 <= expected_ratio <= 1.0:
        raise ConfigurationError("expected_ratio", expected_ratio, "a candidate share in [0, 1]")
    total = observed_candidate + observed_stable
    observed = observed_candidate / total if total > 0 else math.nan
    if expected_ratio in (0.0, 1.0):
        return SRMResult(False, 0.0, observed, expected_ratio, "no split: not applicable")
    if total == 0:
        return SRMResult(False, 0.0, observed, expected_ratio, "no units observed")
    counts, probs = [observed_candidate, observed_stable], [expected_ratio, 1 - expected_ratio]
    log_bf = srm_log_bf(counts, probs, k)
    return SRMResult(log_bf >= -math.log(alpha), log_bf, observed, expected_ratio)


def srm_check_strata(
    candidate: Sequence[int],
    stable: Sequence[int],
    expected_ratio: float,
    alpha: float = 0.001,
    k: float = 100.0,
) -> SRMResult:
    """Sample-ratio mismatch of users, stratum by stratum (e.g. activity classes).

    With sticky buckets every user lands in the candidate with probability ``r`` whatever their
    stratum, so each stratum's split is binomial and the strata are independent: the product of
    their Bayes factors (the sum of :func:`srm_log_bf` over strata) is again a test martingale
    (Lindon & Malek, arXiv 2011.03567). It flags an overall skew and also a routing bug that
    sends one kind of user (the heaviest, say) to the candidate while the overall split looks
    right.

    Example:
        >>> srm_check_strata([50, 50], [450, 450], 0.1).mismatch
        False
        >>> srm_check_strata([90, 10], [410, 490], 0.1).mismatch   # heavy users skewed
        True
    """
    _check_alpha(alpha, one_sided=False)
    if len(candidate) != len(stable):
        raise ConfigurationError("strata", (len(candidate), len(stable)), "one count per stratum")
    total_c, total_s = sum(candidate), sum(stable)
    total = total_c + total_s
    observed = total_c / total if total else math.nan
    if not 0.0 < expected_ratio < 1.0:
        return SRMResult(False, 0.0, observed, expected_ratio, "no split: not applicable")
    if total == 0:
        return SRMResult(False, 0.0, observed, expected_ratio, "no units observed")
    probs = [expected_ratio, 1 - expected_ratio]
    log_bf = math.fsum(
        srm_log_bf([c, s], probs, k) for c, s in zip(candidate, stable, strict=True) if c + s
    )
    return SRMResult(log_bf >= -math.log(alpha), log_bf, observed, expected_ratio)
