"""The plan the simulator rolls out, the two engines that roll it out (the product's controller,
:func:`run_ours`, and the article's QoS rule, :func:`run_article`) and the runner over
scenarios, engines and seeds (:func:`simulate`, in processes)."""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from langchain_graylayer.judging.judge import Rule, qos_inputs
from langchain_graylayer.judging.qos import (
    HIGH_RISK_QOS_WEIGHTS,
    article_qos_verdict,
    qos_score,
)
from langchain_graylayer.plan.gates import (
    DEFAULT_GUARDRAILS,
    Gates,
    Guardrail,
    GuardrailMetric,
    Judging,
)
from langchain_graylayer.plan.plan import LayerSpec, RolloutPlan
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.rollout.state import AuditAction
from langchain_graylayer.simulate.scenarios import SCENARIOS
from langchain_graylayer.simulate.traffic import (
    CANDIDATE,
    EPOCH,
    LAYERS,
    PLAN_ID,
    TICK,
    WINDOW_TICKS,
    Clock,
    F,
    Population,
    SimStore,
    Traffic,
    window_totals,
)

ENGINES: tuple[str, ...] = ("ours", "article")


# ----------------------------------------------------------------------------- the plan
DEFAULT_STEPS: dict[str, tuple[float, ...]] = {
    "internal": (0.5, 1.0),
    "early_adopter": (0.2, 1.0),
    "normal": (0.25, 0.5, 1.0),
    "high_value": (0.5, 1.0),
    "vip": (0.5, 1.0),
}
"""Steps sized to each layer's traffic at 3 000 users/h (internal 15, early_adopter 300, normal
2 100, high_value 450, vip 135 users/h)."""
DEFAULT_MAX_STEP: dict[str, float] = {"*": 3600.0, "normal": 3 * 3600.0}
"""Small layers promote on "no harm" after an hour (they can only catch collapses); normal, where
a good candidate shows non-inferiority within about an hour, holds a candidate that cannot for up
to 3 h, which is where a few-point drop is caught."""


@dataclass(frozen=True)
class PlanKnobs:
    """The simulation plan's gates and steps (``RolloutPlan`` defaults otherwise)."""

    steps: tuple[tuple[str, tuple[float, ...]], ...] = tuple(DEFAULT_STEPS.items())
    bake_s: float = 1800.0
    max_step: tuple[tuple[str, float], ...] = tuple(DEFAULT_MAX_STEP.items())
    """Seconds per layer, ``"*"`` for the others."""
    min_samples: int = 200
    alpha: float = 0.05
    n_star: float = 400.0
    timeout_policy: str = "promote_if_no_harm"
    feedback_delay_s: float = 0.0
    """The declared ``delay`` of the bad-feedback and complaint guardrails."""
    cost_margin: float | None = None
    """A ``cost_per_request`` guardrail with this relative budget (``None``: none)."""

    def steps_of(self, layer: str) -> tuple[float, ...]:
        steps = dict(self.steps)
        return steps.get(layer, steps.get("*", DEFAULT_STEPS.get(layer, (0.01, 0.1, 0.5, 1.0))))

    def max_step_of(self, layer: str) -> float:
        limits = dict(self.max_step)
        return limits.get(layer, limits.get("*", 3600.0))


def make_plan(
    knobs: PlanKnobs | None = None,
    layers: Sequence[str] = LAYERS,
    *,
    plan_id: str = PLAN_ID,
    gates: Gates | None = None,
    judging: Judging | None = None,
) -> RolloutPlan:
    """A plan over ``layers`` with the knobs' steps, gates and judging.

    ``internal`` is a membership layer (``group == "staff"``); the others are the default
    plan's score layers. A layer whose ``max_step`` differs from the plan's (``"*"``) gets its
    own gates. ``gates`` / ``judging`` replace what the knobs would build (every layer).
    """
    knobs = knobs or PlanKnobs()
    defaults = {layer.name: layer for layer in RolloutPlan.default(plan_id).layers}
    late = (GuardrailMetric.BAD_FEEDBACK_RATE, GuardrailMetric.COMPLAINT_RATE)
    guardrails = tuple(
        g.model_copy(update={"delay": knobs.feedback_delay_s}) if g.metric in late else g
        for g in DEFAULT_GUARDRAILS
    )
    if knobs.cost_margin is not None:
        cost = Guardrail(metric=GuardrailMetric.COST_PER_REQUEST, margin=knobs.cost_margin)
        guardrails = (*guardrails, cost)
    plan_gates = gates or Gates(
        min_samples=knobs.min_samples,
        bake_time=knobs.bake_s,
        max_step_time=max(knobs.max_step_of("*"), knobs.bake_s),
        timeout_policy=knobs.timeout_policy,
        guardrails=guardrails,
    )
    specs = []
    for name in layers:
        spec: dict[str, Any] = (
            defaults[name].model_dump()
            if name in defaults
            else {"name": name, "rules": ('group == "staff"',), "description": "testers"}
        )
        spec["steps"] = knobs.steps_of(name)
        limit = knobs.max_step_of(name)
        if gates is None and limit != plan_gates.max_step_time:
            spec["gates"] = Gates.model_validate(
                {**plan_gates.model_dump(), "max_step_time": limit}
            )
        specs.append(LayerSpec.model_validate(spec))
    judging = judging or Judging(alpha=knobs.alpha, n_star=knobs.n_star)
    return RolloutPlan.default(plan_id, gates=plan_gates, judging=judging, layers=specs)


