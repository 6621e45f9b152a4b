"""GraylayerTracingHandler on a real GrayRouter, read back from the real OpenTelemetry SDK.

Both versions are ``langchain.agents.create_agent`` agents with real ``@tool`` tools. Their chat
model is a ``GenericFakeChatModel`` that picks its reply from the conversation (so concurrent
requests do not share a script): it calls the tool the user names, then answers, and reports
``usage_metadata`` on every reply. Spans go to an ``InMemorySpanExporter`` of a provider made here
(the global provider is never set).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import Generator
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import ToolException, tool
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan, Version
from langchain_graylayer.measuring.labels import REQUEST_ID_KEY
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.measuring.tracing import GraylayerTracingHandler
from langchain_graylayer.testing import ScriptedChatModel

PLAN_ID = "support-v2"
MODEL = "fake-gpt"
TOOL_TURN, ANSWER_TURN, STABLE_TURN = (10, 5), (20, 7), (3, 2)


def usage(tokens: tuple[int, int]) -> UsageMetadata:
    return {"input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens)}


def agent_turn(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
    """Calls the tool named by the user's first word, then answers."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return AIMessage(f"[v2] {last.content}", usage_metadata=usage(ANSWER_TURN))
    name = str(last.content).split()[0]
    call = {"name": name, "args": {"order": "A-1"}, "id": f"call-{name}"}
    return AIMessage("", tool_calls=[call], usage_metadata=usage(TOOL_TURN))


