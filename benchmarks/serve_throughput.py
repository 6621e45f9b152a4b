"""Requests per second of a LangServe app serving ``GrayRouter``, next to the same app serving the
stable version directly, measured in the same run, over two workloads: a cheap chain and an agent.

Run from the repository root::

    python benchmarks/serve_throughput.py                   # both workloads, about 2 min
    python benchmarks/serve_throughput.py --workload chain  # one workload, about 60 s
    python benchmarks/serve_throughput.py --quick           # about 30 s, for a smoke check
    python benchmarks/serve_throughput.py --model-latency 0.2  # each model call awaits 200 ms
    python benchmarks/serve_throughput.py --model-latency 0.2 --latency-jitter 0.5  # spread
    python benchmarks/serve_throughput.py --json results.json

With ``--model-latency SECONDS`` every model call awaits that long (``asyncio.sleep``, as a call
to a provider would) before the fake model answers, in both apps: the chain's model and the
agent's (a ``create_agent`` middleware around each model call). That is what users of a real
model see: the requests in flight wait on the model, the server's CPU does the rest, and
``router / direct`` says what graylayer costs them.

A fixed wait keeps the in-flight requests in step: they start together, wait together and reach
the CPU together, so each one queues behind the others' CPU work and the ratio still follows CPU
per request. ``--latency-jitter SIGMA`` draws each wait from a log-normal distribution whose
median is the latency (0.5: a p99 about 3.2× the median, as a provider's latencies spread), so
requests arrive at the CPU spread out, as they do in production.

Two workloads (``--workload chain``, ``agent`` or ``both``, the default: the chain first):

* ``chain``: ``ChatPromptTemplate | GenericFakeChatModel | StrOutputParser``, the model answering
  from an ``itertools.cycle`` of messages tagged with the version (``[v1]`` stable, ``[v2]``
  candidate); the body is ``{"input": {"question": ...}}``. The server's work is LangChain's and
  LangServe's, but cheap: what graylayer adds weighs the most here.
* ``agent``: the customer-service agent of ``examples/customer_service/agents.py``
  (``langchain.agents.create_agent`` over its offline, deterministic chat model); the body is one
  human message, ``Where is order A-1002?``, so every request runs the LangGraph agent loop with
  two model calls and one ``lookup_order`` tool call before it answers ``[v1] Order A-1002 is
  shipped.``: closer to the work a served agent does. Both versions of the router are
  ``build_stable()`` (two calls, so two separate but identical agents), not the example's real
  candidate: ``build_candidate()`` has a second tool and a longer prompt, about 10% more work,
  which would be charged to graylayer. With the same agent on both sides, stable and candidate do
  identical work and the comparison isolates what graylayer costs.

Per workload, two apps, each in its own ``uvicorn`` process (one worker, access log off) on a
loopback port:

* ``router``: ``add_gray_routes`` over a ``GrayRouter`` (``MemoryStore``, its own
  ``GraylayerMetrics``, ``/metrics`` mounted), every layer at ratio 0.5, so both versions serve;
  the full serving path: identity from ``X-User-ID``, routing, coloured response headers with a
  signed feedback token, the metrics callback handler on every run;
* ``direct``: langserve's plain ``add_routes`` over the stable version (the chain, or one
  ``build_stable()`` agent); with ``--direct nested``, over the stable version inside a
  ``RunnableLambda`` that writes the router's labels into its config and awaits it: LangChain's
  own nesting of one runnable in another, so the least that any wrapper pays which keeps a node
  in the trace and labels its runs. ``router / direct`` then says what graylayer adds over that.
  With ``--direct router``, over the same ``GrayRouter`` with the user id taken from
  ``X-User-ID`` by a LangServe config modifier and nothing else: ``router / direct`` then says
  what ``add_gray_routes``' serving glue costs (identity middleware, the input check, coloured
  headers, the signed feedback token).

A sanity check comes first: both apps answer, and the router serves both versions to 40 users (for
the chain, each version answers with its own tag; for the agent, both answer ``[v1]``, so only the
``X-Agent-Version`` header tells them apart). Load comes from separate processes: ``wrk`` with a
Lua script (POST JSON, ``X-User-ID`` cycling over ``--users`` ids) when it is on ``PATH``, else an
``httpx.AsyncClient`` load generator with the same shape. Either keeps ``--connections`` requests
in flight for ``--seconds`` and stops by itself. One workload's two servers are stopped before the
next workload's start: never more than two servers at a time.

Two ways to run the rounds (``--mode``):

* ``paired`` (the default): every round loads both apps at the same time, one load generator
  each, and both servers share one core. Whatever the machine does during the round (other jobs,
  a slower clock), it does to both, so the same-round ratio is steady: on the development VM,
  single rounds of the agent workload fall within ±0.05 of their median, where one app at a time
  gave ±0.2. The scheduler splits the core evenly between the two busy servers (the table's
  "server busy" is about 50% each), so each app's req/s is about half of what it would get alone
  and ``router / direct`` is the throughput ratio on a saturated core.
* ``alternate``: one app at a time, in an order that alternates between rounds; each app gets the
  whole core, and drifting load on the machine lands on both alike only on average.

Each workload starts with a warm-up (both apps, the same way as the rounds).

The table, one per workload, gives per app the median requests per second over the rounds, its
range, and the median of the rounds' p50 and p99 latencies (closed loop: queueing in the server
included); ``router / direct`` is the median of the same-round ratios. It also gives the server
process's CPU time per request (user + system, all threads, from ``/proc``) and how busy the
server was (CPU seconds per second). Any non-2xx answer or socket error is reported; a round with
errors is not a valid measurement.

By default the servers are pinned to CPU 0 and the load generators to CPU 1 (``taskset``, with two
CPUs or more; ``--no-pin`` to let the scheduler place them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAN_ID = "bench-serve"
RATIO = 0.5
QUESTION = "Where is my refund?"
AGENT_QUESTION = "Where is order A-1002?"
WORKLOADS = ("chain", "agent")
BODIES = {
    "chain": json.dumps({"input": {"question": QUESTION}}),
    "agent": json.dumps({"input": {"messages": [{"type": "human", "content": AGENT_QUESTION}]}}),
}
"""The request body of each workload."""
APPS = ("router", "direct")
WHAT = {
    "chain": ("the chain", "stable chain"),
    "agent": ("the create_agent agent", "one build_stable() agent"),
}
"""Per workload, what the router serves and what the direct app serves (the table's labels)."""

WRK_SCRIPT = """
-- POST the same JSON body; X-User-ID cycles over USERS ids.
local requests, n = {}, 0
function init(args)
  local users = tonumber(args[1])
  for i = 0, users - 1 do
    local headers = {["Content-Type"] = "application/json",
                     ["X-User-ID"] = "user-" .. i}
    requests[#requests + 1] = wrk.format("POST", nil, headers, wrk.body)
  end
end
function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end
function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


# --------------------------------------------------------------------------- the apps
def model_wait(latency: float, jitter: float) -> float:
    """Seconds one model call waits: ``latency``, or with ``jitter`` > 0 a log-normal draw whose
    median is ``latency`` and whose log has standard deviation ``jitter`` (providers' latencies
    spread that way: at 0.5, a p99 about 3.2× the median)."""
    if jitter <= 0:
        return latency
    return random.lognormvariate(math.log(latency), jitter)


def support_chain(version: str, latency: float = 0.0, jitter: float = 0.0) -> Any:
    """Prompt → fake chat model (cycling answers; each call awaiting ``latency`` seconds first,
    see :func:`model_wait`) → string parser."""
    from itertools import cycle

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    class SlowFakeChatModel(GenericFakeChatModel):
        """The fake model, answering after ``latency`` seconds, as a provider would."""

        latency: float = 0.0
        jitter: float = 0.0

        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(model_wait(self.latency, self.jitter))
            return await super()._agenerate(*args, **kwargs)

    prompt = ChatPromptTemplate.from_messages(
        [("system", f"You are support agent {version}. Be brief."), ("human", "{question}")]
    )
    answers = [f"[{version}] Your refund is on its way.", f"[{version}] Refunds take 5 days."]
    messages = cycle([AIMessage(a) for a in answers])
    if latency > 0:
        model: Any = SlowFakeChatModel(messages=messages, latency=latency, jitter=jitter)
    else:
        model = GenericFakeChatModel(messages=messages)
    return prompt | model | StrOutputParser()


def support_agent(latency: float = 0.0, jitter: float = 0.0) -> Any:
    """The customer-service ``create_agent`` agent, v1: a new, separate one on every call; with
    ``latency``, each model call awaits that long first (see :func:`model_wait`)."""
    if str(ROOT) not in sys.path:  # run as a script, sys.path[0] is benchmarks/
        sys.path.insert(0, str(ROOT))
    from examples.customer_service.agents import build_stable

    if latency <= 0:
        return build_stable()
    from langchain.agents.middleware import AgentMiddleware

    class ModelLatency(AgentMiddleware):  # type: ignore[type-arg]
        """Every model call awaits ``latency`` seconds, as a call to a provider would."""

        async def awrap_model_call(self, request: Any, handler: Any) -> Any:
            await asyncio.sleep(model_wait(latency, jitter))
            return await handler(request)

    return build_stable(middleware=[ModelLatency()])


def runnable(workload: str, version: str, latency: float = 0.0, jitter: float = 0.0) -> Any:
    """What an app serves as ``version`` (``v1`` or ``v2``): the agent is ``v1`` for both."""
    if workload == "chain":
        return support_chain(version, latency, jitter)
    return support_agent(latency, jitter)


def nested(served: Any) -> Any:
    """``served`` inside a ``RunnableLambda`` that labels its config as the router does (plan,
    version, layer, request id, reason) and does nothing else."""
    from uuid import uuid4

    from langchain_core.runnables import RunnableConfig, RunnableLambda

    from langchain_graylayer.measuring import labels as keys

    tags = [keys.plan_tag(PLAN_ID), keys.version_tag("stable"), keys.layer_tag("normal")]

    async def wrapper(input: Any, config: RunnableConfig) -> Any:
        labels = {keys.PLAN_KEY: PLAN_ID, keys.VERSION_KEY: "stable", keys.LAYER_KEY: "normal",
                  keys.REQUEST_ID_KEY: str(uuid4()), keys.REASON_KEY: "out_of_ratio"}  # fmt: skip
        labelled: RunnableConfig = {
            **config,
            "metadata": {**config.get("metadata", {}), **labels},
            "tags": [*config.get("tags", []), *tags],
        }
        return await served.ainvoke(input, labelled)

    return RunnableLambda(wrapper, name="wrapper")


def build_app(
    kind: str, workload: str, latency: float = 0.0, jitter: float = 0.0, direct: str = "plain"
) -> Any:
    from fastapi import FastAPI

    app = FastAPI()
    if kind == "router":
        from langchain_graylayer.serve.app import add_gray_routes

        router = gray_router(workload, latency, jitter)
        add_gray_routes(app, router, path="/agent", feedback_secret=b"bench-secret-0123456789")
        return app
    from langserve import add_routes

    if direct == "router":
        router = gray_router(workload, latency, jitter)
        add_routes(app, router, path="/agent", per_req_config_modifier=user_from_header)
        return app
    served = runnable(workload, "v1", latency, jitter)
    add_routes(app, nested(served) if direct == "nested" else served, path="/agent")
    return app


def gray_router(workload: str, latency: float, jitter: float) -> Any:
    """``GrayRouter`` over both versions (``MemoryStore``, its own metrics), every layer at
    ratio ``RATIO``."""
    from prometheus_client import CollectorRegistry

    from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan
    from langchain_graylayer.measuring.prometheus import GraylayerMetrics

    plan, store = RolloutPlan.default(PLAN_ID), MemoryStore()
    for layer in plan.layer_names:
        store.set_ratio(plan.id, layer, RATIO)
    return GrayRouter(
        stable=runnable(workload, "v1", latency, jitter),
        candidate=runnable(workload, "v2", latency, jitter),
        plan=plan,
        store=store,
        metrics=GraylayerMetrics(registry=CollectorRegistry()),
    )


async def user_from_header(config: dict[str, Any], request: Any) -> dict[str, Any]:
    """A LangServe config modifier: the user id from ``X-User-ID``, nothing else."""
    configurable = {**config.get("configurable", {}), "user_id": request.headers["x-user-id"]}
    return {**config, "configurable": configurable}


def serve(
    kind: str, workload: str, port: int, latency: float = 0.0, jitter: float = 0.0,
    direct: str = "plain",
) -> None:  # fmt: skip
    """The server process: one app, one uvicorn worker."""
    import uvicorn

    app = build_app(kind, workload, latency, jitter, direct)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------- load generators
def httpx_load(
    url: str, body: str, connections: int, seconds: float, users: int, max_requests: int
) -> None:
    """The fallback load generator process: prints one ``RESULT {...}`` line like the wrk script."""
    import httpx

    latencies: list[float] = []
    counts = {"non2xx": 0, "socket_errors": 0}
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, start: int) -> None:
        i = start
        while time.perf_counter() < deadline and len(latencies) < max_requests:
            headers = {"Content-Type": "application/json", "X-User-ID": f"user-{i % users}"}
            began = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                counts["socket_errors"] += 1
                continue
            latencies.append(time.perf_counter() - began)
            counts["non2xx"] += not response.is_success
            i += connections

    async def run() -> float:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
            began = time.perf_counter()
            await asyncio.gather(*(worker(client, n) for n in range(connections)))
            return time.perf_counter() - began

    took = asyncio.run(run())
    ordered = sorted(latencies) or [0.0]

    def percentile(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6

    result = {"requests": len(latencies), "duration_us": int(took * 1e6), **counts,
              "p50_us": percentile(50), "p99_us": percentile(99),
              "mean_us": statistics.fmean(ordered) * 1e6}  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- orchestration
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def post(url: str, user: str, workload: str) -> tuple[int, str, str]:
    """One request: status, the X-Agent-Version header (or ''), the answer text."""
    request = urllib.request.Request(url, data=BODIES[workload].encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("X-User-ID", user)
    with urllib.request.urlopen(request, timeout=5) as response:
        output = json.loads(response.read())["output"]
        # the chain answers a string; the agent its state, the answer being the last message
        answer = output if workload == "chain" else output["messages"][-1]["content"]
        return response.status, response.headers.get("X-Agent-Version", ""), str(answer)


def pinned(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads (Linux ``/proc``; else ``None``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextmanager
def server(
    kind: str, workload: str, cpu: int | None, log: Any, latency: float = 0.0, jitter: float = 0.0,
    direct: str = "plain",
) -> Iterator[Server]:  # fmt: skip
    """A server process for ``kind`` serving ``workload``, once it answers."""
    port = free_port()
    args = [*pinned(cpu), sys.executable, __file__, "--serve-app", kind, "--workload", workload,
            "--port", str(port), "--model-latency", str(latency),
            "--latency-jitter", str(jitter), "--direct", direct]  # fmt: skip
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/agent/invoke"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the {workload} {kind} server exited with code {process.returncode}"
                )
            try:
                post(url, "user-0", workload)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the {workload} {kind} server did not answer in 60 s"
                    ) from None
                time.sleep(0.2)
        yield Server(url, process.pid)  # taskset execs python: the same pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check(servers: dict[str, Server], users: int, workload: str, direct: str = "plain") -> str:
    """Both apps answer; the router serves both versions.

    For the chain, each version answers with its own tag (``[v1]``, ``[v2]``); both versions of
    the agent are the same v1 agent, so there only the ``X-Agent-Version`` header tells them apart.
    """
    seen = set()
    for n in range(min(users, 40)):
        status, version, output = post(servers["router"].url, f"user-{n}", workload)
        expected = "[v2]" if version == "candidate" and workload == "chain" else "[v1]"
        if (
            status != 200
            or version not in ("stable", "candidate")
            or not output.startswith(expected)
        ):
            raise RuntimeError(f"{workload} router answered {status} {version!r} {output!r}")
        seen.add(version)
    status, version, output = post(servers["direct"].url, "user-0", workload)
    answers = ("[v1]", "[v2]") if direct == "router" else ("[v1]",)  # a router: either version
    if status != 200 or version or not output.startswith(answers):
        raise RuntimeError(f"{workload} direct answered {status} {version!r} {output!r}")
    if seen != {"stable", "candidate"}:
        raise RuntimeError(f"the {workload} router served only {seen} to 40 users at ratio {RATIO}")
    return f"{workload} sanity: both apps answer 200; the router served {sorted(seen)} to 40 users"


def load(
    target: Server, args: argparse.Namespace, seconds: float, cpu: int | None, workload: str
) -> dict[str, Any]:
    """Run the load generator process once; its RESULT, with the server's CPU time."""
    url = target.url
    if args.loadgen == "wrk":
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(f"wrk.body = {json.dumps(BODIES[workload])}\n{WRK_SCRIPT}")
        command = [*pinned(cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{seconds:g}s",
                   "--timeout", "10s", "-s", script.name, url, "--", str(args.users)]  # fmt: skip
    else:
        command = [*pinned(cpu), sys.executable, __file__, "--load-url", url,
                   "--workload", workload, "--connections", str(args.connections),
                   "--seconds", str(seconds), "--users", str(args.users)]  # fmt: skip
    cpu_before = cpu_seconds(target.pid)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        if args.loadgen == "wrk":
            os.unlink(script.name)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        output = done.stdout + done.stderr
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{output}")
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    cpu_after = cpu_seconds(target.pid)
    if cpu_before is not None and cpu_after is not None and result["requests"]:
        result["server_cpu_us"] = (cpu_after - cpu_before) * 1e6 / result["requests"]
        result["server_busy"] = (cpu_after - cpu_before) / (result["duration_us"] / 1e6)
    return result


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    def median_of(app: str, key: str) -> float:
        return float(statistics.median(r[app][key] for r in rounds))

    rows: dict[str, Any] = {}
    for app in APPS:
        rps = [r[app]["rps"] for r in rounds]
        rows[app] = {
            "median_rps": statistics.median(rps), "min_rps": min(rps), "max_rps": max(rps),
            "p50_ms": median_of(app, "p50_us") / 1000, "p99_ms": median_of(app, "p99_us") / 1000,
            "requests": sum(r[app]["requests"] for r in rounds),
            "errors": sum(r[app]["non2xx"] + r[app]["socket_errors"] for r in rounds),
            "cpu_us": _median_or_none([r[app].get("server_cpu_us") for r in rounds]),
            "busy": _median_or_none([r[app].get("server_busy") for r in rounds]),
            "samples_rps": rps,
            "samples_cpu_us": [r[app].get("server_cpu_us") for r in rounds],
        }  # fmt: skip
    # a round in which an app answered nothing (a starved machine) has no ratio
    ratios = [r["router"]["rps"] / r["direct"]["rps"] for r in rounds if r["direct"]["rps"]] or [
        math.nan
    ]
    rows["router_vs_direct"] = {
        "median_ratio": statistics.median(ratios),
        "ratio_of_medians": rows["router"]["median_rps"] / rows["direct"]["median_rps"],
        "min_ratio": min(ratios), "max_ratio": max(ratios), "samples": ratios,
        "cpu_ratio": _median_or_none([
            r["router"]["server_cpu_us"] / r["direct"]["server_cpu_us"]
            for r in rounds if "server_cpu_us" in r["router"] and "server_cpu_us" in r["direct"]
        ]),
    }  # fmt: skip
    return rows


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def table(
    rows: dict[str, Any], workload: str = "chain", mode: str = "paired", direct: str = "plain"
) -> str:
    lines = [
        "| app | what | median req/s | range req/s | p50 ms | p99 ms | server CPU µs/req "
        "| server busy | requests | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    over, direct_what = WHAT[workload]
    served = {
        "nested": f"a labelling RunnableLambda over {direct_what}",
        "router": f"GrayRouter over {over}, user id from X-User-ID",
    }.get(direct, direct_what)
    what = {"router": f"add_gray_routes(GrayRouter, MemoryStore, metrics) over {over}",
            "direct": f"langserve add_routes({served})"}  # fmt: skip
    for app in APPS:
        r = rows[app]
        lines.append(
            f"| `{app}` | {what[app]} | {r['median_rps']:.0f} | {r['min_rps']:.0f}–"
            f"{r['max_rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{'-' if r['cpu_us'] is None else format(r['cpu_us'], '.0f')} | "
            f"{'-' if r['busy'] is None else format(r['busy'], '.0%')} | {r['requests']} | "
            f"{r['errors']} |"
        )
    ratio = rows["router_vs_direct"]
    lines.append(
        f"\nrouter / direct, {workload}: {ratio['median_ratio']:.2f} (median of same-round "
        f"ratios; range {ratio['min_ratio']:.2f}–{ratio['max_ratio']:.2f}; ratio of medians "
        f"{ratio['ratio_of_medians']:.2f})"
    )
    if ratio["cpu_ratio"] is not None:
        lines.append(
            f"server CPU per request, router / direct, {workload}: {ratio['cpu_ratio']:.2f}× "
            f"(median of same-round ratios; the req/s ratio on an idle core: "
            f"{1 / ratio['cpu_ratio']:.2f})"
        )
    busy = [rows[app]["busy"] for app in APPS]
    if mode == "paired" and None not in busy and sum(busy) < 0.8:
        lines.append(
            "NOTE: the two servers together used under 80% of their core: the load generators "
            "or the machine limited the rate, not the servers"
        )
    idle = [app for app in APPS if rows[app]["busy"] is not None and rows[app]["busy"] < 0.8]
    if idle and mode != "paired":
        lines.append(
            f"NOTE: {' and '.join(idle)} used under 80% of a core: the load generator or the "
            "machine limited the rate, not the server; compare CPU µs/req, not req/s"
        )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ["langchain-core", "langserve", "fastapi", "uvicorn", "starlette", "httpx"]
    return {name: version(name) for name in names}


def run_workload(
    workload: str,
    args: argparse.Namespace,
    rounds_n: int,
    seconds: float,
    warmup: float,
    cpus: tuple[int | None, int | None],
) -> dict[str, Any]:
    """Start the workload's two servers, check, warm up, run the rounds; the summary rows.

    The servers are stopped on the way out, before the next workload's start.
    """
    server_cpu, load_cpu = cpus
    with ExitStack() as stack:
        log = stack.enter_context(tempfile.TemporaryFile("w+"))
        try:
            servers = {
                app: stack.enter_context(
                    server(
                        app,
                        workload,
                        server_cpu,
                        log,
                        args.model_latency,
                        args.latency_jitter,
                        args.direct,
                    )
                )
                for app in APPS
            }
        except RuntimeError:
            log.seek(0)
            print(log.read(), file=sys.stderr)
            raise
        print(check(servers, args.users, workload, args.direct), flush=True)
        pool = stack.enter_context(ThreadPoolExecutor(len(APPS)))

        def one_round(seconds: float, n: int) -> dict[str, dict[str, Any]]:
            """Paired: both apps loaded at once, on the same core, sharing whatever it gives.
            Alternate: one app after the other, the first one changing from round to round."""
            if args.mode == "paired":
                running = {app: pool.submit(load, servers[app], args, seconds, load_cpu, workload)
                           for app in APPS}  # fmt: skip
                return {app: running[app].result() for app in APPS}
            order = APPS if n % 2 == 0 else APPS[::-1]
            return {app: load(servers[app], args, seconds, load_cpu, workload) for app in order}

        if warmup > 0:
            one_round(warmup, 0)
        rounds: list[dict[str, dict[str, Any]]] = []
        for n in range(rounds_n):
            results = one_round(seconds, n)
            rounds.append(results)
            print(f"{workload} round {n + 1}/{rounds_n}: " + ", ".join(
                f"{app} {results[app]['rps']:.0f} req/s "
                f"({results[app].get('server_cpu_us', math.nan):.0f} CPU µs/req)" for app in APPS
            ), flush=True)  # fmt: skip
    return summarise(rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workload",
        choices=[*WORKLOADS, "both"],
        default="both",
        help="chain: prompt | fake chat model | parser; agent: the customer-service create_agent "
        "agent, build_stable() as both versions; both (default): the chain, then the agent",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds × 2 s per workload: a smoke check"
    )
    parser.add_argument("--rounds", type=int, help="rounds per workload (default 5; quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds of load per app and round (5; 2)")
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up load per app and workload (3; 1)"
    )
    parser.add_argument(
        "--mode",
        choices=["paired", "alternate"],
        default="paired",
        help="paired (default): each round loads both apps at once, both servers on one core; "
        "alternate: one app at a time, the order alternating between rounds",
    )
    parser.add_argument(
        "--connections",
        type=int,
        help="in flight, per app (default 16)",
    )
    parser.add_argument(
        "--model-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="each model call awaits this long before answering (default 0: a fake model that "
        "answers in microseconds; 0.2 for a realistic one)",
    )
    parser.add_argument(
        "--latency-jitter",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="with --model-latency: each call waits a log-normal time whose median is the "
        "latency and whose log has this standard deviation (default 0: always the latency; "
        "0.5: a p99 about 3.2x the median, as providers' latencies spread)",
    )
    parser.add_argument(
        "--direct",
        choices=["plain", "nested", "router"],
        default="plain",
        help="what the direct app serves: the stable version (plain, the default), or the stable "
        "version inside a RunnableLambda that labels its runs as the router does (nested: the "
        "least any wrapper pays), or GrayRouter under plain add_routes with the user id from "
        "X-User-ID (router: what add_gray_routes' glue costs)",
    )
    parser.add_argument("--users", type=int, default=1000, help="distinct X-User-ID values")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--serve-app", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--load-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.serve_app or args.load_url) and args.workload not in WORKLOADS:
        parser.error(f"--serve-app and --load-url need --workload {' or '.join(WORKLOADS)}")
    if args.connections is None:
        args.connections = 16
    if args.serve_app:
        serve(args.serve_app, args.workload, args.port, args.model_latency, args.latency_jitter,
              args.direct)  # fmt: skip
        return 0
    if args.load_url:
        body = BODIES[args.workload]
        httpx_load(args.load_url, body, args.connections, args.seconds, args.users, 1_000_000)
        return 0

    selected = WORKLOADS if args.workload == "both" else (args.workload,)
    rounds_n = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    if args.loadgen == "auto":
        args.loadgen = "wrk" if shutil.which("wrk") else "httpx"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pin = not args.no_pin and (cpus or 1) >= 2 and shutil.which("taskset") is not None
    server_cpu, load_cpu = (0, 1) if pin else (None, None)
    began = time.monotonic()

    results: dict[str, dict[str, Any]] = {}
    for workload in selected:
        rows = run_workload(workload, args, rounds_n, seconds, warmup, (server_cpu, load_cpu))
        results[workload] = rows
        print()
        print(table(rows, workload, args.mode, args.direct))
        print(flush=True)
    took = time.monotonic() - began
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), **versions(), "platform": platform.platform(),
        "cpus": cpus, "pinned": {"server_cpu": server_cpu, "load_cpu": load_cpu},
        "loadgen": args.loadgen, "connections": args.connections, "users": args.users,
        "rounds": rounds_n, "seconds": seconds, "warmup": warmup, "ratio": RATIO,
        "workers": 1, "took_s": round(took, 1), "workloads": list(selected), "mode": args.mode,
        "model_latency": args.model_latency, "latency_jitter": args.latency_jitter,
        "direct": args.direct,
    }  # fmt: skip
    together = "both apps at once" if args.mode == "paired" else "one app at a time"
    print(
        f"{rounds_n} rounds × {seconds:g} s per workload ({', '.join(selected)}), {together}, "
        "load by "
        f"{args.loadgen} with {args.connections} connections over {args.users} users, model "
        f"latency {args.model_latency * 1000:g} ms"
        + (f" (log-normal, sigma {args.latency_jitter:g})" if args.latency_jitter > 0 else "")
        + ", 1 uvicorn "
        "worker per app, "
        + (f"server on CPU {server_cpu} and load on CPU {load_cpu}" if pin else "not pinned")
        + f"; Python {meta['python']}, langchain-core {meta['langchain-core']}, langserve "
        f"{meta['langserve']}, {cpus} CPUs, {took:.0f} s"
    )
    for workload, rows in results.items():
        errors = rows["router"]["errors"] + rows["direct"]["errors"]
        if errors:
            print(
                f"WARNING: {errors} failed requests in the {workload} workload: its numbers are "
                "not valid",
                file=sys.stderr,
            )
    if args.json is not None:
        out = {
            "meta": meta,
            "workloads": {workload: {"apps": rows} for workload, rows in results.items()},
            "apps": results[selected[0]],  # the first workload's, as before there were two
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
