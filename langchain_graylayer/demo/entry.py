"""Entry points: :func:`run_demo`, its printed summary, the output files, and ``graylayer demo``."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_graylayer.demo.run import DemoResult, _day_time, _pct, _Simulation
from langchain_graylayer.demo.world import DAY, DEFAULT, LAYER_SHARES, QUICK, START


# --------------------------------------------------------------------------- entry points
def run_demo(
    users: int | None = None,
    seed: int = 7,
    quick: bool = False,
    *,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Play both acts and print the progress and the summary; returns what was measured.

    Example (not run here: it takes seconds):
        result = run_demo(users=3000, seed=1, quick=True, echo=lambda line: None)
        result.rollback["layer"], result.layers["vip"]["ratio"]   # ('normal', 1.0)
    """
    scenario = QUICK if quick else DEFAULT
    started = time.perf_counter()
    result = _Simulation(scenario, users or scenario.users, seed, echo).run()
    result.wall_seconds = time.perf_counter() - started
    _print_summary(result, echo)
    return result


def _print_summary(r: DemoResult, echo: Callable[[str], None]) -> None:
    echo("\nlayer          users   share  requests  v1.8 done  v2.1 done  ratio")
    for name, row in r.layers.items():
        echo(
            f"{name:<13} {int(row['users']):>6} {row['share']:>7.2%} {int(row['requests']):>9} "
            f"{row['stable_completion']:>10.1%} {row['candidate_completion']:>10.1%} "
            f"{_pct(row['ratio']):>6}"
        )
    echo(f"\nreal agent calls: {r.requests} in {r.wall_seconds:.1f} s; complaints: {r.complaints}")
    if r.rollback:
        echo(
            f"act one: rolled back {_day_time(r.rollback['time'])} ({r.rollback['day']:.1f} "
            f"simulated days in), layer {r.rollback['layer']} at {_pct(r.rollback['old_ratio'])}: "
            f"{r.rollback['reason']}"
        )
    echo(
        f"exposure to the bug: {r.exposed_users} users got a wrong refund answer "
        f"({len(r.wrong_answers)} answers) = {r.exposure_share:.3%} of {r.users} users "
        f"(article: 0.09% of 5M; requirement <= 0.1%)"
    )
    if r.complete_day is not None:
        echo(
            f"full rollout: every layer at 100% {_day_time(START + r.complete_day * DAY)} "
            f"({r.complete_day:.1f} simulated days in; article: day 10)"
        )
    else:
        echo("full rollout: NOT reached in the simulated window")
    echo(
        f"completion (layer-share weighted): before {r.completion_before:.1%} (v1.8 stable), "
        f"after {r.completion_after:.1%} (v2.1 at 100%); article: 60% → 87%"
    )
    echo(f"audit: {len(r.audit)} entries over both plans; the last three:")
    for entry in r.audit[-3:]:
        what = " ".join(str(entry[key]) for key in ("plan", "action", "layer") if entry[key])
        echo(f"  {_day_time(entry['time'])} {what}: {entry['reason']}")


def write_outputs(result: DemoResult, out: str | Path) -> list[str]:
    """Write ``audit.json``, ``timeline.csv``, ``summary.json`` and (with matplotlib)
    ``rollout.png`` into ``out``; returns one line per file written or skipped."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.json").write_text(json.dumps(result.audit, indent=1, default=str) + "\n")
    (folder / "summary.json").write_text(json.dumps(result.summary(), indent=1) + "\n")
    with (folder / "timeline.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result.timeline[0]))
        writer.writeheader()
        writer.writerows(result.timeline)
    lines = [f"wrote {folder / name}" for name in ("audit.json", "timeline.csv", "summary.json")]
    try:
        import importlib

        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return [*lines, "rollout.png skipped: pip install matplotlib to draw it"]
    days = [row["day"] for row in result.timeline]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 6.5))
    for name in LAYER_SHARES:
        top.step(days, [row[f"ratio_{name}"] for row in result.timeline], where="post", label=name)
    top.set_ylabel("candidate ratio")
    top.legend(loc="center right", fontsize="small")
    for key, label in (("candidate", "candidate"), ("stable", "stable v1.8")):
        series = [row[f"{key}_completion_12h"] for row in result.timeline]
        bottom.plot(days, [math.nan if v is None else v for v in series], label=label)
    bottom.set_ylabel("completion, active layer (12 h)")
    bottom.set_xlabel("simulated days")
    bottom.legend(loc="lower right", fontsize="small")
    for axis in (top, bottom):
        for day, text in ((result.rollback.get("day"), "rollback"), (result.restart_day, "v2.1")):
            if day is not None:
                axis.axvline(day, color="grey", linestyle="--", linewidth=0.8)
                axis.annotate(text, (day, 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    top.set_title("graylayer demo: v2.0 rolled back in normal, v2.1 to 100% in every layer")
    fig.tight_layout()
    fig.savefig(folder / "rollout.png", dpi=110)
    plt.close(fig)
    return [*lines, f"wrote {folder / 'rollout.png'}"]


def run_cli(users: int | None, seed: int, quick: bool, out: str | None) -> int:
    """``graylayer demo``: run, print, and write the files when ``out`` is given."""
    result = run_demo(users, seed, quick)
    if out:
        for line in write_outputs(result, out):
            print(line)
    ok = result.rollback.get("layer") == "normal" and result.complete_day is not None
    return 0 if ok else 1
