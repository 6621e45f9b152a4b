"""Entry points: :func:`run_demo`, the output files, and ``graylayer demo``."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

from langchain_graylayer.demo import plot
from langchain_graylayer.demo.report import summary_lines
from langchain_graylayer.demo.run import DemoResult, _Simulation
from langchain_graylayer.demo.world import DEFAULT, QUICK


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
    for line in summary_lines(result):
        echo(line)
    return result


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
    if not plot.draw(result, folder / "rollout.png"):
        return [*lines, "rollout.png skipped: pip install matplotlib to draw it"]
    return [*lines, f"wrote {folder / 'rollout.png'}"]


def run_cli(users: int | None, seed: int, quick: bool, out: str | None) -> int:
    """``graylayer demo``: run, print, and write the files when ``out`` is given."""
    result = run_demo(users, seed, quick)
    if out:
        for line in write_outputs(result, out):
            print(line)
    ok = result.rollback.get("layer") == "normal" and result.complete_day is not None
    return 0 if ok else 1
