"""``CachedStore``'s background writer keeps writing: evidence and journal entries buffered at
any time reach the store within about a flush interval, without anyone calling ``flush()``.

Found by the fault suite (``benchmarks/faults.py``): two ``graylayer serve`` replicas on Redis
wrote the evidence of their first batch only, so the judge saw 1 candidate user of 22 and the
plan never moved.
"""

from __future__ import annotations

import time

from langchain_graylayer import MemoryStore
from langchain_graylayer.store.cached import CachedStore
from langchain_graylayer.store.evidence import ArmKey, UnitDelta


def _delta(user: str) -> UnitDelta:
    return UnitDelta(ArmKey("all", "0@1.000", "candidate"), user, 0, {"requests": 1.0})


def _users(store: MemoryStore) -> int:
    arm = store.read_evidence("p", "all", "0@1.000").get("candidate")
    return 0 if arm is None else arm.users


def test_the_writer_writes_every_batch_not_only_the_first() -> None:
    inner = MemoryStore()
    cached = CachedStore(inner, flush_interval=0.02)
    for batch in range(3):
        cached.add_evidence("p", [_delta(f"u{batch}")])
        cached.record_tool_call("p", f"call {batch}")
        deadline = time.monotonic() + 2.0
        while _users(inner) < batch + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _users(inner) == batch + 1, f"batch {batch} was never written"
        assert len(inner.tool_calls("p")) == batch + 1
