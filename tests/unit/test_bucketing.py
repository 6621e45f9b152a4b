"""Bucketing is pinned by a language-neutral table (built with coreutils' sha256sum)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from langchain_graylayer.plan.bucketing import BUCKETS, bucket, in_candidate, ratio_threshold

CASES = json.loads((Path(__file__).parent.parent / "data" / "bucketing_cases.json").read_text())


@pytest.mark.parametrize(
    "case", CASES["buckets"], ids=lambda c: f"{c['salt'][:10]}/{c['user_id'][:10]}"
)
def test_bucket_matches_table(case: dict[str, object]) -> None:
    assert bucket(str(case["salt"]), str(case["user_id"])) == case["bucket"]


@pytest.mark.parametrize("case", CASES["ratios"], ids=lambda c: f"{c['bucket']}@{c['ratio']}")
def test_candidate_threshold_matches_table(case: dict[str, object]) -> None:
    assert in_candidate(int(case["bucket"]), float(case["ratio"])) is case["candidate"]  # type: ignore[arg-type]


def test_separator_keeps_salt_and_user_apart() -> None:
    assert bucket("ab", "c") != bucket("a", "bc")


def test_raising_the_ratio_keeps_every_candidate_user() -> None:
    users = [f"user-{i}" for i in range(5000)]
    previous: set[str] = set()
    for ratio in (0.01, 0.1, 0.5, 1.0):
        chosen = {u for u in users if in_candidate(bucket("plan", u), ratio)}
        assert previous <= chosen
        previous = chosen
    assert previous == set(users)


def test_buckets_are_uniform_enough() -> None:
    counts = Counter(bucket("uniformity", f"u{i}") // 1000 for i in range(50_000))
    assert set(counts) == set(range(10))
    assert all(4500 < n < 5500 for n in counts.values())


def test_float_ratio_never_admits_an_extra_bucket() -> None:
    assert 0.07 * BUCKETS > 700  # the trap
    assert ratio_threshold(0.07) == 700
    assert ratio_threshold(-1) == 0
    assert ratio_threshold(2) == BUCKETS
