"""The fault suite, small: client disconnects and concurrent controllers on a real cluster.

Two ``graylayer serve`` replicas on one redis-server (``benchmarks/faults.py``), real ``httpx``
clients on loopback, bounded loops; about 40 s, most of it the replicas' start.
"""

from __future__ import annotations

from typing import Any

import faults


def test_streams_cut_by_their_clients_are_no_candidate_errors_and_roll_nothing_back(
    cluster: Any,
) -> None:
    figures = faults.client_disconnects(cluster, streams=10, seconds=3.0)
    assert figures["streams cut by the client"] == 10
    assert figures["candidate errors"] == 0
    assert figures["candidate runs cancelled"] == 10
    assert figures["rollbacks"] == 0
    assert figures["steady requests served / failed"].endswith(" / 0")
    assert figures["status"] == "running"


def test_two_replicas_ticking_concurrently_take_each_step_once(cluster: Any) -> None:
    figures = faults.concurrent_controllers(cluster, seconds=6.0)
    # the plan moved while both ticked (so a duplicate could have happened), and none did
    assert figures["state-changing actions"] >= 2, figures["actions"]
    assert figures["duplicate controller actions"] == 0, figures["actions"]
    assert figures["requests served / failed"].endswith(" / 0")
    audit = cluster.audit()
    assert faults.duplicates(audit) == 0
    assert faults.duplicates([*audit, audit[0]]) == 1  # the count sees a repeated step
