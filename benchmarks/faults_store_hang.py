"""Fault: the store hangs. A real ``graylayer serve`` on Redis, real HTTP clients, ``SIGSTOP``.

Run from the repository root (about 35 s)::

    python benchmarks/faults_store_hang.py
    python benchmarks/faults_store_hang.py --rate 50 --before 5 --hang 10 --after 5 --json out.json

What it does, all on loopback:

1. starts ``redis-server`` on a free port (no persistence);
2. starts ``graylayer serve`` (``python -m langchain_graylayer.cli serve``: uvicorn, the
   LangServe routes, the admin API, the controller thread) with ``--redis-url`` on it, the plan
   ``examples/plan.yaml``, the two tiny versions of this module (``stable``, ``candidate``) and
   :data:`PROFILES` (a quarter of the users are staff: the ``internal`` layer, which the
   controller's first tick opens at 50%, so both versions serve);
3. drives ``--rate`` requests a second (open loop: a request starts on schedule whether or not
   the ones before have answered) of ``httpx`` clients with a 5 s timeout (the whole request,
   not only each of its phases), each request one
   user's turn in their conversation (``X-User-ID``, ``X-Session-ID``), after a warm-up in
   which every user is seen once;
4. after ``--before`` seconds, ``SIGSTOP`` s redis-server for ``--hang`` seconds, then
   ``SIGCONT`` and ``--after`` seconds more; reads ``graylayer_store_available`` from
   ``/metrics`` in the middle of the hang and after it;
5. prints, per phase, requests served and failed (an exception, a timeout or a status other
   than 200) and latency p50/p95/max; the added latency of the hang is its p50/p95 minus the
   same run's ``before`` phase. It also counts answers whose version differs from the one the
   user had before the hang (a conversation switching versions).

Importable (``run()`` returns the figures); the module's ``stable``, ``candidate`` and
``PROFILES`` are what the server imports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableLambda

from langchain_graylayer.plan.profile import UserProfile

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "fault-suite-admin-token-0123456789"
CLIENT_TIMEOUT = 5.0
"""Seconds a client waits for its answer, all in: later is a failed request."""
USERS = [f"user-{i}" for i in range(100)]
PROFILES = {user: UserProfile(tags={"group": "staff"}) for user in USERS[::4]}
"""A quarter of the users are staff: the ``internal`` layer of ``examples/plan.yaml``."""


def _answer(version: str) -> RunnableLambda[dict[str, str], str]:
    return RunnableLambda(lambda inputs: f"[{version}] {inputs.get('question', '')}")


stable = _answer("v1")
candidate = _answer("v2")


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:g} s")
        time.sleep(0.1)


@contextmanager
def _process(args: list[str], ready: Any, what: str, timeout: float, **kw: Any) -> Iterator[int]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kw)
    try:
        _wait(lambda: process.poll() is not None or ready(), timeout, what)
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{what} exited:\n{log.read().decode(errors='replace')}")
        yield process.pid
    finally:
        os.kill(process.pid, signal.SIGCONT)  # a stopped process cannot terminate
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _get(url: str, **headers: str) -> Any:
    import httpx

    try:
        return httpx.get(url, headers=headers, timeout=1.0)
    except httpx.HTTPError:
        return None


def _store_available(base: str) -> float | None:
    response = _get(f"{base}/metrics")
    if response is None:
        return None
    for line in response.text.splitlines():
        if line.startswith("graylayer_store_available{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# --------------------------------------------------------------------------- load
@dataclass(frozen=True)
class Sample:
    started: float
    """Seconds since the load began."""
    seconds: float
    status: str
    """The HTTP status, or the client's error (e.g. ``TimeoutError``)."""
    user: str
    version: str | None

    @property
    def ok(self) -> bool:
        return self.status == "200"


