"""Run every benchmark and write one markdown report, ``BENCHMARKS.md``.

Usage (from the repository root, with the package installed)::

    python benchmarks/report.py                 # full runs, several minutes
    python benchmarks/report.py --quick         # smoke runs, noisy numbers
    python benchmarks/report.py --out /tmp/B.md # write the report elsewhere

The benchmarks run one after another as subprocesses, each writing its JSON into a
temporary directory; the report reads the headline numbers from those files. A benchmark that
fails (or is skipped) is recorded in the report with the last lines of its stderr, and the others
still run. Progress goes to stderr. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "langchain-graylayer",
    "langchain-core",
    "langchain",
    "langgraph",
    "langserve",
    "fastapi",
    "uvicorn",
    "prometheus-client",
    "redis",
    "numpy",
)
BINARIES = (
    ("redis-server", ["redis-server", "--version"]),
    ("prometheus", ["prometheus", "--version"]),
    ("wrk", ["wrk", "--version"]),
)


@dataclass
class Bench:
    key: str
    title: str
    what: str
    argv: list[str]  # without --quick and the output option
    out_kind: str  # "json" (--json FILE) or "dir" (--out DIR, results.json)
    rc: int | None = None
    seconds: float = 0.0
    data: dict[str, Any] | None = None
    error: str = ""
    stderr_tail: list[str] = field(default_factory=list)
    stdout_tail: list[str] = field(default_factory=list)


def benches() -> list[Bench]:
    py = "python"
    return [
        Bench(
            "router_overhead",
            "Router overhead per call",
            "what `GrayRouter` adds to a cheap chain call, against the chain and `RunnableBranch`",
            [py, "benchmarks/router_overhead.py"],
            "json",
        ),
        Bench(
            "callback_overhead",
            "Routing and measuring overhead per agent run",
            "what `GrayRouter` with metrics (counted from the agent's messages, or by the "
            "handler) adds to a one-tool `create_agent` run, also with a no-op tracer in both "
            "arms",
            [py, "benchmarks/callback_overhead.py"],
            "json",
        ),
        Bench(
            "overhead_budget",
            "Where the router's time goes",
            "the time `GrayRouter` adds to a one-tool `create_agent` request, split into its "
            "phases (routing, LangChain's own run, the child's labels, measuring), and against "
            "the least any wrapper pays (the agent nested in a `RunnableLambda`)",
            [py, "benchmarks/overhead_budget.py"],
            "json",
        ),
        Bench(
            "evaluator_overhead",
            "Evaluators on the request path",
            "what a plan's evaluators (a function, an LLM-as-judge, a conversation evaluator) "
            "add to a `create_agent` run behind the router",
            [py, "benchmarks/evaluator_overhead.py"],
            "json",
        ),
        Bench(
            "serve_throughput",
            "HTTP throughput, router vs direct",
            "requests per second of a LangServe app through `GrayRouter` vs `add_routes`, "
            "over a cheap chain and over a `create_agent` agent",
            [py, "benchmarks/serve_throughput.py"],
            "json",
        ),
        Bench(
            "serve_latency",
            "HTTP throughput with a realistic model latency, router vs direct",
            "the same two LangServe apps when each model call awaits 200 ms",
            [py, "benchmarks/serve_throughput.py", "--model-latency", "0.2"],
            "json",
        ),
        Bench(
            "serve_latency_spread",
            "HTTP throughput with a realistic, spread model latency, router vs direct",
            "the same two LangServe apps when each model call waits a log-normal time of median "
            "200 ms (sigma 0.5: a p99 about 3.2× the median)",
            [
                py,
                "benchmarks/serve_throughput.py",
                "--model-latency",
                "0.2",
                "--latency-jitter",
                "0.5",
            ],
            "json",
        ),
        Bench(
            "serve_nested",
            "HTTP throughput, router vs the least any wrapper pays",
            "the router's LangServe app next to an app serving the stable version inside a "
            "`RunnableLambda` that labels its runs as the router does (LangChain's own nesting, "
            "nothing of graylayer's)",
            [py, "benchmarks/serve_throughput.py", "--direct", "nested"],
            "json",
        ),
        Bench(
            "serve_glue",
            "HTTP throughput, add_gray_routes vs the same router under plain add_routes",
            "what the serving glue costs: identity middleware, the input check, coloured "
            "headers and the signed feedback token, over `GrayRouter` served by `add_routes` "
            "with the user id from `X-User-ID`",
            [py, "benchmarks/serve_throughput.py", "--direct", "router"],
            "json",
        ),
        Bench(
            "simulate",
            "`graylayer simulate`: full rollout simulator",
            "Monte-Carlo rollouts of returning users: scenarios S0–S8 and U1–U5",
            [py, "-m", "langchain_graylayer.cli", "simulate"],
            "dir",
        ),
    ]


# ---------------------------------------------------------------- environment


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine() -> dict[str, str]:
    cpu = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cpu = cpu or platform.processor() or platform.machine()
    mem = ""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            kib = int(line.split()[1])
            mem = f"{kib / 1024 / 1024:.1f} GiB"
            break
    os_name = platform.platform()
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.platform()})"
            break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    load = ""
    with contextlib.suppress(OSError):
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "memory": mem or "unknown",
        "OS": os_name,
        "load average at start (1/5/15 min)": load or "unknown",
    }


def versions() -> dict[str, str]:
    out = {"Python": f"{platform.python_version()} ({sys.executable})"}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    for name, cmd in BINARIES:
        if shutil.which(cmd[0]) is None:
            out[name] = "not on PATH"
            continue
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            text = (proc.stdout or proc.stderr).strip().splitlines()
            out[name] = text[0].strip() if text else f"present (exit {proc.returncode})"
        except (OSError, subprocess.TimeoutExpired) as exc:
            out[name] = f"present, version unknown ({exc.__class__.__name__})"
    return out


# ---------------------------------------------------------------- running


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def command(b: Bench, quick: bool, out: str) -> list[str]:
    argv = [sys.executable if a == "python" else a for a in b.argv]
    if quick:
        argv.append("--quick")
    argv += ["--json", out] if b.out_kind == "json" else ["--out", out]
    return argv


def display(b: Bench, quick: bool, out: str) -> str:
    argv = list(b.argv) + (["--quick"] if quick else [])
    argv += ["--json", out] if b.out_kind == "json" else ["--out", out]
    return shlex.join(argv)


def run(b: Bench, idx: int, total: int, quick: bool, tmp: Path, timeout: float) -> None:
    out = tmp / (f"{b.key}.json" if b.out_kind == "json" else b.key)
    json_path = out if b.out_kind == "json" else out / "results.json"
    argv = command(b, quick, str(out))
    stdout_path, stderr_path = tmp / f"{b.key}.stdout", tmp / f"{b.key}.stderr"
    log(f"[{idx}/{total}] {b.key}: {shlex.join(argv)}")
    start = time.monotonic()
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        try:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=so, stderr=se)
        except OSError as exc:
            b.error = f"could not start: {exc}"
            log(f"[{idx}/{total}] {b.key}: {b.error}")
            return
        next_note = 15.0
        while True:
            try:
                b.rc = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed >= timeout:
                    proc.kill()
                    proc.wait()
                    b.error = f"killed after the {timeout:.0f} s timeout"
                    break
                if elapsed >= next_note:
                    log(f"[{idx}/{total}] {b.key}: running, {elapsed:.0f} s")
                    next_note += 15.0
    b.seconds = time.monotonic() - start
    b.stderr_tail = _tail(stderr_path)
    b.stdout_tail = _tail(stdout_path)
    if not b.error and b.rc != 0:
        b.error = f"exit status {b.rc}"
    if not b.error:
        try:
            b.data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            b.error = f"no usable JSON at {json_path.name}: {exc}"
    status = "ok" if not b.error else f"FAILED ({b.error})"
    log(f"[{idx}/{total}] {b.key}: {status} in {b.seconds:.1f} s")


def _tail(path: Path, n: int = 15) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = [ln.rstrip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-n:]


# ---------------------------------------------------------------- formatting


def num(x: Any, digits: int = 1) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, float)):
        return f"{x:,.{digits}f}"
    return str(x)


def pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def rate_ci(r: dict[str, Any] | None) -> str:
    if not r:
        return "—"
    lo, hi = (r.get("ci95") or [None, None])[:2]
    ci = f" [{pct(lo)}, {pct(hi)}]" if lo is not None and hi is not None else ""
    return f"{pct(r.get('rate'))}{ci} ({r.get('k')}/{r.get('n')})"


def med_p90(d: dict[str, Any] | None, digits: int = 1) -> str:
    if not d or d.get("median") is None:
        return "—"
    return f"{num(d.get('median'), digits)} / {num(d.get('p90'), digits)}"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def meta_line(meta: dict[str, Any], keys: list[str]) -> str:
    parts = [
        f"{k} {round(meta[k], 1) if isinstance(meta[k], float) else meta[k]}"
        for k in keys
        if k in meta and not isinstance(meta[k], dict)
    ]
    return "Run settings: " + ", ".join(parts) + "." if parts else ""


# ---------------------------------------------------------------- per benchmark


def section_router(d: dict[str, Any]) -> tuple[list[str], str]:
    v = d.get("variants", {})
    head = []
    for key in ("router_memory", "router_measured", "router_redis"):
        row = v.get(key)
        if row is None:
            head.append(f"`{key}`: not run (skipped)")
            continue
        head.append(
            f"`{key}`: median {num(row['median_us'])} µs/call, "
            f"**{num(row['vs_chain'], 2)}× chain** ({row.get('over_chain_us', 0):+,.0f} µs/call), "
            f"**{num(row['vs_branch'], 2)}× branch**"
        )
    if "chain" in v and "branch" in v:
        head.append(
            f"baselines: `chain` {num(v['chain']['median_us'])} µs, "
            f"`branch` {num(v['branch']['median_us'])} µs"
        )
    rows = [
        [
            f"`{k}`",
            r.get("description", ""),
            num(r.get("median_us")),
            num(r.get("iqr_us")),
            num(r.get("vs_chain"), 2),
            num(r.get("vs_branch"), 2),
            f"{r.get('over_chain_us', 0):+,.1f}",
        ]
        for k, r in v.items()
    ]
    tab = table(
        [
            "variant",
            "what",
            "median µs/call",
            "IQR µs",
            "× chain",
            "× branch",
            "+ µs/call over chain",
        ],
        rows,
        "llrrrrr",
    )
    meta = d.get("meta", {})
    tab += "\n\n" + meta_line(meta, ["rounds", "calls_per_round", "users", "redis", "seconds"])
    return head, tab


def _iqr(x: Any) -> str:
    if isinstance(x, list) and len(x) == 2:
        return f" [{num(x[0], 3)}, {num(x[1], 3)}]"
    return ""


def section_callback(d: dict[str, Any]) -> tuple[list[str], str]:
    v = d.get("variants", {})
    head = []
    for key in (
        "router_plain",
        "router_metrics",
        "router_journal",
        "router_handler",
        "router_traced",
    ):
        row = v.get(key)
        if row is None:
            head.append(f"`{key}`: missing")
            continue
        base = row.get("baseline", "agent")
        ratio = row.get("vs_baseline", row.get("vs_agent"))
        iqr = row.get("vs_baseline_iqr", row.get("vs_agent_iqr"))
        added = row.get("added_us", row.get("over_agent_us", 0))
        head.append(
            f"`{key}`: median {num(row['median_us'], 0)} µs/run, "
            f"**{num(ratio, 3)}× {base}**{_iqr(iqr)}, **{added:+,.0f} µs/run**"
        )
    for key in ("agent", "agent_traced"):
        if key in v:
            head.append(f"baseline: `{key}` {num(v[key]['median_us'], 0)} µs/run")
    alone = d.get("handler_alone")
    if alone:
        head.append(
            f"the handler alone ({alone.get('events_per_run')} events replayed): median "
            f"{num(alone.get('median_us'), 0)} µs/run, IQR [{num(alone.get('q1_us'), 0)}, "
            f"{num(alone.get('q3_us'), 0)}]"
        )
    rows = [
        [
            f"`{k}`",
            r.get("description", ""),
            num(r.get("median_us"), 0),
            num(r.get("iqr_us"), 0),
            f"`{r.get('baseline', 'agent')}`",
            num(r.get("vs_baseline", r.get("vs_agent")), 3)
            + _iqr(r.get("vs_baseline_iqr", r.get("vs_agent_iqr"))),
            f"{r.get('added_us', r.get('over_agent_us', 0)):+,.0f}",
            num(r.get("vs_router_plain"), 3) + _iqr(r.get("vs_router_plain_iqr")),
        ]
        for k, r in v.items()
    ]
    tab = table(
        [
            "variant",
            "what",
            "median µs/run",
            "IQR µs",
            "baseline",
            "× baseline [IQR]",
            "+ µs/run over baseline",
            "× router_plain [IQR]",
        ],
        rows,
        "llrrlrrr",
    )
    meta = d.get("meta", {})
    tab += "\n\n" + meta_line(
        meta, ["rounds", "calls_per_round", "users", "tools", "clock", "seconds"]
    )
    return head, tab


SERVE_WORKLOADS = {
    "chain": "Chain workload (`ChatPromptTemplate | GenericFakeChatModel | StrOutputParser`)",
    "agent": "Agent workload (the customer-service `create_agent` agent; `build_stable()` as "
    "both versions, so stable and candidate do the same work)",
}


def _serve_rows(apps: dict[str, Any]) -> str:
    rows = []
    for k in ("router", "direct"):
        a = apps.get(k)
        if not a:
            continue
        errors = a.get("errors", 0)
        rows.append(
            [
                f"`{k}`",
                num(a.get("median_rps"), 0),
                f"{num(a.get('min_rps'), 0)}–{num(a.get('max_rps'), 0)}",
                num(a.get("p50_ms")),
                num(a.get("p99_ms")),
                num(a.get("cpu_us"), 0),
                pct(a.get("busy")),
                num(a.get("requests"), 0),
                f"**{errors}**" if errors else "0",
            ]
        )
    return table(
        [
            "app",
            "median req/s",
            "range req/s",
            "p50 ms",
            "p99 ms",
            "server CPU µs/req",
            "server busy",
            "requests",
            "errors",
        ],
        rows,
    )


def section_serve(d: dict[str, Any]) -> tuple[list[str], str]:
    meta = d.get("meta", {})
    settings = meta_line(
        meta,
        ["mode", "loadgen", "connections", "users", "rounds", "seconds", "warmup", "workers",
         "model_latency", "direct"],
    )  # fmt: skip
    workloads = d.get("workloads")
    if isinstance(workloads, dict):
        # one headline line and one table per workload, in the order they ran
        names = [w for w in meta.get("workloads") or [] if w in workloads]
        names += [w for w in workloads if w not in names]
        head, parts = [], []
        for w in names:
            apps = workloads[w].get("apps", {})
            rvd = apps.get("router_vs_direct", {})
            r, dr = apps.get("router", {}), apps.get("direct", {})
            cpu = (r.get("cpu_us") or 0) - (dr.get("cpu_us") or 0)
            head.append(
                f"**router / direct req/s, {w}: {num(rvd.get('median_ratio'), 2)}**, "
                f"**{cpu:+,.0f} server CPU µs/request** (median of "
                f"same-round ratios, range {num(rvd.get('min_ratio'), 2)}–"
                f"{num(rvd.get('max_ratio'), 2)}; medians: router {num(r.get('median_rps'), 0)}, "
                f"direct {num(dr.get('median_rps'), 0)} req/s); server CPU per request, "
                f"router / direct: {num(rvd.get('cpu_ratio'), 2)}×"
            )
            parts += [f"{SERVE_WORKLOADS.get(w, f'Workload `{w}`')}:", "", _serve_rows(apps), ""]
        return head, "\n".join(parts) + "\n" + settings
    apps = d.get("apps", {})
    rvd = apps.get("router_vs_direct", {})
    r, dr = apps.get("router", {}), apps.get("direct", {})
    head = [
        f"**router / direct req/s: {num(rvd.get('median_ratio'), 2)}** (median of same-round "
        f"ratios, range {num(rvd.get('min_ratio'), 2)}–{num(rvd.get('max_ratio'), 2)}; "
        f"ratio of medians {num(rvd.get('ratio_of_medians'), 2)})",
        f"medians: router {num(r.get('median_rps'), 0)} req/s, "
        f"direct {num(dr.get('median_rps'), 0)} req/s",
        f"server CPU per request, router / direct: {num(rvd.get('cpu_ratio'), 2)}×",
    ]
    return head, _serve_rows(apps) + "\n\n" + settings


def section_simulate(d: dict[str, Any]) -> tuple[list[str], str]:
    head, good, bad = [], [], []
    for s in d.get("summary", []):
        scen, eng = s.get("scenario"), s.get("engine")
        if s.get("bad"):
            ex = s.get("exposed_at_catch", {})
            head.append(
                f"{scen} {eng}: caught {pct(s['caught'].get('rate'))}, "
                f"escape {pct(s['full'].get('rate'))}, "
                f"exposed when caught (median) {num(ex.get('median'), 0)}"
            )
            caught_by = ", ".join(f"{k} {v}" for k, v in (s.get("caught_by") or {}).items())
            bad.append(
                [
                    scen,
                    eng,
                    str(s.get("seeds", "")),
                    rate_ci(s.get("caught")),
                    rate_ci(s.get("full")),
                    pct(s.get("srm_alerted", {}).get("rate")),
                    med_p90(ex, 0),
                    med_p90(s.get("exposed_affected_at_catch"), 0),
                    med_p90(s.get("hours_to_catch")),
                    caught_by or "—",
                ]
            )
        else:
            head.append(
                f"{scen} {eng}: false rollback {pct(s['rollback'].get('rate'))}, "
                f"hours to 100% (median) {num(s['hours_to_full'].get('median'))}"
            )
            good.append(
                [
                    scen,
                    eng,
                    str(s.get("seeds", "")),
                    rate_ci(s.get("rollback")),
                    pct(s.get("srm_alerted", {}).get("rate")),
                    rate_ci(s.get("full")),
                    med_p90(s.get("hours_to_full")),
                    med_p90(s.get("users_to_full"), 0),
                ]
            )
    parts = []
    if good:
        parts.append("Good candidates (a rollback is a false rollback):\n")
        parts.append(
            table(
                [
                    "scenario",
                    "engine",
                    "seeds",
                    "false rollback [95% CI]",
                    "SRM alert",
                    "reached 100% [95% CI]",
                    "hours to 100%, median / p90",
                    "users to 100%, median / p90",
                ],
                good,
                "llrlrlrr",
            )
        )
    if bad:
        parts.append("\nBad candidates (caught = rolled back; escape = reached 100% everywhere):\n")
        parts.append(
            table(
                [
                    "scenario",
                    "engine",
                    "seeds",
                    "caught [95% CI]",
                    "escape [95% CI]",
                    "SRM alert",
                    "users exposed when caught, median / p90",
                    "in the affected layer",
                    "hours to catch, median / p90",
                    "caught by",
                ],
                bad,
                "llrllrrrrl",
            )
        )
    targets = d.get("targets") or []
    if targets:
        parts.append("\nTargets (ours):\n")
        parts += [
            f"- {t.get('target')}: **{t.get('status')}** — {t.get('evidence')}" for t in targets
        ]
    meta = d.get("meta", {})
    parts.append("\n" + meta_line(meta, ["seeds", "horizon_hours", "jobs", "seconds"]))
    return head, "\n".join(parts)


def section_evaluators(d: dict[str, Any]) -> tuple[list[str], str]:
    cpu, wall = d["ratio_cpu"], d["ratio_wall"]
    head = [
        f"request-thread CPU: **{num(cpu[1], 3)}× the router without evaluators** "
        f"[{num(cpu[0], 3)}, {num(cpu[2], 3)}]; wall clock {num(wall[1], 3)}× "
        f"[{num(wall[0], 3)}, {num(wall[2], 3)}] (judge: {d.get('judge')})",
        f"`Evaluations.run_ended` alone (everything a request pays): "
        f"{num(d.get('handoff_us_cpu'), 1)} µs per run",
    ]
    rows = [
        [f"`{name}`", num(d["median_us_cpu"][name], 0), num(d["median_us_wall"][name], 0)]
        for name in d["median_us_cpu"]
    ]
    return head, table(["variant", "median CPU µs/run", "median wall µs/run"], rows)


def section_budget(d: dict[str, Any]) -> tuple[list[str], str]:
    import overhead_budget

    rows = d["rows"]
    added, agent = rows["added"]["median_us"], rows["agent"]["median_us"]
    wrapper, own = rows["wrapper"]["median_us"], rows["graylayer"]["median_us"]
    head = [f"added by the router: **{num(added, 0)} µs per request**, {added / agent:.1%} of the "
            f"agent's {num(agent, 0)} µs (median of same-round differences); the same agent "
            f"nested in a `RunnableLambda` with the router's labels: {num(wrapper, 0)} µs "
            f"({wrapper / agent:.1%}); the router over that: {num(own, 0)} µs "
            f"({own / agent:.1%})"]  # fmt: skip
    return head, overhead_budget.table(rows)


SECTIONS = {
    "router_overhead": section_router,
    "overhead_budget": section_budget,
    "callback_overhead": section_callback,
    "evaluator_overhead": section_evaluators,
    "serve_throughput": section_serve,
    "serve_latency": section_serve,
    "serve_latency_spread": section_serve,
    "serve_nested": section_serve,
    "serve_glue": section_serve,
    "simulate": section_simulate,
}


# ---------------------------------------------------------------- report


def report(
    bs: list[Bench], quick: bool, cmd: str, started: dt.datetime, total_s: float, env: list[dict]
) -> str:
    mach, vers = env
    out = [
        "# Benchmarks",
        "",
        f"Generated by `{cmd}` on {started:%Y-%m-%d %H:%M} UTC "
        f"({'quick smoke runs: noisy numbers' if quick else 'full runs'}; "
        f"{total_s:.0f} s in all). What each benchmark measures and how to read it: "
        "[`benchmarks/README.md`](benchmarks/README.md). Compare rows within one run, "
        "not across machines.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in mach.items()],
        "",
        "## Software",
        "",
        *[f"- {k}: {v}" for k, v in vers.items()],
        "",
        "## Summary",
        "",
        table(
            ["benchmark", "status", "seconds"],
            [
                [
                    f"[`{b.key}`](#{b.key.replace('_', '-')})",
                    "ok" if not b.error else f"**failed**: {b.error}",
                    f"{b.seconds:.0f}",
                ]
                for b in bs
            ],
            "llr",
        ),
        "",
    ]
    for b in bs:
        out += [f"## {b.key}", "", f"{b.title}: {b.what}.", ""]
        if b.error or b.data is None:
            out += [f"**Failed or skipped**: {b.error}. Last lines of its stderr:", "", "```text"]
            out += b.stderr_tail or ["(empty)"]
            out += ["```", ""]
        else:
            try:
                head, tab = SECTIONS[b.key](b.data)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                head, tab = [f"could not read the results: {exc!r}"], ""
            out += ["Headline:", ""] + [f"- {h}" for h in head] + ["", tab, ""]
            if b.stderr_tail and any("skip" in ln.lower() for ln in b.stderr_tail):
                out += ["Notes on stderr:", "", "```text", *b.stderr_tail, "```", ""]
        out += [
            "Reproduce:",
            "",
            "```bash",
            display(b, quick, f"{b.key}.json" if b.out_kind == "json" else b.key),
            "```",
            "",
        ]
    out += [
        "## How to reproduce",
        "",
        "From the repository root, with the package and its extras installed "
        '(`pip install -e ".[all,dev]"`; `redis-server` and `wrk` on `PATH` for the Redis rows '
        "and the wrk load generator):",
        "",
        "```bash",
        "python benchmarks/report.py            # full runs, writes BENCHMARKS.md",
        "python benchmarks/report.py --quick    # smoke runs",
        "```",
        "",
        "Or one benchmark at a time:",
        "",
        "```bash",
        *[display(b, quick, f"{b.key}.json" if b.out_kind == "json" else b.key) for b in bs],
        "```",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report path (BENCHMARKS.md)"
    )
    parser.add_argument("--only", help="comma-separated benchmark names to run (default: all)")
    parser.add_argument(
        "--timeout", type=float, help="seconds per benchmark before it is killed (600; full 3600)"
    )
    args = parser.parse_args()
    timeout = args.timeout or (600.0 if args.quick else 3600.0)
    started = dt.datetime.now(dt.timezone.utc)
    cmd = shlex.join(["python", "benchmarks/report.py", *sys.argv[1:]])
    bs = benches()
    if args.only:
        wanted = {x.strip() for x in args.only.split(",")}
        bs = [b for b in bs if b.key in wanted]
    env = [machine(), versions()]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="graylayer-bench-") as tmp:
        for i, b in enumerate(bs, 1):
            run(b, i, len(bs), args.quick, Path(tmp), timeout)
            log(f"    total elapsed {time.monotonic() - t0:.0f} s")
    total = time.monotonic() - t0
    text = report(bs, args.quick, cmd, started, total, env)
    args.out.write_text(text, encoding="utf-8")
    failed = [b.key for b in bs if b.error]
    log(f"wrote {args.out} in {total:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
