"""What graylayer's routing and measuring cost per run of a ``create_agent`` agent.

Run from the repository root::

    python benchmarks/callback_overhead.py            # about 40 s on 2 cores
    python benchmarks/callback_overhead.py --quick    # a few seconds, for a smoke check
    python benchmarks/callback_overhead.py --tools 3  # an agent that calls three tools
    python benchmarks/callback_overhead.py --json results.json

The agent is a real ``langchain.agents.create_agent`` graph whose chat model is an offline fake:
it calls ``--tools`` tools (default 1), one per turn, then answers, and reports token usage on
every reply. Variants:

``agent``             the agent invoked directly (the floor);
``agent_noop``        the same with a do-nothing handler: what any handler costs in LangChain's
                      callback dispatch (building event arguments, run ids, the manager's loop);
``agent_handler``     the same with a ``GraylayerCallbackHandler`` in ``config["callbacks"]`` and
                      graylayer metadata in the config, as the router would write it, so the
                      handler measures every run;
``router_plain``      ``GrayRouter(instrument=False)`` over the agent: routing, no measuring;
``router_metrics``    ``GrayRouter`` with metrics, the default: tool calls and tokens counted from
                      the agent's messages, no handler on the agent's runs;
``router_journal``    ``router_metrics`` with a plan whose ``side_effect_tools`` is ``["*"]``: the
                      tool-call journal (a handler) on every run of a candidate request;
``router_handler``    ``router_metrics`` with ``measure_from_output=False``: the handler on every
                      run;
``agent_traced``      the agent with a no-op tracer in ``config["callbacks"]`` (LangSmith-style
                      tracing: a ``Run`` built for every run, none sent anywhere);
``router_traced``     ``router_metrics`` with the same tracer: tracing on in both arms, compared
                      with ``agent_traced``.

Each round serves ``--calls`` requests with every variant, interleaved one run at a time in a
shuffled order, so machine noise lands on all of them alike. The table gives the median µs per
run over the rounds, its interquartile range, and against each variant's baseline (``agent``,
or ``agent_traced`` for ``router_traced``) the median (and quartiles) of the same-round ratios
and the median of the same-round differences (µs added per run), which cancel most of the noise
that the variants of a round share; and the ratio to ``router_plain``. Runs are timed on the
process's CPU time (``--wall`` for the wall clock); the garbage collector is collected between
rounds and off inside one (as ``timeit`` does). A last line gives the handler's own work per
run: one run's callback events replayed straight into a handler.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import langchain_core
import langgraph.version
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langchain_core.utils.uuid import uuid7
from prometheus_client import CollectorRegistry

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan
from langchain_graylayer.measuring.handler import GraylayerCallbackHandler
from langchain_graylayer.measuring.labels import LAYER_KEY, PLAN_KEY, REQUEST_ID_KEY, VERSION_KEY
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

PLAN_ID = "bench"
RATIO = 0.5
QUESTION = {"messages": [("user", "Where is order A-1, and when will it arrive?")]}
ANSWER = "Order A-1 has shipped from Lyon and arrives on Friday."
USAGE = UsageMetadata(input_tokens=120, output_tokens=18, total_tokens=138)


# --------------------------------------------------------------------------- the agent
@tool
def lookup_order(order_id: str) -> str:
    """Return the status of an order."""
    return f"order {order_id} has shipped"


@tool
def find_warehouse(order_id: str) -> str:
    """Return the warehouse an order left from."""
    return f"order {order_id} left Lyon"


@tool
def shipping_eta(order_id: str) -> str:
    """Return when an order arrives."""
    return f"order {order_id} arrives on Friday"


TOOLS = [lookup_order, find_warehouse, shipping_eta]


def build_agent(tools: int = 3) -> Runnable[Any, Any]:
    # An offline chat model that calls the first ``tools`` tools of TOOLS once each, one per
    # turn, then answers.
    chosen = TOOLS[:tools]
    model = ScriptedChatModel(
        script=calls_then_answers([t.name for t in chosen], ANSWER), usage=USAGE
    )
    return create_agent(model=model, tools=chosen, name="support")


# --------------------------------------------------------------------------- variants
class NoopHandler(BaseCallbackHandler):
    """A handler that does nothing: what LangChain's callback dispatch costs by itself."""

    run_inline = True


class NoopTracer(BaseTracer):
    """LangSmith-style tracing without a network: a ``Run`` for every run, persisted nowhere."""

    run_inline = True

    def _persist_run(self, run: Run) -> None:
        pass


