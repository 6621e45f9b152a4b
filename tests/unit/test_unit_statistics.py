"""Users as the unit of analysis: the sufficient statistics, the delta method, and what they buy.

* The delta-method variance of a ratio metric ``Σy/Σx`` over users (Deng et al. 2018, "Applying
  the Delta Method in Metric Analytics", arXiv 1803.06336) computed from an arm's sums and
  products equals the variance of the linearised per-user values computed directly.
* ``ArmAccumulator`` keeps those sums and products exactly under incremental updates (negative
  deltas included), and the simulator's numpy twin ``_Arm`` keeps the same numbers.
* Under clustered users (heavy-tailed request counts, per-user propensities with intra-class
  correlation 0.3), the always-valid confidence sequence (Waudby-Smith et al., arXiv 2103.06476)
  over users keeps its false-harm rate under continuous peeking at or below alpha; the same
  sequence fed the per-request binomial standard error does not.
* The sequential sample-ratio check on users by activity class (Lindon & Malek, arXiv
  2011.03567) stays quiet under correct routing and catches heavy users skewed to the candidate
  while the overall split looks right.
* The hard floor's one-sample bound stays quiet for a rate at or below the floor at every peek,
  and speaks for a rate well above.

Monte-Carlo tests are seeded and vectorised with numpy; only the library calls run per peek.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from langchain_graylayer.judging.judge import moments
from langchain_graylayer.judging.stats import (
    RatioMoments,
    compare_ratios,
    cs_halfwidth,
    exceeds_floor,
    srm_check,
    srm_check_strata,
)
from langchain_graylayer.plan.assignment import ACTIVITY_CLASSES
from langchain_graylayer.plan.gates import GuardrailMetric
from langchain_graylayer.simulate.arms import UserArm as _Arm
from langchain_graylayer.store.evidence import (
    FIELDS,
    ArmAccumulator,
    ArmTotals,
    accumulate_users,
    field_pair,
)

Array = npt.NDArray[Any]

# --- the delta method from sufficient statistics -------------------------------------------------

# (numerator as a combination of per-user fields, denominator) of each guardrail metric, written
# out here independently of the judge's own table.
METRIC_DEFINITIONS: dict[GuardrailMetric, tuple[dict[str, float], str]] = {
    GuardrailMetric.COMPLETION_RATE: ({"completions": 1.0}, "requests"),
    GuardrailMetric.TOOL_SUCCESS_RATE: ({"tool_calls": 1.0, "tool_errors": -1.0}, "tool_calls"),
    GuardrailMetric.ERROR_RATE: ({"failures": 1.0}, "requests"),
    GuardrailMetric.BAD_FEEDBACK_RATE: ({"bad": 1.0}, "requests"),
    GuardrailMetric.COMPLAINT_RATE: ({"complaints": 1.0}, "requests"),
    GuardrailMetric.SLOW_RATE: ({"slow": 1.0}, "requests"),
    GuardrailMetric.COST_PER_REQUEST: ({"cost": 1.0}, "requests"),  # in money
}


def _random_users(seed: int, n: int) -> list[dict[str, float]]:
    """``n`` users with heavy-tailed request counts and every counter the guardrails read."""
    rng = np.random.default_rng(seed)
    users = []
    for _ in range(n):
        requests = int(rng.geometric(0.3)) - 1  # some users only left feedback: 0 requests
        p = rng.beta(2.0, 0.5)
        completions = int(rng.binomial(requests, p))
        failures = int(rng.binomial(requests - completions, 0.5))
        tool_calls = int(rng.poisson(2.0 * requests))
        users.append(
            {
                "requests": requests,
                "completions": completions,
                "failures": failures,
                "tool_calls": tool_calls,
                "tool_errors": int(rng.binomial(tool_calls, rng.beta(0.5, 5.0))),
                "bad": int(rng.binomial(requests, 0.05)),
                "complaints": int(rng.random() < 0.03),
                "slow": int(rng.binomial(requests, 0.1)),
                "latency_seconds": float(rng.gamma(2.0, 1.0) * requests),
                "cost": float(rng.gamma(1.0, 0.002) * requests),
            }
        )
    return users


DATASETS: dict[str, list[dict[str, float]]] = {
    # the RatioMoments docstring's three users: (2, 2), (3, 3), (0, 1)
    "docstring": [
        {"requests": 2, "completions": 2},
        {"requests": 3, "completions": 3},
        {"requests": 1},
    ],
    "two users": [{"requests": 1, "completions": 1}, {"requests": 4, "completions": 1}],
    "unequal requests and a zero user": [
        {"requests": 10, "completions": 3, "failures": 5},
        {"requests": 1, "completions": 1},
        {},
        {"requests": 2, "completions": 2, "slow": 1},
        {"requests": 7, "completions": 6, "failures": 1, "bad": 2, "complaints": 1},
    ],
    "one heavy user among light ones": [
        {"requests": 40, "completions": 10, "failures": 20, "complaints": 3},
        *[{"requests": 1, "completions": 1}] * 8,
        {"requests": 1, "failures": 1},
    ],
    "tools for some users only": [
        {"requests": 3, "completions": 3, "tool_calls": 9, "tool_errors": 1},
        {"requests": 2, "completions": 1},
        {"requests": 1, "completions": 1, "tool_calls": 1},
        {"requests": 5, "completions": 2, "tool_calls": 12, "tool_errors": 7, "failures": 2},
        {"requests": 1, "tool_calls": 2, "tool_errors": 2, "failures": 1},
    ],
    "every user alike": [{"requests": 3, "completions": 2, "tool_calls": 3}] * 6,
    "random, 60 users": _random_users(1, 60),
    "random, 300 users": _random_users(2, 300),
}


def direct_moments(users: list[dict[str, float]], metric: GuardrailMetric) -> dict[str, float]:
    """The metric's per-user values and the delta-method variance, computed user by user."""
    numerator, denominator = METRIC_DEFINITIONS[metric]
    y = np.array([sum(c * u.get(f, 0.0) for f, c in numerator.items()) for u in users])
    x = np.array([float(u.get(denominator, 0.0)) for u in users])
    n = len(users)
    out = {"y": y.sum(), "x": x.sum(), "y_sq": (y * y).sum(), "x_sq": (x * x).sum()}
    out["xy"] = (x * y).sum()
    out["users"] = n if x.sum() > 0 else 0
    if x.sum() <= 0:
        out.update(rate=math.nan, unit_variance=math.nan, variance=math.nan)
        return out
    r = y.sum() / x.sum()
    out["rate"] = r
    if n < 2:
        out.update(unit_variance=math.nan, variance=math.nan)
        return out
    linearised = (y - r * x) / x.mean()  # each user's contribution to the ratio (Deng et al.)
    out["unit_variance"] = float(np.var(linearised, ddof=1))
    out["variance"] = out["unit_variance"] / n
    p = (y.sum() + 1) / (x.sum() + 2)
    out["binomial_floor"] = p * (1 - p) / max(x.sum(), 1.0)
    return out


