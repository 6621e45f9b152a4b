"""The fault suite: real servers on loopback, real clients, injected faults, figures in a table.

Run from the repository root (about a minute; every loop is bounded, everything stops by itself)::

    python benchmarks/faults.py                  # every scenario
    python benchmarks/faults.py --only a b       # some of them
    python benchmarks/faults.py --json out.json  # also write the figures

One cluster: a ``redis-server`` on a free loopback port (append-only file, fsync always), two
``graylayer serve`` replicas on it (uvicorn on loopback, the controller ticking every 0.1 s in
each), serving the two agents of ``_fault_agents.py`` (real ``create_agent`` graphs over a
scripted model and a real tool) with the plan below; load from ``httpx`` clients (5 s timeout,
bounded rate and concurrency) spread over both replicas. Scenarios, in this order:

a. **client disconnects**: streams to candidate users, cut by the client after the first bytes,
   with steady load beside them: candidate errors (``graylayer_requests_total``, both replicas),
   cancelled runs, rollbacks.
b. **concurrent controllers**: both replicas' controllers tick for a few seconds under load;
   duplicate controller actions = state-changing audit entries (action, layer, old → new ratio)
   found more than once.
e. **Prometheus outage**: a ``prometheus`` scraping both replicas every second is killed under
   load. ``graylayer serve`` reads its evidence from the store and has no Prometheus client, so
   nothing should notice: requests served / failed before and during the outage, controller ticks.
c. **Redis restart with persistence**: Redis killed (SIGKILL) under load and restarted on its
   append-only file: requests served / failed, and whether the plan's state and audit survived.
d. **Redis restart without persistence**: a human rollback, then Redis killed and restarted
   empty: requests served / failed, and what the controller does with the lost state today
   (issue #15, item 3, is another change: this reports, it does not judge).

A store-hang scenario (SIGSTOP of Redis) lives in ``benchmarks/faults_store_hang.py``: when that
module exists and has ``run() -> dict`` (its figures: ``phases``, ``added_p95_ms``, ...), they
join the table (``--only h``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = "faults-admin-token-0123456789"
QUESTION = {"messages": [{"type": "human", "content": "Where is order A-1?"}]}
USERS = [f"u{i}" for i in range(60)]
STATE_ACTIONS = {"start_layer", "promote", "rollback", "complete", "cleanup", "pause", "resume",
                 "restart", "set_ratio"}  # fmt: skip
"""Audit actions that change state (a 'hold' may repeat by design; these never may)."""

PLAN = """\
id: faults
layers:
  - name: all              # every user of the suite (no profiles: the default layer)
    score_range: [0.0, 1.0]
    steps: [0.5, 1.0]
  - name: later            # nobody: the plan stays running after 'all' completes
    members: [nobody]
default_layer: all
gates:                     # fast: a step with no harm after 4 s moves on, so there are actions
  {min_samples: 20, min_users_at_timeout: 5, bake_time: 1s, max_step_time: 4s}
judging: {max_error_rate: 0.2}
"""


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:g} s")
        time.sleep(0.05)


class Process:
    """A server process with its output in a file; stopped (then killed) on :meth:`stop`."""

    def __init__(self, args: list[str], name: str, *, cwd: Path, env: dict[str, str] | None = None):
        self.args, self.name, self.cwd, self.env = args, name, cwd, env
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.args, cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


class Redis(Process):
    def __init__(self, home: Path, *, persistent: bool, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        home.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else [
            "--appendonly", "no"]  # fmt: skip
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(home), *persistence]  # fmt: skip
        super().__init__(args, "redis", cwd=home)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        super().start()
        wait_until(self.ping, 10, "redis-server")


class Replica(Process):
    """``graylayer serve`` on a free loopback port, on the cluster's Redis."""

    def __init__(self, redis_url: str, plan: Path, index: int, interval: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "langchain_graylayer.cli", "serve", "--plan", str(plan),
                "--stable", "_fault_agents:stable", "--candidate", "_fault_agents:candidate",
                "--redis-url", redis_url, "--port", str(self.port), "--interval", str(interval),
                "--admin-token", TOKEN]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAYLAYER_")}
        paths = [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)  # this checkout's package, whatever is installed
        super().__init__(args, f"replica{index}", cwd=HERE, env=env)


