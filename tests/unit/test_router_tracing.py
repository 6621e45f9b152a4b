"""GrayRouter(tracer=...) makes one OpenTelemetry span per routed request, with its trace id."""

from __future__ import annotations

from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan
from langchain_graylayer.measuring.prometheus import GraylayerMetrics


def test_router_with_a_tracer_spans_each_request_and_knows_its_trace_id() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = MemoryStore()
    store.set_ratio("refund-v2", "vip", 1.0)
    router: GrayRouter[str, str] = GrayRouter(
        stable=RunnableLambda(str),
        candidate=RunnableLambda(lambda q: f"v2 {q}"),
        plan=RolloutPlan.default("refund-v2"),
        store=store,
        metrics=GraylayerMetrics(registry=None),
        tracer=provider.get_tracer("test"),
    )
    run_id = "01900000-0000-7000-8000-0000000000aa"
    assert router.invoke("q", {"configurable": {"user_id": "u1"}, "run_id": run_id}) == "v2 q"
    [span] = exporter.get_finished_spans()
    assert span.name == "invoke_agent refund-v2"
    assert span.attributes is not None
    assert span.attributes["gen_ai.agent.version"] == "candidate"
    assert span.attributes["graylayer.layer"] == "vip"
    assert router.trace_id_of(run_id) == format(span.context.trace_id, "032x")
    untraced = GrayRouter(
        stable=RunnableLambda(str), candidate=RunnableLambda(str), plan=RolloutPlan.default("p")
    )
    assert untraced.trace_id_of(run_id) is None