def describe_plan(plan: RolloutPlan) -> str:
    """The plan's steps, gates and judging, for the report."""
    g, j = plan.gates, plan.judging
    tests = sum(len(layer.steps) for layer in plan.layers)
    steps = "; ".join(
        f"{layer.name} " + "→".join(f"{s:g}" for s in layer.steps) for layer in plan.layers
    )
    limits = ", ".join(
        f"{layer.name} {layer.gates.max_step_time / 60:g} min"
        for layer in plan.layers
        if layer.gates is not None
    )
    split = j.alpha / ((len(g.guardrails) + 1) * tests)
    return (
        f"plan steps: {steps}\n"
        f"gates: min_samples {g.min_samples}, bake_time {g.bake_time / 60:g} min, max_step_time "
        f"{g.max_step_time / 60:g} min{f' ({limits})' if limits else ''}, timeout_policy "
        f"{g.timeout_policy}; guardrails "
        + ", ".join(f"{r.metric.value}±{r.margin:g}" for r in g.guardrails)
        + f"\njudging: alpha {j.alpha:g} (harm tests at {j.alpha:g}/(({len(g.guardrails)} "
        f"guardrails + the floor) × {tests} steps) = {split:.2g} each), n_star {j.n_star:g}, "
        f"ni_n_star {j.ni_n_star:g}, srm_alpha {j.srm_alpha:g}, hard floor error rate > "
        f"{j.max_error_rate} (n ≥ {j.floor_min_samples}), rollback_scope {j.rollback_scope}"
    )


# ----------------------------------------------------------------------------- engines
def _base(engine: str, traffic: Traffic) -> dict[str, Any]:
    return {
        "engine": engine, "outcome": "timeout", "hours": 0.0, "exposed": 0,
        "exposed_affected": 0, "candidate_requests": 0, "flagged": False, "flag_hours": None,
        "flag_exposed": None, "flag_exposed_affected": None, "flag_reason": None,
        "layer": None, "ratio": 0.0, "reason": "", "layer_done": {}, "promotions": {},
        "srm_alerts": 0, "srm_hours": None, "srm_exposed": None, "srm_exposed_affected": None,
    }  # fmt: skip


def _finish(result: dict[str, Any], outcome: str, ticks: int, traffic: Traffic) -> dict[str, Any]:
    result.update(
        outcome=outcome,
        hours=ticks * TICK / 3600,
        exposed=traffic.exposed,
        exposed_affected=traffic.exposed_affected,
        candidate_requests=traffic.candidate_requests,
    )
    return result


def _flag(result: dict[str, Any], ticks: int, traffic: Traffic, reason: str) -> None:
    """Record the rollback: when, after how many exposed users, and why."""
    if not result["flagged"]:
        result.update(
            flagged=True,
            flag_hours=ticks * TICK / 3600,
            flag_exposed=traffic.exposed,
            flag_exposed_affected=traffic.exposed_affected,
            flag_reason=reason,
        )


def _caught_by(verdict: dict[str, Any]) -> str:
    """What rolled a candidate back: the harmed guardrail, or the rule (``hard_floor``)."""
    if verdict.get("rule") == Rule.HARM:
        return str(verdict.get("detail"))
    return str(verdict.get("rule"))