# --------------------------------------------------------------------------- load
@dataclass
class Load:
    """What the clients saw: answers by status, latencies of the served ones."""

    served: int = 0
    failed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(urls: list[str], seconds: float, rate: float, timeout: float) -> Load:
    result = Load()
    limit = asyncio.Semaphore(40)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        url, user = urls[n % len(urls)], USERS[n % len(USERS)]
        async with limit:
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/agent/invoke", json={"input": QUESTION},
                                             headers={"X-User-ID": user})  # fmt: skip
            except httpx.HTTPError as exc:
                result.failed += 1
                result.statuses[type(exc).__name__] += 1
                return
            result.statuses[str(response.status_code)] += 1
            if response.is_success:
                result.served += 1
                result.latencies.append(time.perf_counter() - started)
            else:
                result.failed += 1

    async with httpx.AsyncClient(timeout=timeout) as client:
        tasks, start = [], time.monotonic()
        for n in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(client, n)))
        await asyncio.gather(*tasks)
    return result


def load(urls: list[str], seconds: float, rate: float = 20.0, timeout: float = 5.0) -> Load:
    """``rate`` requests a second for ``seconds`` (open loop, at most 40 in flight)."""
    return asyncio.run(_load(urls, seconds, rate, timeout))


@contextlib.contextmanager
def background_load(urls: list[str], seconds: float, rate: float = 20.0) -> Iterator[Load]:
    """Load in a thread while the ``with`` block runs; the result is filled when it exits."""
    result = Load()

    def run() -> None:
        done = load(urls, seconds, rate)
        result.served, result.failed = done.served, done.failed
        result.statuses, result.latencies = done.statuses, done.latencies

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(seconds + 30)


# --------------------------------------------------------------------------- the cluster
class Cluster:
    """Redis (append-only file) and two ``graylayer serve`` replicas on it."""

    def __init__(self, home: Path, interval: float = 0.1) -> None:
        self.home = home
        self.plan = home / "plan.yaml"
        self.plan.write_text(PLAN)
        self.redis = Redis(home / "redis", persistent=True)
        self.replicas = [Replica(self.redis.url, self.plan, i, interval) for i in (1, 2)]
        self.http = httpx.Client(timeout=5.0, headers={"Authorization": f"Bearer {TOKEN}"})

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def __enter__(self) -> Cluster:
        self.redis.start()
        for replica in self.replicas:
            replica.start()
        try:
            for replica in self.replicas:
                wait_until(lambda r=replica: self._ready(r), 60, replica.name)  # type: ignore[misc]
        except TimeoutError:
            self.__exit__()
            raise
        return self

    def _ready(self, replica: Replica) -> bool:
        if replica.process is not None and replica.process.poll() is not None:
            raise RuntimeError(f"{replica.name} exited:\n{replica.output()[-3000:]}")
        try:
            return self.http.get(f"{replica.url}/graylayer/api/status").status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc: object) -> None:
        for process in [*self.replicas, self.redis]:
            process.stop()
        self.http.close()

    def api(self, method: str, path: str, body: Any = None, replica: int = 0) -> Any:
        url = f"{self.replicas[replica].url}/graylayer/api{path}"
        response = self.http.request(method, url, json=body)
        try:
            return response.json()
        except ValueError:
            return {"status_code": response.status_code, "text": response.text}

    def status(self) -> dict[str, Any]:
        return dict(self.api("GET", "/status"))

    def audit(self) -> list[dict[str, Any]]:
        entries = self.api("GET", "/audit?limit=10000")
        return entries if isinstance(entries, list) else []

    def requests_total(self, version: str, outcome: str) -> float:
        """``graylayer_requests_total`` of ``version`` and ``outcome``, summed over replicas."""
        total = 0.0
        for url in self.urls:
            for line in self.http.get(f"{url}/metrics").text.splitlines():
                if line.startswith("graylayer_requests_total{") and (
                    f'version="{version}"' in line and f'outcome="{outcome}"' in line
                ):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def health(self, counter: str) -> int:
        """A router counter since start (``degraded``: answered by stable, graylayer failed),
        summed over the replicas."""
        return sum(
            int(self.api("GET", "/status", replica=i)["health"]["since_start"].get(counter, 0))
            for i in range(len(self.replicas))
        )


def duplicates(audit: list[dict[str, Any]]) -> int:
    """State-changing audit entries that repeat one already there (the same action, layer and
    ratios: a step taken twice)."""
    seen = Counter(
        (e["action"], e.get("layer"), e.get("old_ratio"), e.get("new_ratio"))
        for e in audit
        if e["action"] in STATE_ACTIONS
    )
    return sum(n - 1 for n in seen.values())


