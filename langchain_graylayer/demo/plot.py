"""The rollout plot: small multiples, one row per layer with its candidate ratio over the days
(coloured by the candidate's version, a marker for each decision), and a panel with what
triggered each rollback (the harmed guardrail, candidate against stable).

:func:`figure_data` is the plot's content without matplotlib (what the tests compare with the
text and the timeline); :func:`figure` draws it; :func:`draw` writes the PNG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_graylayer.demo.decisions import harmed_guardrail
from langchain_graylayer.demo.run import DemoResult
from langchain_graylayer.demo.world import LAYER_SHARES, STABLE_CODE, day_number, day_time

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

VERSION_COLOURS = {STABLE_CODE: "#7f7f7f", "v2.0": "#d95f02", "v2.1": "#1b9e77"}
"""Versions: grey for stable, warm for the buggy candidate, green for the fix."""
LAYER_COLOURS = "Purples"
"""Layers: one sequential scheme, darker for riskier layers (a different scheme from versions)."""
MARKERS = {"promote": "^", "rollback": "X", "alert": "D"}
MARKER_LABELS = {"promote": "promote", "rollback": "rollback", "alert": "alert (step held)"}


@dataclass(frozen=True, slots=True)
class Marker:
    """A decision drawn on a layer's row, at its 1-based day and ratio (before a rollback)."""

    day: float
    layer: str
    kind: str
    ratio: float


@dataclass(frozen=True, slots=True)
class Trigger:
    """What a rollback was decided on: the harmed guardrail, candidate against stable."""

    time: float
    layer: str
    metric: str
    candidate: str
    candidate_rate: float
    stable_rate: float
    candidate_users: int
    stable_users: int

    @property
    def day(self) -> float:
        return day_number(self.time)


@dataclass(frozen=True, slots=True)
class FigureData:
    """The plot's content: the timeline (1-based days), the decisions and the triggers."""

    days: list[float]
    versions: list[str]
    """The candidate version of each timeline row."""
    ratios: dict[str, list[float]]
    markers: list[Marker]
    triggers: list[Trigger]
    events: list[tuple[float, str]]
    """Dashed lines across every row: the rollbacks, v2.1 shipping, the full rollout."""


def figure_data(result: DemoResult) -> FigureData:
    """What :func:`figure` draws, from the timeline and the audit."""
    rows = result.timeline
    codes = {row["plan"]: row["candidate"] for row in rows}
    markers = [
        Marker(d.day, d.layer, d.action, d.old_ratio if d.action == "rollback" else d.new_ratio)
        for d in result.decisions
    ]
    rollbacks = [e for e in result.audit if e["action"] == "rollback"]
    triggers = [t for e in rollbacks if (t := _trigger(e, codes[e["plan"]])) is not None]
    events = [(day_number(e["time"]), f"{codes[e['plan']]} rolled back") for e in rollbacks]
    if result.restart_day is not None:
        events.append((result.restart_day, "v2.1 ships"))
    if result.complete_day is not None:
        events.append((result.complete_day, "every layer at 100%"))
    return FigureData(
        days=[row["day"] for row in rows],
        versions=[row["candidate"] for row in rows],
        ratios={name: [row[f"ratio_{name}"] for row in rows] for name in LAYER_SHARES},
        markers=markers,
        triggers=triggers,
        events=events,
    )


def _trigger(entry: Mapping[str, Any], candidate: str) -> Trigger | None:
    harmed = harmed_guardrail(entry)
    if harmed is None:
        return None
    return Trigger(
        time=entry["time"],
        layer=entry["layer"],
        metric=harmed["metric"],
        candidate=candidate,
        candidate_rate=harmed["candidate_rate"],
        stable_rate=harmed["stable_rate"],
        candidate_users=harmed["n_candidate"],
        stable_users=harmed["n_stable"],
    )


def draw(result: DemoResult, path: Any) -> bool:
    """Write the plot to ``path`` (PNG); False, and nothing written, without matplotlib."""
    try:
        fig = figure(result)
    except ImportError:
        return False
    fig.savefig(path, dpi=110)
    return True


def figure(result: DemoResult) -> Figure:
    """The plot as a matplotlib figure (no pyplot: nothing global is touched)."""
    from matplotlib.figure import Figure

    data = figure_data(result)
    layers = list(data.ratios)
    fig = Figure(figsize=(12.5, 1.25 * len(layers) + 1.8), layout="constrained")
    grid = fig.add_gridspec(len(layers), 2, width_ratios=(3.2, 1))
    top = fig.add_subplot(grid[0, 0])
    rows = [top, *(fig.add_subplot(grid[i, 0], sharex=top) for i in range(1, len(layers)))]
    shades = _layer_shades(len(layers))
    for ax, layer, shade in zip(rows, layers, shades, strict=True):
        _layer_row(ax, data, layer, shade)
    _label_events(top, data.events)
    _day_axis(rows, data.days)
    _trigger_panel(fig.add_subplot(grid[:2, 1]), data.triggers)
    _legend(fig.add_subplot(grid[2:, 1]))
    fig.suptitle(_title(result), fontsize=11)
    return fig


def _layer_shades(n: int) -> list[Any]:
    from matplotlib import colormaps

    scheme = colormaps[LAYER_COLOURS]
    return [scheme(0.45 + 0.5 * i / max(n - 1, 1)) for i in range(n)]


