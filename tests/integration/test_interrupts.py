"""Human-in-the-loop candidates behind GrayRouter: a LangGraph ``interrupt()`` is not a failure.

The candidate is a real ``create_agent`` agent whose refund tool asks a person with
``interrupt()``, or a plain ``StateGraph`` node that does, with LangGraph's ``InMemorySaver``; the
resume is ``Command(resume=...)`` on the same thread. The interrupt must reach the caller (never
stable's answer), count as ``interrupted`` (never an error, never evidence for the judge), and the
thread must resume on the version it was interrupted on, even after the ratio fell to 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
from typing import Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphInterrupt, ParentCommand
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from prometheus_client import CollectorRegistry

from langchain_graylayer import (
    GraylayerMetrics,
    GrayRouter,
    MemoryStore,
    RolloutController,
    RolloutPlan,
    Version,
)
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

PLAN = RolloutPlan.from_dict(
    {
        "id": "refund-v2",
        "layers": [{"name": "everyone", "score_range": [0, 1], "steps": [0.5, 1.0]}],
        "default_layer": "everyone",
    }
)
QUESTION = {"messages": [("user", "Please refund order A-1.")]}
STABLE_ANSWER = "[v1] Refunds open once the order arrives."
CANDIDATE_ANSWER = "[v2] Your refund is on its way."


@tool
def issue_refund(order_id: str) -> str:
    """Refund an order, once a person approved it."""
    decision = interrupt({"approve_refund": order_id})
    return f"refund of {order_id}: {decision}"


@tool
def lookup_order(order_id: str) -> str:
    """Return the shipping status of an order."""
    return f"order {order_id} is shipped"


def stable_agent() -> Any:
    model = ScriptedChatModel(script=calls_then_answers(["lookup_order"], STABLE_ANSWER))
    return create_agent(model=model, tools=[lookup_order], name="support_v1",
                        checkpointer=InMemorySaver())  # fmt: skip


def candidate_agent() -> Any:
    """v2 asks a person before it refunds (``interrupt()`` inside its tool)."""
    model = ScriptedChatModel(script=calls_then_answers(["issue_refund"], CANDIDATE_ANSWER))
    return create_agent(model=model, tools=[issue_refund], name="support_v2",
                        checkpointer=InMemorySaver())  # fmt: skip


class World:
    def __init__(self, stable: Any, candidate: Any) -> None:
        self.store = MemoryStore()
        self.registry = CollectorRegistry()
        self.router: GrayRouter[Any, Any] = GrayRouter(
            stable=stable, candidate=candidate, plan=PLAN, store=self.store,
            metrics=GraylayerMetrics(registry=self.registry),
        )  # fmt: skip
        RolloutController(plan=PLAN, store=self.store).step()  # "everyone" at 50%, a step open
        self.step = self.store.get_steps(PLAN.id)["everyone"]

    def user_on(self, version: Version) -> str:
        return next(
            u for u in (f"u{i}" for i in range(500)) if self.router.route(u).version is version
        )

    def requests(self, outcome: str, version: Version = Version.CANDIDATE) -> float:
        labels = {"plan": PLAN.id, "version": version.value, "layer": "everyone",
                  "outcome": outcome}  # fmt: skip
        return self.registry.get_sample_value("graylayer_requests_total", labels) or 0.0

    def evidence_requests(self, version: Version = Version.CANDIDATE) -> float:
        arm = self.store.read_evidence(PLAN.id, "everyone", self.step).get(version.value)
        return 0.0 if arm is None else arm.total("requests")


def last_text(output: Any) -> str:
    return str(output["messages"][-1].content)


def run(world: World, mode: str, input: Any, config: dict[str, Any]) -> list[Any]:
    """What the caller receives: one output (invoke) or the streamed chunks."""
    router = world.router
    if mode == "invoke":
        return [router.invoke(input, config)]
    if mode == "stream":
        return list(router.stream(input, config, stream_mode="values"))

    async def collect() -> list[Any]:
        return [chunk async for chunk in router.astream(input, config, stream_mode="values")]

    return asyncio.run(collect())


@pytest.mark.parametrize("mode", ["invoke", "stream", "astream"])
def test_an_interrupted_candidate_pauses_and_resumes_on_the_candidate(mode: str) -> None:
    world = World(stable_agent(), candidate_agent())
    user = world.user_on(Version.CANDIDATE)
    config = {"configurable": {"user_id": user, "thread_id": f"chat-{mode}"}}

    paused = run(world, mode, QUESTION, config)

    assert "__interrupt__" in paused[-1], paused  # the person is asked, not stable's answer
    assert paused[-1]["__interrupt__"][0].value == {"approve_refund": "A-1"}
    assert all(STABLE_ANSWER not in str(chunk) for chunk in paused)
    assert world.router.counts()["fallback"] == 0
    assert world.requests("interrupted") == 1
    assert world.requests("error") == world.requests("fallback") == world.requests("ok") == 0
    assert world.evidence_requests() == 0  # not a failure, not a completion: no evidence yet

    world.store.set_ratio(PLAN.id, "everyone", 0.0)  # the ratio falls while a person decides
    resumed = run(world, mode, Command(resume="approved"), config)

    assert last_text(resumed[-1]) == CANDIDATE_ANSWER
    assert "refund of A-1: approved" in str(resumed[-1]["messages"])
    assert world.requests("ok") == 1
    assert world.requests("error") == world.requests("fallback") == 0
    assert world.requests("ok", Version.STABLE) == 0


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_an_interrupt_no_chunk_shows_is_read_from_the_checkpointed_state(mode: str) -> None:
    """``stream_mode="messages"`` alone streams tokens, never ``__interrupt__``: the router asks
    the candidate's checkpointer whether the run paused."""
    world = World(stable_agent(), candidate_agent())
    config = {"configurable": {"user_id": world.user_on(Version.CANDIDATE), "thread_id": "m-1"}}
    router = world.router

    if mode == "stream":
        chunks = list(router.stream(QUESTION, config, stream_mode="messages"))
    else:

        async def collect() -> list[Any]:
            return [c async for c in router.astream(QUESTION, config, stream_mode="messages")]

        chunks = asyncio.run(collect())

    assert chunks  # the model's tool call, streamed
    assert world.requests("interrupted") == 1
    assert world.requests("ok") == world.requests("error") == 0
    assert world.evidence_requests() == 0
    resumed = list(router.stream(Command(resume="approved"), config, stream_mode="messages"))
    assert CANDIDATE_ANSWER in "".join(str(message.content) for message, _ in resumed)
    assert world.requests("ok") == 1


