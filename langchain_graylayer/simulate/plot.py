"""The simulator's figure: false rollbacks, escapes and exposure per scenario, as points with
their 95 % intervals (Wilson for rates, order statistics for medians), so a rate of 0 is a
visible point with its upper bound, not a missing bar. Needs matplotlib (the ``simulate``
extra)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_graylayer.simulate.engines import ENGINES
from langchain_graylayer.simulate.scenarios import SCENARIOS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_summaries"]

ENGINE_STYLE = {"ours": ("tab:blue", "o"), "article": ("tab:red", "s")}


def plot_summaries(path: Path, summaries: Sequence[dict[str, Any]]) -> None:
    """Three dot plots, one row per scenario: false rollbacks of good candidates, escapes of bad
    ones, and the users a bad one reached when it was caught."""
    good = [s for s in summaries if not s["bad"]]
    bad = [s for s in summaries if s["bad"]]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 1.8 + 0.4 * max(len(good), len(bad))), layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    _rates(left, good, "rollback", "false rollback rate\n(good candidates)")
    _rates(middle, bad, "full", "escape rate: reached 100% of every layer\n(bad candidates)")
    _exposure(right, bad)
    handles, labels = left.get_legend_handles_labels()
    engines = dict(zip(labels, handles, strict=True))  # one entry per engine
    fig.legend(engines.values(), engines.keys(), loc="outside lower center", ncol=len(engines))
    seeds = sorted({s["seeds"] for s in summaries})
    fig.suptitle(
        "graylayer simulate: the product's controller (ours) vs the source article's QoS rule — "
        f"{'/'.join(map(str, seeds))} seeds per cell; bars are 95% intervals",
        fontsize=11,
    )
    fig.savefig(path, dpi=110)


def _scenario_axis(ax: Axes, summaries: Sequence[dict[str, Any]]) -> dict[str, int]:
    """One row per scenario, labelled with its description; returns each scenario's row."""
    rows = {sid: i for i, sid in enumerate(dict.fromkeys(s["scenario"] for s in summaries))}
    labels = [f"{sid}: {SCENARIOS[sid].description}" for sid in rows]
    ax.set_yticks(range(len(rows)), [textwrap.fill(label, 30) for label in labels], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", color="0.9")
    return rows


def _offset(engine: str) -> float:
    return 0.15 * (ENGINES.index(engine) - (len(ENGINES) - 1) / 2)


def _rates(ax: Axes, summaries: Sequence[dict[str, Any]], key: str, title: str) -> None:
    rows = _scenario_axis(ax, summaries)
    for s in summaries:
        colour, marker = ENGINE_STYLE[s["engine"]]
        rate, (low, high) = s[key]["rate"], s[key]["ci95"]
        y = rows[s["scenario"]] + _offset(s["engine"])
        ax.errorbar(rate, y, xerr=[[rate - low], [high - rate]], fmt=marker, color=colour,
                    capsize=3, label=s["engine"])  # fmt: skip
        ax.annotate(f"{s[key]['k']}/{s[key]['n']}", (high, y), xytext=(4, -3),
                    textcoords="offset points", fontsize=7, color=colour)  # fmt: skip
    from matplotlib.ticker import PercentFormatter

    ax.set_xlim(-0.03, 1.12)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(title, fontsize=10)


def _exposure(ax: Axes, summaries: Sequence[dict[str, Any]]) -> None:
    rows = _scenario_axis(ax, summaries)
    ax.set_xscale("log")
    for s in summaries:
        colour, marker = ENGINE_STYLE[s["engine"]]
        d, y = s["exposed_at_catch"], rows[s["scenario"]] + _offset(s["engine"])
        if not d["median"]:  # never caught (or at 0 users, which a log scale cannot show)
            ax.annotate("never caught", (0.01, y), xycoords=("axes fraction", "data"),
                        va="center", fontsize=7, color=colour)  # fmt: skip
            continue
        median, (low, high) = d["median"], d["median_ci95"]
        ax.errorbar(median, y, xerr=[[median - low], [high - median]], fmt=marker,
                    color=colour, capsize=3, label=s["engine"])  # fmt: skip
    ax.set_title("users exposed when caught\n(bad candidates; median)", fontsize=10)
