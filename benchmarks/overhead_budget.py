"""Where the time ``GrayRouter`` adds to an agent request goes, phase by phase.

Run from the repository root::

    python benchmarks/overhead_budget.py            # about 30 s
    python benchmarks/overhead_budget.py --quick    # a few seconds, for a smoke check
    python benchmarks/overhead_budget.py --json budget.json

``callback_overhead.py`` says how much the router adds to a ``create_agent`` run; this script says
where it goes. It serves the same one-tool agent (``callback_overhead.build_agent``) four ways,
interleaved request by request so that machine noise lands on all four alike:

``agent``           the agent invoked directly (the floor);
``agent_labelled``  the agent invoked with the metadata and tags the router writes into its
                    config (plan, version, layer, request id, reason), which every descendant
                    run inherits and LangChain and LangGraph merge at every step;
``nested``          the agent inside a ``RunnableLambda``, invoked with those labels: LangChain's
                    own way of nesting one runnable in another, so the least any wrapper pays
                    that keeps a node in the trace and labels its runs, with nothing of
                    graylayer's;
``router``          ``GrayRouter`` with metrics over two copies of the agent (the default:
                    counted from the agent's messages), every layer at ratio 0.5.

Each router request is split by timing the router's own steps in place (wrappers around
``GrayRouter._open``, ``GrayRouter._answered`` and the routing module's ``invoke_child``; the
router's code is not copied here):

``open``         the config, the routing decision (layer cache, ratio, bucket) and the labelled
                 config with its observers: graylayer's own work before the run;
``own run``      what is left of the request outside those steps: LangChain's bookkeeping of
                 the router's own run (its callback manager, start and end events, the child
                 manager), the node the trace shows for the router;
``child``        the chosen agent's run as the router's child, of which ``labels`` (the
                 metadata and tags every descendant carries: ``agent_labelled`` − ``agent``)
                 and ``as a child`` (the rest: a child of a run, read from its stream of
                 states) are the parts over the agent invoked directly;
``answered``     counting the request from its messages, its metrics and its evidence: the
                 rest of graylayer's own work.

After the timed rounds, ``open`` and ``answered`` of the same requests run back to back, the
agent not run in between (``warm``): the same code with the processor's caches holding it, so
the gap to the in-request figures is what cold caches cost, not the work itself.

The table gives the median µs per request of each phase over all timed requests (wall clock,
``perf_counter_ns``; the garbage collector off inside a round and collected between rounds) and
its share of the added time (router − agent, medians of the same-round differences). Phases are
medians taken apart, so they do not sum exactly to the total.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import langchain_core
from callback_overhead import PLAN_ID, QUESTION, RATIO, build_agent, quartiles
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.utils.uuid import uuid7
from prometheus_client import CollectorRegistry

import langchain_graylayer.routing.router as router_module
from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan
from langchain_graylayer.measuring.labels import (
    LAYER_KEY,
    PLAN_KEY,
    REASON_KEY,
    REQUEST_ID_KEY,
    VERSION_KEY,
    layer_tag,
    plan_tag,
    version_tag,
)
from langchain_graylayer.measuring.prometheus import GraylayerMetrics


class Phases:
    """Times the router's own steps of the request in flight (one request at a time)."""

    def __init__(self) -> None:
        self.current: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        current = self.current

        def timed(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                current[name] += time.perf_counter_ns() - begin

        return timed

    def take(self, total: int) -> dict[str, float]:
        """The request's phases in µs (``own run``: the total minus the timed steps)."""
        steps = {name: self.current.get(name, 0) / 1000 for name in ("open", "child", "answered")}
        self.current.clear()
        return {**steps, "own run": total / 1000 - sum(steps.values()), "total": total / 1000}


@contextmanager
def instrumented(router: GrayRouter[Any, Any], phases: Phases) -> Iterator[None]:
    """The router's ``_open`` and ``_answered``, and the routing module's ``invoke_child``,
    timed into ``phases`` while the block runs."""
    saved = router_module.invoke_child
    router._open = phases.wrap("open", router._open)  # type: ignore[method-assign]
    router._answered = phases.wrap("answered", router._answered)  # type: ignore[method-assign]
    router_module.invoke_child = phases.wrap("child", saved)
    try:
        yield
    finally:
        router_module.invoke_child = saved
        del router._open, router._answered  # back to the class's methods


def build(users: int) -> tuple[Any, GrayRouter[Any, Any], list[dict[str, Any]]]:
    agent = build_agent(1)
    plan = RolloutPlan.default(PLAN_ID)
    store = MemoryStore()
    for layer in plan.layer_names:
        store.set_ratio(PLAN_ID, layer, RATIO)
    router: GrayRouter[Any, Any] = GrayRouter(
        stable=build_agent(1),
        candidate=build_agent(1),
        plan=plan,
        store=store,
        metrics=GraylayerMetrics(registry=CollectorRegistry()),
    )
    configs = [{"configurable": {"user_id": f"user-{n}"}} for n in range(users)]
    for config in configs:  # every user's layer cached, as after their first request
        router.route(config["configurable"]["user_id"])
    return agent, router, configs


def nested(agent: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``agent`` as the child of a runnable of LangChain's that does nothing else."""

    def wrapper(input: Any, config: RunnableConfig) -> Any:
        return agent.invoke(input, config)

    return RunnableLambda(wrapper, name="wrapper")


def labelled_config() -> dict[str, Any]:
    """What the router writes into a candidate request's config for its descendants."""
    return {
        "metadata": {PLAN_KEY: PLAN_ID, VERSION_KEY: "candidate", LAYER_KEY: "normal",
                     REQUEST_ID_KEY: str(uuid7()), REASON_KEY: "in_ratio"},
        "tags": sorted([plan_tag(PLAN_ID), version_tag("candidate"), layer_tag("normal")]),
    }  # fmt: skip


def measure(rounds: int, calls: int, users: int) -> dict[str, list[float]]:
    """Per round, the median µs of each phase and arm over its ``calls`` requests."""
    agent, router, configs = build(users)
    wrapper = nested(agent)
    phases = Phases()
    samples: dict[str, list[float]] = defaultdict(list)
    with instrumented(router, phases):
        for n in range(rounds + 1):  # the first round warms up
            rows: dict[str, list[float]] = defaultdict(list)
            gc.collect()
            gc.disable()
            try:
                for i in range(calls):
                    begin = time.perf_counter_ns()
                    agent.invoke(QUESTION)
                    rows["agent"].append((time.perf_counter_ns() - begin) / 1000)
                    config = labelled_config()
                    begin = time.perf_counter_ns()
                    agent.invoke(QUESTION, config)  # type: ignore[arg-type]
                    rows["agent_labelled"].append((time.perf_counter_ns() - begin) / 1000)
                    config = labelled_config()
                    begin = time.perf_counter_ns()
                    wrapper.invoke(QUESTION, config)  # type: ignore[arg-type]
                    rows["nested"].append((time.perf_counter_ns() - begin) / 1000)
                    begin = time.perf_counter_ns()
                    router.invoke(QUESTION, configs[(n * calls + i) % users])  # type: ignore[arg-type]
                    for name, value in phases.take(time.perf_counter_ns() - begin).items():
                        rows[name].append(value)
            finally:
                gc.enable()
            if n == 0:
                continue
            for name, values in rows.items():
                samples[name].append(statistics.median(values))
            samples["added"].append(samples["total"][-1] - samples["agent"][-1])
            samples["labels"].append(samples["agent_labelled"][-1] - samples["agent"][-1])
            samples["as a child"].append(samples["child"][-1] - samples["agent_labelled"][-1])
            samples["wrapper"].append(samples["nested"][-1] - samples["agent"][-1])
            samples["graylayer"].append(samples["added"][-1] - samples["wrapper"][-1])
    samples["warm"] = warm(router, configs, rounds, calls)
    return samples


def warm(
    router: GrayRouter[Any, Any], configs: list[dict[str, Any]], rounds: int, calls: int
) -> list[float]:
    """Per round, the median µs of ``open`` and ``answered`` of a request run back to back
    (the agent's messages given, not run): the same steps with warm caches."""
    state = build_agent(1).invoke(QUESTION)
    medians = []
    for n in range(rounds + 1):
        times = []
        gc.collect()
        gc.disable()
        try:
            for i in range(calls):
                begin = time.perf_counter_ns()
                call = router._open(configs[(n * calls + i) % len(configs)], "values")
                call.started()
                if call.run is not None:
                    call.run.add(state)
                router._answered(call, QUESTION, state)
                times.append((time.perf_counter_ns() - begin) / 1000)
        finally:
            gc.enable()
        if n > 0:
            medians.append(statistics.median(times))
    return medians


ROWS = (
    ("agent", "`agent` invoked directly (the floor)"),
    ("total", "`router` request, in all"),
    ("added", "**added by the router** (router − agent)"),
    ("open", "open: config, routing, labelled config"),
    ("own run", "own run: LangChain's bookkeeping of the router's run"),
    ("as a child", "child: the agent as the router's child, over the agent"),
    ("labels", "labels: the metadata and tags every descendant carries"),
    ("answered", "answered: counts, metrics, evidence"),
    ("wrapper", "of the added: any wrapper's (`nested` − agent)"),
    ("graylayer", "of the added: graylayer's (router − `nested`)"),
    ("warm", "open + answered back to back, warm caches"),
)
"""The table's rows: a sample's name and what it is; from ``added`` to ``graylayer`` they are
shares of the added time (``warm`` is not: the same steps outside a request)."""


def summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per row, the median over the rounds and its interquartile range."""
    rows = {}
    for name, _ in ROWS:
        q1, median, q3 = quartiles(samples[name])
        rows[name] = {"median_us": median, "iqr_us": q3 - q1}
    return rows


def table(rows: dict[str, dict[str, float]]) -> str:
    added = rows["added"]["median_us"]
    lines = [
        "| phase | median µs/request | IQR µs | share of the added time |",
        "|---|---:|---:|---:|",
    ]
    for n, (name, label) in enumerate(ROWS):
        median, iqr = rows[name]["median_us"], rows[name]["iqr_us"]
        share = f"{median / added:.0%}" if 2 <= n < len(ROWS) - 1 and added > 0 else ""
        lines.append(f"| {label} | {median:,.1f} | {iqr:,.1f} | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 rounds × 30 requests")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 15; quick 4)")
    parser.add_argument("--calls", type=int, help="requests per arm and round (100; quick 30)")
    parser.add_argument("--users", type=int, default=200, help="distinct user ids")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the samples here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 15)
    calls = args.calls or (30 if args.quick else 100)
    began = time.monotonic()
    samples = measure(rounds, calls, args.users)
    took = time.monotonic() - began
    rows = summary(samples)
    print(table(rows))
    added = statistics.median(samples["added"])
    agent = statistics.median(samples["agent"])
    print(
        f"\nadded: {added:,.0f} µs per request, {added / agent:.1%} of the agent's "
        f"{agent:,.0f} µs (median of same-round differences)"
    )
    print(
        f"{rounds} rounds × {calls} requests per arm, {args.users} users; Python "
        f"{platform.python_version()}, langchain-core {langchain_core.__version__}; {took:.0f} s"
    )
    if args.json is not None:
        meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "rounds": rounds, "calls": calls, "users": args.users, "seconds": round(took, 1),
                "python": platform.python_version(),
                "langchain_core": langchain_core.__version__}  # fmt: skip
        out = {"meta": meta, "rows": rows, "samples": samples}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
