"""What a plan's evaluators cost the request path of a ``create_agent`` agent.

Run from the repository root::

    python benchmarks/evaluator_overhead.py            # about a minute on 2 cores
    python benchmarks/evaluator_overhead.py --quick    # a few seconds, for a smoke check
    python benchmarks/evaluator_overhead.py --json results.json

Two routers serve the same real ``create_agent`` agent (an offline fake chat model that looks an
order up, then answers), both with metrics, both at 50 % candidate:

``router``             a plan without evaluators (the baseline);
``router_evaluators``  the same plan with three evaluators, each sampling every run: a Python
                       function, an LLM-as-judge (``openevals`` when installed, else a Runnable
                       chain over a scripted judge model) and a conversation evaluator.

The evaluations themselves run on the evaluators' threads, after the answer; what the request
pays is the sampling hash per evaluator and a hand-off to a pool. Each round serves ``--calls``
requests with both routers, interleaved one run at a time in a shuffled order; evaluations are
drained between rounds (outside the timing) so the background never piles up. Times are the
request thread's own CPU time (``time.thread_time_ns``: what the request path does, whatever the
evaluator threads do meanwhile) and the wall clock; the table gives the medians over rounds and
the median (and quartiles) of the same-round ratios ``router_evaluators / router``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import tool
from prometheus_client import CollectorRegistry

from langchain_graylayer import GrayRouter, MemoryStore, RolloutController, RolloutPlan
from langchain_graylayer.measuring.labels import RunLabels
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

PLAN_ID = "bench-evals"
QUESTION = "Where is order A-1?"
ANSWER = "Order A-1 has shipped and arrives on Friday."


@tool
def lookup_order(order_id: str) -> str:
    """Return the status of an order."""
    return f"order {order_id} has shipped"


def agent() -> Runnable[Any, Any]:
    model = ScriptedChatModel(script=calls_then_answers(["lookup_order"], ANSWER))
    return create_agent(model, [lookup_order], name="support")


def verdict(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
    args = {"reasoning": "supported", "score": True}
    return AIMessage("", tool_calls=[{"name": "score", "args": args, "id": "v"}])


def llm_judge() -> tuple[str, Any]:
    """An openevals LLM-as-judge over a scripted judge model, else a Runnable judge chain."""
    judge_model = ScriptedChatModel(script=verdict, model_name="judge-mini")
    try:
        from openevals.llm import create_llm_as_judge
    except ImportError:
        chain = RunnableLambda(lambda d: str(d["output"])) | judge_model
        return "runnable", chain | RunnableLambda(lambda m: bool(m.tool_calls))
    prompt = "Is the output supported by the input?\n{inputs}\n{outputs}"
    return "openevals", create_llm_as_judge(prompt=prompt, judge=judge_model)


def plan(with_evaluators: bool) -> RolloutPlan:
    kind = llm_judge()[0]
    evaluators = [
        {"name": "polite", "kind": "function"},
        {"name": "supported", "kind": kind},
        {"name": "thread", "kind": "function", "scope": "conversation", "idle_time": 0.05},
    ]
    return RolloutPlan.from_dict({
        "id": PLAN_ID,
        "layers": [{"name": "all", "score_range": [0, 1], "steps": [0.5, 1.0]}],
        "gates": {"size_steps": False},
        "evaluators": evaluators if with_evaluators else [],
    })  # fmt: skip


def router(with_evaluators: bool, store: MemoryStore) -> GrayRouter[Any, Any]:
    the_plan = plan(with_evaluators)
    evaluators: dict[str, Any] = {}
    if with_evaluators:
        evaluators = {
            "polite": lambda i, o, m: "please" not in str(o),
            "supported": llm_judge()[1],
            "thread": lambda inputs, outputs, m: len(inputs) > 0,
        }
    return GrayRouter(
        stable=agent(), candidate=agent(), plan=the_plan, store=store,
        metrics=GraylayerMetrics(registry=CollectorRegistry()), evaluators=evaluators,
    )  # fmt: skip


def handoff_cost(evaluations: Any, calls: int) -> float:
    """The request thread's CPU per run for ``run_ended`` alone (sampling and hand-off), in
    batches of 50 drained between batches (outside the timing)."""
    run_labels = RunLabels(PLAN_ID, "candidate", "all", "0@0.000", "bench-unit", 2)
    spent = 0
    for start in range(0, calls, 50):
        begin = time.thread_time_ns()
        for i in range(start, start + 50):
            evaluations.run_ended(run_labels, f"run-{i}", f"s{i}", QUESTION, ANSWER)
        spent += time.thread_time_ns() - begin
        evaluations.evaluate_idle(everything=True)
        evaluations.drain(60.0)
    return spent / calls / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 10 calls")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    rounds, calls = (3, 10) if args.quick else (args.rounds, args.calls)

    store = MemoryStore()
    RolloutController(plan=plan(False), store=store).step()  # the layer at 50 %
    variants = {"router": router(False, store), "router_evaluators": router(True, store)}
    evaluations = variants["router_evaluators"].evaluations
    assert evaluations is not None
    rng = random.Random(7)
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    served = 0

    def serve(name: str) -> tuple[int, int]:
        nonlocal served
        served += 1
        config = {"configurable": {"user_id": f"user-{served % 500}", "session_id": f"s{served}"}}
        begin_cpu, begin_wall = time.thread_time_ns(), time.perf_counter_ns()
        variants[name].invoke({"messages": [("user", QUESTION)]}, config)
        return time.thread_time_ns() - begin_cpu, time.perf_counter_ns() - begin_wall

    for name in variants:  # warm both up
        serve(name)
    evaluations.drain(60.0)
    for _ in range(rounds):
        order = [name for name in variants for _ in range(calls)]
        rng.shuffle(order)
        totals: dict[str, list[int]] = {name: [0, 0] for name in variants}
        gc.collect()
        gc.disable()
        try:
            for name in order:
                spent_cpu, spent_wall = serve(name)
                totals[name][0] += spent_cpu
                totals[name][1] += spent_wall
        finally:
            gc.enable()
        for name, (spent_cpu, spent_wall) in totals.items():
            cpu[name].append(spent_cpu / calls / 1000)
            wall[name].append(spent_wall / calls / 1000)
        evaluations.evaluate_idle(everything=True)
        evaluations.drain(60.0)  # outside the timing: the background never piles up

    def ratios(samples: dict[str, list[float]]) -> list[float]:
        return [e / b for e, b in zip(samples["router_evaluators"], samples["router"], strict=True)]

    def quartiles(values: list[float]) -> tuple[float, float, float]:
        if len(values) < 2:
            return values[0], values[0], values[0]
        q = statistics.quantiles(values, n=4)
        return q[0], statistics.median(values), q[2]

    handoff_us = handoff_cost(evaluations, 200 if args.quick else 2000)
    status = evaluations.status()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_version()}",
        "rounds": rounds,
        "calls": calls,
        "judge": plan(True).evaluators[1].kind.value,
        "median_us_cpu": {name: statistics.median(v) for name, v in cpu.items()},
        "median_us_wall": {name: statistics.median(v) for name, v in wall.items()},
        "ratio_cpu": quartiles(ratios(cpu)),
        "ratio_wall": quartiles(ratios(wall)),
        "handoff_us_cpu": handoff_us,
        "evaluator_status": status,
    }
    print(f"{rounds} rounds x {calls} calls per router, judge: {result['judge']}")
    print(f"{'variant':<20} {'cpu µs/run':>12} {'wall µs/run':>12}")
    for name in variants:
        print(
            f"{name:<20} {result['median_us_cpu'][name]:>12.0f} "
            f"{result['median_us_wall'][name]:>12.0f}"
        )
    for what in ("cpu", "wall"):
        low, mid, high = result[f"ratio_{what}"]
        print(f"router_evaluators / router ({what}): {mid:.3f} (quartiles {low:.3f}-{high:.3f})")
    print(f"Evaluations.run_ended alone (3 evaluators, request thread CPU): {handoff_us:.1f} µs")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(result, file, indent=2)
    evaluations.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
