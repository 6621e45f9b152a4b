"""Plans load from YAML/dicts and fail at load, naming the field, the value and what is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from langchain_graylayer import ConfigurationError, LayerSpec, RolloutPlan

EXAMPLE_PLAN = Path(__file__).parents[2] / "examples" / "plan.yaml"


def layers(*ranges: tuple[float, float]) -> list[dict[str, Any]]:
    return [{"name": f"l{i}", "score_range": list(r)} for i, r in enumerate(ranges)]


def test_default_plan_is_the_articles_four_layers() -> None:
    plan = RolloutPlan.default("refund-v2")
    assert plan.layer_names == ["early_adopter", "normal", "high_value", "vip"]
    assert [layer.score_range for layer in plan.layers] == [
        (0.8, 1.0), (0.6, 0.8), (0.3, 0.6), (0.0, 0.3)
    ]  # fmt: skip
    assert plan.default_layer_name == "vip"
    assert plan.layer_cache_ttl == 86400
    assert plan.fallback_to_stable is True
    assert plan.effective_salt == "refund-v2"
    assert all(layer.steps == (0.01, 0.1, 0.5, 1.0) for layer in plan.layers)


def test_example_yaml_plan_loads() -> None:
    plan = RolloutPlan.from_yaml(EXAMPLE_PLAN)
    assert plan.layer_names[0] == "internal"
    assert plan.layer("internal").tag_rules
    assert plan.candidate.model_name


def test_yaml_round_trip(tmp_path: Path) -> None:
    plan = RolloutPlan.default("p", layer_cache_ttl="2h", default_layer="normal")
    path = tmp_path / "plan.yaml"
    import yaml

    path.write_text(yaml.safe_dump(plan.model_dump(mode="json")))
    again = RolloutPlan.from_yaml(path)
    assert again == plan
    assert again.layer_cache_ttl == 7200


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"id": "p", "layers": layers((0, 0.5), (0.4, 1))}, "layers[1].score_range", "overlap"),
        ({"id": "p", "layers": layers((0, 0.5), (0.6, 1))}, "layers[1].score_range", "gap"),
        ({"id": "p", "layers": layers((0.1, 1))}, "layers[0].score_range", "gap"),
        ({"id": "p", "layers": layers((0, 0.9))}, "layers[0].score_range", "covering [0, 1]"),
        ({"id": "p", "layers": layers((0.5, 0.2))}, "layers[0].score_range", "low < high"),
        (
            {"id": "p", "layers": [*layers((0, 1)), {"name": "l0", "members": ["a"]}]},
            "layers[1].name",
            "unique",
        ),
        (
            {"id": "p", "layers": [{"name": "a", "score_range": [0, 1], "steps": [0.5, 0.1]}]},
            "layers[0].steps",
            "strictly increasing",
        ),
        (
            {"id": "p", "layers": [{"name": "a", "score_range": [0, 1], "steps": [0, 0.5]}]},
            "layers[0].steps",
            "(0, 1]",
        ),
        (
            {"id": "p", "layers": [{"name": "a", "score_range": [0, 1], "steps": [0.5, 1.5]}]},
            "layers[0].steps",
            "(0, 1]",
        ),
        (
            {"id": "p", "layers": [{"name": "a", "score_range": [0, 1], "steps": [0.00005, 1]}]},
            "layers[0].steps",
            "0.0001",
        ),
        (
            {
                "id": "p",
                "layers": [{"name": "a", "score_range": [0, 1], "rules": ["religion == x"]}],
            },
            "layers[0].rules[0]",
            "sensitive",
        ),
        (
            {"id": "p", "layers": layers((0, 1)), "scoring": {"weights": {"recency": 0.3}}},
            "scoring.weights",
            "sum to 1.1",
        ),
        ({"id": "p", "layers": layers((0, 1)), "default_layer": "zz"}, "default_layer", "one of"),
        ({"id": "p", "layers": layers((0, 1)), "session_ttl": "soon"}, "session_ttl", "duration"),
        ({"id": "P Q", "layers": layers((0, 1))}, "id", "a-z"),
        ({"id": "p", "layers": [{"name": "x"}]}, "layers[0]", "score_range, members or rules"),
        ({"id": "p", "layers": []}, "layers", "at least 1"),
        ({"id": "p"}, "layers", "required"),
        ({"id": "p", "layers": layers((0, 1)), "fallback": True}, "fallback", "no such field"),
    ],
)
def test_invalid_plans_fail_at_load_with_field_value_and_expectation(
    data: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        RolloutPlan.from_dict(data)
    error = info.value
    assert error.field == field
    assert fragment in error.expected
    assert str(error).startswith(f"{field}: got ")
    assert isinstance(error, ValueError)


def test_direct_construction_raises_configuration_error_too() -> None:
    with pytest.raises(ConfigurationError, match=r"steps"):
        LayerSpec(name="a", score_range=(0, 1), steps=(0.2, 0.2))


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: p\nlayers: [\n")
    with pytest.raises(ConfigurationError, match=r"broken\.yaml"):
        RolloutPlan.from_yaml(path)
    path.write_text("id: p\nlayers:\n  - name: a\n    score_range: [0, 0.5]\n")
    with pytest.raises(ConfigurationError) as info:
        RolloutPlan.from_yaml(path)
    assert "broken.yaml" in "".join(getattr(info.value, "__notes__", []))
    with pytest.raises(ConfigurationError, match="mapping"):
        RolloutPlan.from_dict(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_plans_with_only_explicit_layers_are_valid() -> None:
    plan = RolloutPlan.from_dict({"id": "p", "layers": [{"name": "testers", "members": ["a"]}]})
    assert plan.default_layer_name == "testers"


def test_unknown_layer_lookup_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"layer: got 'gold'; expected one of"):
        RolloutPlan.default("p").layer("gold")
