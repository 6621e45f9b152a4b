"""How good are the rollout decisions? The product's judge vs the article's QoS rule, Monte Carlo.

Run from the repository root::

    python benchmarks/judge_quality.py                # 200 seeds per scenario, a few minutes
    python benchmarks/judge_quality.py --quick        # 50 seeds, under a minute: a smoke check
    python benchmarks/judge_quality.py --json out.json

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
100 % is done and the next one opens; a rollback ends the rollout. Each request goes to the
candidate with probability equal to its layer's ratio (a per-request Bernoulli stands in for the
sticky user bucket: fine for a first cut with one request per user). Per request: completion
Bernoulli(0.85) for stable, error Bernoulli(0.02) (independent of completion), tool calls
Poisson(3) each succeeding with 0.97, latency LogNormal(ln 2 s, 0.67). No feedback is simulated
(bad rate, complaints and NPS are 0 for both engines). Scenarios: S0 A/A (candidate = stable) and
S2 candidate completion 0.80 (−5 points) in every layer. Horizon 4 simulated days.

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
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from typing import Any

import numpy as np

from langchain_graylayer import MemoryStore, RolloutPlan
from langchain_graylayer.controller import RolloutController
from langchain_graylayer.decision import Version
from langchain_graylayer.gates import Gates
from langchain_graylayer.metrics import DURATION_BUCKETS, ArmStats, LatencySummary, Snapshot
from langchain_graylayer.plan import LayerSpec
from langchain_graylayer.qos import (
    HIGH_RISK_QOS_WEIGHTS,
    QosInputs,
    article_qos_verdict,
    qos_score,
)

PLAN_ID = "judge-quality"
TICK = 300.0  # seconds
EPOCH = (
    1_700_000_000.0  # the fake clock's start: a real-looking time (the controller reads 0 as unset)
)
WINDOW_TICKS = 12  # the article's 60-minute QoS window
USERS_PER_HOUR = 3000.0
LAYERS = ("early_adopter", "normal", "high_value", "vip")
SHARES = np.array([0.10, 0.70, 0.15, 0.05])
STEPS = (0.01, 0.1, 0.5, 1.0)  # the default; ``--steps`` changes both engines
P_COMPLETION = 0.85
P_ERROR = 0.02
TOOLS_PER_REQUEST = 3.0
P_TOOL_SUCCESS = 0.97
LATENCY_MU, LATENCY_SIGMA = math.log(2.0), 0.67
SCENARIOS = {  # id: (description, candidate completion)
    "S0": ("A/A: candidate = stable", 0.85),
    "S2": ("global −5 points of completion (0.80)", 0.80),
}
ENGINES = ("ours", "article")

STABLE, CANDIDATE = 0, 1
# fields of the per-(layer, arm) count vector
REQ, ERR, DONE, TOOLS, TOOL_ERR, LAT_SUM = range(6)
BOUNDS = np.array(DURATION_BUCKETS)
N_BUCKETS = len(BOUNDS) + 1  # the last one is above the top bound (+Inf only)
N_FIELDS = LAT_SUM + 1 + len(BOUNDS)
CUMULATIVE_BOUNDS = (*DURATION_BUCKETS, math.inf)


# ----------------------------------------------------------------------------- traffic
class Traffic:
    """Synthetic counts per 5-minute tick for 4 layers × 2 arms, kept cumulatively per tick."""

    def __init__(self, seed: int, scenario: int, cand_completion: float, ticks: int) -> None:
        self.rng = np.random.default_rng([seed, scenario])
        arms = len(LAYERS) * 2  # arm index = 2·layer + (0 stable, 1 candidate)
        # arrivals do not depend on the engine's ratios: drawn for the whole horizon at once
        self.users = self.rng.poisson(USERS_PER_HOUR * TICK / 3600 * SHARES, (ticks, len(LAYERS)))
        done = np.tile([P_COMPLETION, cand_completion], len(LAYERS))
        # success probabilities of one binomial draw: errors, completions, tool errors per arm
        self._p = np.concatenate([np.full(arms, P_ERROR), done, np.full(arms, 1 - P_TOOL_SUCCESS)])
        self._arm_ids = np.arange(arms)
        self.cum = np.zeros((ticks + 1, arms, N_FIELDS))
        self.ticks = 0
        self.exposed = 0
        """Requests served by the candidate so far, all layers."""

    def tick(self, ratios: np.ndarray) -> None:
        """Draw one tick of traffic under the current per-layer candidate ratios."""
        rng, arms = self.rng, self._arm_ids.size
        users = self.users[self.ticks]
        cand = rng.binomial(users, ratios)
        n = np.empty(arms, dtype=np.int64)
        n[0::2], n[1::2] = users - cand, cand
        tools = rng.poisson(TOOLS_PER_REQUEST * n)
        events = rng.binomial(np.concatenate((n, n, tools)), self._p)
        latency = rng.lognormal(LATENCY_MU, LATENCY_SIGMA, size=int(n.sum()))
        arm = np.repeat(self._arm_ids, n)
        position = np.searchsorted(BOUNDS, latency, side="left")  # Prometheus' "le" buckets
        hist = np.bincount(arm * N_BUCKETS + position, minlength=arms * N_BUCKETS)
        row = self.cum[self.ticks + 1]
        row[:, REQ], row[:, TOOLS] = n, tools
        row[:, ERR], row[:, DONE], row[:, TOOL_ERR] = events.reshape(3, arms)
        row[:, LAT_SUM] = np.bincount(arm, weights=latency, minlength=arms)
        row[:, LAT_SUM + 1 :] = hist.reshape(arms, N_BUCKETS)[:, : len(BOUNDS)]
        row += self.cum[self.ticks]
        self.ticks += 1
        self.exposed += int(cand.sum())

    def window(self, first_tick: int) -> np.ndarray:
        """Counts of ticks ``first_tick`` .. now, shape (layer, arm, field)."""
        counts = self.cum[self.ticks] - self.cum[max(first_tick, 0)]
        return counts.reshape(len(LAYERS), 2, N_FIELDS)


def arm_stats(counts: np.ndarray) -> ArmStats:
    """One arm's window counts as the product's ``ArmStats`` (latency as a histogram)."""
    requests = int(counts[REQ])
    cumulative = np.cumsum(counts[LAT_SUM + 1 :]).astype(int).tolist()
    latency = LatencySummary(
        requests,
        float(counts[LAT_SUM]),
        tuple(zip(CUMULATIVE_BOUNDS, [*cumulative, requests], strict=True)),
    )
    return ArmStats(
        requests=requests,
        errors=int(counts[ERR]),
        completions=int(counts[DONE]),
        tool_calls=int(counts[TOOLS]),
        tool_errors=int(counts[TOOL_ERR]),
        latency=latency,
    )


class _LazyArms(Mapping[tuple[str, Version], ArmStats]):
    """Builds ``ArmStats`` only for the arms the controller reads; absent when no requests."""

    def __init__(self, counts: np.ndarray) -> None:
        self._counts = counts

    def __getitem__(self, key: tuple[str, Version]) -> ArmStats:
        layer, version = key
        counts = self._counts[LAYERS.index(layer), int(version is Version.CANDIDATE)]
        if counts[REQ] == 0:
            raise KeyError(key)
        return arm_stats(counts)

    def __iter__(self) -> Iterator[tuple[str, Version]]:
        for i, layer in enumerate(LAYERS):
            for j, version in enumerate((Version.STABLE, Version.CANDIDATE)):
                if self._counts[i, j, REQ] > 0:
                    yield layer, version

    def __len__(self) -> int:
        return int((self._counts[..., REQ] > 0).sum())


class SyntheticSource:
    """A ``MetricSource`` over :class:`Traffic`: the counts of the ticks inside ``window``."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    def snapshot(self, plan_id: str, window: float) -> Snapshot:
        now = self.traffic.ticks * TICK  # seconds since EPOCH
        first = math.floor((now - window) / TICK + 1e-9)  # ticks ending after now − window
        return Snapshot(plan_id, window, _LazyArms(self.traffic.window(first)))


