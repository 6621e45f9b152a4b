"""Fixtures that run real servers on loopback: a ``redis-server`` for the Redis store tests,
a three-node Redis Cluster and a Sentinel-managed primary (see ``_redis_topologies``).

Without a ``redis-server`` binary the Redis tests are skipped locally (with the install hint)
and fail in CI (``CI=true``), where a skipped store test would hide a broken store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _redis_topologies import SENTINEL_SERVICE, redis_cluster, redis_sentinel
from _servers import ManagedProcess, can_ping_redis, free_port


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server not found; install it with: apt-get install -y redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must not skip the Redis tests)")
        pytest.skip(message)
    pytest.importorskip("redis", reason='pip install "langchain-graylayer[redis]"')
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port for the whole session; yields its URL."""
    binary = _redis_binary()
    port = free_port()
    data_dir: Path = tmp_path_factory.mktemp("redis")
    url = f"redis://127.0.0.1:{port}/0"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(data_dir)]
    with ManagedProcess(args, name="redis-server", ready=lambda: can_ping_redis(url), cwd=data_dir):
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis URL, emptied (FLUSHALL) before the test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server


@pytest.fixture
def make_redis_store(redis_url: str) -> Iterator[Callable[..., Any]]:
    """A factory of ``RedisStore`` instances on the test's (empty) server, closed afterwards.

    ``make_redis_store()`` connects by URL; pass ``url=`` or ``client=`` and any other keyword
    of :class:`RedisStore` to override.
    """
    from langchain_graylayer.store.redis import RedisStore

    stores: list[RedisStore] = []

    def make(**kwargs: Any) -> RedisStore:
        if "client" not in kwargs:
            kwargs.setdefault("url", redis_url)
        store = RedisStore(**kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture(scope="session")
def redis_cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """A real three-node Redis Cluster on loopback for the whole session; yields its ports."""
    binary = _redis_binary()
    with redis_cluster(binary, tmp_path_factory.mktemp("redis-cluster")) as ports:
        yield ports


@pytest.fixture
def make_cluster_store(redis_cluster_ports: list[int]) -> Iterator[Callable[..., Any]]:
    """A factory of ``RedisStore`` instances on the (emptied) cluster, closed afterwards.

    ``make_cluster_store()`` passes a ``RedisCluster`` client; keywords go to ``RedisStore``
    (``url="redis+cluster://..."`` for a store that builds its own).
    """
    import redis
    from redis.cluster import RedisCluster

    from langchain_graylayer.store.redis import RedisStore

    for port in redis_cluster_ports:  # every node is a primary: empty each
        node = redis.Redis(port=port)
        try:
            node.flushall()
        finally:
            node.close()
    clients: list[Any] = []
    stores: list[RedisStore] = []

    def make(**kwargs: Any) -> RedisStore:
        if "client" not in kwargs and "url" not in kwargs:
            client = RedisCluster(host="127.0.0.1", port=redis_cluster_ports[0],
                                  decode_responses=True)  # fmt: skip
            clients.append(client)
            kwargs["client"] = client
        store = RedisStore(**kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()  # closes the clients URL stores built; a client= stays open
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def redis_sentinel_ports(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, list[int]]]:
    """A primary, a replica and a sentinel on loopback; yields (sentinel, [primary, replica])."""
    binary = _redis_binary()
    with redis_sentinel(binary, tmp_path_factory.mktemp("redis-sentinel")) as ports:
        yield ports


@pytest.fixture
def make_sentinel_store(
    redis_sentinel_ports: tuple[int, list[int]],
) -> Iterator[Callable[..., Any]]:
    """A factory of ``RedisStore`` instances on the Sentinel-managed primary (emptied first)."""
    from redis.sentinel import Sentinel

    from langchain_graylayer.store.redis import RedisStore

    sentinel = Sentinel([("127.0.0.1", redis_sentinel_ports[0])], socket_timeout=1.0)
    primary = sentinel.master_for(SENTINEL_SERVICE, decode_responses=True, socket_timeout=1.0)
    primary.flushall()

    def make(**kwargs: Any) -> RedisStore:
        kwargs.setdefault("client", primary)
        return RedisStore(**kwargs)

    yield make
    primary.close()
    for client in sentinel.sentinels:
        client.close()
