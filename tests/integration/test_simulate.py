"""The rollout simulator drives the product's own controller on returning users, faithfully.

* what the controller reads from the store is exactly the per-user evidence the traffic drew for
  the step being judged (every field, every arm, every read), recomputed independently;
* the population looks like production: users come back, a few make most sessions, their
  outcomes are correlated, traffic follows a daily cycle with a per-layer peak;
* tiny runs give sane answers: a −25-point candidate is rolled back, an A/A one is not, and a
  routing bug that skews heavy users is alerted on, never rolled back;
* the article engine rolls back on an hour without candidate traffic (its known flaw), where
  the product's judge holds;
* the same seed gives the same results, in one process or several.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_graylayer import cli
from langchain_graylayer import simulate as sim
from langchain_graylayer.judging.qos import article_qos_verdict
from langchain_graylayer.simulate.traffic import CANDIDATE, N_FIELDS, STABLE, F
from langchain_graylayer.store.evidence import FIELDS, ArmKey, ArmTotals, UnitDelta, accumulate


class RecordingTraffic(sim.Traffic):
    """Keeps, apart from its numpy arms, every per-user increment it records."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.log: list[UnitDelta] = []

    def _arm(self, key: tuple[int, str, int]) -> Any:
        arm, log, start = super()._arm(key), self.log, self.start
        layer = self.population.layers[key[0]]
        version = "candidate" if key[2] == CANDIDATE else "stable"

        class Logged:
            def add(self, users: Any, activity: Any, counts: Any) -> None:
                for user, act, row in zip(users, activity, counts, strict=True):
                    values = {name: float(row[i]) for i, name in enumerate(FIELDS) if row[i]}
                    unit = f"u{int(user) + int(start[key[0]])}"
                    log.append(UnitDelta(ArmKey(layer, key[1], version), unit, int(act), values))
                arm.add(users, activity, counts)

        return Logged()


def _same(got: ArmTotals, want: ArmTotals) -> None:
    assert (got.users, got.classes) == (want.users, want.classes)
    for name in FIELDS:
        assert got.total(name) == pytest.approx(want.total(name), abs=1e-6)
        assert got.positive(name) == want.positive(name)
        for other in FIELDS:
            assert got.product(name, other) == pytest.approx(want.product(name, other), abs=1e-6)


