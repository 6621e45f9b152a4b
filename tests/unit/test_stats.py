"""Tests for langchain_graylayer.judging.stats.

Values are checked against the language-neutral table ``tests/data/stats_cases.json`` (computed by
an independent oracle, from the papers' formulas quoted in docs/statistics.md, or by hand); the
statistical guarantees are checked by seeded Monte-Carlo simulation.
"""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.judging import qos, stats
from langchain_graylayer.judging.qos import (
    HIGH_RISK_QOS_WEIGHTS,
    QosInputs,
    QosWeights,
    article_qos_verdict,
    qos_score,
)
from langchain_graylayer.judging.stats import (
    MIN_TRIALS,
    RatioMoments,
    compare_ratios,
    cs_halfwidth,
    event_split_log_bf,
    mixture_rho2,
    rare_event_harm,
    srm_check,
    srm_log_bf,
)

CASES: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "data" / "stats_cases.json").read_text(encoding="utf-8")
)


def cases(name: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", CASES[name], ids=[c["source"][:60] for c in CASES[name]])


def num(value: Any) -> float:
    """JSON number, with null as NaN and "inf"/"-inf"/"nan" strings."""
    return math.nan if value is None else float(value)


def assert_close(actual: float, expected: Any, tol: float) -> None:
    want = num(expected)
    if math.isnan(want) or math.isinf(want):
        assert (math.isnan(actual) and math.isnan(want)) or actual == want
    else:
        assert actual == pytest.approx(want, abs=tol, rel=0)


# --- table-driven values ---------------------------------------------------------------------


@cases("mixture_rho2")
def test_mixture_rho2(case: dict[str, Any]) -> None:
    assert_close(mixture_rho2(**case["input"]), case["expected"], case["tol"])


@cases("cs_halfwidth")
def test_cs_halfwidth(case: dict[str, Any]) -> None:
    assert_close(cs_halfwidth(**case["input"]), case["expected"], case["tol"])


def check_comparison(result: stats.Comparison, case: dict[str, Any]) -> None:
    want, tol = case["expected"], case["tol"]
    for field in ("estimate", "lower", "upper", "se"):
        assert_close(getattr(result, field), want[field], tol)
    assert (result.harm, result.non_inferior) == (want["harm"], want["non_inferior"])
    assert result.inconclusive is want["inconclusive"]
    assert (result.inconclusive_reason is None) is not want["inconclusive"]


@cases("event_split_log_bf")
def test_event_split_log_bf(case: dict[str, Any]) -> None:
    assert_close(event_split_log_bf(**case["input"]), case["expected"], case["tol"])


@cases("rare_event_harm")
def test_rare_event_harm(case: dict[str, Any]) -> None:
    result, want = rare_event_harm(**case["input"]), case["expected"]
    assert result.harm is want["harm"]
    for field in ("log_bf", "pi", "observed_share"):
        assert_close(getattr(result, field), want[field], case["tol"])
    assert (result.inconclusive_reason is not None) is want["inconclusive"]


@cases("srm_log_bf")
def test_srm_log_bf(case: dict[str, Any]) -> None:
    assert_close(srm_log_bf(**case["input"]), case["expected"], case["tol"])


@cases("srm_check")
def test_srm_check(case: dict[str, Any]) -> None:
    result, want = srm_check(**case["input"]), case["expected"]
    assert result.mismatch is want["mismatch"]
    assert_close(result.log_bf, want["log_bf"], case["tol"])
    assert_close(result.observed_ratio, want["observed_ratio"], 1e-12)
    assert result.expected_ratio == case["input"]["expected_ratio"]
    assert (result.reason is None) is want["applicable"]


@cases("qos_score")
def test_qos_score(case: dict[str, Any]) -> None:
    presets = {"high_risk": HIGH_RISK_QOS_WEIGHTS, "low_risk": QosWeights(0.4, 0.3, 0.3)}
    weights = case["weights"]
    weights = presets[weights] if isinstance(weights, str) else QosWeights(*weights)
    kwargs = {"max_latency_s": case["max_latency_s"]} if "max_latency_s" in case else {}
    result = qos_score(QosInputs(**case["input"]), weights, **kwargs)
    for field in ("user", "technical", "business", "qos"):
        assert_close(getattr(result, field), case["expected"][field], case["tol"])


@cases("article_qos_verdict")
def test_article_qos_verdict(case: dict[str, Any]) -> None:
    assert article_qos_verdict(**case["input"]) == case["expected"]


# --- identities ------------------------------------------------------------------------------


def test_growthbook_form_equals_johari_msprt_and_ci() -> None:
    """With N = 2n, N* = 2n* and τ² = V·c/n*, GrowthBook's e-value and CS equal
    Johari et al.'s Λₙ and always-valid CI for two Bernoulli streams of n each."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        n, n_star = int(rng.integers(20, 5000)), float(rng.integers(50, 5000))
        x_bar, y_bar, alpha = (
            rng.uniform(0.05, 0.95),
            rng.uniform(0.05, 0.95),
            rng.uniform(0.01, 0.2),
        )
        v = x_bar * (1 - x_bar) + y_bar * (1 - y_bar)
        tau2 = v * (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / n_star
        log_lambda = 0.5 * math.log(v / (v + n * tau2)) + n * n * tau2 * (y_bar - x_bar) ** 2 / (
            2 * v * (v + n * tau2)
        )
        s2 = v / n
        johari_hw = math.sqrt(
            s2 * (s2 + tau2) / tau2 * (-2 * math.log(alpha) - math.log(s2 / (s2 + tau2)))
        )
        se = math.sqrt(s2)
        x = 2 * n * mixture_rho2(alpha, 2 * n_star, one_sided=False)  # the e-value, GrowthBook
        got = x * ((y_bar - x_bar) / se) ** 2 / (2 * (x + 1)) - 0.5 * math.log(x + 1)
        assert got == pytest.approx(log_lambda, rel=1e-9, abs=1e-9)
        assert cs_halfwidth(se, 2 * n, alpha, 2 * n_star) == pytest.approx(johari_hw, rel=1e-9)


def test_halfwidth_is_tightest_relative_to_se_near_n_star() -> None:
    widths = {m: cs_halfwidth(1.0, m * 1000, 0.05, 1000) for m in (0.1, 0.5, 1.0, 2.0, 10.0)}
    assert min(widths, key=lambda m: widths[m]) == 1.0


def test_qos_barely_moves_for_a_five_point_completion_drop() -> None:
    base = QosInputs(0.05, 30, 0.99, 2.0, 0.97, 0.85, 0.005)
    worse = QosInputs(0.05, 30, 0.99, 2.0, 0.97, 0.80, 0.005)
    for weights in (HIGH_RISK_QOS_WEIGHTS, QosWeights(0.4, 0.3, 0.3)):  # and the low-risk ones
        drop = qos_score(base, weights).qos - qos_score(worse, weights).qos
        assert drop == pytest.approx(0.6 * weights.business * 0.05)
        assert article_qos_verdict(qos_score(worse, weights).qos) == "promote"


# --- guards: insufficient data is never harm ----------------------------------------------------

HARM_TEST: dict[str, Any] = {
    "alpha": 0.05,
    "n_star": 100,
    "higher_is_better": False,
    "margin": 0.0,
}


def bernoulli(successes: int, trials: int) -> RatioMoments:
    """An arm of ``trials`` users with one request each, ``successes`` of them successful."""
    return RatioMoments(trials, successes, trials, successes, trials, successes)


def test_insufficient_users_are_inconclusive_never_harm() -> None:
    for n_c in range(MIN_TRIALS):
        for x_c in range(n_c + 1):
            for stable in (bernoulli(1000, 1000), bernoulli(0, 1000), bernoulli(0, 0)):
                for higher in (True, False):
                    settings = {**HARM_TEST, "higher_is_better": higher, "margin": 0.5}
                    result = compare_ratios(bernoulli(x_c, n_c), stable, **settings)
                    assert result.inconclusive
                    assert not result.harm
                    assert not result.non_inferior


def test_zero_failures_in_both_arms_still_has_width() -> None:
    result = compare_ratios(
        bernoulli(200, 200),
        bernoulli(2000, 2000),
        alpha=0.05,
        n_star=2200,
        higher_is_better=True,
        margin=0.01,
    )
    assert result.lower < 0 < result.upper
    assert result.estimate == 0.0
    assert not result.harm


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: mixture_rho2(0.5, 100, one_sided=True), "alpha"),
        (lambda: mixture_rho2(0.05, 0, one_sided=False), "n_star"),
        (lambda: cs_halfwidth(-1.0, 10, 0.05, 100), "se"),
        (
            lambda: compare_ratios(
                bernoulli(1, 20),
                bernoulli(1, 20),
                alpha=0.05,
                n_star=40,
                higher_is_better=True,
                margin=-0.1,
            ),
            "margin",
        ),
        (lambda: event_split_log_bf(1, 1, 1.0), "pi"),
        (lambda: srm_log_bf([1, 2], [0.5, 0.6]), "probs"),
        (lambda: srm_check(1, 2, 1.5), "expected_ratio"),
        (lambda: QosWeights(0.5, 0.5, 0.5), "weights"),
        (lambda: QosInputs(1.2, 0, 1, 1, 1, 1, 0), "bad_rate"),
        (lambda: article_qos_verdict(0.5, rollback_below=0.9, promote_at=0.8), "rollback_below"),
    ],
)
def test_invalid_arguments_raise_configuration_error(call: Any, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        call()
    assert info.value.field == field


# --- Monte-Carlo guarantees (seeded) -----------------------------------------------------------

REPS, BATCH, LOOKS = 300, 20, 100  # 300 replicates, a look every 20 candidates, up to 2 000


def first_harm(p_cand: float, p_stable: float, seed: int, n_star: float) -> list[int | None]:
    """Candidates seen at the first harm verdict of each replicate (None: never), 1:1 allocation."""
    rng = np.random.default_rng(seed)
    xc = rng.binomial(BATCH, p_cand, size=(REPS, LOOKS)).cumsum(axis=1)
    xs = rng.binomial(BATCH, p_stable, size=(REPS, LOOKS)).cumsum(axis=1)
    stops: list[int | None] = []
    for rep in range(REPS):
        stop = None
        for look in range(LOOKS):
            n = BATCH * (look + 1)
            result = compare_ratios(
                bernoulli(int(xc[rep, look]), n),
                bernoulli(int(xs[rep, look]), n),
                alpha=0.05,
                n_star=n_star,
                higher_is_better=True,
                margin=0.02,
            )
            if result.harm:
                stop = n
                break
        stops.append(stop)
    return stops


@pytest.mark.parametrize("n_star", [200, 2000])
def test_aa_false_harm_rate_under_continuous_monitoring(n_star: float) -> None:
    stops = first_harm(0.85, 0.85, seed=20240501, n_star=n_star)
    rate = sum(s is not None for s in stops) / REPS
    # α = 0.05; 3 Monte-Carlo standard errors of slack (sqrt(0.05·0.95/300) ≈ 0.0126).
    assert rate <= 0.05 + 3 * 0.0126


def test_naive_peeking_would_not_control_the_error() -> None:
    """Contrast for the A/A test: a fixed-horizon z-test looked at every 20 users fails often."""
    rng = np.random.default_rng(20240501)
    xc = rng.binomial(BATCH, 0.85, size=(REPS, LOOKS)).cumsum(axis=1)
    xs = rng.binomial(BATCH, 0.85, size=(REPS, LOOKS)).cumsum(axis=1)
    n = BATCH * np.arange(1, LOOKS + 1)
    pc, ps = xc / n, xs / n
    z = (pc - ps) / np.sqrt((pc * (1 - pc) + ps * (1 - ps)) / n + 1e-12)
    assert (z < -1.645).any(axis=1).mean() > 0.15


def test_a_25_point_drop_is_detected_quickly() -> None:
    stops = first_harm(0.60, 0.85, seed=7, n_star=200)
    detected = [s for s in stops if s is not None]
    assert len(detected) / REPS >= 0.99
    assert float(np.median(detected)) <= 200


def test_rare_event_test_controls_false_harm_and_detects_a_tenfold_rate() -> None:
    rng = np.random.default_rng(3)
    cand_req, stable_req, looks = 20, 180, 100  # π = 0.1, up to 2 000 candidate requests

    def harm_rate(p_cand: float) -> float:
        ec = rng.binomial(cand_req, p_cand, size=(REPS, looks)).cumsum(axis=1)
        es = rng.binomial(stable_req, 0.02, size=(REPS, looks)).cumsum(axis=1)
        flagged = 0
        for rep in range(REPS):
            for look in range(looks):
                result = rare_event_harm(
                    int(ec[rep, look]),
                    cand_req * (look + 1),
                    int(es[rep, look]),
                    stable_req * (look + 1),
                    alpha=0.05,
                )
                if result.harm:
                    flagged += 1
                    break
        return flagged / REPS

    assert harm_rate(0.02) <= 0.05 + 3 * 0.0126
    assert harm_rate(0.20) >= 0.99


def test_rare_event_test_is_powered_for_fivefold_complaints_at_a_half_step() -> None:
    """Issue #14's row: complaints 0.3% → 1.5% of requests at a 50% step, a look every 5 min, at
    the harm test's share of the simulator plan's budget (0.05 / (7 tests × 11 steps) / 2).
    At the simulator's ``high_value`` traffic (~1 100 requests/h) it fires in ~85% of runs
    within 6 h; with no difference, never (Ville's bound: ≤ 0.03%)."""
    rng = np.random.default_rng(14)
    alpha, looks_per_hour, reps = 0.05 / (7 * 11) / 2, 12, 300

    def fired_within(requests_per_hour: float, p_cand: float, hours: int) -> float:
        per_look = requests_per_hour / looks_per_hour * 0.5  # each arm's requests per look
        cand = rng.poisson(per_look * p_cand, (reps, hours * looks_per_hour)).cumsum(axis=1)
        stable = rng.poisson(per_look * 0.003, (reps, hours * looks_per_hour)).cumsum(axis=1)
        fired = 0
        for rep in range(reps):
            for look in range(hours * looks_per_hour):
                x_c, x_s = int(cand[rep, look]), int(stable[rep, look])
                if rare_event_harm(x_c, look + 1, x_s, look + 1, alpha, k=4.0, pi=0.5).harm:
                    fired += 1
                    break
        return fired / reps

    assert fired_within(1100, 0.003, 6) == 0.0
    assert fired_within(1100, 0.015, 1) <= 0.05  # an hour is too short at this traffic
    assert fired_within(1100, 0.015, 6) >= 0.75


def test_sequential_srm_flags_lost_candidate_units_but_not_an_exact_split() -> None:
    rng = np.random.default_rng(11)
    users, looks = 200, 100  # up to 20 000 users, expected 50/50

    def flag_rate(share: float) -> float:
        cand = rng.binomial(users, share, size=(REPS, looks)).cumsum(axis=1)
        flagged = 0
        for rep in range(REPS):
            for look in range(looks):
                total = users * (look + 1)
                if srm_check(int(cand[rep, look]), total - int(cand[rep, look]), 0.5).mismatch:
                    flagged += 1
                    break
        return flagged / REPS

    assert flag_rate(0.5) <= 0.01
    assert flag_rate(0.45 / 0.95) >= 0.95  # 10 % of candidate users lost before logging


# --- module hygiene ------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [stats, qos], ids=["stats", "qos"])
def test_every_public_definition_is_exported(module: Any) -> None:
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert defined <= set(module.__all__)
    assert len(set(module.__all__)) == len(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)


@pytest.mark.parametrize("module", [stats, qos], ids=["stats", "qos"])
def test_docstring_examples_run(module: Any) -> None:
    assert doctest.testmod(module, raise_on_error=False).failed == 0
