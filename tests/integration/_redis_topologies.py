"""A real three-node Redis Cluster and a Sentinel-managed primary on loopback, for the fixtures.

Each helper is a context manager that starts real ``redis-server`` processes on free ports,
waits (bounded) until the topology answers, yields what a client needs, and stops them all.
Cluster mode and ``--sentinel`` are in the same binary as the plain server.
"""

from __future__ import annotations

import random
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from _servers import ManagedProcess, free_port, wait_until

__all__ = ["SENTINEL_SERVICE", "redis_cluster", "redis_sentinel"]

SENTINEL_SERVICE = "graylayer-primary"
"""The name the sentinel monitors the primary under (``Sentinel.master_for(...)``)."""


def _answers(port: int, *command: str, expect: str = "") -> bool:
    import redis

    client = redis.Redis(port=port, socket_timeout=0.3, socket_connect_timeout=0.3)
    try:
        reply = client.execute_command(*command) if command else client.ping()
        return expect in str(reply) if expect else bool(reply)
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _cluster_port(rng: random.Random) -> int:
    """A free port whose cluster bus port (+10000) is free too; both must stay below 65536."""
    for _ in range(200):
        port = rng.randrange(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair (P, P + 10000) for a cluster node on 127.0.0.1")


def _server(binary: str, port: int, data_dir: Path, *extra: str) -> ManagedProcess:
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", str(data_dir), *extra]
    return ManagedProcess(args, name=f"redis-server :{port}", ready=lambda: _answers(port))


@contextmanager
def redis_cluster(binary: str, data_dir: Path, nodes: int = 3) -> Iterator[list[int]]:
    """``nodes`` primaries (no replicas) sharing the 16384 slots; yields their ports."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < nodes:  # distinct ports whose bus ports are distinct from them too
        port = _cluster_port(rng)
        if all(abs(port - p) not in (0, 10000) for p in ports):
            ports.append(port)
    with ExitStack() as stack:
        for port in ports:
            node_dir = data_dir / str(port)
            node_dir.mkdir()
            stack.enter_context(
                _server(binary, port, node_dir, "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
            )  # fmt: skip
        cli = str(Path(binary).with_name("redis-cli"))
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        for port in ports:
            wait_until(
                lambda p=port: _answers(p, "CLUSTER", "INFO", expect="cluster_state:ok"),
                timeout=15, what=f"cluster node :{port}",
            )  # fmt: skip
        yield ports


@contextmanager
def redis_sentinel(binary: str, data_dir: Path) -> Iterator[tuple[int, list[int]]]:
    """One primary, one replica and one sentinel; yields (sentinel port, [primary, replica])."""
    primary, replica, sentinel = free_port(), free_port(), free_port()
    with ExitStack() as stack:
        for port, extra in ((primary, ()), (replica, ("--replicaof", "127.0.0.1", str(primary)))):
            node_dir = data_dir / str(port)
            node_dir.mkdir()
            stack.enter_context(_server(binary, port, node_dir, *extra))
        wait_until(
            lambda: _answers(replica, "INFO", "replication", expect="'master_link_status': 'up'"),
            timeout=15, what="the replica's link to the primary",
        )  # fmt: skip
        config = data_dir / "sentinel.conf"  # the sentinel rewrites its own config file
        config.write_text(
            f"port {sentinel}\nbind 127.0.0.1\ndir {data_dir}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
        )
        stack.enter_context(
            ManagedProcess(
                [binary, str(config), "--sentinel"], name=f"redis-sentinel :{sentinel}",
                ready=lambda: _answers(
                    sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE,
                    expect=str(primary),
                ),
            )
        )  # fmt: skip
        yield sentinel, [primary, replica]