def assert_same(actual: float, expected: float) -> None:
    if math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("metric", list(GuardrailMetric), ids=[m.value for m in GuardrailMetric])
@pytest.mark.parametrize("name", list(DATASETS))
def test_delta_method_from_sums_equals_the_per_user_computation(
    name: str, metric: GuardrailMetric
) -> None:
    """Deng et al. 2018 (arXiv 1803.06336): the variance of ``Σy/Σx`` over users is the
    variance of the linearised values ``(y_i − r·x_i)/x̄`` (divisor n − 1) over n. The judge gets
    it from the arm's sums and Gram matrix; here it is computed from the users themselves."""
    users = DATASETS[name]
    m = moments(accumulate_users(users), metric)
    want = direct_moments(users, metric)
    assert m.users == want["users"]
    for key in ("y", "x", "y_sq", "x_sq", "xy", "rate", "unit_variance", "variance"):
        assert_same(getattr(m, key), want[key])
    if "binomial_floor" in want:
        assert m.binomial_floor() == pytest.approx(want["binomial_floor"], rel=1e-12)
        if m.users > 1:
            assert m.variance * m.users == pytest.approx(m.unit_variance, rel=1e-12)


def test_the_docstring_example_is_the_direct_computation() -> None:
    m = moments(accumulate_users(DATASETS["docstring"]), GuardrailMetric.COMPLETION_RATE)
    assert m == RatioMoments(users=3, y=5, x=6, y_sq=13, x_sq=14, xy=13)
    assert round(m.variance, 5) == 0.04398