class Clock:
    """The simulation's time, in seconds, for the controller and the store."""

    def __init__(self) -> None:
        self.now = EPOCH

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------- engines
def _result(outcome: str, ticks: int, traffic: Traffic, **extra: Any) -> dict[str, Any]:
    return {"outcome": outcome, "hours": ticks * TICK / 3600, "exposed": traffic.exposed, **extra}


def run_ours(seed: int, scenario: int, plan: RolloutPlan, horizon: int) -> dict[str, Any]:
    """The product's controller and judge on one seed's traffic."""
    traffic = Traffic(seed, scenario, SCENARIOS[list(SCENARIOS)[scenario]][1], horizon)
    clock = Clock()
    store = MemoryStore(clock=clock)
    controller = RolloutController(
        plan=plan, store=store, source=SyntheticSource(traffic), clock=clock, holder="bench"
    )
    controller.step()  # opens early_adopter at 1 %
    promotions: Counter[str] = Counter()
    layer_done: dict[str, float] = {}
    for k in range(horizon):
        ratios = np.array([store.get_ratio(PLAN_ID, layer) for layer in LAYERS])
        traffic.tick(ratios)
        clock.now = EPOCH + (k + 1) * TICK
        for entry in controller.step():
            if entry.action == "promote":
                kind = "timeout" if entry.reason.startswith("step timeout") else "non_inferior"
                promotions[kind] += 1
                if entry.new_ratio is not None and entry.new_ratio >= 1.0 and entry.layer:
                    layer_done[entry.layer] = (k + 1) * TICK / 3600
            elif entry.action == "alert":
                promotions["alert"] += 1
            if entry.action == "rollback":
                verdict = entry.verdict or {}
                return _result(
                    "rollback", k + 1, traffic, layer=entry.layer, ratio=entry.old_ratio,
                    reason=entry.reason, promotions=dict(promotions), layer_done=layer_done,
                    n_candidate=verdict.get("n_candidate"),
                )  # fmt: skip
        if all(store.get_ratio(PLAN_ID, layer) >= 1.0 for layer in LAYERS):
            return _result(
                "full", k + 1, traffic, promotions=dict(promotions), layer_done=layer_done
            )
    status = controller.status()["layers"]
    active = next((s for s in status if s["phase"] == "active"), status[-1])
    return _result(
        "timeout", horizon, traffic, layer=active["layer"], ratio=active["ratio"],
        reason=active["last_reason"], promotions=dict(promotions), layer_done=layer_done,
    )  # fmt: skip


