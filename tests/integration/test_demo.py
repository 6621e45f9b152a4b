"""``graylayer demo``: the article's case study, end to end on real agents (the ``--quick`` size).

One quick run (real ``create_agent`` agents, GrayRouter, handlers and RolloutController on a
simulated clock) is shared by the checks; the command line runs it again with the same seed and
must write the same summary.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("langchain.agents", reason="the demo's agents need langchain (the [dev] extra)")

from langchain_graylayer.cli.main import main
from langchain_graylayer.demo import LAYER_SHARES, DemoResult, run_demo
from langchain_graylayer.plan.gates import GuardrailMetric

SEED = 11
ACT_ONE, ACT_TWO = "refund-v2-0", "refund-v2-1"


@pytest.fixture(scope="module")
def result() -> DemoResult:
    lines: list[str] = []
    run = run_demo(seed=SEED, quick=True, echo=lines.append)
    assert any("rollback" in line for line in lines), "the progress shows the rollback"
    return run


def entries(result: DemoResult, plan: str, action: str) -> list[dict[str, object]]:
    return [e for e in result.audit if e["plan"] == plan and e["action"] == action]


def test_population_has_the_article_layer_shares(result: DemoResult) -> None:
    assert result.users == 3000
    for name, share in LAYER_SHARES.items():
        assert result.layers[name]["share"] == pytest.approx(share, abs=0.001), name
        assert result.layers[name]["requests"] > 0, f"{name} got no traffic"


def test_act_one_rolls_back_in_the_normal_layer_on_a_guardrail(result: DemoResult) -> None:
    (rollback,) = entries(result, ACT_ONE, "rollback")
    assert rollback["layer"] == "normal"
    assert rollback["operator"] == "controller"
    reason = str(rollback["reason"])
    assert reason.startswith("harm on ")
    assert any(metric.value in reason for metric in GuardrailMetric), reason
    # caught in normal: no later layer ever saw the buggy candidate
    opened = {e["layer"] for e in entries(result, ACT_ONE, "start_layer")}
    assert opened == {"internal", "early_adopter", "normal"}


def test_rollback_cleans_sessions_and_lists_refund_calls(result: DemoResult) -> None:
    (cleanup,) = entries(result, ACT_ONE, "cleanup")
    assert result.sessions_moved > 0
    assert f"{result.sessions_moved} candidate session(s) moved" in str(cleanup["reason"])
    assert result.histories_cleared >= 2 * result.sessions_moved  # every moved chat was emptied
    calls = result.refund_calls
    assert calls
    assert all(call["tool"] == "issue_refund" for call in calls)
    under = [c for c in calls if c["arguments"]["amount"] < c["owed"] - 0.005]
    assert under, "the wrong late-delivery refunds are among the calls to review"
    assert {c["layer"] for c in under} == {"normal"}


def test_act_two_takes_the_fix_to_every_layer(result: DemoResult) -> None:
    assert entries(result, ACT_TWO, "rollback") == []
    assert len(entries(result, ACT_TWO, "complete")) == 1
    assert {name: row["ratio"] for name, row in result.layers.items()} == dict.fromkeys(
        LAYER_SHARES, 1.0
    )
    assert result.restart_day is not None
    assert result.complete_day is not None
    assert result.rollback["day"] < result.restart_day < result.complete_day
    assert result.completion_after > result.completion_before + 0.1


def test_exposure_counts_only_users_who_got_a_wrong_answer(result: DemoResult) -> None:
    wrong = result.wrong_answers
    assert wrong, "the bug reached some users before the rollback"
    for answer in wrong:
        assert answer["layer"] == "normal"
        assert answer["agent"] == "support_v2_0"  # the buggy candidate answered
        assert answer["refunded"] < answer["owed"]
        assert answer["time"] <= result.rollback["time"]
    assert result.exposed_users == len({answer["user"] for answer in wrong})
    assert result.exposure_share == result.exposed_users / result.users
    assert result.summary()["exposed_users"] == result.exposed_users


def test_command_writes_the_files_and_the_same_seed_gives_the_same_summary(
    result: DemoResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--quick", "--seed", str(SEED), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "exposure to the bug" in printed
    assert "full rollout" in printed

    audit = json.loads((tmp_path / "audit.json").read_text())
    assert {entry["plan"] for entry in audit} == {ACT_ONE, ACT_TWO}
    with (tmp_path / "timeline.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    assert {f"ratio_{name}" for name in LAYER_SHARES} <= set(rows[0])
    assert float(rows[-1]["ratio_vip"]) == 1.0
    png = tmp_path / "rollout.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists()
        assert "pip install matplotlib" in printed

    same = json.loads((tmp_path / "summary.json").read_text())
    assert same == json.loads(json.dumps(result.summary()))
