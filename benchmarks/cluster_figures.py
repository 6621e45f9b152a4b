"""Figures for a Redis Cluster deployment: Redis commands per request, memory per million users.

Run from the repository root with the package installed (``pip install -e ".[redis]"``)::

    python benchmarks/cluster_figures.py             # 20 000 users, about a minute
    python benchmarks/cluster_figures.py --quick     # 2 000 users

It starts a private three-node Redis Cluster on loopback (``redis-server --cluster-enabled yes``
×3, ``redis-cli --cluster create``), and measures:

* Redis commands per request of a *returning* user (layer cached, session pinned) through a real
  ``GrayRouter`` over ``RedisStore(client=RedisCluster(...))``, counted on the servers (``INFO
  commandstats`` summed over the nodes, the evidence script's inner commands included, the
  cluster client's own ``CLUSTER``/``INFO`` calls left out), with and without a session id;
* Redis memory per million users, from ``MEMORY USAGE`` on a sample of each kind of key (profile,
  layer cache, session pin) and on an arm's per-user evidence hash (divided by its users);
* the controller's tick time with that evidence in place (it reads each arm's totals, not the
  users, so it does not grow with them).

A script, not a test: nothing fails when the numbers move.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from langchain_core.runnables import RunnableLambda
from redis.cluster import RedisCluster

from langchain_graylayer import GrayRouter, RolloutPlan
from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.store.evidence import ArmKey, UnitDelta
from langchain_graylayer.store.protocols import SessionPin
from langchain_graylayer.store.redis import RedisStore

STEP = "0@1700000000.000"


def _pair_free(port: int) -> bool:
    try:
        for candidate in (port, port + 10000):  # the cluster bus listens 10000 higher
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", candidate))
    except OSError:
        return False
    return True


def _wait(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.05)


@contextmanager
def cluster(tmp: Path) -> Iterator[list[int]]:
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < 3:
        port = rng.randrange(20000, 55000)
        if _pair_free(port) and all(abs(port - p) not in (0, 10000) for p in ports):
            ports.append(port)
    servers = []
    try:
        for port in ports:
            (tmp / str(port)).mkdir()
            servers.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp / str(port)), "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for port in ports:
            _wait(redis.Redis(port=port).ping, f"node {port}")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        for port in ports:
            node = redis.Redis(port=port, decode_responses=True)
            _wait(
                lambda n=node: "cluster_state:ok" in str(n.execute_command("CLUSTER", "INFO")),
                "slots",
            )
        yield ports
    finally:
        for server in servers:
            server.terminate()
            server.wait(5)


def commands(ports: list[int]) -> int:
    """Commands the nodes executed so far, without the client's own topology and INFO calls."""
    total = 0
    for port in ports:
        stats: dict[str, Any] = redis.Redis(port=port).info("commandstats")
        skip = ("cmdstat_info", "cmdstat_cluster")
        total += sum(int(v["calls"]) for k, v in stats.items() if not k.startswith(skip))
    return total


def per_request(ports: list[int], router: GrayRouter[Any, Any], configs: list[Any]) -> float:
    for config in configs:  # first visits: score, cache the layer, pin the session
        router.invoke("where is my refund?", config)
    time.sleep(1.5)  # the background writer sends the evidence every 0.5 s
    before = commands(ports)
    for config in configs:
        router.invoke("where is my refund?", config)
    time.sleep(1.5)
    return (commands(ports) - before) / len(configs)


def memory_per_user(
    client: Any, store: RedisStore, users: int, rng: random.Random
) -> dict[str, float]:
    plan_id = "refund-v2"
    for start in range(0, users, 500):
        deltas = []
        for n in range(start, min(users, start + 500)):
            user = f"user-{n:07d}"
            store.put_profile(
                user, UserProfile(use_count=rng.randint(1, 90), user_value=rng.uniform(0, 500))
            )
            store.cache_layer(
                plan_id, user, LayerAssignment("normal", LayerReason.SCORE, 0.41), 86400
            )
            store.pin_session(
                plan_id, f"chat-{user}", SessionPin(Version.CANDIDATE, "normal", time.time()), 3600
            )
            counts = {"requests": 3.0, "completions": 3.0, "tool_calls": 2.0,
                      "latency_seconds": rng.uniform(1, 5), "input_tokens": 900.0,
                      "output_tokens": 300.0}  # fmt: skip
            deltas.append(UnitDelta(ArmKey("normal", STEP, "candidate"), user, n % 5, counts))
        store.add_evidence(plan_id, deltas)
    sample = rng.sample(range(users), min(users, 500))

    def usage(keys: list[str]) -> float:
        return statistics.mean(int(client.memory_usage(k, samples=0)) for k in keys)

    users_key = f"graylayer:{{ev:{plan_id}:normal:{STEP}:candidate}}:users"  # see redis_layout
    return {
        "profile": usage([f"graylayer:profile:user-{n:07d}" for n in sample]),
        "layer cache (one plan)": usage([f"graylayer:layer:user-{n:07d}" for n in sample]),
        "session pin": usage([f"graylayer:pin:{plan_id}:chat-user-{n:07d}" for n in sample]),
        "evidence (one arm)": int(client.memory_usage(users_key, samples=0)) / users,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    users = 2000 if args.quick else args.users
    if shutil.which("redis-server") is None:
        print("redis-server not found: apt-get install -y redis-server", file=sys.stderr)
        return 1
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp)) as ports:
        client = RedisCluster(host="127.0.0.1", port=ports[0], decode_responses=True)
        store = RedisStore(client=client)
        plan = RolloutPlan.default("refund-v2")
        layers = plan.layer_names
        store.commit(plan.id, ratios=dict.fromkeys(layers, 0.5), state="{}", audit=[],
                     steps=dict.fromkeys(layers, STEP))  # fmt: skip
        router: GrayRouter[Any, Any] = GrayRouter(
            stable=RunnableLambda(lambda q: f"v1: {q}"),
            candidate=RunnableLambda(lambda q: f"v2: {q}"),
            plan=plan,
            store=store,
            instrument=False,
            journal_tool_calls=False,
        )
        returning = [{"configurable": {"user_id": f"r{n}"}} for n in range(1000)]
        in_session = [
            {"configurable": {"user_id": f"s{n}", "session_id": f"c{n}"}} for n in range(1000)
        ]
        by_user = per_request(ports, router, returning)
        by_session = per_request(ports, router, in_session)
        for port in ports:
            redis.Redis(port=port).flushall()
        memory = memory_per_user(client, store, users, rng)
        store.commit(plan.id, ratios=dict.fromkeys(layers, 0.0), state="{}", audit=[])
        controller = RolloutController(plan=plan, store=store, holder="bench")
        ticks = []
        for _ in range(20):
            began = time.perf_counter()
            controller.step()
            ticks.append(time.perf_counter() - began)
        client.close()
    print(f"three-node Redis Cluster on loopback; {users} users for the memory sample")
    print("| measure | value |\n|---|---|")
    print(f"| Redis commands per request, returning user (layer cached) | {by_user:.2f} |")
    print(f"| Redis commands per request, returning user in a pinned session | {by_session:.2f} |")
    memory["all of the above"] = sum(memory.values())
    for kind, size in memory.items():
        million = size * 1e6 / 2**20
        print(f"| Redis memory per user: {kind} | {size:.0f} B ({million:.0f} MiB per million) |")
    print(f"| controller tick (median of 20) | {statistics.median(ticks) * 1e3:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