def test_users_alike_have_no_spread_and_one_user_has_no_variance() -> None:
    alike = moments(accumulate_users(DATASETS["every user alike"]), GuardrailMetric.COMPLETION_RATE)
    assert alike.variance == pytest.approx(0.0, abs=1e-15)
    one = moments(accumulate_users([{"requests": 3, "completions": 1}]), GuardrailMetric.SLOW_RATE)
    assert one.users == 1
    assert math.isnan(one.variance)
    assert math.isnan(one.unit_variance)
    nobody = moments(accumulate_users([{"requests": 3}] * 5), GuardrailMetric.TOOL_SUCCESS_RATE)
    assert (nobody.users, nobody.x) == (0, 0.0)
    assert math.isnan(nobody.rate)


def clustered_users(
    rng: np.random.Generator, shape: tuple[int, ...], *, mean: float = 0.85, icc: float = 0.3
) -> tuple[Array, Array]:
    """Requests and successes of users: ``1 + floor(lognormal)`` requests (heavy-tailed: a few
    users make many), each user's success propensity from Beta(μκ, (1 − μ)κ) with
    ``κ = (1 − icc)/icc``, so that two requests of one user correlate by ``icc``."""
    x = 1 + np.floor(rng.lognormal(0.7, 1.0, shape))
    kappa = (1 - icc) / icc
    p = rng.beta(mean * kappa, (1 - mean) * kappa, shape)
    y = rng.binomial(x.astype(np.int64), p).astype(float)
    return x, y


def test_delta_variance_matches_the_spread_of_the_ratio_over_repeated_samples() -> None:
    """The delta method is what the ratio's sampling variance is under clustering; the
    per-request binomial variance (every request independent) is several times too small."""
    rng = np.random.default_rng(20180316)
    reps, n = 4000, 400
    x, y = clustered_users(rng, (reps, n))
    ratios = y.sum(axis=1) / x.sum(axis=1)
    true_variance = float(np.var(ratios, ddof=1))
    delta, binomial = [], []
    for rep in range(0, reps, 40):
        xi, yi = x[rep], y[rep]
        m = RatioMoments(n, yi.sum(), xi.sum(), (yi * yi).sum(), (xi * xi).sum(), (xi * yi).sum())
        delta.append(m.variance)
        binomial.append(m.rate * (1 - m.rate) / m.x)
    assert float(np.mean(delta)) == pytest.approx(true_variance, rel=0.1)
    assert float(np.mean(binomial)) < true_variance / 2.5


# --- the accumulator, against a direct recomputation and the simulator's twin --------------------


def random_updates(
    seed: int, users: int, updates: int
) -> tuple[list[tuple[int, int, dict[str, float]]], dict[int, int]]:
    """Random incremental updates: several per user, negative deltas (corrections) included."""
    rng = np.random.default_rng(seed)
    activity = {u: int(rng.integers(0, ACTIVITY_CLASSES)) for u in range(users)}
    deltas = []
    for _ in range(updates):
        user = int(rng.integers(0, users))
        names = rng.choice(FIELDS, size=int(rng.integers(0, 5)), replace=False)
        counts = {str(f): float(rng.integers(-2, 4)) for f in names}
        if rng.random() < 0.2:
            counts["latency_seconds"] = float(rng.gamma(2.0, 1.5))
        deltas.append((user, activity[user], counts))
    return deltas, activity