def run_ours(plan: RolloutPlan, traffic: Traffic) -> dict[str, Any]:
    """The product's controller and judge on one traffic realisation, until a rollback, every
    layer at 100 %, or the traffic's horizon."""
    clock = Clock()
    store = SimStore(traffic, clock=clock)
    controller = RolloutController(plan=plan, store=store, clock=clock, holder="simulate")
    layers = plan.layer_names
    result = _base("ours", traffic)
    promotions: Counter[str] = Counter()
    alerts: Counter[str] = Counter()
    controller.step()  # opens the first layer at its first step
    for k in range(traffic.horizon):
        ratios, steps = store.get_ratios(plan.id), store.get_steps(plan.id)
        traffic.tick([ratios.get(n, 0.0) for n in layers], [steps.get(n, "") for n in layers])
        clock.now = EPOCH + (k + 1) * TICK
        for entry in controller.step():
            rule = (entry.verdict or {}).get("rule")
            if entry.action in (AuditAction.PROMOTE, AuditAction.COMPLETE_LAYER):
                timeout = rule == Rule.TIMEOUT_NO_HARM
                promotions["timeout" if timeout else "non_inferior"] += 1
                if entry.new_ratio is not None and entry.new_ratio >= 1.0 and entry.layer:
                    result["layer_done"][entry.layer] = (k + 1) * TICK / 3600
            elif entry.action is AuditAction.ALERT:
                promotions["alert"] += 1
                alerts[str(rule)] += 1
                if rule == Rule.SAMPLE_RATIO_MISMATCH:
                    result["srm_alerts"] += 1
                    if result["srm_hours"] is None:
                        result.update(
                            srm_hours=(k + 1) * TICK / 3600, srm_exposed=traffic.exposed,
                            srm_exposed_affected=traffic.exposed_affected,
                        )  # fmt: skip
            elif entry.action is AuditAction.ROLLBACK:
                verdict = entry.verdict or {}
                _flag(result, k + 1, traffic, _caught_by(verdict))
                result.update(
                    layer=entry.layer, ratio=entry.old_ratio or 0.0, reason=entry.reason,
                    promotions=dict(promotions), n_candidate=verdict.get("n_candidate"),
                    alerts=dict(alerts),
                )  # fmt: skip
                return _finish(result, "rollback", k + 1, traffic)
        if all(store.get_ratio(plan.id, layer) >= 1.0 for layer in layers):
            result.update(promotions=dict(promotions), alerts=dict(alerts))
            return _finish(result, "full", k + 1, traffic)
    status = controller.status()["layers"]
    active = next((s for s in status if s["phase"] == "active"), status[-1])
    result.update(
        layer=active["layer"], ratio=active["ratio"], reason=active["last_reason"] or "",
        promotions=dict(promotions), alerts=dict(alerts), stalled_rule=active["last_rule"],
    )  # fmt: skip
    return _finish(result, "timeout", traffic.horizon, traffic)


def article_qos(counts: Any) -> float:
    """The article's QoS of one window's counts of one arm, high-risk weights (0.3, 0.2, 0.5).

    As in the article, missing data reads as zeros: a window without requests scores 0.56.
    NPS is 0 (no scores are simulated); bad feedback and complaints are per request.
    """
    inputs = qos_inputs(window_totals(counts), no_tool_calls=0.0)
    return qos_score(inputs, HIGH_RISK_QOS_WEIGHTS, max_latency_s=5.0).qos


def run_article(plan: RolloutPlan, traffic: Traffic) -> dict[str, Any]:
    """The article's QoS rule with the plan's layers and steps, one 60-minute window at a time."""
    layers = plan.layer_names
    steps = [plan.layer(name).steps for name in layers]
    result = _base("article", traffic)
    ratios = np.zeros(len(layers))
    layer, step, step_start = 0, 0, 0
    ratios[layer] = steps[layer][step]
    promotions = 0
    no_steps = [""] * len(layers)
    for k in range(traffic.horizon):
        traffic.tick(ratios, no_steps)  # the article's rule reads request counts only
        now = k + 1
        if (now - step_start) % WINDOW_TICKS:
            continue
        counts = traffic.window(now - WINDOW_TICKS)[layer, CANDIDATE]
        qos = article_qos(counts)
        verdict = article_qos_verdict(qos)
        if verdict == "rollback":
            silent = bool(counts[F["requests"]] == 0)
            _flag(result, now, traffic, "silent window" if silent else "qos")
            result.update(
                layer=layers[layer], ratio=float(ratios[layer]), reason=f"qos {qos:.3f} < 0.6",
                n_candidate=int(counts[F["requests"]]), silent=silent,
                promotions={"qos": promotions},
            )  # fmt: skip
            return _finish(result, "rollback", now, traffic)
        if verdict == "promote":
            promotions += 1
            step, step_start = step + 1, now
            ratios[layer] = steps[layer][step]
            if steps[layer][step] >= 1.0:  # the layer is done; the next one opens
                result["layer_done"][layers[layer]] = now * TICK / 3600
                layer, step = layer + 1, 0
                if layer == len(layers):
                    result["promotions"] = {"qos": promotions}
                    return _finish(result, "full", now, traffic)
                ratios[layer] = steps[layer][step]
    result.update(layer=layers[layer], ratio=float(ratios[layer]), promotions={"qos": promotions})
    return _finish(result, "timeout", traffic.horizon, traffic)


