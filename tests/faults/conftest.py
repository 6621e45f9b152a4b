"""The fault suite's cluster (``benchmarks/faults.py``): a real redis-server and two real
``graylayer serve`` replicas on loopback, shared by the tests of this folder."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if shutil.which("redis-server") is None:
        message = "redis-server not found; install it with: apt-get install -y redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must not skip the fault suite)")
        pytest.skip(message)
    import faults

    with faults.Cluster(tmp_path_factory.mktemp("faults")) as running:
        yield running