def direct_totals(
    deltas: list[tuple[int, int, dict[str, float]]],
) -> tuple[int, list[int], Array, Array, Array]:
    """Users, classes, sums, Gram matrix and positives recomputed from the final records."""
    records: dict[int, Array] = {}
    classes = [0] * ACTIVITY_CLASSES
    for user, activity, counts in deltas:
        if user not in records:
            records[user] = np.zeros(len(FIELDS))
            classes[activity] += 1
        for name, value in counts.items():
            records[user][FIELDS.index(name)] += value
    rows = np.array(list(records.values()))
    return len(records), classes, rows.sum(axis=0), rows.T @ rows, (rows > 0).sum(axis=0)


def assert_totals(totals: ArmTotals, want: tuple[int, list[int], Array, Array, Array]) -> None:
    users, classes, sums, gram, positives = want
    assert totals.users == users
    assert list(totals.classes) == classes
    for i, f in enumerate(FIELDS):
        assert totals.total(f) == pytest.approx(sums[i], abs=1e-9)
        assert totals.positive(f) == positives[i], f
    for (i, f), (j, g) in itertools.combinations_with_replacement(enumerate(FIELDS), 2):
        assert totals.product(f, g) == pytest.approx(gram[i, j], rel=1e-12, abs=1e-8), (f, g)
        assert totals.product(g, f) == totals.product(f, g)


@pytest.mark.parametrize(("seed", "users", "updates"), [(1, 1, 20), (2, 5, 60), (3, 40, 800)])
def test_accumulator_keeps_the_totals_of_its_users_records(
    seed: int, users: int, updates: int
) -> None:
    deltas, _ = random_updates(seed, users, updates)
    arm = ArmAccumulator()
    for user, activity, counts in deltas:
        arm.add(f"user-{user}", activity, counts)
    assert_totals(arm.totals(), direct_totals(deltas))
    assert len(arm) == len({user for user, _, _ in deltas})


@pytest.mark.parametrize(("seed", "users", "updates", "batch"), [(4, 3, 30, 1), (5, 40, 800, 37)])
def test_the_simulators_numpy_arm_keeps_the_same_totals(
    seed: int, users: int, updates: int, batch: int
) -> None:
    """``simulate.arms.UserArm`` (batched, numpy) and ``ArmAccumulator`` (one delta at a time)
    agree on every total after the same deltas."""
    deltas, _ = random_updates(seed, users, updates)
    reference, twin = ArmAccumulator(), _Arm(users)
    for user, activity, counts in deltas:
        reference.add(f"user-{user}", activity, counts)
    for start in range(0, len(deltas), batch):
        chunk = deltas[start : start + batch]
        rows = np.zeros((len(chunk), len(FIELDS)))
        for row, (_, _, counts) in enumerate(chunk):
            for name, value in counts.items():
                rows[row, FIELDS.index(name)] = value
        twin.add(
            np.array([u for u, _, _ in chunk], dtype=np.int64),
            np.array([a for _, a, _ in chunk], dtype=np.int64),
            rows,
        )
    want = direct_totals(deltas)
    assert_totals(reference.totals(), want)
    assert_totals(twin.totals(), want)
    for metric in GuardrailMetric:
        a, b = moments(reference.totals(), metric), moments(twin.totals(), metric)
        assert a.users == b.users
        for key in ("y", "x", "y_sq", "x_sq", "xy"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-12, abs=1e-8)


def test_product_keys_are_in_fields_order() -> None:
    assert field_pair("requests", "completions") == ("requests", "completions")
    assert field_pair("completions", "requests") == ("requests", "completions")
    arm = accumulate_users([{"completions": 2, "requests": 3}])
    assert set(arm.products) == {
        ("requests", "requests"),
        ("requests", "completions"),
        ("completions", "completions"),
    }


# --- A/A under clustered users, peeking after every batch ----------------------------------------

ALPHA = 0.05
RUNS = 400