async def _load(base: str, seconds: float, rate: float, t0: float) -> list[Sample]:
    import httpx

    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT, limits=limits) as client:

        async def one(n: int) -> None:
            user = USERS[n % len(USERS)]
            headers = {"X-User-ID": user, "X-Session-ID": f"chat-{user}"}
            body = {"input": {"question": f"turn {n}"}}
            started = time.perf_counter()
            try:  # httpx's timeout bounds each phase (pool, connect, read): 5 s in all here
                response = await asyncio.wait_for(
                    client.post("/agent/invoke", json=body, headers=headers), CLIENT_TIMEOUT
                )
                status = str(response.status_code)
                version = response.headers.get("X-Agent-Version")
            except (httpx.HTTPError, asyncio.TimeoutError) as exc:
                status, version = type(exc).__name__, None
            samples.append(
                Sample(started - t0, time.perf_counter() - started, status, user, version)
            )

        tasks = []
        begin = time.perf_counter()
        for n in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, begin + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return samples


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _phase(samples: list[Sample]) -> dict[str, Any]:
    seconds = [s.seconds for s in samples if s.ok]
    failures: dict[str, int] = {}
    for sample in samples:
        if not sample.ok:
            failures[sample.status] = failures.get(sample.status, 0) + 1
    return {
        "requests": len(samples),
        "served": sum(s.ok for s in samples),
        "failed": sum(not s.ok for s in samples),
        "failures": failures,
        "p50_ms": round(_quantile(seconds, 0.50) * 1000, 1),
        "p95_ms": round(_quantile(seconds, 0.95) * 1000, 1),
        "max_ms": round(max(seconds, default=float("nan")) * 1000, 1),
    }


