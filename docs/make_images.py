"""Regenerate the images in docs/: ``python docs/make_images.py`` (about a minute and a half).

* ``demo_rollout.png``: ``graylayer demo --quick --seed 11``, drawn by the demo's own plot;
* ``simulate.png``: :func:`langchain_graylayer.simulate.simulate` on the quick scenarios with a
  few seeds per cell, as points with their 95% intervals (Wilson for rates, order statistics for
  medians), so a rate of 0 is a visible point with its upper bound, not a missing bar.

``tests/integration/test_docs_images.py`` runs both into a temporary folder, so they cannot go
stale. Needs the ``demo`` and ``simulate`` extras (matplotlib included).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from langchain_graylayer.demo import plot, run_demo
from langchain_graylayer.simulate import ENGINES, QUICK_SCENARIOS, SimConfig, simulate, summarise
from langchain_graylayer.simulate.plot import plot_summaries

DOCS = Path(__file__).parent
DEMO_SEED = 11
SIM_SEEDS = 10


def demo_image(path: Path, seed: int = DEMO_SEED) -> Path:
    """The quick demo's rollout plot (the same as ``graylayer demo --quick --out``)."""
    result = run_demo(seed=seed, quick=True, echo=lambda line: None)
    plot.draw(result, path)
    return path


def simulate_image(
    path: Path, seeds: int = SIM_SEEDS, scenarios: Sequence[str] = QUICK_SCENARIOS
) -> Path:
    """Both engines on ``scenarios``, ``seeds`` seeds each, drawn by :func:`plot_summaries`."""
    runs = simulate(SimConfig(), scenarios, ENGINES, seeds)
    plot_summaries(path, [summarise(runs, s, e) for s in scenarios for e in ENGINES])
    return path


IMAGES: dict[str, Callable[[Path], Path]] = {
    "demo_rollout.png": demo_image,
    "simulate.png": simulate_image,
}
"""Every image in docs/ and the function that makes it."""


def main() -> int:
    for name, make in IMAGES.items():
        started = time.perf_counter()
        path = make(DOCS / name)
        print(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