def wilson(k: int, n: int, z: float = 2.576) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (99 % by default)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def cumulative_arms(
    x: Array, y: Array, in_candidate: Array, batch: int
) -> dict[str, tuple[Array, ...]]:
    """Each arm's users, Σy, Σx, Σy², Σx², Σxy after every batch of users (runs × peeks)."""
    out = {}
    for arm, mask in (("candidate", in_candidate), ("stable", ~in_candidate)):
        columns = (mask, y * mask, x * mask, y * y * mask, x * x * mask, x * y * mask)
        out[arm] = tuple(np.cumsum(c, axis=1)[:, batch - 1 :: batch] for c in columns)
    return out


def ever_harm(sums: dict[str, tuple[Array, ...]], n_star: float) -> tuple[int, int]:
    """Runs in which the user-level test (``compare_ratios``) ever declared harm, and runs in
    which the same confidence sequence with the per-request binomial SE ever did."""
    c, s = sums["candidate"], sums["stable"]
    runs, peeks = c[0].shape
    user_level = naive = 0
    for run in range(runs):
        user_fired = naive_fired = False
        for k in range(peeks):
            mc = RatioMoments(int(c[0][run, k]), *(float(v[run, k]) for v in c[1:]))
            ms = RatioMoments(int(s[0][run, k]), *(float(v[run, k]) for v in s[1:]))
            if not user_fired:
                result = compare_ratios(
                    mc, ms, alpha=ALPHA, n_star=n_star, higher_is_better=True, margin=0.02
                )
                user_fired = result.harm
            if not naive_fired and min(mc.users, ms.users) >= 10:
                pc, ps = mc.rate, ms.rate
                se = math.sqrt(pc * (1 - pc) / mc.x + ps * (1 - ps) / ms.x)  # requests iid
                hw = cs_halfwidth(se, mc.users + ms.users, ALPHA, n_star, one_sided=True)
                naive_fired = pc - ps + hw < 0
            if user_fired and naive_fired:
                break
        user_level += user_fired
        naive += naive_fired
    return user_level, naive


@pytest.mark.parametrize(("ratio", "users", "batch"), [(0.5, 1000, 25), (0.1, 3000, 75)])
def test_aa_with_clustered_users_keeps_false_harm_within_alpha_at_every_peek(
    ratio: float, users: int, batch: int
) -> None:
    """A/A: both arms' users come from one population of clustered users (ICC 0.3,
    heavy-tailed requests), randomised by user; the test looks after every batch of users.
    The always-valid one-sided sequence over users (Waudby-Smith et al., arXiv 2103.06476,
    with the Deng et al. delta-method variance) must declare harm in at most alpha of the
    runs; the same sequence with the per-request binomial SE (what a per-request judge did)
    declares it far more often, because a user's requests are not independent."""
    rng = np.random.default_rng([20240601, users])
    x, y = clustered_users(rng, (RUNS, users))
    in_candidate = rng.random((RUNS, users)) < ratio
    user_level, naive = ever_harm(cumulative_arms(x, y, in_candidate, batch), n_star=users / 2)
    low, _ = wilson(user_level, RUNS)
    assert low < ALPHA
    assert user_level / RUNS <= ALPHA + 0.01
    naive_low, _ = wilson(naive, RUNS)
    assert naive_low > 2 * ALPHA, f"naive fired in {naive} of {RUNS} runs"


# --- sample-ratio mismatch on users, by activity class -------------------------------------------

CLASS_SHARES = np.array([0.35, 0.25, 0.2, 0.12, 0.08])  # heavy users are few
"""Share of users per activity class (0: lightest, 4: heaviest)."""


def srm_flags(
    in_candidate: Array, classes: Array, ratio: float, batch: int, alpha: float, overall: bool
) -> tuple[float, float]:
    """Share of runs where the stratified check, and (if ``overall``) the overall split alone,
    ever flags."""
    one_hot = classes[..., None] == np.arange(ACTIVITY_CLASSES)
    cand = np.cumsum(one_hot & in_candidate[..., None], axis=1)[:, batch - 1 :: batch]
    everyone = np.cumsum(one_hot, axis=1)[:, batch - 1 :: batch]
    stable = everyone - cand
    runs, peeks, _ = cand.shape
    strata = whole = 0
    for run in range(runs):
        strata += any(
            srm_check_strata(cand[run, k].tolist(), stable[run, k].tolist(), ratio, alpha).mismatch
            for k in range(peeks)
        )
        whole += overall and any(
            srm_check(int(cand[run, k].sum()), int(stable[run, k].sum()), ratio, alpha).mismatch
            for k in range(peeks)
        )
    return strata / runs, whole / runs


