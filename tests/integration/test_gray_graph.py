"""``gray_graph`` in process: the graph the LangGraph server loads, run with a real checkpointer
and real ``create_agent`` agents, configured as the server configures a run.

The same checks against a running ``langgraph dev`` are in ``test_langgraph_server.py``; these
are the quick ones, and the ones a server cannot show (what the router's children see).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command
from prometheus_client import CollectorRegistry

from langchain_graylayer import (
    ConfigurationError,
    GraylayerMetrics,
    GrayRouter,
    MemoryStore,
    RolloutPlan,
    RoutingDecision,
    Version,
)
from langchain_graylayer.langgraph_server import gray_graph
from langchain_graylayer.routing.context import DECISION_KEY
from langchain_graylayer.routing.decision import RouteReason
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

PLAN = RolloutPlan.from_dict(
    {"id": "p", "layers": [{"name": "everyone", "score_range": [0, 1]}],
     "default_layer": "everyone"}
)  # fmt: skip
QUESTION = {"messages": [("user", "refund order A-1")]}


@tool
def refund(order_id: str) -> str:
    """Refund an order."""
    return f"refunded {order_id}"


def agent(tag: str, approve: bool = False) -> Any:
    model = ScriptedChatModel(script=calls_then_answers(["refund"], f"[{tag}] done"))
    middleware = [HumanInTheLoopMiddleware({"refund": True})] if approve else []
    return create_agent(model=model, tools=[refund], middleware=middleware, name=tag)


def world(ratio: float, approve: bool = False) -> tuple[GrayRouter[Any, Any], Any, MemoryStore]:
    store = MemoryStore()
    store.set_ratio(PLAN.id, "everyone", ratio)
    router = GrayRouter(
        stable=agent("v1"), candidate=agent("v2", approve), plan=PLAN, store=store,
        metrics=GraylayerMetrics(registry=CollectorRegistry()),
    )  # fmt: skip
    graph = gray_graph(router)
    graph.checkpointer = InMemorySaver()
    return router, graph, store


def server_config(user: str, thread: str, run_id: str = "run-1", **extra: Any) -> dict[str, Any]:
    """What the server puts in a run's configurable: its auth user, the thread, the client's own
    ``user_id`` (which must never be read)."""
    return {"configurable": {"langgraph_auth_user_id": user, "thread_id": thread,
                             "run_id": run_id, "user_id": "mallory", **extra}}  # fmt: skip


def test_the_server_user_decides_and_the_state_says_which_version() -> None:
    router, graph, _ = world(ratio=1.0)
    out = graph.invoke(QUESTION, server_config("alice", "t1"))
    assert out["messages"][-1].content == "[v2] done"
    assert out["graylayer"]["version"] == "candidate"
    assert out["graylayer"]["user_id"] == "alice"  # never mallory, the client's say-so
    # the run is recorded under the server's run id: feedback by it counts
    assert router.feedback("run-1", "good").version == "candidate"


def test_the_stream_starts_with_the_graylayer_event() -> None:
    _, graph, _ = world(ratio=0.0)
    chunks = list(graph.stream(QUESTION, server_config("alice", "t1"), stream_mode="custom"))
    assert chunks[0] == {"graylayer": {"version": "stable", "layer": "everyone",
                                       "reason": "out_of_ratio"}}  # fmt: skip


def test_an_interrupted_candidate_resumes_on_the_candidate_after_the_ratio_drops() -> None:
    router, graph, store = world(ratio=1.0, approve=True)
    paused = graph.invoke(QUESTION, server_config("alice", "t1"))
    assert paused["__interrupt__"]
    store.set_ratio(PLAN.id, "everyone", 0.0)
    resumed = graph.invoke(
        Command(resume={"decisions": [{"type": "approve"}]}),
        server_config("alice", "t1", run_id="run-2"),
    )
    assert resumed["messages"][-1].content == "[v2] done"
    assert resumed["graylayer"]["version"] == "candidate"
    # the resumed run gave the answer: feedback by its own run id counts under the candidate
    assert router.feedback("run-2", "good").version == "candidate"
    # a new thread of the same user now gets stable
    fresh = graph.invoke(QUESTION, server_config("alice", "t2", run_id="run-3"))
    assert fresh["graylayer"]["version"] == "stable"


def test_the_decision_does_not_leak_into_the_versions_config() -> None:
    seen: list[dict[str, Any]] = []

    def answer(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        seen.append(dict(config.get("configurable") or {}))
        return {"messages": [("ai", "ok")]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    version = builder.compile()
    router = GrayRouter(stable=version, candidate=version, plan=PLAN, instrument=False)
    gray_graph(router).invoke(QUESTION, server_config("alice", "t1"))
    assert seen
    assert DECISION_KEY not in seen[0]
    assert seen[0]["user_id"] == "alice"  # the router's children see the server's user


def test_with_decision_runs_the_decided_version_without_routing() -> None:
    router, _, store = world(ratio=0.0)
    decision = RoutingDecision(PLAN.id, Version.CANDIDATE, "everyone", RouteReason.IN_RATIO)
    out = router.with_decision(decision).invoke(
        QUESTION, {"configurable": {"user_id": "alice", "thread_id": "t9"}}
    )
    assert out["messages"][-1].content == "[v2] done"
    assert router.counts()["requests"] == 0  # nothing was routed
    assert store.get_pin(PLAN.id, "alice:t9") is None
    other = RoutingDecision("other-plan", Version.CANDIDATE, "everyone", RouteReason.IN_RATIO)
    with pytest.raises(ConfigurationError, match=r"decision\.plan_id"):
        router.with_decision(other)


def test_a_graph_of_another_kind_is_refused_clearly() -> None:
    from langchain_core.runnables import RunnableLambda

    router = GrayRouter(stable=RunnableLambda(str), candidate=RunnableLambda(str), plan=PLAN)
    with pytest.raises(ConfigurationError, match="compiled LangGraph"):
        gray_graph(router)