# --------------------------------------------------------------------------- scenarios
def client_disconnects(cluster: Cluster, streams: int = 30, seconds: float = 6.0) -> dict[str, Any]:
    """(a) ``streams`` streams of candidate users cut after the first bytes, beside steady load."""
    wait_until(lambda: cluster.status()["layers"][0]["ratio"] > 0, 10, "the first layer open")
    errors_before = cluster.requests_total("candidate", "error")
    cancelled_before = cluster.requests_total("candidate", "cancelled")
    cut = other = 0
    with (
        background_load(cluster.urls, seconds, rate=15.0) as steady,
        httpx.Client(timeout=5.0) as client,
    ):
        for n in range(streams * 8):  # bounded: about half the users are on the candidate
            if cut >= streams:
                break
            url = cluster.urls[n % 2]
            user = {"X-User-ID": USERS[n % len(USERS)]}
            body = {"input": QUESTION}
            with client.stream("POST", f"{url}/agent/stream", json=body, headers=user) as response:
                if response.headers.get("X-Agent-Version") != "candidate":
                    response.read()
                    other += 1
                    continue
                next(response.iter_raw(), b"")  # the first bytes, then hang up
                cut += 1
    time.sleep(1.0)  # the servers notice the closed connections; the controllers tick
    audit = cluster.audit()
    return {
        "streams cut by the client": cut,
        "candidate errors": cluster.requests_total("candidate", "error") - errors_before,
        "candidate runs cancelled": cluster.requests_total("candidate", "cancelled")
        - cancelled_before,
        "rollbacks": sum(e["action"] == "rollback" for e in audit),
        "steady requests served / failed": f"{steady.served} / {steady.failed}",
        "status": cluster.status()["status"],
    }


def concurrent_controllers(cluster: Cluster, seconds: float = 8.0) -> dict[str, Any]:
    """(b) Both replicas' controllers tick every 0.1 s under load; duplicate actions."""
    with background_load(cluster.urls, seconds, rate=15.0) as steady:
        time.sleep(seconds)
    audit = cluster.audit()
    status = cluster.status()
    return {
        "ticks per replica (about)": int(seconds / 0.1),
        "audit entries": len(audit),
        "state-changing actions": sum(e["action"] in STATE_ACTIONS for e in audit),
        "duplicate controller actions": duplicates(audit),
        "actions": ", ".join(e["action"] for e in audit if e["action"] in STATE_ACTIONS),
        "leader": status.get("leader"),
        "requests served / failed": f"{steady.served} / {steady.failed}",
    }