@pytest.mark.parametrize("ratio", [0.5, 0.1])
def test_srm_on_users_is_quiet_under_correct_routing(ratio: float) -> None:
    """Lindon & Malek (arXiv 2011.03567): with sticky buckets each user is in the candidate
    with probability r whatever their class, so the product of the strata's Bayes factors is a
    test martingale: at most alpha of the runs ever flag, peeking after every 50 users."""
    runs, users = 300, 3000
    rng = np.random.default_rng([2011, int(ratio * 100)])
    classes = rng.choice(ACTIVITY_CLASSES, size=(runs, users), p=CLASS_SHARES)
    in_candidate = rng.random((runs, users)) < ratio
    strata, _ = srm_flags(in_candidate, classes, ratio, 50, ALPHA, overall=False)
    low, _ = wilson(round(strata * runs), runs)
    assert low < ALPHA
    assert strata <= ALPHA + 0.01


def test_srm_on_users_catches_heavy_users_skewed_to_the_candidate() -> None:
    """A routing bug sends the heaviest class to the candidate 2.5× as often as it should, and
    light users correspondingly less, so the overall user split stays right. At 5 000 users of
    a 10 % step the stratified check (at the plan's default 0.001) flags it in ≥ 95 % of the
    runs, where the overall split alone barely ever does."""
    runs, users, ratio = 300, 5000, 0.1
    rng = np.random.default_rng(20110306)
    classes = rng.choice(ACTIVITY_CLASSES, size=(runs, users), p=CLASS_SHARES)
    p = np.full(ACTIVITY_CLASSES, ratio)
    p[4] = 2.5 * ratio
    light = CLASS_SHARES[:2].sum()
    p[:2] = ratio - (p[4] - ratio) * CLASS_SHARES[4] / light  # same expected overall share
    assert float(CLASS_SHARES @ p) == pytest.approx(ratio)
    in_candidate = rng.random((runs, users)) < p[classes]
    strata, overall = srm_flags(in_candidate, classes, ratio, 100, 0.001, overall=True)
    assert strata >= 0.95
    assert overall <= 0.05


# --- the hard floor's one-sample bound -----------------------------------------------------------


def floor_flags(rate: float, floor: float, alpha: float, seed: int) -> float:
    """Share of runs where ``exceeds_floor`` ever fires, clustered users, peek every 20 users."""
    runs, users, batch = 300, 1000, 20
    rng = np.random.default_rng(seed)
    x, y = clustered_users(rng, (runs, users), mean=rate)
    sums = cumulative_arms(x, y, np.ones((runs, users), dtype=bool), batch)["candidate"]
    fired = 0
    for run in range(runs):
        for k in range(sums[0].shape[1]):
            arm = RatioMoments(int(sums[0][run, k]), *(float(v[run, k]) for v in sums[1:]))
            if exceeds_floor(arm, floor, alpha=alpha, n_star=200)[0]:
                fired += 1
                break
    return fired / runs


@pytest.mark.parametrize(("rate", "limit"), [(0.2, ALPHA + 0.01), (0.1, 0.0)])
def test_the_floor_is_quiet_for_a_rate_at_or_below_it_at_every_peek(
    rate: float, limit: float
) -> None:
    """Errors clustered by user (ICC 0.3): a true error rate at the 20 % floor breaks it in at
    most alpha of the runs over 50 peeks; half the floor never does."""
    assert floor_flags(rate, 0.2, ALPHA, seed=int(rate * 1000)) <= limit


def test_the_floor_speaks_for_a_rate_well_above_it() -> None:
    assert floor_flags(0.4, 0.2, 0.001, seed=40) >= 0.99
