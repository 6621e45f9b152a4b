"""Controllers on a real Redis: exactly one of several replicas acts; cleanup hooks on LangGraph."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from langchain_graylayer import RolloutPlan
from langchain_graylayer.rollout.cleanup import CheckpointerCleanup
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.store.redis import RedisStore

PLAN = RolloutPlan.default("refund-v2")


def controller(store: RedisStore, holder: str, **kw: Any) -> RolloutController:
    return RolloutController(plan=PLAN, store=store, holder=holder, **kw)


def test_two_replicas_never_both_act(make_redis_store: Callable[..., RedisStore]) -> None:
    replicas = [controller(make_redis_store(), f"replica-{i}") for i in range(2)]
    acted: list[tuple[str, str]] = []
    lock = threading.Lock()

    def tick(replica: RolloutController) -> None:
        for _ in range(20):
            for entry in replica.step():
                with lock:
                    acted.append((replica.holder, entry.action))

    threads = [threading.Thread(target=tick, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {holder for holder, _ in acted} == {replicas[0].holder} or {
        holder for holder, _ in acted
    } == {replicas[1].holder}
    audit = replicas[0].audit()
    assert [e.action for e in audit].count("start_layer") == 1
    assert audit[0].layer == "early_adopter"


def test_a_crashed_leaders_lease_lapses_and_another_takes_over(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    leader = controller(make_redis_store(), "leader", lease_ttl=0.5)
    follower = controller(make_redis_store(), "follower", lease_ttl=0.5)
    assert [e.action for e in leader.step()] == ["start_layer"]
    assert follower.step() == []
    time.sleep(0.7)  # the leader crashed and stopped renewing
    follower.step()
    assert follower.status()["leader"] == "follower"
    assert leader.step() == []


def test_manual_actions_from_any_replica_are_serialised_and_audited(
    make_redis_store: Callable[..., RedisStore],
) -> None:
    leader = controller(make_redis_store(), "leader")
    admin = controller(make_redis_store(), "admin-api")
    leader.step()
    admin.pause(operator="alice", reason="legal review")
    assert leader.step() == []
    assert leader.status()["status"] == "paused"
    admin.resume(operator="alice")
    actions = [(e.operator, e.action) for e in leader.audit()]
    assert actions == [("controller", "start_layer"), ("alice", "pause"), ("alice", "resume")]


def test_checkpointer_cleanup_deletes_the_candidates_threads() -> None:
    def reply(state: MessagesState) -> dict[str, list[AIMessage]]:
        return {"messages": [AIMessage("refund approved")]}

    saver = InMemorySaver()
    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    graph = builder.compile(checkpointer=saver)
    for thread in ("t-candidate", "t-other"):
        graph.invoke(
            {"messages": [HumanMessage("refund?")]}, {"configurable": {"thread_id": thread}}
        )
    CheckpointerCleanup(saver)(["t-candidate"])
    assert saver.get_tuple({"configurable": {"thread_id": "t-candidate"}}) is None
    assert saver.get_tuple({"configurable": {"thread_id": "t-other"}}) is not None