def _runs(values: list[str]) -> Iterator[tuple[int, int, str]]:
    """``(start, stop, value)`` of each stretch of equal consecutive values."""
    start = 0
    for value, group in itertools.groupby(values):
        stop = start + len(list(group))
        yield start, stop, value
        start = stop


def _layer_row(ax: Axes, data: FigureData, layer: str, shade: Any) -> None:
    from matplotlib.ticker import PercentFormatter

    ratios = data.ratios[layer]
    for start, stop, version in _runs(data.versions):
        colour = VERSION_COLOURS.get(version, "black")
        days, values = data.days[start:stop], ratios[start:stop]
        ax.step(days, values, where="post", color=colour, linewidth=1.8)
        ax.fill_between(days, values, step="post", color=colour, alpha=0.15, linewidth=0)
    for marker in (m for m in data.markers if m.layer == layer):
        hollow = marker.kind == "alert"
        ax.scatter(
            marker.day, marker.ratio, marker=MARKERS[marker.kind], s=60, zorder=3,
            facecolors="none" if hollow else "black", edgecolors="black",
        )  # fmt: skip
    for day, _ in data.events:
        ax.axvline(day, color="0.55", linestyle="--", linewidth=0.8)
    ax.set_ylim(-0.1, 1.18)
    ax.set_yticks([0, 0.5, 1])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel(layer, rotation=0, ha="right", va="center", color=shade, fontweight="bold")
    ax.spines["left"].set_color(shade)
    ax.spines["left"].set_linewidth(5)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="0.9")


def _label_events(ax: Axes, events: list[tuple[float, str]]) -> None:
    for index, (day, label) in enumerate(sorted(events)):
        ax.annotate(
            label, (day, 1.0), xycoords=("data", "axes fraction"), xytext=(3, 4 + 11 * (index % 2)),
            textcoords="offset points", fontsize=8, color="0.3",
        )  # fmt: skip


def _day_axis(rows: list[Axes], days: list[float]) -> None:
    end = max(days, default=2.0)
    ticks = range(1, math.floor(end) + 1)
    bottom = rows[-1]
    bottom.set_xlim(1, end + 0.02 * (end - 1))
    bottom.set_xticks(ticks, [f"day {d}" for d in ticks])
    bottom.set_xlabel("simulated days, 1-based like the text (a tick is the day's 00:00)")
    for ax in rows[:-1]:
        ax.tick_params(labelbottom=False)
    rows[0].set_title("candidate ratio per layer (small multiples: one row per layer)", loc="left",
                      fontsize=10, pad=28)  # fmt: skip


def _trigger_panel(ax: Axes, triggers: list[Trigger]) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.set_title("what triggered the rollback:\nthe harmed guardrail by version", fontsize=10)
    if not triggers:
        ax.text(0.5, 0.5, "no rollback", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    labels: list[str] = []
    for index, t in enumerate(triggers):
        arms = (
            (t.candidate, "candidate", t.candidate_rate, t.candidate_users),
            (STABLE_CODE, "stable", t.stable_rate, t.stable_users),
        )
        for offset, (version, role, rate, users) in enumerate(arms):
            y = 2 * index + offset
            colour = VERSION_COLOURS.get(version, "black")
            ax.hlines(y, 0, rate, color=colour, linewidth=2)
            ax.plot(rate, y, "o", color=colour, markersize=8)
            ax.annotate(f"{rate:.1%}", (rate, y), xytext=(6, -3), textcoords="offset points",
                        fontsize=9)  # fmt: skip
            labels.append(f"{version} {role}\n{users} users")
        ax.annotate(
            f"{t.metric} in {t.layer}, {_when(t.time)}", (0, 2 * index - 0.6),
            fontsize=8, color="0.3", annotation_clip=False,
        )  # fmt: skip
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.4, -1.0)
    top = max(max(t.candidate_rate, t.stable_rate) for t in triggers)
    ax.set_xlim(0, max(top * 1.35, 0.01))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.spines[["top", "right"]].set_visible(False)


def _when(t: float) -> str:
    return " ".join(day_time(t).split())  # "day 2 14:30": no column padding in a label


def _legend(ax: Axes) -> None:
    from matplotlib.lines import Line2D

    versions = {
        "v2.0": "v2.0 candidate (act one)",
        "v2.1": "v2.1 candidate (act two)",
        STABLE_CODE: f"{STABLE_CODE} stable",
    }
    handles = [
        Line2D([], [], color=VERSION_COLOURS[code], linewidth=2, label=label)
        for code, label in versions.items()
    ]
    for kind, label in MARKER_LABELS.items():
        face = "none" if kind == "alert" else "black"
        handles.append(
            Line2D([], [], linestyle="none", marker=MARKERS[kind], markersize=7, color="black",
                   markerfacecolor=face, label=label)
        )  # fmt: skip
    handles.append(Line2D([], [], color="0.55", linestyle="--", linewidth=0.8, label="event"))
    title = "versions: colours; decisions: markers;\nlayer names: purple, darker = riskier"
    ax.legend(
        handles=handles, loc="center", fontsize=8, frameon=False, title=title, title_fontsize=8
    )
    ax.set_axis_off()


def _title(result: DemoResult) -> str:
    story = []
    if result.rollback:
        layers = ", ".join(result.rollback["layers"])
        story.append(f"v2.0 rolled back {_when(result.rollback['time'])} in {layers}")
    if result.complete_day is not None:
        story.append(f"v2.1 at 100% in every layer on day {int(result.complete_day)}")
    head = f"graylayer demo (seed {result.seed}, {result.users} users)"
    return head + (": " + "; ".join(story) if story else "")
