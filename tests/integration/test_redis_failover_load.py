"""Failover under load: the Sentinel-managed primary is killed while two routers serve
requests and two controllers tick. No request fails, no controller action happens twice."""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import pytest
from _failover import failover_under_load


def test_killing_the_primary_under_load_fails_no_request_and_repeats_no_action(
    tmp_path: Path,
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found")  # conftest's fixtures fail in CI instead
    run = failover_under_load(binary, tmp_path, seconds=14.0, max_requests=6000)

    assert run.requests_during >= 20, "too little load during the failover to say anything"
    assert run.requests_after >= 20, "too little load after the failover to say anything"
    assert run.failed == [], f"{len(run.failed)} of {run.requests} requests failed"
    assert not math.isnan(run.recovered), "no store write succeeded within 30 s of the kill"
    assert run.actions_before_kill >= 2, run.actions  # the controllers were acting...
    assert len(run.actions) > run.actions_before_kill, run.actions  # ...and still act after
    assert run.duplicates == [], run.actions
    promotions = [(e.old_ratio, e.new_ratio) for e in run.audit if e.action == "promote"]
    for (_, new), (old, _) in itertools.pairwise(promotions):
        assert old == new, promotions  # each step once, none skipped
    print(f"{run.requests} requests ({run.requests_during} during the failover), recovered "
          f"after {run.recovered:.1f} s, {run.actions}, {run.router_counts}")  # fmt: skip