def approval_node(state: Ticket) -> Ticket:
    decision = interrupt({"approve_refund": state["question"]})
    return {"answer": f"{CANDIDATE_ANSWER} ({decision})"}


class Ticket(TypedDict, total=False):
    question: str
    answer: str


def ticket_graph(node: Any, **compile: Any) -> Any:
    graph = StateGraph(Ticket)
    graph.add_node("answer", node)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile(**compile)


@pytest.mark.parametrize("mode", ["invoke", "astream"])
def test_an_interrupt_bubbles_through_a_router_inside_a_parent_graph(mode: str) -> None:
    """The router as a node of a checkpointed parent graph: the candidate is a subgraph, and its
    ``GraphInterrupt`` must travel up through the router to the parent, untouched."""
    stable = ticket_graph(lambda state: {"answer": STABLE_ANSWER})
    world = World(stable, ticket_graph(approval_node))
    parent = ticket_graph(world.router, checkpointer=InMemorySaver())
    user = world.user_on(Version.CANDIDATE)
    config = {"configurable": {"user_id": user, "thread_id": "ticket-7"}}

    def call(input: Any) -> Any:
        if mode == "invoke":
            return parent.invoke(input, config)

        async def last() -> Any:
            chunks = [c async for c in parent.astream(input, config, stream_mode="values")]
            return chunks[-1]

        return asyncio.run(last())

    paused = call({"question": "refund A-1"})
    assert paused.get("answer") != STABLE_ANSWER
    assert paused["__interrupt__"][0].value == {"approve_refund": "refund A-1"}
    assert world.router.counts()["fallback"] == 0
    assert world.requests("interrupted") == 1
    assert world.requests("error") == world.requests("fallback") == 0
    assert world.evidence_requests() == 0

    world.store.set_ratio(PLAN.id, "everyone", 0.0)
    resumed = call(Command(resume="approved"))

    assert resumed["answer"] == f"{CANDIDATE_ANSWER} (approved)"
    assert world.requests("ok") == 1
    assert world.requests("ok", Version.STABLE) == 0


def call(router: GrayRouter[Any, Any], mode: str, config: dict[str, Any]) -> None:
    """Run a plain question through ``router`` the way ``mode`` says, to the end."""
    if mode == "invoke":
        router.invoke("refund?", config)
    elif mode == "ainvoke":
        asyncio.run(router.ainvoke("refund?", config))
    elif mode == "stream":
        list(router.stream("refund?", config))
    else:

        async def drain() -> None:
            async for _ in router.astream("refund?", config):
                pass

        asyncio.run(drain())


@pytest.mark.parametrize(
    "signal",
    [GraphInterrupt(()), ParentCommand(Command(graph=Command.PARENT, goto="elsewhere"))],
    ids=["GraphInterrupt", "ParentCommand"],
)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_langgraph_control_flow_passes_through_untouched(signal: Exception, mode: str) -> None:
    def candidate(question: str) -> str:
        raise signal

    world = World(RunnableLambda(lambda q: STABLE_ANSWER), RunnableLambda(candidate))
    user = world.user_on(Version.CANDIDATE)
    config = {"configurable": {"user_id": user, "session_id": "s1"}}

    with pytest.raises(type(signal)) as raised:
        call(world.router, mode, config)

    assert raised.value is signal
    assert world.router.counts()["fallback"] == 0
    assert world.requests("interrupted") == 1
    assert world.requests("error") == world.requests("fallback") == 0
    assert world.evidence_requests() == 0


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_a_cancelled_future_is_a_cancellation_not_a_candidate_failure(mode: str) -> None:
    """``concurrent.futures.CancelledError`` is an ``Exception`` (asyncio's is not): a run whose
    work was cancelled must neither fall back to stable nor count against the candidate."""

    def candidate(question: str) -> str:
        raise concurrent.futures.CancelledError()

    world = World(RunnableLambda(lambda q: STABLE_ANSWER), RunnableLambda(candidate))
    config = {"configurable": {"user_id": world.user_on(Version.CANDIDATE)}}

    with pytest.raises(concurrent.futures.CancelledError):
        call(world.router, mode, config)

    assert world.router.counts()["fallback"] == 0
    assert world.requests("cancelled") == 1
    assert world.requests("error") == world.requests("fallback") == 0
    assert world.evidence_requests() == 0