# --------------------------------------------------------------------------- the run
def run(
    rate: float = 50.0, before: float = 5.0, hang: float = 10.0, after: float = 5.0
) -> dict[str, Any]:
    """Start Redis and ``graylayer serve``, load, hang, recover; the figures."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server not found; install it with: apt-get install -y redis-server"
        )
    import redis

    port, http_port = free_port(), free_port()
    url, base = f"redis://127.0.0.1:{port}/0", f"http://127.0.0.1:{http_port}"

    def redis_ready() -> bool:
        client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def serving() -> bool:
        response = _get(f"{base}/graylayer/api/status", Authorization=f"Bearer {TOKEN}")
        return (
            response is not None
            and response.status_code == 200
            and any(layer["phase"] == "active" for layer in response.json()["layers"])
        )

    serve = [sys.executable, "-m", "langchain_graylayer.cli", "serve",
             "--plan", str(ROOT / "examples" / "plan.yaml"),
             "--stable", "benchmarks.faults_store_hang:stable",
             "--candidate", "benchmarks.faults_store_hang:candidate",
             "--profiles", "benchmarks.faults_store_hang:PROFILES",
             "--redis-url", url, "--port", str(http_port), "--interval", "3600",
             "--admin-token", TOKEN]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with tempfile.TemporaryDirectory() as data:
        redis_args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", data]  # fmt: skip
        with (
            _process(redis_args, redis_ready, "redis-server", 10) as redis_pid,
            _process(serve, serving, "graylayer serve", 40, cwd=ROOT, env=env),
        ):
            return asyncio.run(_drive(base, redis_pid, rate, before, hang, after))


async def _drive(
    base: str, redis_pid: int, rate: float, before: float, hang: float, after: float
) -> dict[str, Any]:
    await _load(base, len(USERS) / rate, rate, time.perf_counter())  # warm-up: every user once
    t0 = time.perf_counter()
    events: dict[str, Any] = {}

    async def fault() -> None:
        # One /metrics scrape in the middle of each phase (a scrape costs the server a few ms of
        # CPU): the baseline pays what the hang's reading of graylayer_store_available pays.
        await asyncio.sleep(before / 2)
        events["available_before"] = await asyncio.to_thread(_store_available, base)
        await asyncio.sleep(max(0.0, t0 + before - time.perf_counter()))
        os.kill(redis_pid, signal.SIGSTOP)
        events["stopped_at"] = time.perf_counter() - t0
        try:
            await asyncio.sleep(hang / 2)
            events["available_during"] = await asyncio.to_thread(_store_available, base)
            await asyncio.sleep(max(0.0, t0 + before + hang - time.perf_counter()))
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        events["continued_at"] = continued = time.perf_counter() - t0
        for _ in range(20):  # the breaker closes at the first probe after SIGCONT
            if await asyncio.to_thread(_store_available, base) == 1.0:
                events["closed_after_s"] = round(time.perf_counter() - t0 - continued, 2)
                break
            await asyncio.sleep(0.5)

    samples, _ = await asyncio.gather(_load(base, before + hang + after, rate, t0), fault())
    stopped, continued = events["stopped_at"], events["continued_at"]
    phases = {
        "before": [s for s in samples if s.started < stopped],
        "hang": [s for s in samples if stopped <= s.started < continued],
        "after": [s for s in samples if s.started >= continued],
    }
    before_version = {s.user: s.version for s in phases["before"] if s.ok}
    switched = sum(
        s.ok and s.user in before_version and s.version != before_version[s.user]
        for s in phases["hang"]
    )
    health = _get(f"{base}/graylayer/api/status", Authorization=f"Bearer {TOKEN}")
    figures = {name: _phase(group) for name, group in phases.items()}
    base_p50, base_p95 = figures["before"]["p50_ms"], figures["before"]["p95_ms"]
    return {
        "rate": rate,
        "hang_seconds": round(continued - stopped, 2),
        "phases": figures,
        "added_p50_ms": round(figures["hang"]["p50_ms"] - base_p50, 1),
        "added_p95_ms": round(figures["hang"]["p95_ms"] - base_p95, 1),
        "switched_version_during_hang": switched,
        "slowest_during_hang": [
            (round(s.started - stopped, 2), round(s.seconds * 1000, 1))
            for s in sorted(phases["hang"], key=lambda s: -s.seconds)[:8]
        ],
        "store_available_before_hang": events.get("available_before"),
        "store_available_during_hang": events.get("available_during"),
        "breaker_closed_after_sigcont_s": events.get("closed_after_s"),
        "router_health": None if health is None else health.json().get("health"),
        "samples": [(round(s.started, 3), round(s.seconds * 1000, 1), s.status) for s in samples],
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"store hang: redis-server SIGSTOP for {result['hang_seconds']:.1f} s under "
        f"{result['rate']:g} req/s (httpx clients, 5 s timeout), graylayer serve on loopback",
        f"{'phase':8} {'requests':>8} {'served':>7} {'failed':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'max ms':>8}",
    ]
    for name, p in result["phases"].items():
        lines.append(
            f"{name:8} {p['requests']:>8} {p['served']:>7} {p['failed']:>7} {p['p50_ms']:>8} "
            f"{p['p95_ms']:>8} {p['max_ms']:>8}  {p['failures'] or ''}"
        )
    lines += [
        f"added latency during the hang (vs before, same run): p50 {result['added_p50_ms']:+.1f} "
        f"ms, p95 {result['added_p95_ms']:+.1f} ms",
        f"answers whose version changed during the hang: {result['switched_version_during_hang']}",
        f"graylayer_store_available before: {result['store_available_before_hang']}, mid-hang: "
        f"{result['store_available_during_hang']}; breaker "
        f"closed {result['breaker_closed_after_sigcont_s']} s after SIGCONT",
    ]
    health = result.get("router_health")
    if health:
        lines.append(f"router health since start: {health.get('since_start')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=50.0, help="requests a second")
    parser.add_argument("--before", type=float, default=5.0, help="seconds before the hang")
    parser.add_argument("--hang", type=float, default=10.0, help="seconds redis is stopped")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after SIGCONT")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(args.rate, args.before, args.hang, args.after)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