def stable_turn(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
    """The stable agent just answers."""
    return AIMessage("[v1] we will look into it", usage_metadata=usage(STABLE_TURN))


@tool
def lookup_order(order: str) -> str:
    """Where an order is."""
    return f"{order} has shipped"


@tool
def issue_refund(order: str) -> str:
    """Refund an order."""
    raise ToolException(f"{order} is not refundable yet")


issue_refund.handle_tool_error = True


@tool
def reindex(order: str) -> str:
    """Rebuild the order index."""
    raise RuntimeError("index database down")


@pytest.fixture(scope="module")
def agents() -> dict[Version, Runnable[Any, Any]]:
    tools = [lookup_order, issue_refund, reindex]
    return {
        Version.CANDIDATE: create_agent(
            ScriptedChatModel(script=agent_turn, model_name=MODEL), tools=tools
        ),
        Version.STABLE: create_agent(ScriptedChatModel(script=stable_turn, model_name=MODEL)),
    }


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def handler(exporter: InMemorySpanExporter) -> GraylayerTracingHandler:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return GraylayerTracingHandler(provider.get_tracer("test"))


def make_router(agents: dict[Version, Runnable[Any, Any]], **plan: Any) -> GrayRouter[Any, Any]:
    store = MemoryStore()
    store.set_ratio(PLAN_ID, "vip", 0.5)  # users without a profile are 'vip'
    return GrayRouter(
        stable=agents[Version.STABLE],
        candidate=agents[Version.CANDIDATE],
        plan=RolloutPlan.default(PLAN_ID, **plan),
        store=store,
        metrics=GraylayerMetrics(registry=None),
    )


@pytest.fixture
def router(agents: dict[Version, Runnable[Any, Any]]) -> GrayRouter[Any, Any]:
    return make_router(agents)


def users_on(router: GrayRouter[Any, Any], version: Version, n: int = 1) -> list[str]:
    found = [f"user-{i}" for i in range(200) if router.route(f"user-{i}").version is version]
    return found[:n]


def ask(text: str) -> dict[str, Any]:
    return {"messages": [("user", text)]}


def cfg(handler: GraylayerTracingHandler, user: str | None, **extra: Any) -> RunnableConfig:
    configurable = {"user_id": user} if user else {}
    return {"callbacks": [handler], "configurable": configurable, **extra}  # type: ignore[typeddict-item]


def attrs(item: ReadableSpan | Event) -> dict[str, Any]:
    return dict(item.attributes or {})


def requests(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    spans = exporter.get_finished_spans()
    return [s for s in spans if attrs(s)["gen_ai.operation.name"] == "invoke_agent"]


def children(exporter: InMemorySpanExporter, request: ReadableSpan) -> list[ReadableSpan]:
    spans = exporter.get_finished_spans()
    return [
        s for s in spans if s.parent is not None and s.parent.span_id == request.context.span_id
    ]


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


class TestRequestSpan:
    def test_candidate_request_with_tool_and_chat_children(
        self, router: GrayRouter[Any, Any], handler: GraylayerTracingHandler, exporter: Any
    ) -> None:
        run_id = uuid4()
        user = users_on(router, Version.CANDIDATE)[0]
        out = router.invoke(ask("lookup_order A-1"), cfg(handler, user, run_id=run_id))
        assert out["messages"][-1].content == "[v2] A-1 has shipped"

        [request] = requests(exporter)
        assert request.name == f"invoke_agent {PLAN_ID}"
        assert request.status.status_code is StatusCode.UNSET
        assert request.parent is None
        assert attrs(request) == {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": PLAN_ID,
            "gen_ai.agent.version": "candidate",
            "graylayer.plan": PLAN_ID,
            "graylayer.version": "candidate",
            "graylayer.layer": "vip",
            "graylayer.request_id": str(run_id),
            "graylayer.reason": router.route(user).reason.value,
            "gen_ai.usage.input_tokens": TOOL_TURN[0] + ANSWER_TURN[0],
            "gen_ai.usage.output_tokens": TOOL_TURN[1] + ANSWER_TURN[1],
        }  # no gen_ai.conversation.id: no session was given
        assert handler.trace_id_of(run_id) == f"{request.context.trace_id:032x}"
        assert handler.pending() == 0

        kids = children(exporter, request)
        assert sorted(s.name for s in kids) == [f"chat {MODEL}"] * 2 + ["execute_tool lookup_order"]
        assert all(s.context.trace_id == request.context.trace_id for s in kids)
        tool_span = only(kids, "execute_tool lookup_order")
        assert tool_span.status.status_code is StatusCode.UNSET
        assert attrs(tool_span)["gen_ai.tool.name"] == "lookup_order"
        assert attrs(tool_span)["gen_ai.tool.call.id"] == "call-lookup_order"
        assert attrs(tool_span)["graylayer.version"] == "candidate"
        chats = [s for s in kids if s.name.startswith("chat")]
        assert {attrs(s)["gen_ai.usage.input_tokens"] for s in chats} == {10, 20}
        assert all(attrs(s)["gen_ai.request.model"] == MODEL for s in chats)

    def test_agent_name_and_conversation_id_from_metadata(
        self, router: GrayRouter[Any, Any], exporter: Any
    ) -> None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        named = GraylayerTracingHandler(provider.get_tracer("t"), agent_name="support-bot")
        config = cfg(named, users_on(router, Version.STABLE)[0], metadata={"thread_id": "t-9"})
        router.invoke(ask("hello"), config)
        [request] = requests(exporter)
        assert request.name == "invoke_agent support-bot"
        assert attrs(request)["gen_ai.agent.version"] == "stable"
        assert attrs(request)["gen_ai.conversation.id"] == "t-9"
        assert attrs(request)["gen_ai.usage.input_tokens"] == STABLE_TURN[0]

    def test_the_routers_session_is_the_conversation_id(
        self, router: GrayRouter[Any, Any], handler: Any, exporter: Any
    ) -> None:
        config = cfg(handler, users_on(router, Version.STABLE)[0])
        config["configurable"]["session_id"] = "s-1"
        router.invoke(ask("hello"), config)
        [request] = requests(exporter)
        assert attrs(request)["gen_ai.conversation.id"] == "s-1"

    def test_trace_id_is_known_while_the_request_runs(self, handler: Any, exporter: Any) -> None:
        def own_trace_id(_: Any, config: RunnableConfig) -> str | None:
            return handler.trace_id_of(config["metadata"][REQUEST_ID_KEY])  # type: ignore[no-any-return]

        echo = RunnableLambda(own_trace_id)
        router: GrayRouter[Any, Any] = GrayRouter(
            stable=echo,
            candidate=echo,
            plan=RolloutPlan.default(PLAN_ID),
            metrics=GraylayerMetrics(registry=None),
        )
        seen = router.invoke("q", cfg(handler, "u1"))
        [request] = requests(exporter)
        assert seen == f"{request.context.trace_id:032x}"
        assert handler.trace_id_of(uuid4()) is None


class TestFailures:
    def test_handled_tool_error_marks_only_the_tool_span(
        self, router: GrayRouter[Any, Any], handler: Any, exporter: Any
    ) -> None:
        router.invoke(ask("issue_refund A-1"), cfg(handler, users_on(router, Version.CANDIDATE)[0]))
        [request] = requests(exporter)
        assert request.status.status_code is StatusCode.UNSET
        tool_span = only(children(exporter, request), "execute_tool issue_refund")
        assert tool_span.status.status_code is StatusCode.ERROR
        assert attrs(tool_span)["error.type"] == "tool_error"
        assert not tool_span.events  # handled: no exception to record

    def test_unhandled_tool_error_then_stable_fallback(
        self, router: GrayRouter[Any, Any], handler: Any, exporter: Any
    ) -> None:
        out = router.invoke(
            ask("reindex A-1"), cfg(handler, users_on(router, Version.CANDIDATE)[0])
        )
        assert out["messages"][-1].content.startswith("[v1]")
        [request] = requests(exporter)
        assert request.status.status_code is StatusCode.UNSET
        assert attrs(request)["graylayer.fallback"] is True
        assert attrs(request)["graylayer.version"] == "candidate"  # what was routed
        assert attrs(request)["gen_ai.usage.input_tokens"] == TOOL_TURN[0] + STABLE_TURN[0]
        kids = children(exporter, request)
        tool_span = only(kids, "execute_tool reindex")
        assert tool_span.status.status_code is StatusCode.ERROR
        assert attrs(tool_span)["error.type"] == "RuntimeError"
        assert [e.name for e in tool_span.events] == ["exception"]
        versions = sorted(
            (attrs(s)["graylayer.version"], attrs(s).get("graylayer.fallback", False))
            for s in kids
            if s.name.startswith("chat")
        )
        assert versions == [("candidate", False), ("stable", True)]
        assert handler.pending() == 0

    async def test_request_error_without_fallback(
        self, agents: Any, handler: Any, exporter: Any
    ) -> None:
        router = make_router(agents, fallback_to_stable=False)
        with pytest.raises(RuntimeError, match="index database down"):
            await router.ainvoke(
                ask("reindex A-1"), cfg(handler, users_on(router, Version.CANDIDATE)[0])
            )
        [request] = requests(exporter)
        assert request.status.status_code is StatusCode.ERROR
        assert attrs(request)["error.type"] == "RuntimeError"
        assert "graylayer.fallback" not in attrs(request)
        [exception] = request.events
        assert exception.name == "exception"
        assert attrs(exception)["exception.message"] == "index database down"
        assert handler.pending() == 0

    def test_a_failing_tracer_never_breaks_the_request(
        self, router: GrayRouter[Any, Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        class Exploding(SpanProcessor):
            def on_start(self, span: Any, parent_context: Any = None) -> None:
                raise RuntimeError("exporter misconfigured")

        provider = TracerProvider()
        provider.add_span_processor(Exploding())
        broken = GraylayerTracingHandler(provider.get_tracer("t"))
        with caplog.at_level(logging.ERROR, logger="langchain_graylayer.measuring.tracing"):
            out = router.invoke(
                ask("lookup_order A-1"), cfg(broken, users_on(router, Version.CANDIDATE)[0])
            )
        assert out["messages"][-1].content == "[v2] A-1 has shipped"
        assert "graylayer tracing on_chain_start failed" in caplog.text


class TestEntryPoints:
    def test_stream_is_one_request(
        self, router: GrayRouter[Any, Any], handler: Any, exporter: Any
    ) -> None:
        user = users_on(router, Version.CANDIDATE)[0]
        chunks = list(router.stream(ask("lookup_order A-1"), cfg(handler, user)))
        assert len(chunks) >= 3  # model, tools, model
        [request] = requests(exporter)
        assert attrs(request)["gen_ai.usage.output_tokens"] == TOOL_TURN[1] + ANSWER_TURN[1]
        assert len(children(exporter, request)) == 3

    async def test_astream_is_one_request(
        self, router: GrayRouter[Any, Any], handler: Any, exporter: Any
    ) -> None:
        user = users_on(router, Version.CANDIDATE)[0]
        chunks = [c async for c in router.astream(ask("lookup_order A-1"), cfg(handler, user))]
        assert len(chunks) >= 3
        [request] = requests(exporter)
        assert attrs(request)["gen_ai.agent.version"] == "candidate"
        assert len(children(exporter, request)) == 3

    def test_an_abandoned_stream_ends_its_span(
        self, router: GrayRouter[Any, Any], handler: Any, exporter: Any
    ) -> None:
        stream = cast(Generator[Any, None, None], router.stream(ask("hi"), cfg(handler, "u1")))
        next(stream)
        stream.close()  # the client went away: the router reports GeneratorExit as the error
        [request] = requests(exporter)
        assert attrs(request)["error.type"] == "GeneratorExit"
        assert handler.pending() == 0

    def test_batch_labels_each_input(
        self, router: GrayRouter[Any, Any], handler: Any, exporter: Any
    ) -> None:
        stable, candidate = (
            users_on(router, Version.STABLE)[0],
            users_on(router, Version.CANDIDATE)[0],
        )
        users = [stable, candidate, None]
        run_ids = [uuid4() for _ in users]
        configs = [cfg(handler, u, run_id=r) for u, r in zip(users, run_ids, strict=True)]
        router.batch([ask("lookup_order A-1")] * 3, configs)
        by_id = {attrs(s)["graylayer.request_id"]: s for s in requests(exporter)}
        assert len(by_id) == 3
        spans = [by_id[str(r)] for r in run_ids]
        assert [attrs(s)["graylayer.version"] for s in spans] == [
            "stable",
            "candidate",
            "stable",
        ]
        assert attrs(spans[2])["graylayer.reason"] == "no_user_id"
        assert "graylayer.layer" not in attrs(spans[2])
        assert [len(children(exporter, s)) for s in spans] == [1, 3, 1]
        assert len({s.context.trace_id for s in spans}) == 3

    async def test_concurrent_ainvokes_keep_their_versions(
        self, router: GrayRouter[Any, Any], handler: Any, exporter: Any
    ) -> None:
        users = users_on(router, Version.STABLE, 5) + users_on(router, Version.CANDIDATE, 5)
        run_ids = {uuid4(): user for user in users}
        await asyncio.gather(
            *(
                router.ainvoke(ask("lookup_order A-1"), cfg(handler, u, run_id=r))
                for r, u in run_ids.items()
            )
        )
        spans = requests(exporter)
        assert len(spans) == 10
        for span in spans:
            user = run_ids[UUID(str(attrs(span)["graylayer.request_id"]))]
            version = router.route(user).version.value
            assert attrs(span)["gen_ai.agent.version"] == version
            kids = children(exporter, span)
            assert len(kids) == (3 if version == "candidate" else 1)
            assert {attrs(k)["graylayer.version"] for k in kids} == {version}
            assert (
                handler.trace_id_of(attrs(span)["graylayer.request_id"])
                == f"{span.context.trace_id:032x}"
            )
        assert handler.pending() == 0


def test_without_opentelemetry_the_handler_does_nothing() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the [otel] extra were not installed
        from langchain_core.runnables import RunnableLambda
        from langchain_graylayer import GrayRouter, RolloutPlan
        from langchain_graylayer.measuring.prometheus import GraylayerMetrics
        from langchain_graylayer.measuring.tracing import GraylayerTracingHandler

        handler = GraylayerTracingHandler()
        assert not handler.enabled
        echo = RunnableLambda(lambda q: q)
        router = GrayRouter(stable=echo, candidate=echo, plan=RolloutPlan.default("p"),
                            metrics=GraylayerMetrics(registry=None))
        config = {"callbacks": [handler], "configurable": {"user_id": "u1"}}
        assert router.invoke("hi", config) == "hi"
        assert handler.pending() == 0 and handler.trace_id_of("x") is None
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