@dataclass
class Variant:
    """One way of serving the agent: ``run(i)`` serves the ``i``-th request."""

    name: str
    description: str
    run: Callable[[int], Any]
    metrics: GraylayerMetrics | None = None
    baseline: str = "agent"
    """What the variant is compared with: the same agent, with the same tracing."""
    samples_ns: list[float] = field(default_factory=list)
    runs: int = 0

    def timed(self, clock: Callable[[], int]) -> int:
        """Serve the next request; return how long it took on ``clock``, in nanoseconds."""
        begin = clock()
        self.run(self.runs)
        elapsed = clock() - begin
        self.runs += 1
        return elapsed


def build_variants(users: list[str], tools: int) -> list[Variant]:
    agent = build_agent(tools)
    plan = RolloutPlan.default(PLAN_ID)
    configs = [{"configurable": {"user_id": user}} for user in users]
    tracer = NoopTracer()
    traced = [{**config, "callbacks": [tracer]} for config in configs]
    count = len(users)

    def direct(i: int) -> Any:
        return agent.invoke(QUESTION)

    def direct_traced(i: int) -> Any:
        return agent.invoke(QUESTION, {"callbacks": [tracer]})

    noop = NoopHandler()

    def with_noop_handler(i: int) -> Any:
        return agent.invoke(QUESTION, {"callbacks": [noop]})

    handler_metrics = GraylayerMetrics(registry=CollectorRegistry())
    handler = GraylayerCallbackHandler(handler_metrics)
    labels = {PLAN_KEY: PLAN_ID, VERSION_KEY: "candidate", LAYER_KEY: "vip"}

    def with_handler(i: int) -> Any:
        run_id = uuid7()  # the router makes one per request too
        metadata = {**labels, REQUEST_ID_KEY: str(run_id)}
        return agent.invoke(
            QUESTION, {"callbacks": [handler], "metadata": metadata, "run_id": run_id}
        )

    def router(plan: RolloutPlan = plan, **kwargs: Any) -> GrayRouter[Any, Any]:
        store = MemoryStore()
        for layer in plan.layer_names:
            store.set_ratio(PLAN_ID, layer, RATIO)
        return GrayRouter(stable=agent, candidate=agent, plan=plan, store=store, **kwargs)

    plain = router(instrument=False)
    router_metrics = GraylayerMetrics(registry=CollectorRegistry())
    measured = router(metrics=router_metrics)
    journal_metrics = GraylayerMetrics(registry=CollectorRegistry())
    journaled = router(
        RolloutPlan.default(PLAN_ID, judging={"side_effect_tools": ["*"]}), metrics=journal_metrics
    )
    by_handler_metrics = GraylayerMetrics(registry=CollectorRegistry())
    by_handler = router(metrics=by_handler_metrics, measure_from_output=False)
    traced_metrics = GraylayerMetrics(registry=CollectorRegistry())
    measured_traced = router(metrics=traced_metrics)

    return [
        Variant("agent", "create_agent, invoked directly", direct),
        Variant(
            "agent_noop",
            "the agent + a do-nothing handler (LangChain's dispatch cost)",
            with_noop_handler,
        ),
        Variant(
            "agent_handler",
            "the agent + GraylayerCallbackHandler in config callbacks",
            with_handler,
            handler_metrics,
        ),
        Variant(
            "router_plain",
            "GrayRouter(instrument=False) over the agent",
            lambda i: plain.invoke(QUESTION, configs[i % count]),
        ),
        Variant(
            "router_metrics",
            "GrayRouter with metrics, counted from the agent's messages (the default)",
            lambda i: measured.invoke(QUESTION, configs[i % count]),
            router_metrics,
        ),
        Variant(
            "router_journal",
            "router_metrics + the tool-call journal of every tool (side_effect_tools: ['*'])",
            lambda i: journaled.invoke(QUESTION, configs[i % count]),
            journal_metrics,
        ),
        Variant(
            "router_handler",
            "GrayRouter with metrics, measure_from_output=False (handler on every run)",
            lambda i: by_handler.invoke(QUESTION, configs[i % count]),
            by_handler_metrics,
        ),
        Variant(
            "agent_traced",
            "the agent + a no-op tracer (LangSmith-style tracing, nothing sent)",
            direct_traced,
        ),
        Variant(
            "router_traced",
            "router_metrics + the same no-op tracer, against agent_traced",
            lambda i: measured_traced.invoke(QUESTION, traced[i % count]),
            traced_metrics,
            baseline="agent_traced",
        ),
    ]


