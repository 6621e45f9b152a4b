"""Start a real server process on a free loopback port, wait until it answers, stop it.

Shared by the integration fixtures (Redis today, Prometheus next), so each fixture only says
which command to run and how to tell that the server is ready.
"""

from __future__ import annotations

import os
import random
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["ManagedProcess", "can_ping_redis", "free_port", "serve_app_process", "wait_until"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, below the ephemeral range.

    A port the OS picks (bind to 0) is an ephemeral one, and between this check and the server's
    bind any outgoing connection on the machine may take it ("address already in use" under
    load). Ports in 20000-32767 are never handed out to outgoing connections on Linux.
    """
    low, high = _port_range()
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _port_range() -> tuple[int, int]:
    """20000-32767, or this pytest-xdist worker's own slice of it, so two workers never try
    the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    span = (32_768 - 20_000) // max(count, 1)
    low = 20_000 + span * (int(worker) % max(count, 1) if worker.isdigit() else 0)
    return low, low + span


def can_ping_redis(url: str) -> bool:
    """Whether the Redis server at ``url`` answers ``PING`` within 0.2 s."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Call ``predicate`` until it returns true.

    Raises:
        TimeoutError: naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} was not ready after {timeout:g} s")
        time.sleep(interval)


class ManagedProcess:
    """A server process that is ready inside the ``with`` block and gone after it.

    Its stdout and stderr go to a file (a pipe nobody reads could fill and block the server);
    :meth:`output` returns them for error messages.

    Example:
        >>> port = free_port()
        >>> with ManagedProcess(["redis-server", "--port", str(port)], name="redis",
        ...                     ready=lambda: can_ping(port)):  # doctest: +SKIP
        ...     ...
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        name: str,
        ready: Callable[[], bool],
        timeout: float = 10.0,
        stop_timeout: float = 5.0,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env``: the process's whole environment (``None``: this process's)."""
        self.args = list(args)
        self.env = None if env is None else dict(env)
        self.name = name
        self.ready = ready
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self.cwd = cwd
        self._log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - closed in stop()
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ManagedProcess:
        self._process = subprocess.Popen(
            self.args, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(self._ready_or_dead, self.timeout, self.name)
            if self._process.poll() is not None:
                raise RuntimeError(f"exited with code {self._process.returncode}")
        except (TimeoutError, RuntimeError) as exc:
            output = self.output()
            self.stop()
            raise RuntimeError(
                f"{self.name} failed to start ({exc}).\ncommand: {shlex.join(self.args)}\n"
                f"output:\n{output or '(none)'}"
            ) from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The process id of the running server (to signal it, e.g. SIGSTOP for a hang)."""
        assert self._process is not None, f"{self.name} is not running"
        return self._process.pid

    def _ready_or_dead(self) -> bool:
        assert self._process is not None
        return self._process.poll() is not None or self.ready()

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """Terminate the process; kill it if it has not exited after ``stop_timeout`` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()


def serve_app_process(settings: Mapping[str, str], *, timeout: float) -> tuple[str, ManagedProcess]:
    """``tests/integration/_serve_app.py`` under ``python -m uvicorn`` on a loopback port, with
    ``settings`` in its environment (and no ``REDIS_URL``): its URL, and the process, not yet
    started (entering it starts it and waits until the agent's schema answers)."""
    import sys

    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/agent/input_schema", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    uvicorn = [sys.executable, "-m", "uvicorn", "_serve_app:app", "--app-dir", "tests/integration"]
    uvicorn += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    # `env` sets the server's environment without touching this process's (tests run meanwhile).
    args = ["env", "-u", "REDIS_URL", *(f"{k}={v}" for k, v in settings.items()), *uvicorn]
    root = Path(__file__).resolve().parents[2]
    return url, ManagedProcess(args, name="uvicorn", ready=ready, timeout=timeout, cwd=root)
