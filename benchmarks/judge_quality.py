"""How good are the rollout decisions? The product's judge vs the article's QoS rule, Monte Carlo.

Run from the repository root::

    python benchmarks/judge_quality.py                # 200 seeds per scenario, a few minutes
    python benchmarks/judge_quality.py --quick        # 50 seeds, under a minute: a smoke check
    python benchmarks/judge_quality.py --json out.json

The first cut of the rollout simulator; the machinery (traffic generator, metric source, the two
engines) now lives in :mod:`langchain_graylayer.simulate` (``graylayer simulate`` runs the full
scenario set); this script keeps its own, smaller setting:

Two decision engines roll the same synthetic candidate out, layer by layer, in one run:

* ``ours``: the product itself. A real :class:`~langchain_graylayer.controller.RolloutController`
  with a real :class:`~langchain_graylayer.store.MemoryStore`, a fake clock and an in-memory
  ``MetricSource`` that serves the synthetic counts as ``ArmStats`` over the window the
  controller asks for (since the step started). Every decision is the product's
  :func:`~langchain_graylayer.judge.judge` called by the controller, with the plan's gates and
  judging (``RolloutPlan.default``; the gates are printed with the results).
* ``article``: the article's rule re-implemented around the library's ``qos_score`` and
  ``article_qos_verdict``: at the end of every 60-minute window of a step, the candidate's QoS of
  that window (high-risk weights 0.3/0.2/0.5) decides: < 0.6 roll back, < 0.8 hold, else up one
  step. Missing data reads as zeros, as in the article, so a window with no candidate traffic
  scores 0.56 and rolls back.

Traffic (stats.md §7.1, scaled): 3 000 users/h, Poisson per 5-minute tick, one request per user
(so "users" and "requests" are the same count here), four layers opened in order — early_adopter
10 %, normal 70 %, high_value 15 %, vip 5 % — each moving 1 % → 10 % → 50 % → 100 %. A layer at
100 % is done and the next one opens; a rollback ends the rollout. Each layer's candidate users
are a binomial share (its ratio) of its arriving users. Per request: completion Bernoulli(0.85)
for stable, error Bernoulli(0.02) (independent of completion), tool calls Poisson(3) each
succeeding with 0.97, latency LogNormal(ln 2 s, 0.67) as histogram buckets. No feedback is
simulated (bad rate, complaints and NPS are 0 for both engines). Scenarios: S0 A/A (candidate =
stable) and S2 candidate completion 0.80 (−5 points) in every layer. Horizon 4 simulated days.

Both engines of a seed draw from the same ``numpy.random.default_rng([seed, scenario])`` stream in
the same order, so they see identical traffic until their ratios first differ. Counts are drawn
per tick and per (layer, arm) with binomial/Poisson draws, not per request.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from typing import Any

import numpy as np

from langchain_graylayer import RolloutPlan, simulate
from langchain_graylayer.plan.gates import Gates, Judging
from langchain_graylayer.simulate import TICK, PlanKnobs, Population, Scenario, Traffic, wilson

PLAN_ID = "judge-quality"
LAYERS = ("early_adopter", "normal", "high_value", "vip")
SHARES = (0.10, 0.70, 0.15, 0.05)
STEPS = (0.01, 0.1, 0.5, 1.0)  # the default; ``--steps`` changes both engines
POPULATION = Population(
    layers=LAYERS,
    shares=SHARES,
    users_per_hour=3000.0,
    extra_requests=0.0,  # one request per user
    feedback=0.0,  # no feedback simulated
    complaint=0.0,
)
P_COMPLETION = POPULATION.completion
SCENARIOS = {
    "S0": Scenario("S0", "A/A: candidate = stable", bad=False),
    "S2": Scenario("S2", "global −5 points of completion (0.80)", bad=True, completion_delta=-0.05),
}
ENGINES = ("ours", "article")


def _traffic(seed: int, scenario: int, horizon: int) -> Traffic:
    return Traffic(POPULATION, list(SCENARIOS.values())[scenario], (seed, scenario), horizon)


def run_ours(seed: int, scenario: int, plan: RolloutPlan, horizon: int) -> dict[str, Any]:
    """The product's controller and judge on one seed's traffic."""
    return simulate.run_ours(plan, _traffic(seed, scenario, horizon))


def run_article(
    seed: int, scenario: int, horizon: int, steps: tuple[float, ...] = STEPS
) -> dict[str, Any]:
    """The article's QoS rule, one 60-minute window at a time, same steps and layer order."""
    plan = simulate.make_plan(PlanKnobs(steps=(("*", steps),)), LAYERS, plan_id=PLAN_ID)
    return simulate.run_article(plan, _traffic(seed, scenario, horizon))


