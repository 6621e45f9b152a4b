"""The rollout simulator drives the product's own controller on synthetic counts, faithfully.

* what the controller reads through its ``MetricSource`` is exactly what the generator drew for
  the ticks of the step being judged (every field, every arm, every read);
* tiny runs give sane answers: a −25-point candidate is rolled back, an A/A one is not;
* the article engine rolls back on an hour without candidate traffic (its known flaw), where
  the product's judge holds;
* the same seed gives the same results, in one process or several.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_graylayer import cli
from langchain_graylayer import simulate as sim
from langchain_graylayer.judging.qos import article_qos_verdict
from langchain_graylayer.judging.readmodel import ArmStats, MetricSource, Snapshot
from langchain_graylayer.plan.plan import Version


class RecordingTraffic(sim.Traffic):
    """Keeps, independently of the cumulative arrays, every tick's draws and ratios."""

    def __init__(
        self, population: sim.Population, scenario: sim.Scenario, seed: tuple[int, ...], ticks: int
    ) -> None:
        self.rows: list[np.ndarray] = []
        self.ratios: list[np.ndarray] = []
        super().__init__(population, scenario, seed, ticks, lambda t, row: self.rows.append(row))

    def tick(self, ratios: np.ndarray) -> None:
        self.ratios.append(np.array(ratios, dtype=float))
        super().tick(ratios)


class _RecordingArms(Mapping[tuple[str, Version], ArmStats]):
    def __init__(self, arms: Mapping[tuple[str, Version], ArmStats], log: list[Any]) -> None:
        self._arms, self._log = arms, log

    def __getitem__(self, key: tuple[str, Version]) -> ArmStats:
        try:
            value = self._arms[key]
        except KeyError:
            self._log.append((key, None))
            raise
        self._log.append((key, value))
        return value

    def __iter__(self) -> Iterator[tuple[str, Version]]:
        return iter(self._arms)

    def __len__(self) -> int:
        return len(self._arms)


class RecordingSource:
    """A ``MetricSource`` that logs every read: the window, the tick, and each arm served."""

    def __init__(self, inner: sim.SyntheticSource) -> None:
        self.inner = inner
        self.reads: list[dict[str, Any]] = []

    def snapshot(self, plan_id: str, window: float) -> Snapshot:
        snap = self.inner.snapshot(plan_id, window)
        read: dict[str, Any] = {"now": self.inner.traffic.ticks, "window": window, "arms": []}
        self.reads.append(read)
        return Snapshot(snap.plan_id, snap.window, _RecordingArms(snap.arms, read["arms"]))


def _expected(rows: list[np.ndarray], first: int, last: int, layer: int, arm: int) -> np.ndarray:
    total = np.zeros(sim.N_FIELDS)
    for row in rows[first:last]:
        total += row[layer, arm]
    return total


@pytest.mark.parametrize("scenario", ["S2-10", "S6", "S8"])
def test_controller_sees_exactly_the_generated_counts(scenario: str) -> None:
    population = sim.Population()
    traffic = RecordingTraffic(population, sim.SCENARIOS[scenario], (0, 7, 1), 12 * 12)
    recorder: list[RecordingSource] = []

    def wrap(source: sim.SyntheticSource) -> MetricSource:
        recorder.append(RecordingSource(source))
        return recorder[0]

    result = sim.run_ours(sim.make_plan(), traffic, wrap_source=wrap)
    reads = recorder[0].reads
    assert len(reads) >= 10, result
    layers = list(population.layers)
    checked = 0
    for read in reads:
        ticks = round(read["window"] / sim.TICK)
        first, last = read["now"] - max(ticks, 1), read["now"]
        for (layer_name, version), stats in read["arms"]:
            layer, arm = layers.index(layer_name), int(version is Version.CANDIDATE)
            # the window is exactly the step being judged: one ratio throughout
            step_ratios = {float(r[layer]) for r in traffic.ratios[first:last]}
            assert len(step_ratios) == 1, (read, step_ratios)
            want = _expected(traffic.rows, first, last, layer, arm)
            if stats is None:  # absent only when the generator produced no logged request
                assert want[sim.REQ] == 0
                continue
            assert stats.requests == want[sim.REQ] > 0
            assert stats.errors == want[sim.ERR]
            assert stats.completions == want[sim.DONE]
            assert stats.tool_calls == want[sim.TOOLS]
            assert stats.tool_errors == want[sim.TOOL_ERR]
            assert stats.feedback_bad == want[sim.FB_BAD]
            assert stats.feedback_good == want[sim.FB_GOOD]
            assert stats.feedback_complaint == want[sim.COMPLAINT]
            assert stats.latency.count == stats.requests
            assert math.isclose(stats.latency.sum, want[sim.LAT_SUM], rel_tol=1e-9)
            cumulative = np.cumsum(want[sim.HIST :])
            assert [c for _, c in stats.latency.buckets] == cumulative.astype(int).tolist()
            checked += 1
    assert checked >= 20
    # and the arms the controller judged are the active layer's, candidate and stable
    versions = {key[1] for read in reads for key, _ in read["arms"]}
    assert versions == {Version.CANDIDATE, Version.STABLE}


def test_generator_totals_match_users_and_rates() -> None:
    """The per-tick counts add up: requests ≥ users, logged ≤ served, rates near the inputs."""
    population = sim.Population()
    traffic = sim.Traffic(population, sim.SCENARIOS["S6"], (0, 1, 2), 48)
    for _ in range(48):
        traffic.tick(np.full(len(population.layers), 0.5))
    total = traffic.window(0)
    served_cand = traffic.cum_cand_requests[-1].sum()
    logged_cand = total[:, sim.CANDIDATE, sim.REQ].sum()
    assert logged_cand < served_cand  # 10% of the candidate's requests were never logged
    assert abs(logged_cand / served_cand - 0.9) < 0.02
    stable = total[:, sim.STABLE]
    assert stable[:, sim.REQ].sum() >= traffic.cum_users[-1, :, sim.STABLE].sum()
    done = stable[:, sim.DONE].sum() / stable[:, sim.REQ].sum()
    assert abs(done - population.completion) < 0.01
    assert stable[:, sim.HIST :].sum() == stable[:, sim.REQ].sum()


def test_tiny_runs_are_sane() -> None:
    config = sim.SimConfig(horizon_ticks=24 * 12)
    for seed in range(4):
        bad = sim.run_one(config, "S2-25", "ours", seed)
        assert bad["outcome"] == "rollback", bad
        assert bad["flag_reason"] == "completion_rate"
        assert bad["flag_exposed"] < 400
        good = sim.run_one(config, "S0", "ours", seed)
        assert good["outcome"] == "full", good
        assert good["hours"] < 12
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
    assert math.isclose(sim.article_qos(np.zeros(sim.N_FIELDS)), 0.56)
    assert article_qos_verdict(sim.article_qos(np.zeros(sim.N_FIELDS))) == "rollback"
    # a quiet first layer at a tiny step: hours without a single candidate request
    population = sim.Population(layers=("internal",), shares=(1.0,), users_per_hour=20.0)
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