@pytest.mark.parametrize("scenario", ["S2-10", "S6", "S8"])
def test_the_controller_reads_exactly_the_evidence_the_traffic_drew(scenario: str) -> None:
    population = sim.Population(users=3000, sessions_per_hour=600)
    traffic = RecordingTraffic(population, sim.SCENARIOS[scenario], (0, 7, 1), 12 * 12)
    plan = sim.make_plan(sim.PlanKnobs(), population.layers)
    reads: list[tuple[str, str, dict[str, ArmTotals], int]] = []

    class Watching(sim.SimStore):
        def read_evidence(self, plan_id: str, layer: str, step: str) -> dict[str, ArmTotals]:
            arms = super().read_evidence(plan_id, layer, step)
            reads.append((layer, step, arms, len(traffic.log)))
            return arms

    original = sim.SimStore
    sim.engines.SimStore = Watching  # type: ignore[misc]
    try:
        sim.run_ours(plan, traffic)
    finally:
        sim.engines.SimStore = original  # type: ignore[misc]
    checked = 0
    for layer, step, arms, logged in reads[:: max(len(reads) // 25, 1)]:
        expected = accumulate(d for d in traffic.log[:logged] if d.arm.step == step)
        for version, got in arms.items():
            _same(got, expected[ArmKey(layer, step, version)])
            checked += 1
        assert set(arms) == {k.version for k in expected if k.layer == layer}
    assert checked >= 20


def test_the_population_comes_back_differs_and_has_a_daily_cycle() -> None:
    population = sim.Population()
    traffic = sim.Traffic(population, sim.SCENARIOS["S0"], (0, 1, 2), 24 * 12)
    normal = population.layers.index("normal")
    per_tick = []
    for _ in range(24 * 12):
        before = traffic.window(0)[normal, :, F["requests"]].sum()
        traffic.tick([0.0, 0.0, 0.5, 0.0, 0.0], ["", "", "day", "", ""])
        per_tick.append(traffic.window(0)[normal, :, F["requests"]].sum() - before)
    arms = traffic.evidence("normal", "day")
    users = arms["stable"].users + arms["candidate"].users
    requests = sum(a.total("requests") for a in arms.values())
    assert requests > 2.5 * users  # users come back
    # a few make most: E[x²]/E[x]² of requests per user is ~3 (≈1.1 if all users were alike)
    squares = sum(a.product("requests", "requests") for a in arms.values())
    assert squares / users > 2.5 * (requests / users) ** 2
    # users differ: per-user completion rates vary far more than binomial noise would
    rates = traffic.p_done
    mean = rates.mean()
    assert rates.var() == pytest.approx(population.icc * mean * (1 - mean), rel=0.15)
    # the normal layer peaks at 20:00 and is quiet at 08:00 (±60 %)
    hourly = np.add.reduceat(np.array(per_tick), np.arange(0, len(per_tick), 12))
    assert hourly[19:21].mean() > 2.5 * hourly[7:9].mean()
    # the user split is binomial: about half of the users seen
    assert arms["candidate"].users / users == pytest.approx(0.5, abs=0.03)


def test_the_logging_bug_loses_a_tenth_of_the_candidates_sessions() -> None:
    population = sim.Population(users=5000, sessions_per_hour=1000)
    traffic = sim.Traffic(population, sim.SCENARIOS["S6"], (0, 1, 2), 48)
    for _ in range(48):
        traffic.tick([0.5] * 5, ["s"] * 5)
    recorded = traffic.window(0)[:, :, F["requests"]].sum(axis=0)
    served = traffic.served.sum(axis=0)
    assert recorded[STABLE] == served[STABLE]
    assert recorded[CANDIDATE] / served[CANDIDATE] == pytest.approx(0.9, abs=0.02)
    evidence = sum(
        arms["candidate"].total("requests")
        for layer in population.layers
        if "candidate" in (arms := traffic.evidence(layer, "s"))
    )
    assert evidence == recorded[CANDIDATE]


def test_tiny_runs_are_sane() -> None:
    config = sim.SimConfig(horizon_ticks=24 * 12)
    for seed in range(4):
        bad = sim.run_one(config, "S2-25", "ours", seed)
        assert bad["outcome"] == "rollback", bad
        assert bad["flag_reason"] == "completion_rate"
        assert bad["flag_exposed"] < 400
        good = sim.run_one(config, "S0", "ours", seed)
        assert good["outcome"] == "full", good
        assert good["hours"] < 20
        skewed = sim.run_one(config, "U3", "ours", seed)
        assert skewed["srm_alerts"] >= 1, skewed
        assert skewed["outcome"] != "rollback", skewed
    runs = sim.simulate(config, ["S0", "S2-25"], ["ours", "article"], 3)
    s0 = sim.summarise(runs, "S0", "ours")
    s225 = sim.summarise(runs, "S2-25", "ours")
    assert s0["rollback"]["k"] == 0
    assert s0["full"]["k"] == 3
    assert s225["caught"]["k"] == 3
    assert s225["full"]["k"] == 0
    article = sim.summarise(runs, "S2-25", "article")
    assert article["full"]["k"] == 3  # a 25-point drop leaves the article's QoS above 0.8


def test_article_rolls_back_on_an_empty_window_where_the_judge_holds() -> None:
    assert math.isclose(sim.article_qos(np.zeros(N_FIELDS)), 0.56)
    assert article_qos_verdict(sim.article_qos(np.zeros(N_FIELDS))) == "rollback"
    # a quiet first layer at a tiny step: hours without a single candidate request
    population = sim.Population(
        layers=("internal",), shares=(1.0,), peak_hours=(11.0,), users=300, sessions_per_hour=20
    )
    knobs = sim.PlanKnobs(steps=(("internal", (0.01, 1.0)),), max_step=(("*", 6 * 3600.0),))
    plan = sim.make_plan(knobs, population.layers)
    scenario = sim.SCENARIOS["S0"]
    article = sim.run_article(plan, sim.Traffic(population, scenario, (0, 0, 0), 36))
    assert article["outcome"] == "rollback"
    assert article["silent"] is True
    assert article["n_candidate"] == 0
    assert article["reason"] == "qos 0.560 < 0.6"
    ours = sim.run_ours(plan, sim.Traffic(population, scenario, (0, 0, 0), 36))
    assert ours["outcome"] == "timeout"
    assert not ours["flagged"]


def test_same_seed_same_results(tmp_path: Path) -> None:
    config = sim.SimConfig(horizon_ticks=24 * 12, base_seed=3)

    def strip(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in runs]

    one = strip(sim.simulate(config, ["S1", "S5"], ["ours", "article"], 2, jobs=1))
    two = strip(sim.simulate(config, ["S1", "S5"], ["ours", "article"], 2, jobs=2))
    assert one == two
    other = strip(sim.simulate(sim.SimConfig(horizon_ticks=24 * 12, base_seed=4), ["S1"],
                               ["ours"], 2))  # fmt: skip
    assert other != [r for r in one if r["scenario"] == "S1" and r["engine"] == "ours"]


def test_cli_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--scenarios", "S0,S2-25", "--seeds", "2", "--jobs", "1"]
    assert cli.main([*args, "--hours", "24", "--out", str(out), "--max-step", "1h,normal=2h"]) == 0
    printed = capsys.readouterr().out
    assert "| S2-25 | ours | 2 |" in printed
    assert "normal 120 min" in printed
    assert "Targets (ours):" in printed
    data = json.loads((out / "results.json").read_text())
    assert {s["scenario"] for s in data["summary"]} == {"S0", "S2-25"}
    assert len(data["runs"]) == 8
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header.startswith("scenario,engine,bad,seeds,rollback_rate")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "simulate.png").stat().st_size > 10_000
