"""``graylayer demo``: the article's case study, end to end on real agents (the ``--quick`` size).

One quick run (real ``create_agent`` agents, GrayRouter, handlers and RolloutController on a
simulated clock) is shared by the checks; the command line runs it again with the same seed and
must write the same summary.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("langchain.agents", reason="the demo's agents need langchain (the [dev] extra)")

from langchain_graylayer.cli.main import main
from langchain_graylayer.demo import LAYER_SHARES, DemoResult, run_demo
from langchain_graylayer.demo.plot import VERSION_COLOURS, figure, figure_data
from langchain_graylayer.plan.gates import GuardrailMetric

SEED = 11
ACT_ONE, ACT_TWO = "refund-v2-0", "refund-v2-1"
DAY_TIME = r"day\s+(\d+) (\d\d):(\d\d)"
"""How the text writes a time: ``day  1 15:15`` (1-based days)."""


@pytest.fixture(scope="module")
def played() -> tuple[DemoResult, list[str]]:
    lines: list[str] = []
    run = run_demo(seed=SEED, quick=True, echo=lines.append)
    return run, lines


@pytest.fixture(scope="module")
def result(played: tuple[DemoResult, list[str]]) -> DemoResult:
    return played[0]


@pytest.fixture(scope="module")
def text(played: tuple[DemoResult, list[str]]) -> list[str]:
    return played[1]


def day_number(match: re.Match[str]) -> float:
    """The 1-based day number of a ``day  1 15:15`` the text printed."""
    day, hours, minutes = (int(g) for g in match.groups()[:3])
    return day + (hours * 60 + minutes) / 1440


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
    # the policy evaluator catches the wrong refund rule (a built-in guardrail may, too)
    assert "eval:refund_policy" in reason or any(m.value in reason for m in GuardrailMetric), reason
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
    assert float(rows[0]["day"]) > 1  # 1-based, like the text
    assert {row["candidate"] for row in rows} == {"v2.0", "v2.1"}
    assert float(rows[-1]["ratio_vip"]) == 1.0
    png = tmp_path / "rollout.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists()
        assert "pip install matplotlib" in printed

    same = json.loads((tmp_path / "summary.json").read_text())
    assert same == json.loads(json.dumps(result.summary()))


# --------------------------------------------------------------------------- issue #11
def test_text_timeline_and_plot_agree_on_the_plan_wide_rollback(
    result: DemoResult, text: list[str]
) -> None:
    """A rollback is plan-wide: every layer that had v2.0 drops to 0, and all three say so."""
    rollback = re.compile(rf"^  {DAY_TIME}  (\w+)\s+(\d+)% → 0%\s+rollback")
    in_text = {
        m.group(4): day_number(m) for line in text if (m := rollback.match(line)) is not None
    }
    rows = result.timeline
    at = next(i for i, row in enumerate(rows) if row["time"] == result.rollback["time"])
    in_timeline = {
        name: rows[at]["day"]
        for name in LAYER_SHARES
        if rows[at - 1][f"ratio_{name}"] > 0 and rows[at][f"ratio_{name}"] == 0
    }
    in_plot = {m.layer: m.day for m in figure_data(result).markers if m.kind == "rollback"}

    assert set(in_text) == {"internal", "early_adopter", "normal"}, text
    assert set(in_text) == set(in_timeline) == set(in_plot) == set(result.rollback["layers"])
    for name, day in in_text.items():
        assert in_timeline[name] == pytest.approx(day, abs=1e-4)
        assert in_plot[name] == pytest.approx(day, abs=1e-4)
    (summary,) = [line for line in text if line.startswith("act one: v2.0 rolled back")]
    assert set(re.findall(r"(\w+) \d+% → 0%", summary)) == set(in_text)


def test_refund_examples_are_wrong_ones_and_a_correct_one_is_labelled(text: list[str]) -> None:
    start = next(i for i, line in enumerate(text) if "under-refunded" in line)
    assert text[start].endswith("e.g.:")
    refund = re.compile(r"issue_refund\(O-\d+, EUR ([\d.]+), .*\)  owed EUR ([\d.]+)$")
    block = text[start + 1 :]
    examples = [m for line in block[:3] if (m := refund.search(line))]
    assert len(examples) == 3
    for m in examples:
        assert float(m.group(1)) < float(m.group(2)), "an example of an under-refund is one"
    assert block[3].startswith("    for contrast, one of the")  # the correct one is labelled
    m = refund.search(block[4])
    assert m is not None
    assert float(m.group(1)) == float(m.group(2))


def test_days_are_one_based_in_the_text_the_timeline_and_the_plot(
    result: DemoResult, text: list[str]
) -> None:
    rows = result.timeline
    assert rows[0]["day"] == pytest.approx(1 + 15 / 1440, abs=1e-4)  # the first tick, 00:15
    days = {round(row["day"], 4) for row in rows}
    printed = [m for line in text if (m := re.match(rf"^  {DAY_TIME}  ", line))]
    assert printed
    for m in printed:  # every decision printed is at a tick of the timeline
        assert round(day_number(m), 4) in days, m.group(0)
    (act_two,) = [m for line in text if (m := re.search(rf"act two: {DAY_TIME}", line))]
    assert result.restart_day == pytest.approx(day_number(act_two), abs=1e-4)

    assert figure_data(result).days == [row["day"] for row in rows]
    pytest.importorskip("matplotlib")
    bottom = figure(result).axes[len(LAYER_SHARES) - 1]
    assert bottom.get_xlim()[0] == 1
    labels = [t.get_text() for t in bottom.get_xticklabels()]
    assert labels[:2] == ["day 1", "day 2"]
    assert list(bottom.get_xticks()[:2]) == [1, 2]


def test_headline_says_met_or_missed_and_promotions_name_their_users(
    result: DemoResult, text: list[str]
) -> None:
    (exposure,) = [line for line in text if line.startswith("  exposure to the bug ≤ 0.1%")]
    gap = abs(result.exposure_share - 0.001) * 100
    if result.exposure_share <= 0.001:
        assert exposure.endswith(f"met, {gap:.3f} points to spare")
    else:
        assert exposure.endswith(f"missed by {gap:.3f} points")
    assert f"{result.exposure_share:.3%}" in exposure
    rollout = next(line for line in text if line.startswith("  full rollout by day 10:"))
    assert ": met, " in rollout  # day 3 of the quick run
    resolution = next(line for line in text if line.startswith("  resolution ≥ 85%"))
    assert re.search(r": (met, [\d.]+ points to spare|missed by [\d.]+ points)$", resolution)

    promotions = [d for d in result.decisions if d.action == "promote"]
    assert len(promotions) == 7  # two in act one, five in act two
    for d in promotions:
        row = next(
            line
            for line in text
            if d.layer in line and d.plan in line and d.change in line and "promote" in line
        )
        few = d.candidate_users is not None and d.candidate_users < 30
        assert row.endswith(f"{d.candidate_users} (few)" if few else f"{d.candidate_users}"), row
        if few:  # only a timeout promotes on so few users; the row names the rule
            assert d.rule == "timeout_no_harm" or d.resized
            assert f" {d.rule} " in row
    assert any(line.startswith("  few = fewer than 30 candidate users") for line in text)


def test_plot_shows_small_multiples_decision_markers_and_the_rollback_trigger(
    result: DemoResult,
) -> None:
    collections = pytest.importorskip("matplotlib.collections")
    fig = figure(result)
    rows, (trigger, legend) = fig.axes[: len(LAYER_SHARES)], fig.axes[len(LAYER_SHARES) :]
    assert [ax.get_ylabel() for ax in rows] == list(LAYER_SHARES)  # one row per layer
    layer_colours = {ax.yaxis.label.get_color() for ax in rows}
    version_colours = {line.get_color() for ax in rows for line in ax.get_lines()}
    assert version_colours & set(VERSION_COLOURS.values()) == {
        VERSION_COLOURS["v2.0"],
        VERSION_COLOURS["v2.1"],
    }
    assert not layer_colours & version_colours  # two colour schemes
    for ax, name in zip(rows, LAYER_SHARES, strict=True):
        markers = [c for c in ax.collections if isinstance(c, collections.PathCollection)]
        marked = [d for d in result.decisions if d.layer == name]
        assert len(markers) == len(marked), name  # one marker per promote, rollback, alert
    assert {d.action for d in result.decisions} == {"promote", "rollback", "alert"}
    harmed = next(g for g in result.rollback["verdict"]["guardrails"] if g["harm"])
    drawn = sorted(float(line.get_xdata()[0]) for line in trigger.get_lines())
    assert drawn == sorted([harmed["candidate_rate"], harmed["stable_rate"]])
    labels = " ".join(t.get_text() for t in legend.get_legend().get_texts())
    assert all(word in labels for word in ("promote", "rollback", "alert", "v2.0", "v2.1"))
    assert not any("12 h" in ax.get_ylabel() for ax in fig.axes)
