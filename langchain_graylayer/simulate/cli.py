"""``graylayer simulate``: the command line's options, progress and output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from langchain_graylayer.plan._config import parse_duration
from langchain_graylayer.simulate.engines import (
    DEFAULT_MAX_STEP,
    DEFAULT_STEPS,
    ENGINES,
    PlanKnobs,
    SimConfig,
    describe_plan,
    make_plan,
    simulate,
)
from langchain_graylayer.simulate.report import (
    check_targets,
    plot,
    summarise,
    tables,
    write_csv,
)
from langchain_graylayer.simulate.scenarios import QUICK_SCENARIOS, SCENARIOS
from langchain_graylayer.simulate.traffic import TICK, Population


# ----------------------------------------------------------------------------- command line
def _seconds(text: str) -> float:
    """Seconds from a duration as plans write it: ``"900"`` (seconds), ``"45m"``, ``"1.5h"``."""
    try:
        return float(parse_duration(text.strip().lower()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a duration like 45m, 1.5h or 900 (seconds), not {text!r}"
        ) from None


def _max_step(text: str) -> tuple[tuple[str, float], ...]:
    """``"1h"`` (every layer) or ``"1h,normal=3h"`` / ``"normal=2h"`` (others keep defaults)."""
    limits: dict[str, float] = {}
    named = True
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            name, value = part.split("=", 1)
            limits[name.strip()] = _seconds(value)
        else:
            named = False
            limits["*"] = _seconds(part)
    return tuple(({**DEFAULT_MAX_STEP, **limits} if named else limits).items())


def _steps(text: str) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """``"0.1,0.5,1"`` (every layer) or ``"internal=0.5,1;normal=0.05,0.2,0.5,1;..."``
    (unnamed layers keep the defaults)."""
    try:
        if "=" not in text:
            return (("*", tuple(float(x) for x in text.split(","))),)
        steps = dict(DEFAULT_STEPS)
        for part in filter(None, (p.strip() for p in text.split(";"))):
            name, values = part.split("=", 1)
            steps[name.strip()] = tuple(float(x) for x in values.split(","))
        return tuple(steps.items())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"steps like 0.1,0.5,1 or internal=0.5,1;normal=0.05,0.2,0.5,1, not {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graylayer simulate",
        description="Monte-Carlo rollout simulator: the product's RolloutController and judge "
        "against the source article's QoS rule, on synthetic returning users (docs/statistics.md).",
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated ids (default: all; --quick: "
        + ",".join(QUICK_SCENARIOS)
        + "); "
        + "; ".join(f"{k}: {v.description}" for k, v in SCENARIOS.items()).replace("%", "%%"),
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help="ours,article")
    parser.add_argument("--seeds", type=int, help="seeds per scenario (200; --quick 40)")
    parser.add_argument("--hours", type=float, default=48.0, help="horizon per run (48)")
    population = Population()
    parser.add_argument(
        "--sessions-per-hour", type=float, default=population.sessions_per_hour,
        help="mean sessions per hour over the day, all layers (3000)",
    )  # fmt: skip
    parser.add_argument(
        "--users", type=int, default=population.users,
        help="people in the population; each comes back many times (30000)",
    )  # fmt: skip
    parser.add_argument(
        "--requests-per-session", type=float, default=1 + population.extra_requests,
        help="mean requests per session, 1 + Poisson(mean − 1) (2.5)",
    )  # fmt: skip
    parser.add_argument(
        "--icc", type=float, default=population.icc,
        help="per-user intra-class correlation of outcomes (0.3; 0: independent requests)",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--out", type=Path, help="write results.csv, results.json, simulate.png")
    parser.add_argument("--quick", action="store_true", help="40 seeds, 5 scenarios (< 60 s)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (0)")
    knobs = PlanKnobs()
    plan = parser.add_argument_group("plan knobs (the ours engine; steps apply to both)")
    plan.add_argument("--steps", type=_steps, help="0.1,0.5,1 or layer=…;layer=… (see --help)")
    plan.add_argument("--bake", type=_seconds, default=knobs.bake_s, help="bake time (30m)")
    plan.add_argument(
        "--max-step",
        type=_max_step,
        default=knobs.max_step,
        help="max step time: 1h (every layer) or 1h,normal=3h (default: 60m, normal 3h)",
    )
    plan.add_argument("--min-samples", type=int, default=knobs.min_samples)
    plan.add_argument("--alpha", type=float, default=knobs.alpha, help="plan alpha (0.05)")
    plan.add_argument("--n-star", type=float, default=knobs.n_star, help="harm-test N* (400)")
    plan.add_argument(
        "--timeout-policy", choices=("promote_if_no_harm", "hold"), default=knobs.timeout_policy
    )
    return parser


def _progress(started: float) -> Callable[[int, int], None]:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 2.0 or done == total:
            last[0] = now
            print(f"\r{done}/{total} runs, {now - started:.0f} s", end="", file=sys.stderr,
                  flush=True)  # fmt: skip
            if done == total:
                print(file=sys.stderr)

    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``graylayer simulate``: run, print the tables and targets, optionally write files."""
    parser = build_parser()
    args = parser.parse_args(argv)
    scenarios = (
        args.scenarios.split(",")
        if args.scenarios
        else list(QUICK_SCENARIOS if args.quick else SCENARIOS)
    )
    engines = args.engines.split(",")
    for sid in scenarios:
        if sid not in SCENARIOS:
            parser.error(f"unknown scenario {sid!r}; one of {', '.join(SCENARIOS)}")
    for engine in engines:
        if engine not in ENGINES:
            parser.error(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    seeds = args.seeds if args.seeds is not None else (40 if args.quick else 200)
    knobs = PlanKnobs(
        steps=args.steps or PlanKnobs().steps,
        bake_s=args.bake,
        max_step=args.max_step,
        min_samples=args.min_samples,
        alpha=args.alpha,
        n_star=args.n_star,
        timeout_policy=args.timeout_policy,
    )
    try:
        population = Population(
            users=args.users,
            sessions_per_hour=args.sessions_per_hour,
            extra_requests=max(args.requests_per_session - 1, 0.0),
            icc=args.icc,
        )
    except ValueError as exc:
        parser.error(str(exc))
    for name, steps in knobs.steps:
        if not steps or steps[-1] != 1.0:
            parser.error(f"--steps: {name}'s steps must end at 1 (a layer is done at 100%)")
    try:
        plan = make_plan(knobs, population.layers)
    except Exception as exc:  # a ConfigurationError or a pydantic error: bad knobs
        parser.error(f"invalid plan knobs: {exc}")
    config = SimConfig(population, knobs, round(args.hours * 3600 / TICK), args.seed)
    jobs = max(1, min(args.jobs, len(scenarios) * len(engines) * seeds))
    print(
        f"graylayer simulate: {len(scenarios)} scenarios × {len(engines)} engines × {seeds} "
        f"seeds, horizon {args.hours:g} h, {population.users} returning users, "
        f"{population.sessions_per_hour:g} sessions/h ({args.requests_per_session:g} requests "
        f"each), per-user correlation {population.icc:g}, base seed {args.seed}, {jobs} job(s)\n"
        + describe_plan(plan)
        + "\narticle: QoS of the candidate per 60-min window of a step, weights (0.3, 0.2, 0.5), "
        "< 0.6 rollback / < 0.8 hold / else one step up; missing data = 0; same steps",
        flush=True,
    )
    started = time.perf_counter()
    runs = simulate(config, scenarios, engines, seeds, jobs, _progress(started))
    elapsed = time.perf_counter() - started
    summaries = [summarise(runs, s, e) for s in scenarios for e in engines]
    print()
    print(tables(summaries))
    print("\nTargets (ours):")
    for target, status, evidence in check_targets(summaries):
        print(f"- {target}: **{status}** — {evidence}")
    cpu = sum(r["seconds"] for r in runs)
    print(f"\nwall time {elapsed:.1f} s ({cpu:.1f} s in runs, {jobs} job(s))")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(args.out / "results.csv", summaries)
        meta = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "argv": list(sys.argv[1:] if argv is None else argv),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jobs": jobs,
            "seeds": seeds,
            "horizon_hours": args.hours,
            "base_seed": args.seed,
            "population": asdict(population),
            "scenarios": {s: asdict(SCENARIOS[s]) for s in scenarios},
            "plan": plan.model_dump(mode="json"),
            "seconds": elapsed,
        }
        targets = [
            {"target": t, "status": s, "evidence": e} for t, s, e in check_targets(summaries)
        ]
        with (args.out / "results.json").open("w", encoding="utf-8") as handle:
            json.dump({"meta": meta, "summary": summaries, "targets": targets, "runs": runs},
                      handle, indent=1, default=str)  # fmt: skip
        wrote = ["results.csv", "results.json"]
        if plot(args.out / "simulate.png", summaries):
            wrote.append("simulate.png")
        else:
            print("simulate.png skipped: pip install matplotlib to get the plot", file=sys.stderr)
        print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    return 0