def test_a_real_candidate_failure_still_falls_back_to_stable() -> None:
    def candidate(question: str) -> str:
        raise ConnectionError("model endpoint unreachable")

    world = World(RunnableLambda(lambda q: STABLE_ANSWER), RunnableLambda(candidate))
    config = {"configurable": {"user_id": world.user_on(Version.CANDIDATE)}}
    assert world.router.invoke("refund?", config) == STABLE_ANSWER
    assert world.router.counts()["fallback"] == 1
    assert world.requests("fallback") == 1
    assert world.evidence_requests() == 1


def test_an_interrupted_answer_is_not_judged_complete() -> None:
    """The default completion judge never sees a paused run as a completed task."""
    world = World(stable_agent(), candidate_agent())
    config = {"configurable": {"user_id": world.user_on(Version.CANDIDATE), "thread_id": "t"}}
    world.router.invoke(QUESTION, config)
    completions = world.registry.get_sample_value(
        "graylayer_task_completions_total",
        {"plan": PLAN.id, "version": "candidate", "layer": "everyone"},
    )
    assert completions == 0
    assert isinstance(world.router.invoke(Command(resume="no"), config)["messages"][-1], AIMessage)


@pytest.mark.parametrize(
    ("value", "paused"),
    [
        ({"messages": [], "__interrupt__": ()}, True),  # invoke's state, stream "values"
        ({"__interrupt__": ()}, True),  # stream "updates"
        (("updates", {"__interrupt__": ()}), True),  # several stream modes
        ((("agent:1",), "updates", {"__interrupt__": ()}), True),  # subgraphs=True
        ({"type": "updates", "ns": (), "data": {"__interrupt__": ()}}, True),  # version="v2"
        ({"messages": []}, False),
        (("messages", {"langgraph_node": "model"}), False),
        ({"data": {"__interrupt__": ()}}, False),  # not a stream part
        ("__interrupt__", False),
        (None, False),
        ((1, 2, 3, {"__interrupt__": ()}), False),
    ],
)
def test_what_says_a_run_paused(value: Any, paused: bool) -> None:
    from langchain_graylayer.measuring.labels import carries_interrupt

    assert carries_interrupt(value) is paused


def test_a_paused_graph_output_of_version_v2_says_so() -> None:
    from langchain_graylayer.measuring.labels import carries_interrupt

    graph = ticket_graph(approval_node, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "v2"}}
    assert carries_interrupt(graph.invoke({"question": "q"}, config, version="v2"))
    done = graph.invoke(Command(resume="yes"), config, version="v2")
    assert not carries_interrupt(done)


def test_without_langgraph_a_candidate_failure_still_falls_back() -> None:
    """LangGraph stays optional: with it unimportable the router still tells failures apart."""
    code = (
        "import sys; sys.modules['langgraph'] = None\n"
        "from langchain_core.runnables import RunnableLambda\n"
        "from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan\n"
        "store = MemoryStore(); store.set_ratio('p', 'vip', 1.0)\n"
        "def broken(q): raise ConnectionError('down')\n"
        "router = GrayRouter(stable=RunnableLambda(lambda q: 'stable'),\n"
        "    candidate=RunnableLambda(broken), plan=RolloutPlan.default('p'), store=store,\n"
        "    instrument=False)\n"
        "answer = router.invoke('q', {'configurable': {'user_id': 'u1'}})\n"
        "print(answer, router.counts()['fallback'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["stable", "1"]


def test_an_interrupt_is_no_error_in_the_trace() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = MemoryStore()
    store.set_ratio(PLAN.id, "everyone", 1.0)
    router: GrayRouter[Any, Any] = GrayRouter(
        stable=ticket_graph(lambda state: {"answer": STABLE_ANSWER}),
        candidate=ticket_graph(approval_node),
        plan=PLAN, store=store, metrics=GraylayerMetrics(registry=CollectorRegistry()),
        tracer=provider.get_tracer("test"),
    )  # fmt: skip
    parent = ticket_graph(router, checkpointer=InMemorySaver())
    config = {"configurable": {"user_id": "u1", "thread_id": "traced"}}

    assert "__interrupt__" in parent.invoke({"question": "refund A-1"}, config)

    requests = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert len(requests) == 1
    assert requests[0].status.status_code is not StatusCode.ERROR
    assert requests[0].attributes["graylayer.interrupted"] is True
    assert "error.type" not in requests[0].attributes
