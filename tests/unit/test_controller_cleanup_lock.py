"""A rollback's cleanup of many sessions outlasts the 10 s write lock: the controller renews it
while it works, and its last write never undoes what another writer did meanwhile."""

from __future__ import annotations

from typing import Any

from langchain_graylayer import MemoryStore, RolloutPlan, Version
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.rollout.state import PlanStatus
from langchain_graylayer.store.protocols import SessionPin, conversation_key

PLAN = RolloutPlan.from_dict(
    {"id": "refund-v2", "layers": [{"name": "all", "members": ["u0"], "steps": [0.5, 1.0]}]}
)
WRITE_LOCK = "write:refund-v2"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class SlowRepins(MemoryStore):
    """A MemoryStore whose every repin takes ``seconds`` of the shared clock, and which notes,
    at each ``watch``-th repin, who holds the write lock."""

    def __init__(self, clock: Clock, seconds: float, watch: int) -> None:
        super().__init__(clock=clock)
        self.clock, self.seconds, self.watch = clock, seconds, watch
        self.repins, self.holders = 0, []

    def repin_session(self, *args: Any, **kw: Any) -> None:
        self.clock.now += self.seconds
        super().repin_session(*args, **kw)
        self.repins += 1
        if self.repins % self.watch == 0:
            self.holders.append(self.lease_holder(WRITE_LOCK))


def candidate_sessions(store: MemoryStore, clock: Clock, count: int) -> None:
    for n in range(count):
        pin = SessionPin(Version.CANDIDATE, "all", clock.now, f"u{n}")
        store.pin_session(PLAN.id, conversation_key(f"u{n}", f"s{n}"), pin, 86400)


def test_the_write_lock_is_held_through_a_cleanup_longer_than_it_lasts() -> None:
    clock = Clock()
    store = SlowRepins(clock, seconds=0.1, watch=50)  # 600 sessions: 60 s of cleanup
    controller = RolloutController(plan=PLAN, store=store, clock=clock, holder="a")
    controller.step()
    candidate_sessions(store, clock, 600)

    controller.rollback("complaints", operator="carol")

    assert store.repins == 600
    assert len(store.holders) == 12
    assert all(str(holder).startswith("a:") for holder in store.holders), store.holders
    assert store.lease_holder(WRITE_LOCK) is None  # released at the end


def test_a_restart_made_while_the_cleanup_ran_is_kept() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    other = RolloutController(plan=PLAN, store=store, clock=clock, holder="b")

    class SlowHook:
        name = "slow"

        def __call__(self, session_ids: Any) -> None:
            clock.now += 11  # the lock lapses (say a hook deleting thousands of threads) ...
            other.restart(operator="dave", reason="fixed")  # ... and a human acts meanwhile

    controller = RolloutController(
        plan=PLAN, store=store, clock=clock, holder="a", cleanup_hooks=[SlowHook()]
    )
    controller.step()
    candidate_sessions(store, clock, 3)

    controller.rollback("complaints", operator="carol")

    actions = [entry.action.value for entry in controller.audit()]
    assert actions[-3:] == ["rollback", "restart", "cleanup"]
    assert controller.status()["status"] == PlanStatus.RUNNING.value  # dave's restart stands
    assert controller.step()[0].action.value == "start_layer"  # and the next tick follows it