def prometheus_outage(cluster: Cluster, seconds: float = 4.0) -> dict[str, Any]:
    """(e) A Prometheus scraping both replicas is killed under load."""
    home = cluster.home / "prometheus"
    home.mkdir(exist_ok=True)
    port = free_port()
    targets = ", ".join(f"'127.0.0.1:{r.port}'" for r in cluster.replicas)
    (home / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs: [{{job_name: graylayer, static_configs: [{{targets: [{targets}]}}]}}]\n"
    )
    args = [
        "prometheus",
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    prometheus = Process(args, "prometheus", cwd=home)

    def scraping() -> bool:
        try:
            query = f"http://127.0.0.1:{port}/api/v1/query?query=sum(up)"
            data = httpx.get(query, timeout=1).json()["data"]["result"]
            return bool(data) and float(data[0]["value"][1]) == 2
        except (httpx.HTTPError, ValueError, KeyError, IndexError):
            return False

    prometheus.start()
    try:
        wait_until(scraping, 20, "prometheus scraping both replicas")
        before = load(cluster.urls, seconds)
        prometheus.kill()
        audit_before = len(cluster.audit())
        during = load(cluster.urls, seconds)
        leader = cluster.status().get("leader")
    finally:
        prometheus.stop()
    return {
        "graylayer serve talks to Prometheus": "no (it is scraped; evidence is in the store)",
        "served / failed with Prometheus up": f"{before.served} / {before.failed}",
        "served / failed during the outage": f"{during.served} / {during.failed}",
        "p95 latency up / down (ms)": f"{before.percentile(0.95) * 1e3:.0f} / "
        f"{during.percentile(0.95) * 1e3:.0f}",
        "controller leader during the outage": leader,
        "audit entries added during the outage": len(cluster.audit()) - audit_before,
    }


def redis_restart(cluster: Cluster, *, persistent: bool, seconds: float = 8.0) -> dict[str, Any]:
    """(c)/(d) Redis killed under load, restarted on its AOF (c) or empty (d)."""
    if not persistent:  # the human decision whose survival item 3 of issue #15 is about
        cluster.api("POST", "/rollback", {"operator": "faults-suite", "reason": "rehearsal"})
    wait_until(lambda: cluster.status().get("status") is not None, 5, "status")
    before = cluster.status()
    audit_before, degraded = len(cluster.audit()), cluster.health("degraded")
    with background_load(cluster.urls, seconds, rate=20.0) as during:
        time.sleep(2.0)
        cluster.redis.kill()
        time.sleep(1.0)
        if not persistent:  # the same port, nothing on disk: a Redis without persistence
            cluster.redis = Redis(cluster.home / "redis-empty", persistent=False,
                                  port=cluster.redis.port)  # fmt: skip
        cluster.redis.start()
    time.sleep(2.0)  # the controllers tick on what they find
    after = cluster.status()
    ratio = [layer["ratio"] for layer in after.get("layers", [{}])][:1]
    return {
        "requests served / failed": f"{during.served} / {during.failed}",
        "failures by kind": dict(during.statuses - Counter({"200": during.served})) or "-",
        "served by stable as degraded (store down)": cluster.health("degraded") - degraded,
        "status before / after": f"{before.get('status')} / {after.get('status')}",
        "audit entries before / after": f"{audit_before} / {len(cluster.audit())}",
        "ratio of 'all' before / after": f"{before['layers'][0]['ratio']} / "
        f"{ratio[0] if ratio else '?'}",
    }


def store_hang() -> dict[str, Any] | None:
    """(h) The store-hang scenario of ``benchmarks/faults_store_hang.py`` (Redis stopped with
    SIGSTOP under load; another change), when it is there: its ``run()`` returns the figures."""
    sys.path.insert(0, str(HERE))
    try:
        import faults_store_hang  # type: ignore[import-not-found]
    except ImportError:
        return None
    run = getattr(faults_store_hang, "run", None)
    if not callable(run):
        return None
    result: dict[str, Any] = run()
    figures: dict[str, Any] = {
        f"{phase}: served / failed, p50 / p95 ms": f"{p.get('served')} / {p.get('failed')}, "
        f"{p.get('p50_ms')} / {p.get('p95_ms')}"
        for phase, p in result.get("phases", {}).items()
    }
    for key in ("added_p50_ms", "added_p95_ms", "switched_version_during_hang"):
        if key in result:
            figures[key.replace("_", " ")] = result[key]
    return figures


# --------------------------------------------------------------------------- main
def print_table(figures: dict[str, dict[str, Any]]) -> None:
    width = max(len(k) for rows in figures.values() for k in rows)
    for title, rows in figures.items():
        print(f"\n{title}")
        for key, value in rows.items():
            print(f"  {key:<{width}}  {value}")


SCENARIOS = {
    "a": ("(a) client disconnects", client_disconnects),
    "b": ("(b) concurrent controllers", concurrent_controllers),
    "e": ("(e) Prometheus outage", prometheus_outage),
    "c": ("(c) Redis restart with persistence", lambda c: redis_restart(c, persistent=True)),
    "d": ("(d) Redis restart without persistence", lambda c: redis_restart(c, persistent=False)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=[*SCENARIOS, "h"], help="scenarios to run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    chosen = args.only or [*SCENARIOS, "h"]
    figures: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="graylayer-faults-") as home:
        if any(key in SCENARIOS for key in chosen):
            with Cluster(Path(home)) as cluster:
                ready = time.monotonic() - started
                print(f"cluster ready in {ready:.1f} s: redis {cluster.redis.url}, "
                      f"replicas {', '.join(cluster.urls)}", flush=True)  # fmt: skip
                for key, (title, scenario) in SCENARIOS.items():
                    if key in chosen:
                        figures[title] = scenario(cluster)
                        print(f"{title}: done at {time.monotonic() - started:.0f} s", flush=True)
    if "h" in chosen:
        hang = store_hang()
        figures["(h) store hang"] = hang or {
            "figures": "benchmarks/faults_store_hang.py (with run()) is not there (yet)"
        }
    print_table(figures)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the servers on SIGTERM too
    raise SystemExit(main())
