"""Figures for a Redis Cluster deployment: Redis commands per request, memory per million users,
the controller's tick and a rollback with a million users, and a Sentinel failover under load.

Run from the repository root with the package installed (``pip install -e ".[redis]"``)::

    python benchmarks/cluster_figures.py                   # 20 000 users, then the failover
    python benchmarks/cluster_figures.py --users 1000000   # ~6 min, ~1 GB of Redis memory
    python benchmarks/cluster_figures.py --quick           # 2 000 users

It starts a private three-node Redis Cluster on loopback (``redis-server --cluster-enabled yes``
×3, ``redis-cli --cluster create``), and measures:

* Redis commands per request of a *returning* user (layer cached, session pinned) through a real
  ``GrayRouter`` over ``RedisStore(client=RedisCluster(...))``, counted on the servers (``INFO
  commandstats`` summed over the nodes, the evidence script's inner commands included, the
  cluster client's own ``CLUSTER``/``INFO`` calls left out), with and without a session id;
* with the plan's first layer opened by a real controller, ``--users`` users given what their
  first request leaves (profile, cached layer, session pin, evidence in the open step; per-user
  keys streamed to their nodes with ``redis-cli --pipe``, evidence through the store's own
  evidence script): Redis memory per user from ``MEMORY USAGE`` on a sample of each kind of
  key and from ``INFO memory`` before and after;
* the controller's tick with those users in the active layer (it judges the arms' totals and
  holds while the step bakes), and a rollback with its cleanup (the candidate's sessions moved);
* unless ``--no-failover``: the Sentinel failover under load of
  ``tests/integration/_failover.py`` (requests failed, seconds until writes succeed again,
  duplicate controller actions).

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
from redis.crc import key_slot

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


def _command(*parts: str) -> bytes:
    """One command in the Redis protocol (RESP), as ``redis-cli --pipe`` reads it."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _slot_owners(client: Any) -> list[int]:
    """The port of the node serving each of the 16384 slots."""
    owners = [0] * 16384
    for (first, last), node in client.cluster_slots().items():
        owners[first : last + 1] = [int(node["primary"][1])] * (last - first + 1)
    return owners