# --------------------------------------------------------------------------- the handler alone
HOOKS = (
    "on_chain_start", "on_chain_end", "on_chain_error", "on_tool_start", "on_tool_end",
    "on_tool_error", "on_chat_model_start", "on_llm_start", "on_llm_end", "on_llm_error",
)  # fmt: skip


class EventRecorder(BaseCallbackHandler):
    """Keeps every callback event of a run, to replay it into a handler later."""

    run_inline = True

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattribute__(self, name: str) -> Any:
        if name in HOOKS:
            events = object.__getattribute__(self, "events")
            return lambda *args, **kwargs: events.append((name, args, kwargs))
        return object.__getattribute__(self, name)


def handler_alone(repeats: int, blocks: int, tools: int) -> tuple[int, float, float, float]:
    """The handler's own work per agent run, without LangChain's dispatch or the agent.

    One measured run's events are recorded, then replayed ``repeats`` times per block into a
    fresh handler. Returns (events per run, and the quartiles of µs per run over the blocks).
    """
    recorder = EventRecorder()
    run_id = uuid7()
    labels = {PLAN_KEY: PLAN_ID, VERSION_KEY: "candidate", LAYER_KEY: "vip"}
    metadata = {**labels, REQUEST_ID_KEY: str(run_id)}
    build_agent(tools).invoke(
        QUESTION, {"callbacks": [recorder], "metadata": metadata, "run_id": run_id}
    )
    handler = GraylayerCallbackHandler(GraylayerMetrics(registry=CollectorRegistry()))
    calls = [(getattr(handler, name), args, kwargs) for name, args, kwargs in recorder.events]
    samples = []
    for _ in range(blocks):
        gc.collect()
        gc.disable()
        try:
            begin = time.process_time_ns()
            for _ in range(repeats):
                for method, args, kwargs in calls:
                    method(*args, **kwargs)
            samples.append((time.process_time_ns() - begin) / repeats / 1000)
        finally:
            gc.enable()
    assert handler.pending() == 0
    return (len(calls), *quartiles(samples))


def check_counts(variants: list[Variant], tools_per_run: int) -> str:
    """What the measuring variants counted, next to how many runs they made (a sanity line)."""
    parts = []
    for variant in variants:
        registry = variant.metrics.registry if variant.metrics is not None else None
        if registry is None:
            continue
        requests = tools = 0.0
        for family in registry.collect():
            for sample in family.samples:
                if sample.name == "graylayer_requests_total":
                    requests += sample.value
                elif sample.name == "graylayer_tool_calls_total":
                    tools += sample.value
        parts.append(
            f"{variant.name} counted {requests:.0f} requests and {tools:.0f} tool calls "
            f"in {variant.runs} runs"
        )
        if requests != variant.runs or tools != tools_per_run * variant.runs:
            parts[-1] += " (MISMATCH)"
    return "; ".join(parts)


# --------------------------------------------------------------------------- measuring
def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def measure(
    variants: list[Variant],
    rounds: int,
    calls: int,
    budget: float,
    rng: random.Random,
    clock: Callable[[], int],
) -> int:
    """Run up to ``rounds`` rounds (fewer if ``budget`` seconds run out); return how many ran.

    A round serves ``calls`` requests with every variant, interleaved one run at a time in a
    fresh random order each time, so a burst of load on the machine hits all variants alike.
    """
    deadline = time.perf_counter() + budget
    order = list(variants)
    done = 0
    while done < rounds and (done < 3 or time.perf_counter() < deadline):
        totals = dict.fromkeys((v.name for v in variants), 0)
        gc.collect()
        gc.disable()
        try:
            for _ in range(calls):
                rng.shuffle(order)
                for variant in order:
                    totals[variant.name] += variant.timed(clock)
        finally:
            gc.enable()
        for variant in variants:
            variant.samples_ns.append(totals[variant.name] / calls)
        done += 1
    return done


