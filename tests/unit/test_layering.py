"""The A-RFM score and layer assignment, checked against worked values (docs/background.md)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from langchain_graylayer import ConfigurationError, RolloutPlan, UserProfile
from langchain_graylayer.plan import LayerReason, LayerScorer, ScoreWeights, ScoringConfig, TagRule
from langchain_graylayer.plan.assignment import LayerAssignment, activity_class
from langchain_graylayer.plan.rules import sensitive_word

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
SCORER = LayerScorer(clock=NOW.timestamp)


def term(name: str, user: UserProfile, clock: datetime = NOW, **config: object) -> float:
    """One A-RFM term of ``user``: the score when that term alone has weight 1."""
    weights = dict.fromkeys(("recency", "frequency", "value", "acceptance"), 0.0) | {name: 1.0}
    scoring = ScoringConfig(weights=ScoreWeights(**weights), **config)  # type: ignore[arg-type]
    return LayerScorer(scoring, clock=clock.timestamp).score(user)


def profile(ago: timedelta, uses: int, value: float, accept: float, **kw: object) -> UserProfile:
    return UserProfile(
        last_use_time=NOW - ago, use_count=uses, user_value=value, accept_score=accept, **kw
    )


@pytest.mark.parametrize(
    ("ago", "uses", "value", "accept", "score", "layer"),
    [
        (timedelta(hours=1), 50, 1_000, 9, 0.8667, "early_adopter"),
        (timedelta(days=7), 10, 10_000, 5, 0.5933, "high_value"),
        (timedelta(days=29), 2, 50_000, 2, 0.2207, "vip"),
    ],
)
def test_worked_values(
    ago: timedelta, uses: int, value: float, accept: float, score: float, layer: str
) -> None:
    user = profile(ago, uses, value, accept)
    assert SCORER.score(user) == pytest.approx(score, abs=5e-5)
    assigned = RolloutPlan.default("p").assign_layer("u", user, SCORER)
    # the activity class (for sample-ratio checks) comes from the same use count
    expected = LayerAssignment(
        layer, LayerReason.SCORE, pytest.approx(score, abs=5e-5), activity_class(uses)
    )
    assert assigned == expected
    assert LayerAssignment.decode(assigned.encode()) == assigned


def test_terms_are_clipped_to_unit_interval() -> None:
    future = profile(-timedelta(days=3), 10_000, 10**9, 50)
    terms = [term(name, future) for name in ("recency", "frequency", "value", "acceptance")]
    assert terms == [1, 1, 0, 1]
    never = UserProfile()
    assert term("recency", never) == 0.0


def test_naive_datetimes_are_utc() -> None:
    naive = UserProfile(last_use_time=(NOW - timedelta(days=15)).replace(tzinfo=None))
    assert term("recency", naive) == pytest.approx(0.5)


def test_clock_is_injected() -> None:
    user = profile(timedelta(0), 0, 0, 0)
    assert term("recency", user) == 1.0
    assert term("recency", user, clock=NOW + timedelta(days=15)) == pytest.approx(0.5)


def test_maxima_are_configuration() -> None:
    user, maxima = profile(timedelta(days=5), 5, 0, 0), {"max_use_count": 10, "max_interval": "10d"}
    terms = (term("frequency", user, **maxima), term("recency", user, **maxima))
    assert terms == (pytest.approx(0.5), pytest.approx(0.5))


def test_presets_sum_to_one() -> None:
    for name, field, weight in [("high_risk", "value", 0.5), ("consumer", "acceptance", 0.4)]:
        weights = ScoringConfig.preset(name).weights  # type: ignore[arg-type]
        assert getattr(weights, field) == weight
        total = weights.recency + weights.frequency + weights.value + weights.acceptance
        assert abs(total - 1) < 1e-9
    with pytest.raises(ConfigurationError, match="preset"):
        ScoringConfig.preset("nope")  # type: ignore[arg-type]


def test_weights_compare_within_tolerance_not_equality() -> None:
    # 0.1 + 0.2 != 0.3 in floating point; a sum within 1e-9 of 1 is accepted
    ScoringConfig(weights={"recency": 0.1, "frequency": 0.2, "value": 0.3, "acceptance": 0.4})
    with pytest.raises(ConfigurationError, match=r"scoring|weights.*sum to 1\.0\d*1"):
        ScoringConfig(
            weights={"recency": 0.1, "frequency": 0.2, "value": 0.3, "acceptance": 0.4 + 1e-7}
        )


class TestAssignment:
    plan = RolloutPlan.from_dict(
        {
            "id": "p",
            "layers": [
                {"name": "internal", "members": ["alice"], "rules": ['group == "staff"']},
                *RolloutPlan.default("p").model_dump()["layers"],
            ],
        }
    )

    def test_no_profile_goes_to_default_layer_not_high_value(self) -> None:
        assert self.plan.assign_layer("nobody", None, SCORER) == LayerAssignment(
            "vip", LayerReason.NO_PROFILE
        )

    def test_explicit_members_win_over_score_even_without_profile(self) -> None:
        assert self.plan.assign_layer("alice", None, SCORER).layer == "internal"
        staff = profile(timedelta(days=29), 0, 90_000, 0, tags={"group": "staff"})
        assert self.plan.assign_layer("bob", staff, SCORER) == LayerAssignment(
            "internal", LayerReason.MEMBERSHIP
        )

    def test_opt_out_beats_everything(self) -> None:
        optout = profile(timedelta(hours=1), 50, 0, 10, allow_gray=False, tags={"group": "staff"})
        assert self.plan.assign_layer("alice", optout, SCORER) == LayerAssignment(
            None, LayerReason.OPT_OUT
        )

    @pytest.mark.parametrize(
        ("score", "layer"),
        [(1.0, "early_adopter"), (0.8, "early_adopter"), (0.7999, "normal"), (0.6, "normal"),
         (0.3, "high_value"), (0.2999, "vip"), (0.0, "vip")],
    )  # fmt: skip
    def test_boundaries_are_low_inclusive(self, score: float, layer: str) -> None:
        scorer = LayerScorer(clock=NOW.timestamp)
        scorer.score = lambda _p: score  # type: ignore[method-assign]
        assert self.plan.assign_layer("u", UserProfile(), scorer).layer == layer


class TestTagRule:
    @pytest.mark.parametrize(
        ("text", "tags", "matches"),
        [
            ('group == "staff"', {"group": "staff"}, True),
            ("group == staff", {"group": "ops"}, False),
            ("group != staff", {"group": "ops"}, True),
            ("group != staff", {}, False),
            ("tier in [beta, alpha]", {"tier": "alpha"}, True),
            ("tier not in [beta, alpha]", {"tier": "gold"}, True),
            ("tier not in [beta, alpha]", {"tier": "beta"}, False),
            ("cohort == 7", {"cohort": "7"}, True),
        ],
    )
    def test_matching(self, text: str, tags: dict[str, str], matches: bool) -> None:
        assert TagRule.parse(text).matches(tags) is matches

    @pytest.mark.parametrize(
        "text", ["group staff", "== staff", "tier in beta", "tier in []", "group == [a]"]
    )
    def test_bad_syntax_is_rejected(self, text: str) -> None:
        with pytest.raises(ConfigurationError):
            TagRule.parse(text)

    @pytest.mark.parametrize(
        "attribute",
        ["race", "Ethnicity", "gender", "religion", "health_status", "sexualOrientation",
         "political_opinion", "user.disability", "trade-union"],
    )  # fmt: skip
    def test_sensitive_attributes_are_rejected(self, attribute: str) -> None:
        with pytest.raises(ConfigurationError, match="sensitive"):
            TagRule.parse(f"{attribute} == x")

    @pytest.mark.parametrize("attribute", ["usage", "group", "tier", "region", "plan_type"])
    def test_ordinary_attributes_pass(self, attribute: str) -> None:
        assert sensitive_word(attribute) is None


def test_assignment_encoding_round_trips() -> None:
    for assignment in [
        LayerAssignment("vip", LayerReason.SCORE, 0.123456789),
        LayerAssignment(None, LayerReason.OPT_OUT),
        LayerAssignment("internal", LayerReason.MEMBERSHIP),
    ]:
        assert LayerAssignment.decode(assignment.encode()) == assignment