def article_qos(counts: np.ndarray) -> float:
    """The article's QoS of one window's candidate counts; missing data reads as zeros."""
    n, tools = counts[REQ], counts[TOOLS]
    inputs = QosInputs(
        bad_rate=0.0,  # no feedback simulated
        nps=0.0,
        availability=1 - counts[ERR] / n if n else 0.0,
        latency_s=counts[LAT_SUM] / n if n else 0.0,
        tool_success=1 - counts[TOOL_ERR] / tools if tools else 0.0,
        completion=counts[DONE] / n if n else 0.0,
        complaint_rate=0.0,
    )
    return qos_score(inputs, HIGH_RISK_QOS_WEIGHTS, max_latency_s=5.0).qos


def run_article(
    seed: int, scenario: int, horizon: int, steps: tuple[float, ...] = STEPS
) -> dict[str, Any]:
    """The article's QoS rule, one 60-minute window at a time, same steps and layer order."""
    traffic = Traffic(seed, scenario, SCENARIOS[list(SCENARIOS)[scenario]][1], horizon)
    ratios = np.zeros(len(LAYERS))
    layer, step, step_start = 0, 0, 0
    ratios[layer] = steps[step]
    for k in range(horizon):
        traffic.tick(ratios)
        now = k + 1
        if (now - step_start) % WINDOW_TICKS:
            continue
        counts = traffic.window(now - WINDOW_TICKS)[layer, CANDIDATE]
        qos = article_qos(counts)
        verdict = article_qos_verdict(qos)
        if verdict == "rollback":
            return _result(
                "rollback", now, traffic, layer=LAYERS[layer], ratio=float(ratios[layer]),
                reason=f"qos {qos:.3f} < 0.6", n_candidate=int(counts[REQ]),
                silent=bool(counts[REQ] == 0),
            )  # fmt: skip
        if verdict == "promote":
            step, step_start = step + 1, now
            ratios[layer] = steps[step]
            if steps[step] >= 1.0:  # the layer is done; the next one opens
                layer, step = layer + 1, 0
                if layer == len(LAYERS):
                    return _result("full", now, traffic)
                ratios[layer] = steps[step]
    return _result("timeout", horizon, traffic, layer=LAYERS[layer], ratio=float(ratios[layer]))


def make_plan(gates: dict[str, Any], steps: tuple[float, ...]) -> RolloutPlan:
    """``RolloutPlan.default`` with the benchmark's gates and every layer on ``steps``."""
    layers = [
        LayerSpec.model_validate({**layer.model_dump(), "steps": steps})
        for layer in RolloutPlan.default(PLAN_ID).layers
    ]
    return RolloutPlan.default(PLAN_ID, gates=Gates(**gates), layers=layers)


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
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


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
                k: {"description": v[0], "candidate_completion": v[1]} for k, v in SCENARIOS.items()
            },
            "traffic": {
                "users_per_hour": USERS_PER_HOUR,
                "layers": dict(zip(LAYERS, SHARES.tolist(), strict=True)),
                "steps": steps,
                "completion": P_COMPLETION,
                "error": P_ERROR,
                "tools_per_request": TOOLS_PER_REQUEST,
                "tool_success": P_TOOL_SUCCESS,
                "latency_lognormal": [LATENCY_MU, LATENCY_SIGMA],
            },
            "seconds": elapsed,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"meta": meta, "summary": summaries, "runs": runs}, handle, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