def summarise(variants: list[Variant]) -> dict[str, dict[str, Any]]:
    """Median and quartiles per variant; ratios and added µs are medians of same-round ratios
    and differences (paired)."""
    by_name = {v.name: v.samples_ns for v in variants}

    def paired(samples: list[float], base: list[float]) -> tuple[float, float, float]:
        return quartiles([s / b for s, b in zip(samples, base, strict=True)])

    def added(samples: list[float], base: list[float]) -> float:
        return statistics.median(s - b for s, b in zip(samples, base, strict=True)) / 1000

    rows: dict[str, dict[str, Any]] = {}
    for variant in variants:
        q1, median, q3 = quartiles(variant.samples_ns)
        base = by_name[variant.baseline]
        vs_base = paired(variant.samples_ns, base)
        vs_agent = paired(variant.samples_ns, by_name["agent"])
        vs_plain = paired(variant.samples_ns, by_name["router_plain"])
        rows[variant.name] = {
            "description": variant.description,
            "median_us": median / 1000,
            "q1_us": q1 / 1000,
            "q3_us": q3 / 1000,
            "iqr_us": (q3 - q1) / 1000,
            "baseline": variant.baseline,
            "vs_baseline": vs_base[1],
            "vs_baseline_iqr": [vs_base[0], vs_base[2]],
            "added_us": added(variant.samples_ns, base),
            "vs_agent": vs_agent[1],
            "vs_agent_iqr": [vs_agent[0], vs_agent[2]],
            "vs_router_plain": vs_plain[1],
            "vs_router_plain_iqr": [vs_plain[0], vs_plain[2]],
            "over_agent_us": added(variant.samples_ns, by_name["agent"]),
            "samples_us": [round(s / 1000, 3) for s in variant.samples_ns],
        }
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    def ratio(row: dict[str, Any], key: str) -> str:
        low, high = row[f"{key}_iqr"]
        return f"{row[key]:.3f} [{low:.3f}, {high:.3f}]"

    lines = [
        "| variant | what | median µs/run | IQR µs | baseline | × baseline [IQR] "
        "| + µs/run over baseline | × router_plain [IQR] |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| `{name}` | {row['description']} | {row['median_us']:.0f} | {row['iqr_us']:.0f} "
            f"| `{row['baseline']}` | {ratio(row, 'vs_baseline')} | {row['added_us']:+.0f} "
            f"| {ratio(row, 'vs_router_plain')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, for a smoke check")
    parser.add_argument("--rounds", type=int, help="rounds (default 30, quick 5)")
    parser.add_argument(
        "--calls", type=int, help="runs per variant per round (default 20, quick 5)"
    )
    parser.add_argument(
        "--budget", type=float, help="seconds of timed rounds at most (default 30, quick 4)"
    )
    parser.add_argument("--users", type=int, default=200, help="distinct user ids (default 200)")
    parser.add_argument(
        "--tools", type=int, choices=[1, 2, 3], default=1, help="tool calls per run (default 1)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the round order shuffle")
    parser.add_argument(
        "--wall",
        action="store_true",
        help="time on the wall clock (default: the process's CPU time, which other processes on "
        "a shared machine disturb less)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    clock = time.perf_counter_ns if args.wall else time.process_time_ns
    rounds = args.rounds or (5 if args.quick else 30)
    calls = args.calls or (5 if args.quick else 20)
    budget = args.budget or (4.0 if args.quick else 30.0)
    users = [f"user-{n:04d}" for n in range(args.users)]

    started = time.perf_counter()
    variants = build_variants(users, args.tools)
    for variant in variants:  # warm up: imports, caches, the users' layer cache
        for _ in range(calls):
            variant.timed(clock)
    rounds = measure(variants, rounds, calls, budget, random.Random(args.seed), clock)
    counts = check_counts(variants, args.tools)
    rows = summarise(variants)
    events, *alone = handler_alone(
        repeats=calls * 10, blocks=10 if args.quick else 30, tools=args.tools
    )
    took = time.perf_counter() - started

    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "langchain_core": langchain_core.__version__,
        "langgraph": langgraph.version.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "calls_per_round": calls,
        "users": len(users),
        "tools": args.tools,
        "ratio": RATIO,
        "clock": "wall" if args.wall else "process CPU",
        "seconds": round(took, 1),
    }
    print(
        f"callback overhead: {rounds} rounds x {calls} runs per variant (an agent run: "
        f"{args.tools + 1} model calls, {args.tools} tool calls), Python {meta['python']}, "
        "langchain-core "
        f"{meta['langchain_core']}, langgraph {meta['langgraph']}, {meta['cpus']} CPUs, "
        f"{meta['clock']} time, {took:.1f} s"
    )
    print(counts)
    print()
    print(table(rows))
    print(
        f"\nthe handler alone ({events} events of one run replayed into it, process CPU time): "
        f"median {alone[1]:.0f} µs per run, IQR [{alone[0]:.0f}, {alone[2]:.0f}]"
    )
    if args.json is not None:
        handler = {
            "events_per_run": events,
            "q1_us": alone[0],
            "median_us": alone[1],
            "q3_us": alone[2],
        }
        result = {"meta": meta, "variants": rows, "handler_alone": handler}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
