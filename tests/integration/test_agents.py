"""GrayRouter in front of real agents: what a user of the router would check by hand.

Two versions of a customer-service agent are built with ``langchain.agents.create_agent`` and real
``@tool`` tools; their chat model is langchain-core's ``GenericFakeChatModel``, taught to accept
tools (``bind_tools``) and to stream its tool calls. A pair of plain ``StateGraph`` versions, one
with a compiled subgraph, covers graphs that are not agents. Runs are observed with a
``BaseTracer`` and with ``astream_events``; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool, ToolException, tool
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan, UserProfile, Version
from langchain_graylayer.measuring.labels import (
    FALLBACK_KEY,
    LAYER_KEY,
    PLAN_KEY,
    REQUEST_ID_KEY,
    VERSION_KEY,
)
from langchain_graylayer.routing.decision import RouteReason
from langchain_graylayer.testing import ScriptedChatModel, in_order

PLAN_ID = "support-v2"
ROUTER_NAME = "GrayRouter"
QUESTION = {"messages": [("user", "Please refund my order A-1.")]}

STABLE_ANSWER = "[v1] Order A-1 has shipped; refunds open once it arrives."
CANDIDATE_ANSWER = "[v2] Order A-1 has shipped; a colleague will approve the refund today."
ANSWERS = {Version.STABLE: STABLE_ANSWER, Version.CANDIDATE: CANDIDATE_ANSWER}


# --------------------------------------------------------------------------- chat models
class ToolCallingFakeChatModel(ScriptedChatModel):
    """Replies with the next message of ``messages``, in order; ``create_agent`` can bind tools to
    it, and it streams text and tool calls as a provider does."""

    def __init__(self, *, messages: Iterable[AIMessage | str], **kwargs: Any) -> None:
        super().__init__(script=in_order(messages), usage=None, **kwargs)


def _unreachable(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
    raise ConnectionError("model endpoint unreachable")


class BrokenChatModel(ScriptedChatModel):
    """A chat model whose endpoint is down."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(script=_unreachable, **kwargs)


class Script:
    """The replies of one chat model, in order; counts how many it has served (thread-safe)."""

    def __init__(self, replies: Iterable[AIMessage]) -> None:
        self._replies = iter(list(replies))
        self._lock = threading.Lock()
        self.served = 0

    def __iter__(self) -> Script:
        return self

    def __next__(self) -> AIMessage:
        with self._lock:
            reply = next(self._replies)
            self.served += 1
            return reply


class Endless:
    """A fresh copy of one reply for every call, for agents shared by concurrent requests."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __iter__(self) -> Endless:
        return self

    def __next__(self) -> AIMessage:
        return AIMessage(self.text)


# --------------------------------------------------------------------------- tools
ORDERS = {"A-1": "shipped"}


@tool
def lookup_order(order_id: str) -> str:
    """Return the shipping status of an order."""
    return f"order {order_id} is {ORDERS.get(order_id, 'unknown')}"


def _refund_needs_a_human(order_id: str) -> str:
    """Refund an order (the candidate hands refunds above the limit to a person)."""
    raise ToolException(f"refund of {order_id} is above the automatic limit")


issue_refund = StructuredTool.from_function(
    _refund_needs_a_human, name="issue_refund", handle_tool_error=True
)
"""The candidate's refund tool: its ToolException becomes a ToolMessage with status 'error'."""

issue_refund_unhandled = StructuredTool.from_function(
    _refund_needs_a_human, name="issue_refund", handle_tool_error=False
)
"""The same tool in a buggy candidate that forgot ``handle_tool_error``: the agent raises."""


