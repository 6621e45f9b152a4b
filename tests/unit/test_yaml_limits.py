"""YAML is read within bounds: a plan file's size, its nesting and its alias expansion (issue
#15, item 10). Each bad document fails fast with a ConfigurationError naming the limit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from langchain_graylayer import RolloutPlan
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan._config import MAX_YAML_BYTES, MAX_YAML_NODES, load_yaml
from langchain_graylayer.plan.rules import TagRule

ROOT = Path(__file__).resolve().parents[2]


def billion_laughs(levels: int = 9) -> str:
    """Each level repeats the previous one nine times: 9**9 (387 million) values in 11 lines."""
    lines = ['a0: &a0 ["lol"]']
    for n in range(1, levels + 1):
        previous = ", ".join([f"*a{n - 1}"] * 9)
        lines.append(f"a{n}: &a{n} [{previous}]")
    return "\n".join(lines) + "\n"


def plan_with_laughs() -> str:
    """A plan whose layer list hides the laughs: validation would walk all of them."""
    return billion_laughs() + (
        "id: p\nlayers:\n  - name: vip\n    score_range: [0, 1]\n    members: *a9\n"
    )


def test_billion_laughs_fail_fast_naming_the_limit() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        load_yaml(billion_laughs(), field="plan.yaml")
    assert time.monotonic() - started < 1.0
    assert f"at most {MAX_YAML_NODES} values after alias expansion" in str(info.value)
    assert str(info.value).startswith("plan.yaml:")


def test_a_plan_file_of_billion_laughs_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(plan_with_laughs(), encoding="utf-8")

    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="alias expansion"):
        RolloutPlan.from_yaml(path)
    assert time.monotonic() - started < 1.0


def test_graylayer_validate_refuses_billion_laughs_in_seconds(tmp_path: Path) -> None:
    """BUG: ``graylayer validate`` ran for over 60 s on this file."""
    path = tmp_path / "plan.yaml"
    path.write_text(plan_with_laughs(), encoding="utf-8")
    command = [sys.executable, "-m", "langchain_graylayer.cli", "validate", str(path)]

    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    elapsed = time.monotonic() - started

    assert done.returncode != 0
    assert "alias expansion" in done.stderr, done.stderr
    assert elapsed < 20  # the interpreter and its imports; the check itself takes milliseconds


def test_a_recursive_anchor_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="alias expansion"):
        load_yaml("a: &a [1, *a]\n")


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (MAX_YAML_BYTES + 10) + b"\nid: p\n")

    with pytest.raises(ConfigurationError) as info:
        RolloutPlan.from_yaml(path)
    assert f"at most {MAX_YAML_BYTES} bytes" in str(info.value)


def test_nesting_too_deep_to_parse_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="nested less deeply"):
        load_yaml("[" * 50_000 + "]" * 50_000)


def test_shared_anchors_within_the_limit_load() -> None:
    text = "base: &b {min_samples: 20}\nx: *b\ny: *b\n"
    assert load_yaml(text) == {"base": {"min_samples": 20}, "x": {"min_samples": 20},
                               "y": {"min_samples": 20}}  # fmt: skip
    assert load_yaml(billion_laughs(3)) is not None  # 9**3 values: well under the limit


def test_the_example_plans_still_load() -> None:
    for path in sorted((ROOT / "examples").rglob("plan*.yaml")):
        assert RolloutPlan.from_yaml(path).id


def test_a_rule_value_of_laughs_is_refused_quickly() -> None:
    laughs = "[" + ", ".join(["&x [a, a, a, a, a, a, a, a, a, a]"] + ["*x"] * 200) + "]"
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="non-empty list"):
        TagRule.parse(f"tier in {laughs}")  # 2 000 values behind 201 items: over the rule's bound
    assert time.monotonic() - started < 1.0