def make_plan(gates: dict[str, Any], steps: tuple[float, ...]) -> RolloutPlan:
    """``RolloutPlan.default`` with the benchmark's gates and every layer on ``steps``."""
    return simulate.make_plan(
        PlanKnobs(steps=(("*", steps),)),
        LAYERS,
        plan_id=PLAN_ID,
        gates=Gates(**gates),
        judging=Judging(),
    )


def run_seed(args: tuple[int, int, dict[str, Any], int, tuple[float, ...]]) -> dict[str, Any]:
    seed, scenario, gates, horizon, steps = args
    plan = make_plan(gates, steps)
    started = time.perf_counter()
    ours = run_ours(seed, scenario, plan, horizon)
    middle = time.perf_counter()
    article = run_article(seed, scenario, horizon, steps)
    ours["seconds"], article["seconds"] = middle - started, time.perf_counter() - middle
    return {"seed": seed, "scenario": list(SCENARIOS)[scenario], "ours": ours, "article": article}


# ----------------------------------------------------------------------------- summary
def _rate(k: int, n: int) -> dict[str, float]:
    low, high = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "ci95": [low, high]}


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None}
    return {"median": float(np.median(values)), "p90": float(np.quantile(values, 0.9))}


def summarise(runs: list[dict[str, Any]], scenario: str, engine: str) -> dict[str, Any]:
    rows = [r[engine] for r in runs if r["scenario"] == scenario]
    n = len(rows)
    by = Counter(r["outcome"] for r in rows)
    rolled = [r for r in rows if r["outcome"] == "rollback"]
    full = [r for r in rows if r["outcome"] == "full"]
    hours_full = sorted(r["hours"] for r in full)
    # median over all runs, runs that never got there counting as +inf (censored at the horizon)
    censored = [r["hours"] if r["outcome"] == "full" else math.inf for r in rows]
    median_all = float(np.median(censored)) if rows else math.nan
    promotions: Counter[str] = Counter()
    for r in rows:
        promotions.update(r.get("promotions", {}))
    layer_done = {
        layer: {"runs": len(hours), **_quantiles(hours)}
        for layer in LAYERS
        if (hours := [r["layer_done"][layer] for r in rows if layer in r.get("layer_done", {})])
    }
    return {
        "scenario": scenario,
        "engine": engine,
        "runs": n,
        "rollback": _rate(by["rollback"], n),
        "full": _rate(by["full"], n),
        "timeout": _rate(by["timeout"], n),
        "rollback_silent": sum(bool(r.get("silent")) for r in rolled),
        "rollback_layers": dict(Counter(f"{r['layer']}@{r['ratio']:g}" for r in rolled)),
        "timeout_layers": dict(
            Counter(f"{r['layer']}@{r['ratio']:g}" for r in rows if r["outcome"] == "timeout")
        ),
        "exposed_before_rollback": _quantiles([r["exposed"] for r in rolled]),
        "exposed_all_runs": _quantiles([r["exposed"] for r in rows]),
        "hours_to_rollback": _quantiles([r["hours"] for r in rolled]),
        "hours_to_full": _quantiles(hours_full),
        "hours_to_full_all_runs_median": None if math.isinf(median_all) else median_all,
        "promotions": dict(promotions),
        "layer_done_hours": layer_done,
        "seconds_per_run": float(np.mean([r["seconds"] for r in rows])) if rows else None,
    }


def _fmt_rate(rate: dict[str, Any]) -> str:
    low, high = rate["ci95"]
    return f"{rate['rate']:.1%} [{low:.1%}, {high:.1%}]"


def _fmt_q(q: dict[str, float | None], digits: int = 0) -> str:
    if q["median"] is None:
        return "—"
    return f"{q['median']:,.{digits}f} / {q['p90']:,.{digits}f}"