def populate(
    client: Any, store: RedisStore, plan_id: str, arm: tuple[str, str], users: int, ratio: float
) -> tuple[float, float]:
    """Give ``users`` users a profile, a cached layer, a session pin and evidence in ``arm``
    (layer, step), a ``ratio`` of them on the candidate, as their first requests would.

    The per-user keys are streamed to the node that owns each key's slot through
    ``redis-cli --pipe``; the evidence goes through ``RedisStore.add_evidence`` in batches of
    5 000 users, so the arm's totals are the evidence script's own. Keys and values are the
    store's (``redis_layout``), checked on a sample afterwards. Returns the seconds each took.
    """
    layer, step = arm
    rng = random.Random(7)
    cached = LayerAssignment(layer, LayerReason.SCORE, 0.41).encode()
    owners = _slot_owners(client)
    pipes = {
        port: subprocess.Popen(
            ["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for port in set(owners)
    }  # fmt: skip
    deltas: list[UnitDelta] = []
    index = f"graylayer:{{{plan_id}}}:candidate-pins"  # see redis_layout
    began = time.monotonic()
    for n in range(users):
        user = f"user-{n:07d}"
        version = Version.CANDIDATE if rng.random() < ratio else Version.STABLE
        profile = UserProfile(use_count=rng.randint(1, 90), user_value=rng.uniform(0, 500))
        pin = SessionPin(version, layer, time.time(), user)
        conversation = f"{user}:chat-{n}"
        writes = [
            (f"graylayer:profile:{user}", ("SET", profile.model_dump_json())),
            (f"graylayer:layer:{user}", ("HSET", plan_id, cached)),
            (f"graylayer:layer:{user}", ("PEXPIRE", "86400000")),
            (f"graylayer:pin:{plan_id}:{conversation}", ("SET", pin.encode(), "PX", "3600000")),
        ]
        if version is Version.CANDIDATE:  # the plan's index of candidate pins, as pin_session
            expires = str(round(time.time() * 1000) + 3_600_000)
            writes.append((index, ("ZADD", expires, conversation)))
        for key, command in writes:
            stdin = pipes[owners[key_slot(key.encode())]].stdin
            assert stdin is not None
            stdin.write(_command(command[0], key, *command[1:]))
        counts = {"requests": 3.0, "completions": float(rng.choice((2, 3, 3, 3))),
                  "tool_calls": 2.0, "latency_seconds": rng.uniform(1, 5),
                  "input_tokens": 900.0, "output_tokens": 300.0}  # fmt: skip
        deltas.append(UnitDelta(ArmKey(layer, step, version.value), user, n % 5, counts))
    for port, process in pipes.items():
        out, _ = process.communicate(timeout=600)
        if process.returncode or b"errors: 0" not in out:
            raise RuntimeError(f"redis-cli --pipe to :{port} failed: {out.decode()[-300:]}")
    # As after one pin TTL of a deployment that indexes candidate pins: the index is complete.
    client.hset(f"graylayer:{{{plan_id}}}:candidate-pins-since", "complete", 0)
    keys = time.monotonic() - began
    began = time.monotonic()
    for start in range(0, users, 5000):
        store.add_evidence(plan_id, deltas[start : start + 5000])
    evidence = time.monotonic() - began
    last = f"user-{users - 1:07d}"
    assert store.get_cached_layer(plan_id, last) == LayerAssignment.decode(cached)
    assert store.get_pin(plan_id, f"{last}:chat-{users - 1}") is not None
    assert store.get_profile(last) is not None
    totals = store.read_evidence(plan_id, layer, step)
    assert sum(t.users for t in totals.values()) == users, totals
    return keys, evidence


def used_memory(ports: list[int]) -> int:
    """``INFO memory``'s ``used_memory``, summed over the nodes."""
    return sum(int(redis.Redis(port=p).info("memory")["used_memory"]) for p in ports)


def memory_per_user(
    client: Any, plan_id: str, arm: tuple[str, str], users: int
) -> dict[str, float]:
    """Bytes per user of each kind of key, from ``MEMORY USAGE`` on a sample of 500 users."""
    sample = random.Random(3).sample(range(users), min(users, 500))

    def usage(keys: list[str]) -> float:
        return statistics.mean(int(client.memory_usage(k, samples=0)) for k in keys)

    arms = [
        f"graylayer:{{ev:{plan_id}:{arm[0]}:{arm[1]}:{v.value}}}:users" for v in Version
    ]  # see redis_layout
    return {
        "profile": usage([f"graylayer:profile:user-{n:07d}" for n in sample]),
        "layer cache (one plan)": usage([f"graylayer:layer:user-{n:07d}" for n in sample]),
        "session pin": usage([f"graylayer:pin:{plan_id}:user-{n:07d}:chat-{n}" for n in sample]),
        "evidence (one arm)": sum(int(client.memory_usage(k, samples=0) or 0) for k in arms)
        / users,
    }


def time_ticks(store: RedisStore, plan: RolloutPlan, ticks: int) -> tuple[list[float], str]:
    """Seconds of each of ``ticks`` controller ticks judging the active layer (baking: the
    judge computes every guardrail, then holds), and the last verdict's reason."""
    controller = RolloutController(plan=plan, store=store, holder="bench")
    times = []
    for _ in range(ticks):
        began = time.perf_counter()
        controller.step()
        times.append(time.perf_counter() - began)
    state = controller.status()["layers"][0]
    return times, str(state["last_reason"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--users", type=int, default=20_000, help="users in the memory and tick figures"
    )
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 000 users")
    parser.add_argument("--no-failover", action="store_true", help="skip the Sentinel failover")
    args = parser.parse_args()
    users = 2000 if args.quick else args.users
    if shutil.which("redis-server") is None:
        print("redis-server not found: apt-get install -y redis-server", file=sys.stderr)
        return 1
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

        # A rollout as the controller runs it: the first layer open at its first step, and
        # every user's first request already served (cached layer, pin, evidence).
        opened = RolloutController(plan=plan, store=store, holder="bench").step()
        assert [e.action for e in opened] == ["start_layer"], opened
        layer = layers[0]
        arm = (layer, store.get_steps(plan.id)[layer])
        ratio = store.get_ratio(plan.id, layer)
        before = used_memory(ports)
        fill = populate(client, store, plan.id, arm, users, ratio)
        grown = (used_memory(ports) - before) / users
        memory = memory_per_user(client, plan.id, arm, users)
        ticks, verdict = time_ticks(store, plan, args.ticks)
        reads = []
        for _ in range(args.ticks):
            began = time.perf_counter()
            store.read_evidence(plan.id, *arm)
            reads.append(time.perf_counter() - began)
        began = time.monotonic()
        controller = RolloutController(plan=plan, store=store, holder="bench")
        controller.rollback("bench", operator="bench")
        rollback = time.monotonic() - began
        report = controller.last_rollback_report
        moved = 0 if report is None else len(report.sessions_moved)
        client.close()
    print(
        f"three-node Redis Cluster on loopback; {users} users (per-user keys written in "
        f"{fill[0]:.0f} s through redis-cli --pipe, evidence in {fill[1]:.0f} s through the "
        f"evidence script: {fill[1] / users * 1e6:.0f} µs per user)"
    )
    print("| measure | value |\n|---|---|")
    print(f"| Redis commands per request, returning user (layer cached) | {by_user:.2f} |")
    print(f"| Redis commands per request, returning user in a pinned session | {by_session:.2f} |")
    memory["all of the above"] = sum(memory.values())
    for kind, size in memory.items():
        million = size * 1e6 / 2**20
        print(f"| Redis memory per user: {kind} | {size:.0f} B ({million:.0f} MiB per million) |")
    million = grown * 1e6 / 2**20
    print(f"| INFO used_memory growth per user | {grown:.0f} B ({million:.0f} MiB per million) |")
    print(
        f"| controller tick, {users} users in the active layer (median / max of {len(ticks)}) "
        f"| {statistics.median(ticks) * 1e3:.1f} / {max(ticks) * 1e3:.1f} ms |"
    )
    read = statistics.median(reads) * 1e3
    print(f"| of which reading the layer's evidence (median) | {read:.1f} ms |")
    print(f"| rollback with its cleanup ({moved} candidate sessions moved) | {rollback:.1f} s |")
    print(f"\nthe ticks' verdict: {verdict}")
    if not args.no_failover:
        failover()
    return 0


def failover() -> None:
    """The Sentinel failover under load of ``tests/integration/_failover.py``, with its figures."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
    from _failover import failover_under_load  # type: ignore[import-not-found]

    binary = shutil.which("redis-server")
    with tempfile.TemporaryDirectory() as tmp:
        run = failover_under_load(str(binary), Path(tmp), seconds=14.0, max_requests=6000)
    counts = {k: sum(c[k] for c in run.router_counts) for k in ("degraded", "stale")}
    print("\nSentinel failover under load (primary + replica + sentinel on loopback,")
    print(
        "down-after-milliseconds 1000; 2 routers × 2 threads, 2 controllers ticking every 0.25 s)"
    )
    print("| measure | value |\n|---|---|")
    print(f"| requests sent / failed | {run.requests} / {len(run.failed)} |")
    print(f"| requests sent while the store was failing over | {run.requests_during} |")
    print(f"| served from the last known state / stable (degraded) | {counts['stale']} / "
          f"{counts['degraded']} |")  # fmt: skip
    print(f"| time from SIGKILL to the first successful write | {run.recovered:.1f} s |")
    print(f"| controller actions before the kill / in all | {run.actions_before_kill} / "
          f"{len(run.audit)} |")  # fmt: skip
    print(f"| duplicate controller actions in the audit log | {len(run.duplicates)} |")


if __name__ == "__main__":
    sys.exit(main())
