"""Measured from the output or by the event handler: the same counts, on the same agents.

A ``GrayRouter`` over two LangGraph agents counts each request's tool calls, tool errors and
tokens from the messages the run returns or streams (``measure_from_output=True``, the default),
with no handler on the descendant runs. Each case below serves the same requests through two
routers over the same agents, one measured from the output and one by the handler
(``measure_from_output=False``), each with its own registry and store, and compares every
``graylayer_*`` sample and every evidence total (latency aside): the cheaper path is not a
weaker one. A spy on the handler checks that the output-measured router really left the
descendants alone, where it should.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from prometheus_client import CollectorRegistry
from test_agents import EARLY_ADOPTER, lookup_order
from test_metrics_agents import (
    ALICE,
    BROKEN,
    CANDIDATE,
    ERIN,
    PLAN_ID,
    QUESTION,
    SILENT,
    STABLE,
    USAGE,
    Agent,
    open_step,
)
from test_metrics_agents import config as config_of

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan
from langchain_graylayer.measuring.cost import ModelCall
from langchain_graylayer.measuring.output import (
    OutputCounts,
    RunMessages,
    stream_mode_of,
)
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.store.evidence import FIELDS
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers


# --------------------------------------------------------------------------- more agents
def both_at_once() -> Runnable[Any, Any]:
    """An agent whose first reply calls two tools at once (one LangGraph step runs both)."""

    def script(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
        if any(m.type == "tool" for m in messages):
            return AIMessage("[v2] A-1 and A-2 have both shipped.")
        calls = [
            {"name": "lookup_order", "args": {"order_id": order}, "id": f"call-{order}"}
            for order in ("A-1", "A-2")
        ]
        return AIMessage("", tool_calls=calls)

    model = ScriptedChatModel(script=script, usage=USAGE)
    return create_agent(model=model, tools=[lookup_order], name="support_v2")


def with_specialist(agent: Agent) -> Runnable[Any, Any]:
    """An agent whose one tool asks another agent (a graph run inside a tool, with its own
    messages: none of them reach the outer agent's state)."""
    specialist = agent.build()

    @tool
    def ask_specialist(question: str) -> str:
        """Ask the specialist agent."""
        return str(specialist.invoke({"messages": [("user", question)]})["messages"][-1].content)

    script = calls_then_answers([("ask_specialist", {"question": "A-1?"})], agent.final)
    model = ScriptedChatModel(script=script, usage=USAGE)
    return create_agent(model=model, tools=[ask_specialist], name=f"{agent.name}_outer")


class _Conversation(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def with_subgraph(agent: Agent) -> Runnable[Any, Any]:
    """A parent graph whose one node is the agent (a subgraph sharing ``messages``), after a
    node of its own that answers nothing."""
    builder = StateGraph(_Conversation)
    builder.add_node("triage", lambda state: {"messages": []})
    builder.add_node("agent", agent.build())
    builder.add_edge(START, "triage")
    builder.add_edge("triage", "agent")
    return builder.compile(name=f"{agent.name}_parent")


def with_memory(agent: Agent) -> Runnable[Any, Any]:
    """The agent with a checkpointer: a thread's second question follows its first turn."""
    calls = [tool.name for tool, _ in agent.tools]
    model = ScriptedChatModel(script=calls_then_answers(calls, agent.final), usage=USAGE)
    tools = [tool for tool, _ in agent.tools]
    return create_agent(model=model, tools=tools, name=agent.name, checkpointer=InMemorySaver())


# --------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    stable: Callable[[], Runnable[Any, Any]]
    candidate: Callable[[], Runnable[Any, Any]]
    call: str = "invoke"
    """invoke, ainvoke, stream, astream or batch."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    thread: bool = False
    """Every request of a user on one thread (a checkpointer's)."""
    from_output: bool = True
    """The output-measured router leaves the descendants alone (else: the call's shape
    cannot show every message, and its handler measures that request)."""


CASES = {
    "tools-ok-and-handled-error": Case(STABLE.build, CANDIDATE.build),
    "tools-ok-and-handled-error-ainvoke": Case(STABLE.build, CANDIDATE.build, "ainvoke"),
    "raised-tool-error": Case(STABLE.build, BROKEN.build, plan={"fallback_to_stable": False}),
    "raised-tool-error-ainvoke": Case(
        STABLE.build, BROKEN.build, "ainvoke", plan={"fallback_to_stable": False}
    ),
    "fallback-after-a-raised-tool-error": Case(STABLE.build, BROKEN.build),
    "fallback-ainvoke": Case(STABLE.build, BROKEN.build, "ainvoke"),
    "empty-answer": Case(STABLE.build, SILENT.build),
    "two-tools-in-one-step": Case(STABLE.build, both_at_once),
    "stream-updates": Case(STABLE.build, CANDIDATE.build, "stream"),
    "astream-updates": Case(STABLE.build, CANDIDATE.build, "astream"),
    "stream-values": Case(
        STABLE.build, CANDIDATE.build, "stream", kwargs={"stream_mode": "values"}
    ),
    "stream-raised-tool-error": Case(STABLE.build, BROKEN.build, "stream"),
    "astream-raised-tool-error-values": Case(
        STABLE.build, BROKEN.build, "astream", kwargs={"stream_mode": "values"}
    ),
    "stream-messages-by-the-handler": Case(
        STABLE.build,
        CANDIDATE.build,
        "stream",
        kwargs={"stream_mode": "messages"},
        from_output=False,
    ),
    "subgraph": Case(lambda: with_subgraph(STABLE), lambda: with_subgraph(CANDIDATE)),
    "subgraph-stream-updates": Case(
        lambda: with_subgraph(STABLE), lambda: with_subgraph(CANDIDATE), "stream"
    ),
    "subgraph-raised-tool-error": Case(
        lambda: with_subgraph(STABLE),
        lambda: with_subgraph(BROKEN),
        plan={"fallback_to_stable": False},
    ),
    "subgraph-stream-raised-tool-error": Case(
        lambda: with_subgraph(STABLE), lambda: with_subgraph(BROKEN), "stream"
    ),
    "checkpointed-thread-second-turn": Case(
        lambda: with_memory(STABLE), lambda: with_memory(CANDIDATE), thread=True
    ),
    "batch": Case(STABLE.build, CANDIDATE.build, "batch"),
}


# --------------------------------------------------------------------------- serving
async def serve(router: GrayRouter[Any, Any], case: Case) -> None:
    """Alice (candidate) twice, Erin (stable) once, each through ``case.call``; a failing request
    is part of the case."""
    users = [ALICE, ERIN, ALICE]
    configs = []
    for user in users:
        cfg = config_of(user)
        if case.thread:
            cfg["configurable"]["thread_id"] = f"thread-{user}"
        configs.append(cfg)
    if case.call == "batch":
        router.batch([QUESTION] * len(users), configs, return_exceptions=True)
        return
    for cfg in configs:
        try:
            if case.call == "invoke":
                router.invoke(QUESTION, cfg, **case.kwargs)
            elif case.call == "ainvoke":
                await router.ainvoke(QUESTION, cfg, **case.kwargs)
            elif case.call == "stream":
                list(router.stream(QUESTION, cfg, **case.kwargs))
            else:
                [chunk async for chunk in router.astream(QUESTION, cfg, **case.kwargs)]
        except ToolException as exc:  # the tool that raises out of the agent, nothing else
            assert "refund" in str(exc)  # noqa: PT017


@dataclass
class Served:
    registry: CollectorRegistry
    store: MemoryStore
    router: GrayRouter[Any, Any]
    child_starts: list[Any] = field(default_factory=list)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every ``graylayer_*`` sample but latency sums and buckets."""
        found = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_bucket", "_created")) or not sample.value:
                    continue
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def evidence(self) -> dict[tuple[str, str], dict[str, float]]:
        """Every arm's evidence totals (latency aside) and users."""
        found = {}
        for layer in self.router.plan.layer_names:
            step = self.store.get_steps(PLAN_ID).get(layer, "")
            for version, arm in self.store.read_evidence(PLAN_ID, layer, step).items():
                totals = {n: arm.total(n) for n in FIELDS if n != "latency_seconds"}
                found[(layer, version)] = {**totals, "users": float(arm.users)}
        return found


def served(case: Case, *, from_output: bool) -> Served:
    registry, store = CollectorRegistry(), MemoryStore()
    store.put_profile(ERIN, EARLY_ADOPTER)
    open_step(store, {"vip": 1.0, "early_adopter": 0.0})
    router: GrayRouter[Any, Any] = GrayRouter(
        stable=case.stable(),
        candidate=case.candidate(),
        plan=RolloutPlan.default(PLAN_ID, **case.plan),
        store=store,
        metrics=GraylayerMetrics(registry=registry),
        measure_from_output=from_output,
    )
    result = Served(registry, store, router)
    handler = router._state.observer.handler
    assert handler is not None
    original = handler.measurer.child_start

    def spy(run_id: Any, metadata: Any, name: Any, *rest: Any) -> None:
        result.child_starts.append(name)
        original(run_id, metadata, name, *rest)

    handler.measurer.child_start = spy  # type: ignore[method-assign]
    asyncio.run(serve(router, case))
    assert handler.pending() == 0
    return result


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_measured_from_the_output_or_by_the_handler_the_counts_are_identical(case: Case) -> None:
    by_output = served(case, from_output=True)
    by_handler = served(case, from_output=False)

    assert by_output.samples() == by_handler.samples()
    assert by_output.evidence() == by_handler.evidence()
    # the comparison is not empty: requests, tool calls and tokens were counted
    names = {name for name, _ in by_handler.samples()}
    assert {"graylayer_requests_total", "graylayer_tokens_total"} <= names
    assert by_handler.child_starts  # the handler watched the descendants
    assert by_output.router._state.from_output
    if case.from_output:
        assert by_output.child_starts == []  # nothing watched them: counted from the output
    else:
        assert by_output.child_starts


def test_an_agent_run_inside_a_tool_is_counted_by_the_handler_only() -> None:
    """The limit of reading the output: an agent that a tool runs keeps its messages to itself
    (the outer agent sees the tool's answer), so its own tool calls and tokens are counted by
    the handler only. Such routers want ``measure_from_output=False``."""
    case = Case(lambda: with_specialist(STABLE), lambda: with_specialist(CANDIDATE))
    by_output = served(case, from_output=True)
    by_handler = served(case, from_output=False)

    def tools(served: Served) -> set[str]:
        return {dict(labels)["tool"] for name, labels in served.samples() if "tool" in dict(labels)}

    assert tools(by_output) == {"ask_specialist"}
    assert tools(by_handler) == {"ask_specialist", "lookup_order", "issue_refund"}
    requests = [k for k in by_output.samples() if k[0] == "graylayer_requests_total"]
    assert {k: by_output.samples()[k] for k in requests} == {
        k: by_handler.samples()[k] for k in requests
    }


def test_a_runnable_that_returns_plain_text_is_measured_by_the_handler() -> None:
    chain = RunnableLambdaAgent()
    router: GrayRouter[Any, Any] = GrayRouter(
        stable=chain,
        candidate=chain,
        plan=RolloutPlan.default(PLAN_ID),
        metrics=GraylayerMetrics(registry=CollectorRegistry()),
    )
    assert not router._state.from_output


def RunnableLambdaAgent() -> Runnable[Any, Any]:
    from langchain_core.runnables import RunnableLambda

    return RunnableLambda(lambda question: f"answer to {question}")


# --------------------------------------------------------------------------- the pure parts
def test_output_counts_read_each_ai_messages_call_as_the_handler_prices_it() -> None:
    first = AIMessage("a", usage_metadata=USAGE, response_metadata={"model_name": "m-1"})
    legacy = AIMessage("b", response_metadata={"model": "m-1", "token_usage": {"prompt_tokens": 7}})
    other = AIMessage("c", usage_metadata=USAGE, response_metadata={"model_name": "m-2"})

    counts = OutputCounts.of([first, legacy, other])
    assert counts.calls == (
        ModelCall("m-1", 13, 5),
        ModelCall("m-1", 7, 0),
        ModelCall("m-2", 13, 5),
    )
    assert (counts.input_tokens, counts.output_tokens) == (33, 10)
    assert OutputCounts.of([]) == OutputCounts()


def test_a_run_that_raised_counts_its_running_tool_call_as_the_error() -> None:
    run = RunMessages("updates")
    call = {"name": "issue_refund", "args": {}, "id": "c1"}
    run.add({"model": {"messages": [AIMessage("", tool_calls=[call], usage_metadata=USAGE)]}})

    assert run.counts(raised=True) == OutputCounts(
        (("issue_refund", False),), (ModelCall("", 13, 5),)
    )
    assert run.counts() == OutputCounts((), (ModelCall("", 13, 5),))


STREAM_MODES = [
    ({}, "updates"),  # create_agent's default
    ({"stream_mode": "values"}, "values"),
    ({"stream_mode": "updates"}, "updates"),
    ({"stream_mode": "messages"}, None),  # message chunks: the handler measures
    ({"stream_mode": ["updates", "values"]}, None),
    ({"subgraphs": True}, None),
    ({"version": "v2"}, None),
]


@pytest.mark.parametrize(("kwargs", "mode"), STREAM_MODES)
def test_a_stream_is_read_from_its_chunks_only_in_the_modes_that_show_every_message(
    kwargs: dict[str, Any], mode: str | None
) -> None:
    assert stream_mode_of(STABLE.build(), kwargs) == mode