def _call(name: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call-{name}"}])


def stable_turn() -> list[AIMessage]:
    """One conversation turn of v1: look the order up, answer."""
    return [_call("lookup_order", order_id="A-1"), AIMessage(STABLE_ANSWER)]


def candidate_turn() -> list[AIMessage]:
    """One turn of v2: look the order up, try the refund (it fails, handled), answer."""
    return [
        _call("lookup_order", order_id="A-1"),
        _call("issue_refund", order_id="A-1"),
        AIMessage(CANDIDATE_ANSWER),
    ]


# --------------------------------------------------------------------------- agent factories
def stable_agent(turns: int = 1, *, replies: Script | None = None, **kwargs: Any) -> Any:
    """v1 of the support agent; each build has its own model with ``turns`` turns of replies."""
    if replies is None:
        replies = Script(itertools.chain.from_iterable(stable_turn() for _ in range(turns)))
    model = ToolCallingFakeChatModel(messages=replies)
    return create_agent(
        model=model,
        tools=[lookup_order],
        system_prompt="You are the support agent v1. Look orders up before answering.",
        name="support_v1",
        **kwargs,
    )


def candidate_agent(
    turns: int = 1,
    *,
    replies: Script | None = None,
    refund_tool: Any = issue_refund,
    **kwargs: Any,
) -> Any:
    """v2 of the support agent: it also tries to refund."""
    if replies is None:
        replies = Script(itertools.chain.from_iterable(candidate_turn() for _ in range(turns)))
    model = ToolCallingFakeChatModel(messages=replies)
    return create_agent(
        model=model,
        tools=[lookup_order, refund_tool],
        system_prompt="You are the support agent v2. Refund when the customer asks.",
        name="support_v2",
        **kwargs,
    )


def broken_candidate_agent() -> Any:
    """v2 with its model endpoint down: the very first model call raises."""
    return create_agent(
        model=BrokenChatModel(messages=iter([])),
        tools=[lookup_order, issue_refund],
        system_prompt="You are the support agent v2.",
        name="support_v2",
    )


class Ticket(TypedDict, total=False):
    question: str
    category: str
    within_policy: bool
    answer: str


def ticket_graph(version: Version) -> Any:
    """A plain StateGraph version: classify → (candidate only: policy subgraph) → respond."""
    model = ToolCallingFakeChatModel(
        messages=iter([AIMessage(f"[{version.value} graph] Your refund ticket is open.")])
    )

    def classify(state: Ticket) -> Ticket:
        return {"category": "refund" if "refund" in state["question"].lower() else "other"}

    def respond(state: Ticket, config: RunnableConfig) -> Ticket:
        reply = model.invoke([("user", f"{state['category']}: {state['question']}")], config)
        return {"answer": reply.text}

    graph = StateGraph(Ticket)
    graph.add_node("classify", classify)
    graph.add_node("respond", respond)
    graph.add_edge(START, "classify")
    if version is Version.CANDIDATE:

        def check_limit(state: Ticket) -> Ticket:
            return {"within_policy": state["category"] == "refund"}

        policy = StateGraph(Ticket)
        policy.add_node("check_limit", check_limit)
        policy.add_edge(START, "check_limit")
        policy.add_edge("check_limit", END)
        graph.add_node("policy", policy.compile(name="policy"))
        graph.add_edge("classify", "policy")
        graph.add_edge("policy", "respond")
    else:
        graph.add_edge("classify", "respond")
    graph.add_edge("respond", END)
    return graph.compile(name=f"ticket_{version.value}")


# --------------------------------------------------------------------------- observing runs
class RunRecorder(BaseTracer):
    """Keeps every finished run; the tree is in ``parent_run_id``."""

    run_inline = True  # keep start/end order on the async path too

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        pass

    def _end_trace(self, run: Run) -> None:
        self.runs.append(run)
        super()._end_trace(run)

    def routers(self) -> list[Run]:
        return [run for run in self.runs if run.name == ROUTER_NAME]

    def router(self) -> Run:
        (run,) = self.routers()
        return run

    def below(self, root: Run) -> list[Run]:
        """Every descendant of ``root``."""
        by_parent: dict[Any, list[Run]] = {}
        for run in self.runs:
            by_parent.setdefault(run.parent_run_id, []).append(run)
        found, todo = [], [root.id]
        while todo:
            children = by_parent.get(todo.pop(), [])
            found.extend(children)
            todo.extend(child.id for child in children)
        return found


def metadata(run: Run) -> dict[str, Any]:
    return dict(run.metadata or {})


def assert_labelled(runs: list[Run], router_run: Run, version: Version, layer: str) -> None:
    """Every run carries the plan, version, layer and request id, in metadata and in tags."""
    for run in runs:
        meta = metadata(run)
        where = f"{run.run_type} run {run.name!r}"
        assert meta.get(PLAN_KEY) == PLAN_ID, where
        assert meta.get(VERSION_KEY) == version.value, where
        assert meta.get(LAYER_KEY) == layer, where
        assert meta.get(REQUEST_ID_KEY) == str(router_run.id), where
        assert f"graylayer:version:{version.value}" in (run.tags or []), (where, run.tags)


def answer(output: dict[str, Any]) -> str:
    return str(output["messages"][-1].text)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def make_router(store: MemoryStore, stable: Any = None, candidate: Any = None, **plan: Any) -> Any:
    return GrayRouter(
        stable=stable if stable is not None else stable_agent(),
        candidate=candidate if candidate is not None else candidate_agent(),
        plan=RolloutPlan.default(PLAN_ID, **plan),
        store=store,
    )


def config(user_id: str, *callbacks: Any, **configurable: Any) -> RunnableConfig:
    return {"configurable": {"user_id": user_id, **configurable}, "callbacks": list(callbacks)}


EARLY_ADOPTER = UserProfile(
    last_use_time=datetime.now(timezone.utc), use_count=100, user_value=0, accept_score=10
)
"""Scores 1.0: the ``early_adopter`` layer (users with no profile are ``vip``)."""


# --------------------------------------------------------------------------- routing
@pytest.mark.parametrize(("ratio", "version"), [(1.0, Version.CANDIDATE), (0.0, Version.STABLE)])
def test_the_layer_ratio_picks_the_agent(
    store: MemoryStore, ratio: float, version: Version
) -> None:
    router = make_router(store)
    store.set_ratio(PLAN_ID, "vip", ratio)

    output = router.invoke(QUESTION, config("alice"))

    assert answer(output) == ANSWERS[version]
    tool_names = [m.name for m in output["messages"] if isinstance(m, ToolMessage)]
    if version is Version.CANDIDATE:  # v2's refund failed, handled: the agent still answered
        assert tool_names == ["lookup_order", "issue_refund"]
        assert output["messages"][-2].status == "error"
    else:
        assert tool_names == ["lookup_order"]


def test_no_user_id_gets_stable_even_at_full_ratio(store: MemoryStore) -> None:
    router = make_router(store)
    store.set_ratio(PLAN_ID, "vip", 1.0)

    assert answer(router.invoke(QUESTION)) == STABLE_ANSWER
    assert router.counts()["unrouted"] == 1


@pytest.mark.parametrize("version", [Version.CANDIDATE, Version.STABLE])
def test_every_descendant_run_carries_the_labels(store: MemoryStore, version: Version) -> None:
    router = make_router(store)
    store.set_ratio(PLAN_ID, "vip", 1.0 if version is Version.CANDIDATE else 0.0)
    recorder = RunRecorder()

    router.invoke(QUESTION, config("alice", recorder))

    router_run = recorder.router()
    descendants = recorder.below(router_run)
    assert len(descendants) == len(recorder.runs) - 1  # nothing escaped the router's tree
    kinds = {run.run_type for run in descendants}
    assert {"chain", "llm", "tool"} <= kinds
    tools = sorted(run.name for run in descendants if run.run_type == "tool")
    expected_tools = (
        ["issue_refund", "lookup_order"] if version is Version.CANDIDATE else ["lookup_order"]
    )
    assert tools == expected_tools
    assert_labelled([router_run, *descendants], router_run, version, "vip")


def test_the_router_run_is_the_parent_of_the_agent_run(store: MemoryStore) -> None:
    router = make_router(store)
    store.set_ratio(PLAN_ID, "vip", 1.0)
    recorder = RunRecorder()

    router.invoke(QUESTION, config("alice", recorder))

    router_run = recorder.router()
    assert router_run.parent_run_id is None
    (agent_run,) = [run for run in recorder.runs if run.parent_run_id == router_run.id]
    assert agent_run.name == "support_v2"
    assert metadata(agent_run)[REQUEST_ID_KEY] == str(router_run.id)
    assert {run.trace_id for run in recorder.runs} == {router_run.id}
    assert router_run.error is None
    assert answer(router_run.outputs or {}) == CANDIDATE_ANSWER


def test_a_caller_run_id_becomes_the_request_id(store: MemoryStore) -> None:
    """LangServe passes its own run id; feedback is keyed by it, so the router must keep it."""
    router = make_router(store)
    recorder = RunRecorder()
    run_id = "01963e64-0000-7000-8000-000000000001"

    router.invoke(QUESTION, {**config("alice", recorder), "run_id": run_id})

    assert str(recorder.router().id) == run_id
    assert {metadata(run)[REQUEST_ID_KEY] for run in recorder.runs} == {run_id}


@pytest.mark.parametrize("version", [Version.CANDIDATE, Version.STABLE])
def test_a_plain_state_graph_with_a_subgraph(store: MemoryStore, version: Version) -> None:
    router = GrayRouter(
        stable=ticket_graph(Version.STABLE),
        candidate=ticket_graph(Version.CANDIDATE),
        plan=RolloutPlan.default(PLAN_ID),
        store=store,
    )
    store.put_profile("erin", EARLY_ADOPTER)
    store.set_ratio(PLAN_ID, "early_adopter", 1.0 if version is Version.CANDIDATE else 0.0)
    recorder = RunRecorder()

    output = router.invoke({"question": "I want a refund"}, config("erin", recorder))

    assert output["answer"] == f"[{version.value} graph] Your refund ticket is open."
    assert output.get("within_policy") is (True if version is Version.CANDIDATE else None)
    router_run = recorder.router()
    descendants = recorder.below(router_run)
    names = {run.name for run in descendants}
    assert {f"ticket_{version.value}", "classify", "respond", "ToolCallingFakeChatModel"} <= names
    if version is Version.CANDIDATE:
        assert {"policy", "check_limit"} <= names  # the subgraph and its node
    assert_labelled([router_run, *descendants], router_run, version, "early_adopter")


# --------------------------------------------------------------------------- streaming
def _node_names(chunks: list[dict[str, Any]]) -> list[str]:
    return [name for chunk in chunks for name in chunk]


def test_stream_yields_the_chosen_agents_updates_as_they_happen(store: MemoryStore) -> None:
    replies = Script(candidate_turn())
    router = make_router(store, candidate=candidate_agent(replies=replies))
    store.set_ratio(PLAN_ID, "vip", 1.0)

    stream = router.stream(QUESTION, config("alice"))
    first = next(stream)
    assert list(first) == ["model"]
    assert replies.served == 1  # the agent has not run ahead: the chunk was not buffered
    chunks = [first, *stream]

    assert _node_names(chunks) == ["model", "tools", "model", "tools", "model"]
    assert chunks[-1]["model"]["messages"][-1].text == CANDIDATE_ANSWER
    assert replies.served == 3


def test_stream_messages_mode_passes_tokens_with_labels(store: MemoryStore) -> None:
    router = make_router(store)
    store.set_ratio(PLAN_ID, "vip", 0.0)

    parts = list(router.stream(QUESTION, config("alice"), stream_mode="messages"))

    tokens = [m.text for m, meta in parts if meta["langgraph_node"] == "model" and m.text]
    assert "".join(tokens) == STABLE_ANSWER
    assert len(tokens) > 5  # word by word, not one block
    assert {meta[VERSION_KEY] for _, meta in parts} == {"stable"}


async def test_astream_yields_the_chosen_agents_updates(store: MemoryStore) -> None:
    replies = Script(stable_turn())
    router = make_router(store, stable=stable_agent(replies=replies))
    store.set_ratio(PLAN_ID, "vip", 0.0)
    recorder = RunRecorder()

    chunks = []
    async for chunk in router.astream(QUESTION, config("alice", recorder)):
        chunks.append(chunk)
        if len(chunks) == 1:
            assert replies.served == 1

    assert _node_names(chunks) == ["model", "tools", "model"]
    assert chunks[-1]["model"]["messages"][-1].text == STABLE_ANSWER
    router_run = recorder.router()
    assert_labelled([router_run, *recorder.below(router_run)], router_run, Version.STABLE, "vip")


async def test_astream_events_v2_shows_the_router_and_the_chosen_agent(store: MemoryStore) -> None:
    router = make_router(store)
    store.set_ratio(PLAN_ID, "vip", 1.0)

    events = [
        event async for event in router.astream_events(QUESTION, config("alice"), version="v2")
    ]

    own = [e for e in events if e["name"] == ROUTER_NAME]
    assert own[0]["event"] == "on_chain_start"
    assert own[-1]["event"] == "on_chain_end"
    assert any(e["event"] == "on_chain_stream" for e in own)
    router_id = own[0]["run_id"]
    assert own[-1]["run_id"] == router_id
    nested = [e for e in events if e["run_id"] != router_id]
    assert all(e["parent_ids"][0] == router_id for e in nested)
    assert {e["metadata"][VERSION_KEY] for e in events} == {"candidate"}
    assert {e["metadata"][REQUEST_ID_KEY] for e in events} == {router_id}

    kinds = {e["event"] for e in nested}
    assert {"on_chat_model_start", "on_chat_model_stream", "on_chat_model_end"} <= kinds
    streamed = "".join(
        e["data"]["chunk"].text for e in nested if e["event"] == "on_chat_model_stream"
    )
    assert streamed == CANDIDATE_ANSWER
    tool_starts = [e["name"] for e in nested if e["event"] == "on_tool_start"]
    assert tool_starts == ["lookup_order", "issue_refund"]
    refund_end = next(
        e for e in nested if e["event"] == "on_tool_end" and e["name"] == "issue_refund"
    )
    assert refund_end["data"]["output"].status == "error"
    last_update = [e for e in own if e["event"] == "on_chain_stream"][-1]["data"]["chunk"]
    assert last_update["model"]["messages"][-1].text == CANDIDATE_ANSWER


# --------------------------------------------------------------------------- batch
def _two_users(store: MemoryStore) -> list[RunnableConfig]:
    """Erin is an early adopter (layer at 100%); victor has no profile, so vip (at 0%)."""
    store.put_profile("erin", EARLY_ADOPTER)
    store.set_ratio(PLAN_ID, "early_adopter", 1.0)
    return [config("erin"), config("victor")]


def test_batch_routes_each_input_by_its_own_config(store: MemoryStore) -> None:
    router = make_router(store)
    configs = _two_users(store)
    recorder = RunRecorder()
    for each in configs:
        each["callbacks"] = [recorder]

    outputs = router.batch([QUESTION, QUESTION], configs)

    assert [answer(o) for o in outputs] == [CANDIDATE_ANSWER, STABLE_ANSWER]
    layers = {metadata(run)[VERSION_KEY]: metadata(run)[LAYER_KEY] for run in recorder.routers()}
    assert layers == {"candidate": "early_adopter", "stable": "vip"}


async def test_abatch_routes_each_input_by_its_own_config(store: MemoryStore) -> None:
    router = make_router(store)

    outputs = await router.abatch([QUESTION, QUESTION], _two_users(store))

    assert [answer(o) for o in outputs] == [CANDIDATE_ANSWER, STABLE_ANSWER]


# --------------------------------------------------------------------------- sessions
def test_a_thread_stays_on_the_version_it_started_on(store: MemoryStore) -> None:
    router = make_router(
        store,
        stable=stable_agent(turns=2, checkpointer=InMemorySaver()),
        candidate=candidate_agent(turns=2, checkpointer=InMemorySaver()),
    )
    store.set_ratio(PLAN_ID, "vip", 1.0)

    first = router.invoke(QUESTION, config("alice", thread_id="t-1"))
    assert answer(first) == CANDIDATE_ANSWER

    store.set_ratio(PLAN_ID, "vip", 0.0)  # roll the layer back to 0%
    assert router.route("alice").version is Version.STABLE
    assert router.route("alice", "t-1").reason is RouteReason.PINNED

    second = router.invoke(QUESTION, config("alice", thread_id="t-1"))
    assert answer(second) == CANDIDATE_ANSWER
    # the checkpointer gave the candidate the first turn back: the same conversation continued
    assert len(second["messages"]) == 2 * len(first["messages"])

    fresh = router.invoke(QUESTION, config("alice", thread_id="t-2"))
    assert answer(fresh) == STABLE_ANSWER
    assert len(fresh["messages"]) == 4  # question, tool call, tool result, answer


# --------------------------------------------------------------------------- fallback
async def _final(router: Any, mode: str, cfg: RunnableConfig) -> str:
    """The agent's final answer, whichever way the router is called."""
    if mode == "invoke":
        return answer(router.invoke(QUESTION, cfg))
    if mode == "ainvoke":
        return answer(await router.ainvoke(QUESTION, cfg))
    # Default "updates" mode: nothing reaches the caller before the first node ends, so the
    # router may still switch to stable. ("values" mode emits the input state first, after which
    # the router, by design, no longer falls back.)
    chunks: list[dict[str, Any]] = []
    await _collect(router, mode, cfg, chunks)
    return str(chunks[-1]["model"]["messages"][-1].text)


async def _collect(router: Any, mode: str, cfg: RunnableConfig, into: list[Any]) -> None:
    """Stream (sync or async) into ``into``, chunk by chunk, so a failure keeps what arrived."""
    if mode == "stream":
        for chunk in router.stream(QUESTION, cfg):
            into.append(chunk)
    else:
        async for chunk in router.astream(QUESTION, cfg):
            into.append(chunk)


CANDIDATE_FAILURES: dict[str, Callable[[], Any]] = {
    "model-down": broken_candidate_agent,
    "unhandled-tool-error": lambda: candidate_agent(refund_tool=issue_refund_unhandled),
}

FALLBACK_CASES = [
    *(("model-down", mode) for mode in ("invoke", "ainvoke", "stream", "astream")),
    # The tool fails after the model's first update was streamed, so only the non-streaming
    # calls can still switch versions (see test_stream_does_not_splice_two_versions).
    *(("unhandled-tool-error", mode) for mode in ("invoke", "ainvoke")),
]


@pytest.mark.parametrize(("failure", "mode"), FALLBACK_CASES)
async def test_a_failing_candidate_falls_back_to_stable(
    store: MemoryStore, failure: str, mode: str
) -> None:
    router = make_router(store, candidate=CANDIDATE_FAILURES[failure]())
    store.set_ratio(PLAN_ID, "vip", 1.0)
    recorder = RunRecorder()

    assert await _final(router, mode, config("alice", recorder)) == STABLE_ANSWER
    assert router.counts()["fallback"] == 1
    router_run = recorder.router()
    assert router_run.error is None
    assert metadata(router_run)[VERSION_KEY] == "candidate"  # what was decided
    (failed, retry) = sorted(
        (run for run in recorder.runs if run.parent_run_id == router_run.id),
        key=lambda run: run.start_time,
    )
    assert failed.name == "support_v2"
    assert failed.error is not None
    assert retry.name == "support_v1"
    assert retry.error is None
    retried = [retry, *recorder.below(retry)]
    assert {"llm", "tool", "chain"} <= {run.run_type for run in retried}
    for run in retried:
        assert metadata(run)[VERSION_KEY] == "stable", run.name
        assert metadata(run)[FALLBACK_KEY] is True, run.name
        assert metadata(run)[REQUEST_ID_KEY] == str(router_run.id), run.name
    for run in [failed, *recorder.below(failed)]:
        assert metadata(run)[VERSION_KEY] == "candidate", run.name
        assert FALLBACK_KEY not in metadata(run), run.name


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_stream_does_not_splice_two_versions(store: MemoryStore, mode: str) -> None:
    """Once a candidate chunk reached the caller, a later candidate failure is the caller's."""
    router = make_router(store, candidate=candidate_agent(refund_tool=issue_refund_unhandled))
    store.set_ratio(PLAN_ID, "vip", 1.0)
    recorder = RunRecorder()
    received: list[dict[str, Any]] = []

    with pytest.raises(ToolException, match="above the automatic limit"):
        await _collect(router, mode, config("alice", recorder), received)

    assert _node_names(received) == ["model", "tools", "model"]  # all from the candidate
    assert router.counts()["fallback"] == 0
    assert "ToolException" in (recorder.router().error or "")
    assert not any(run.name == "support_v1" for run in recorder.runs)


def test_fallback_runs_are_tagged_with_the_stable_version(store: MemoryStore) -> None:
    """Tags must agree with the metadata on the stable retry (a tag-filtered trace query must
    not count the stable answer against the candidate)."""
    router = make_router(store, candidate=broken_candidate_agent())
    store.set_ratio(PLAN_ID, "vip", 1.0)
    recorder = RunRecorder()

    router.invoke(QUESTION, config("alice", recorder))

    retried = [run for run in recorder.runs if metadata(run).get(FALLBACK_KEY)]
    assert retried
    for run in retried:
        assert "graylayer:fallback" in run.tags, run.name
        assert "graylayer:version:stable" in run.tags, (run.name, run.tags)
        assert "graylayer:version:candidate" not in run.tags, (run.name, run.tags)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_without_fallback_the_candidates_error_reaches_the_caller(
    store: MemoryStore, mode: str
) -> None:
    router = make_router(store, candidate=broken_candidate_agent(), fallback_to_stable=False)
    store.set_ratio(PLAN_ID, "vip", 1.0)
    recorder = RunRecorder()

    with pytest.raises(ConnectionError, match="model endpoint unreachable"):
        await _final(router, mode, config("alice", recorder))

    assert "ConnectionError" in (recorder.router().error or "")
    assert not any(run.name == "support_v1" for run in recorder.runs)
    assert router.counts()["fallback"] == 0


# --------------------------------------------------------------------------- concurrency
async def test_concurrent_requests_each_get_their_predicted_version(store: MemoryStore) -> None:
    router = make_router(
        store,
        stable=create_agent(
            model=ToolCallingFakeChatModel(messages=Endless(STABLE_ANSWER)), tools=[lookup_order]
        ),
        candidate=create_agent(
            model=ToolCallingFakeChatModel(messages=Endless(CANDIDATE_ANSWER)),
            tools=[lookup_order, issue_refund],
        ),
    )
    store.set_ratio(PLAN_ID, "vip", 0.5)
    by_version: dict[Version, list[str]] = {Version.STABLE: [], Version.CANDIDATE: []}
    for n in itertools.count():
        user = f"user-{n}"
        version = router.route(user).version
        if len(by_version[version]) < 10:
            by_version[version].append(user)
        if all(len(users) == 10 for users in by_version.values()):
            break
    users = [u for pair in zip(*by_version.values(), strict=True) for u in pair]
    predicted = {user: router.route(user).version for user in users}
    recorder = RunRecorder()

    outputs = await asyncio.gather(
        *(router.ainvoke(QUESTION, config(user, recorder)) for user in users)
    )

    assert [answer(o) for o in outputs] == [ANSWERS[predicted[u]] for u in users]
    routers = recorder.routers()
    assert len(routers) == 20
    for router_run in routers:
        version = Version(metadata(router_run)[VERSION_KEY])
        descendants = recorder.below(router_run)
        assert descendants
        assert_labelled([router_run, *descendants], router_run, version, "vip")
        assert answer(router_run.outputs or {}) == ANSWERS[version]