def table(summaries: list[dict[str, Any]], horizon_h: float) -> str:
    head = (
        "| scenario | engine | seeds | rollback rate [95% CI] | escape: reached 100% [95% CI] | "
        "neither by horizon | exposed candidate requests before rollback, median / p90 | "
        "hours to rollback, median / p90 | hours to 100%, median / p90 (of runs that got there) |\n"
        "|---|---|---:|---|---|---:|---:|---:|---:|"
    )
    lines = [head]
    for s in summaries:
        label = "false rollback " if s["scenario"] == "S0" else "caught "
        rb = label + _fmt_rate(s["rollback"])
        if s["rollback_silent"]:
            rb += f" ({s['rollback_silent']} on a silent window)"
        escape = _fmt_rate(s["full"]) if s["scenario"] != "S0" else f"({s['full']['rate']:.1%})"
        hours_full = _fmt_q(s["hours_to_full"], 1)
        if s["hours_to_full"]["median"] is not None and s["hours_to_full_all_runs_median"] is None:
            hours_full += f"; > {horizon_h:g} h over all seeds"
        lines.append(
            f"| {s['scenario']} | {s['engine']} | {s['runs']} | {rb} | {escape} | "
            f"{s['timeout']['rate']:.1%} | {_fmt_q(s['exposed_before_rollback'])} | "
            f"{_fmt_q(s['hours_to_rollback'], 1)} | {hours_full} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="seeds per scenario (200)")
    parser.add_argument("--quick", action="store_true", help="50 seeds: a smoke check")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--days", type=float, default=4.0, help="horizon in days (4)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--min-samples", type=int, default=200)
    parser.add_argument("--bake-hours", type=float, default=1.0)
    parser.add_argument("--max-step-hours", type=float, default=6.0)
    parser.add_argument(
        "--steps",
        default=",".join(f"{x:g}" for x in STEPS),
        help="every layer's ratio steps, comma-separated, ending at 1 (0.01,0.1,0.5,1)",
    )
    parser.add_argument(
        "--timeout-policy", choices=("promote_if_no_harm", "hold"), default="promote_if_no_harm"
    )
    args = parser.parse_args(argv)
    seeds = 50 if args.quick else args.seeds
    horizon = round(args.days * 86400 / TICK)
    gates = {
        "min_samples": args.min_samples,
        "bake_time": args.bake_hours * 3600,
        "max_step_time": args.max_step_hours * 3600,
        "timeout_policy": args.timeout_policy,
    }
    steps = tuple(float(x) for x in args.steps.split(","))
    if steps[-1] != 1.0:
        parser.error("--steps must end at 1 (a layer is done at 100%)")
    plan = make_plan(gates, steps)
    judging = plan.judging
    command = "python benchmarks/judge_quality.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(f"command: {command.strip()}")
    print(
        f"seeds {seeds} per scenario, horizon {args.days:g} days ({horizon} ticks of 5 min), "
        f"{args.workers} worker(s), steps {steps} in every layer\n"
        f"ours: RolloutController + MemoryStore, RolloutPlan.default gates {gates}, "
        f"judging alpha {judging.alpha}, n_star {judging.n_star}, ni_n_star {judging.ni_n_star}, "
        f"guardrails {[g.metric.value for g in plan.gates.guardrails]}, "
        f"tests {sum(len(layer.steps) for layer in plan.layers)}\n"
        "article: QoS per 60-min window of the step, weights (0.3, 0.2, 0.5), max_latency 5 s, "
        "< 0.6 rollback / < 0.8 hold / else promote one step; missing data = 0",
        flush=True,
    )
    started = time.perf_counter()
    jobs = [
        (seed, s, gates, horizon, steps) for s in range(len(SCENARIOS)) for seed in range(seeds)
    ]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            runs = list(pool.map(run_seed, jobs, chunksize=4))
    else:
        runs = [run_seed(job) for job in jobs]
    elapsed = time.perf_counter() - started
    summaries = [summarise(runs, s, e) for s in SCENARIOS for e in ENGINES]
    print()
    print(table(summaries, args.days * 24))
    print()
    for s in summaries:
        print(
            f"{s['scenario']} {s['engine']:7s} rollbacks at {s['rollback_layers']}; "
            f"still running at the horizon at {s['timeout_layers']}; "
            f"promotions/alerts {s['promotions']}; exposed (all runs) median/p90 "
            f"{_fmt_q(s['exposed_all_runs'])}; {s['seconds_per_run']:.2f} s per run"
        )
        if s["layer_done_hours"]:
            done = ", ".join(
                f"{layer} {q['median']:.1f} h ({q['runs']} runs)"
                for layer, q in s["layer_done_hours"].items()
            )
            print(f"    layer at 100% after (median): {done}")
    print(f"\nwall time {elapsed:.1f} s")
    if args.json:
        meta = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command.strip(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "workers": args.workers,
            "seeds": seeds,
            "horizon_days": args.days,
            "gates": gates,
            "judging": judging.model_dump(mode="json"),
            "scenarios": {
                k: {
                    "description": v.description,
                    "candidate_completion": P_COMPLETION + v.completion_delta,
                }
                for k, v in SCENARIOS.items()
            },
            "traffic": {
                "users_per_hour": POPULATION.users_per_hour,
                "layers": dict(zip(LAYERS, SHARES, strict=True)),
                "steps": steps,
                "completion": P_COMPLETION,
                "error": POPULATION.error,
                "tools_per_request": POPULATION.tools_per_request,
                "tool_success": POPULATION.tool_success,
                "latency_lognormal": [
                    math.log(POPULATION.latency_median_s),
                    POPULATION.latency_sigma,
                ],
            },
            "seconds": elapsed,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"meta": meta, "summary": summaries, "runs": runs}, handle, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