def scenario_key(scenario_id: str) -> int:
    """A stable integer per scenario id, so a subset of scenarios draws the same numbers."""
    return zlib.crc32(scenario_id.encode())


@dataclass(frozen=True)
class SimConfig:
    """Everything a worker needs to run seeds (picklable)."""

    population: Population = field(default_factory=Population)
    knobs: PlanKnobs = field(default_factory=PlanKnobs)
    horizon_ticks: int = round(48 * 3600 / TICK)
    base_seed: int = 0


_PLANS: dict[PlanKnobs, RolloutPlan] = {}

DEFAULT_PLAN_KNOBS = PlanKnobs(
    steps=(("*", (0.01, 0.1, 0.5, 1.0)),), bake_s=3600.0, max_step=(("*", 86400.0),),
    min_samples=200, alpha=0.05, n_star=400.0,
)  # fmt: skip
"""``RolloutPlan.default``'s steps and gates on every layer (``internal`` included)."""


def run_one(config: SimConfig, scenario_id: str, engine: str, seed: int) -> dict[str, Any]:
    """One engine on one seed of one scenario (on the plan the scenario names)."""
    knobs = {
        "default": DEFAULT_PLAN_KNOBS,
        "sim-late": replace(config.knobs, feedback_delay_s=6 * 3600.0),
        "sim-cost": replace(config.knobs, cost_margin=0.2),
    }.get(SCENARIOS[scenario_id].plan, config.knobs)
    plan = _PLANS.get(knobs)
    if plan is None:
        plan = _PLANS[knobs] = make_plan(knobs, config.population.layers)
    scenario = SCENARIOS[scenario_id]
    ticks = config.horizon_ticks if scenario.hours is None else round(scenario.hours * 3600 / TICK)
    traffic = Traffic(
        config.population, scenario, (config.base_seed, seed, scenario_key(scenario_id)), ticks
    )
    started = time.perf_counter()
    run = run_ours(plan, traffic) if engine == "ours" else run_article(plan, traffic)
    run.update(scenario=scenario_id, seed=seed, seconds=time.perf_counter() - started)
    return run


def _run_batch(job: tuple[SimConfig, str, str, tuple[int, ...]]) -> list[dict[str, Any]]:
    config, scenario_id, engine, seeds = job
    return [run_one(config, scenario_id, engine, seed) for seed in seeds]


def simulate(
    config: SimConfig,
    scenarios: Sequence[str],
    engines: Sequence[str],
    seeds: int,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every (scenario, engine, seed), in ``jobs`` processes; runs sorted by their key."""
    batch = 10 if seeds >= 40 else max(seeds // 4, 1)
    work = [
        (config, s, e, tuple(range(first, min(first + batch, seeds))))
        for s in scenarios
        for e in engines
        for first in range(0, seeds, batch)
    ]
    total, done = len(scenarios) * len(engines) * seeds, 0
    runs: list[dict[str, Any]] = []
    if jobs <= 1:
        for job in work:
            runs += _run_batch(job)
            done += len(job[3])
            if progress:
                progress(done, total)
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = [pool.submit(_run_batch, job) for job in work]
            for future in as_completed(futures):
                chunk = future.result()
                runs += chunk
                done += len(chunk)
                if progress:
                    progress(done, total)
    order = {s: i for i, s in enumerate(scenarios)}
    runs.sort(key=lambda r: (order[r["scenario"]], r["engine"], r["seed"]))
    return runs
