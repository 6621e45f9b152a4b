"""What per-user evidence costs: Redis round trips and commands per request, memory per user.

Run from the repository root with the package installed (``pip install -e ".[redis]"``)::

    python benchmarks/evidence_cost.py            # 20 000 users, about 30 s
    python benchmarks/evidence_cost.py --users 2000 --quick

It starts a private ``redis-server`` on a free loopback port, and sends what a router records:
each request of a user adds one ``UnitDelta`` (requests, completions, tool calls, latency,
tokens...; a fifth of them also feedback) to the arm it was served by, in batches as the
``CachedStore`` background writer sends them (every 0.5 s, one ``EVALSHA`` per arm per batch).
It reports, per request, the network round trips and the commands Redis executed (from
``INFO commandstats``, so the Lua script's inner ``HINCRBYFLOAT`` s count), Redis memory per
user-arm (``used_memory`` before and after), the median time of a batch, and the same evidence
in a ``MemoryStore`` (``tracemalloc``). The baseline in the same run is the routing itself:
what a routed request already costs in Redis with a cold layer cache (``get_cached_layer`` +
``cache_layer`` + ``get_pin`` + ``pin_session``).

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
import tracemalloc
from typing import Any

import redis

from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.store.evidence import ArmKey, UnitDelta
from langchain_graylayer.store.memory import MemoryStore
from langchain_graylayer.store.protocols import SessionPin
from langchain_graylayer.store.redis import RedisStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def _deltas(rng: random.Random, users: int, requests: int) -> list[UnitDelta]:
    out = []
    for _ in range(requests):
        user = rng.randrange(users)
        version = "candidate" if user % 10 == 0 else "stable"  # a 10 % step, sticky
        counts = {
            "requests": 1.0, "completions": float(rng.random() < 0.85),
            "tool_calls": float(rng.randint(0, 6)), "latency_seconds": rng.uniform(0.5, 6),
            "input_tokens": float(rng.randint(200, 900)),
            "output_tokens": float(rng.randint(20, 200)),
        }  # fmt: skip
        if rng.random() < 0.03:
            counts["failures"] = 1.0
        if rng.random() < 0.2:
            counts["bad" if rng.random() < 0.05 else "good"] = 1.0
        key = ArmKey("normal", "0@1700000000.000", version)
        out.append(UnitDelta(key, f"{user:016x}", user % 5, counts))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--requests-per-user", type=float, default=2.5)
    parser.add_argument("--batch", type=int, default=200, help="requests per writer batch")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    users = 2000 if args.quick else args.users
    requests = round(users * args.requests_per_user)
    if shutil.which("redis-server") is None:
        print("redis-server not found: apt-get install -y redis-server", file=sys.stderr)
        return 1
    rng = random.Random(1)
    deltas = _deltas(rng, users, requests)
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = redis.Redis(port=port, decode_responses=True)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            store = RedisStore(client=client)
            # baseline: what routing a request with a cold cache already costs in Redis
            before = _commands(client)
            for i in range(1000):
                store.get_cached_layer("p", f"u{i}")
                store.cache_layer("p", f"u{i}", LayerAssignment("normal", LayerReason.SCORE), 60)
                store.get_pin("p", f"s{i}")
                store.pin_session("p", f"s{i}", SessionPin(Version.STABLE, "normal", 0.0), 60)
            routing = (_commands(client) - before) / 1000
            client.flushall()
            memory0 = int(client.info("memory")["used_memory"])
            before = _commands(client)
            times = []
            for start in range(0, len(deltas), args.batch):
                began = time.perf_counter()
                store.add_evidence("p", deltas[start : start + args.batch])
                times.append(time.perf_counter() - began)
            evidence = (_commands(client) - before) / len(deltas)
            memory = int(client.info("memory")["used_memory"]) - memory0
            arms = store.read_evidence("p", "normal", "0@1700000000.000")
            seen = sum(arm.users for arm in arms.values())
        finally:
            server.terminate()
            server.wait(5)
    tracemalloc.start()
    memory_store = MemoryStore()
    for start in range(0, len(deltas), args.batch):
        memory_store.add_evidence("p", deltas[start : start + args.batch])
    in_process = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    batches = len(times)
    print(f"{requests} requests of {seen} users (of {users}) in {batches} batches of "
          f"{args.batch}")  # fmt: skip
    print("| measure | value |\n|---|---|")
    print(f"| round trips per request (evidence) | {2 / args.batch:.4f} (one pipeline of one "
          "EVALSHA per arm, per batch) |")  # fmt: skip
    print(f"| Redis commands per request, routing with a cold cache (baseline) | {routing:.1f} |")
    print(
        f"| Redis commands per request, evidence (inside the script) | {evidence:.1f} "
        f"(× {evidence / routing:.1f} the baseline, server-side, off the request path) |"
    )
    print(
        f"| Redis memory per user-arm | {memory / seen:.0f} B "
        f"(≈ {memory / seen * 1e6 / 2**20:.0f} MiB per million users per step) |"
    )
    print(f"| MemoryStore memory per user-arm | {in_process / seen:.0f} B |")
    print(
        f"| median batch time | {statistics.median(times) * 1e3:.2f} ms "
        f"({statistics.median(times) / args.batch * 1e6:.0f} µs per request, on the writer "
        "thread) |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
