"""Tests for langchain_graylayer.measuring (and the output readers of callbacks), without agents.

The ``graylayer_*`` series are read back from a ``CollectorRegistry`` of the test's own.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from prometheus_client import REGISTRY, CollectorRegistry

from langchain_graylayer import MemoryStore, RolloutPlan, Version
from langchain_graylayer.errors import StoreError
from langchain_graylayer.measuring.completion import default_completion_judge, final_answer
from langchain_graylayer.measuring.feedback import FeedbackKind
from langchain_graylayer.measuring.labels import Outcome, RunLabels
from langchain_graylayer.measuring.prometheus import (
    DURATION_BUCKETS,
    GraylayerMetrics,
    default_metrics,
)

PLAN = "refund-v2"
LABELS = RunLabels(PLAN, "candidate", "normal")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """One exported sample of the candidate arm on ``normal`` (``None``: not exported)."""
    arm = {"plan": PLAN, "version": "candidate", "layer": "normal"}
    return registry.get_sample_value(name, {**arm, **labels})


# --------------------------------------------------------------------------- latency histogram
def test_latencies_are_exported_in_the_duration_buckets() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    latencies = [0.04, 0.3, 1.0, 1.7, 4.0, 119.0, 200.0]  # 1.0 sits on a bound (le is inclusive)
    for seconds in latencies:
        metrics.record_request(LABELS, Outcome.OK, seconds, completed=True)

    name = "graylayer_request_duration_seconds"
    exported = {
        float(s.labels["le"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == f"{name}_bucket"
    }

    assert list(exported) == [*DURATION_BUCKETS, math.inf]
    # cumulative: each bucket counts the latencies at or below its bound
    assert exported == {
        bound: float(sum(seconds <= bound for seconds in latencies)) for bound in exported
    }
    assert exported[1.0] == 3  # 0.04, 0.3 and 1.0 itself
    assert exported[120.0] == 6  # only 200 s is beyond the last finite bound
    assert sample(registry, f"{name}_count") == 7
    assert sample(registry, f"{name}_sum") == pytest.approx(sum(latencies))


# --------------------------------------------------------------------------- series per record
def test_every_record_lands_in_its_series() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    metrics.record_request(LABELS, Outcome.ERROR, 0.2, completed=False)
    metrics.record_tool(LABELS, "lookup", ok=False)
    metrics.record_feedback(LABELS, FeedbackKind.BAD, 3)
    metrics.record_request(LABELS, Outcome.FALLBACK, 0.4, completed=False)
    metrics.record_request(LABELS, Outcome.OK, 0.6, completed=False)
    metrics.record_request(LABELS, Outcome.CANCELLED, 0.1, completed=False)  # client went away
    metrics.record_request(LABELS, Outcome.INTERRUPTED, 0.3, completed=False)  # asks a person
    metrics.record_completion(LABELS)  # a background judge accepted it
    metrics.record_tool(LABELS, "lookup", ok=True)
    metrics.record_tokens(LABELS, input=120, output=30)
    metrics.record_feedback(LABELS, FeedbackKind.GOOD, 9)
    metrics.record_feedback(LABELS, FeedbackKind.COMPLAINT)
    metrics.record_feedback(LABELS, None, 10)

    requests = "graylayer_requests_total"
    assert [sample(registry, requests, outcome=o.value) for o in Outcome] == [1, 1, 1, 1, 1]
    assert sample(registry, "graylayer_request_duration_seconds_count") == 5
    assert sample(registry, "graylayer_request_duration_seconds_sum") == pytest.approx(1.6)
    assert sample(registry, "graylayer_task_completions_total") == 1
    tools = "graylayer_tool_calls_total"
    assert sample(registry, tools, tool="lookup", status="ok") == 1
    assert sample(registry, tools, tool="lookup", status="error") == 1
    assert sample(registry, "graylayer_tool_results_total", status="ok") == 1
    assert sample(registry, "graylayer_tool_results_total", status="error") == 1
    assert sample(registry, "graylayer_tokens_total", direction="input") == 120
    assert sample(registry, "graylayer_tokens_total", direction="output") == 30
    feedback = "graylayer_feedback_total"
    assert [sample(registry, feedback, kind=k.value) for k in FeedbackKind] == [1, 1, 1]
    assert sample(registry, "graylayer_feedback_score_count") == 3
    assert sample(registry, "graylayer_feedback_score_sum") == 22.0
    assert sample(registry, "graylayer_feedback_score_bucket", le="6.0") == 1  # a detractor
    assert registry.get_sample_value("graylayer_handler_errors_total") == 0
    other = {"plan": "another-plan", "version": "candidate", "layer": "normal", "outcome": "ok"}
    assert registry.get_sample_value(requests, other) is None


def test_arms_and_layers_are_kept_apart() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    metrics.record_request(LABELS, Outcome.OK, 0.1, completed=True)
    metrics.record_request(RunLabels(PLAN, "stable", "normal"), Outcome.OK, 0.1, completed=True)
    metrics.record_request(RunLabels(PLAN, "candidate", "vip"), Outcome.OK, 0.1, completed=True)
    metrics.record_request(RunLabels(PLAN, "candidate", "vip"), Outcome.OK, 0.1, completed=True)

    counted = {
        (s.labels["layer"], s.labels["version"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "graylayer_requests_total" and s.labels["outcome"] == "ok"
    }
    assert counted == {("normal", "candidate"): 1, ("normal", "stable"): 1, ("vip", "candidate"): 2}


# --------------------------------------------------------------------------- Prometheus export
def test_init_arms_exports_a_zero_series_for_every_arm() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    layers = ["early_adopter", "vip"]

    metrics.init_arms(PLAN, layers)
    metrics.init_arms(PLAN, layers)  # idempotent

    def series(name: str) -> set[frozenset[tuple[str, str]]]:
        """The label sets of ``name``'s samples, all of which must be zero."""
        samples = [s for f in registry.collect() for s in f.samples if s.name == name]
        assert all(sample.value == 0 for sample in samples), name
        return {frozenset(sample.labels.items()) for sample in samples}

    def every_arm(extra: str | None = None, values: tuple[str, ...] = ()) -> set[Any]:
        arms = [
            {"plan": PLAN, "version": v.value, "layer": name} for name in layers for v in Version
        ]
        if extra is None:
            return {frozenset(arm.items()) for arm in arms}
        return {frozenset({**arm, extra: value}.items()) for arm in arms for value in values}

    outcomes = ("ok", "error", "fallback", "cancelled", "interrupted")
    assert series("graylayer_requests_total") == every_arm("outcome", outcomes)
    assert series("graylayer_request_duration_seconds_count") == every_arm()
    assert series("graylayer_task_completions_total") == every_arm()
    assert series("graylayer_tokens_total") == every_arm("direction", ("input", "output"))
    assert series("graylayer_feedback_total") == every_arm("kind", ("bad", "complaint", "good"))
    assert series("graylayer_feedback_score_count") == every_arm()
    assert series("graylayer_tool_results_total") == every_arm("status", ("ok", "error"))
    assert series("graylayer_tool_calls_total") == set()  # tool names are not known in advance


def test_default_metrics_is_one_instance_per_registry() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()

    assert default_metrics(first) is default_metrics(first)
    assert default_metrics(first) is not default_metrics(second)
    assert default_metrics(first).registry is first
    assert default_metrics() is default_metrics(REGISTRY)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        GraylayerMetrics(registry=first)  # why the shared instance exists


class BrokenStore(MemoryStore):
    """A store whose ratios cannot be read."""

    def get_ratio(self, plan_id: str, layer: str) -> float:
        raise StoreError("redis is down")


def test_the_ratio_gauge_reads_the_store_at_scrape_time() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    store = MemoryStore()
    plan = RolloutPlan.default(PLAN)
    store.set_ratio(PLAN, "vip", 0.25)
    metrics.watch_ratios(plan, store)

    def ratio(layer: str) -> Any:
        return registry.get_sample_value("graylayer_layer_ratio", {"plan": PLAN, "layer": layer})

    assert ratio("vip") == 0.25
    store.set_ratio(PLAN, "vip", 0.5)
    assert ratio("vip") == 0.5
    assert ratio("early_adopter") == 0.0  # never set
    assert {layer: ratio(layer) is not None for layer in plan.layer_names} == dict.fromkeys(
        plan.layer_names, True
    )


def test_the_ratio_gauge_is_nan_when_the_store_fails() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    metrics.watch_ratios(RolloutPlan.default(PLAN), BrokenStore())

    value = registry.get_sample_value("graylayer_layer_ratio", {"plan": PLAN, "layer": "vip"})

    assert value is not None
    assert math.isnan(value)


def test_tokens_and_feedback_without_a_value_export_nothing() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)

    metrics.record_tokens(LABELS, input=0, output=0)
    metrics.record_feedback(LABELS, None, None)

    labelled = [s for f in registry.collect() for s in f.samples if s.labels]
    assert labelled == []  # only the unlabelled handler-error counter exists


# --------------------------------------------------------------------------- final answers
CALL = {"name": "lookup_order", "args": {"order_id": "A-1"}, "id": "call-1"}

FINAL_ANSWERS: list[Any] = [
    pytest.param("Refund approved.", "Refund approved.", id="str"),
    pytest.param("", "", id="empty-str"),
    pytest.param("  \n", "  \n", id="blank-str"),
    pytest.param(None, None, id="none"),
    pytest.param(AIMessage("Refund approved."), "Refund approved.", id="ai-message"),
    pytest.param(AIMessageChunk(content="Refund"), "Refund", id="ai-message-chunk"),
    pytest.param(AIMessage("", tool_calls=[CALL]), None, id="ai-message-calling-a-tool"),
    pytest.param(
        AIMessage("Let me check.", tool_calls=[CALL]), None, id="ai-message-with-text-and-a-call"
    ),
    pytest.param(
        AIMessage([{"type": "text", "text": "Refund "}, {"type": "text", "text": "approved."}]),
        "Refund approved.",
        id="content-blocks",
    ),
    pytest.param(
        AIMessage(
            [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "ok"}]
        ),
        "ok",
        id="content-blocks-with-an-image",
    ),
    pytest.param(
        {"messages": [HumanMessage("Refund A-1?"), AIMessage("Approved.")]},
        "Approved.",
        id="graph-state",
    ),
    pytest.param(
        {"messages": [HumanMessage("Refund A-1?"), AIMessage("", tool_calls=[CALL])]},
        None,
        id="graph-state-still-calling-tools",
    ),
    pytest.param({"messages": []}, None, id="graph-state-without-messages"),
    pytest.param(
        {"model": {"messages": [AIMessage("Approved.")]}}, "Approved.", id="langgraph-update"
    ),
    pytest.param(
        {"model": {"messages": [AIMessage("", tool_calls=[CALL])]}},
        None,
        id="langgraph-update-calling-a-tool",
    ),
    pytest.param(
        {"tools": {"messages": [ToolMessage("order A-1 shipped", tool_call_id="call-1")]}},
        "order A-1 shipped",
        id="langgraph-update-of-a-return-direct-tool",
    ),
    pytest.param([AIMessage("first"), AIMessage("last")], "last", id="list-of-messages"),
    pytest.param([], None, id="empty-list"),
    pytest.param({"output": "Approved."}, "Approved.", id="output-dict"),
    pytest.param({"answer": "Approved."}, "Approved.", id="answer-dict"),
    pytest.param({"output": ""}, "", id="empty-output-dict"),
    pytest.param({}, None, id="empty-dict"),
    pytest.param(42, None, id="not-an-answer"),
    pytest.param(
        {"messages": [HumanMessage("Refund A-1?")]},
        None,
        id="graph-state-ending-with-the-users-question",
    ),
]


@pytest.mark.parametrize(("output", "answer"), FINAL_ANSWERS)
def test_final_answer(output: Any, answer: str | None) -> None:
    assert final_answer(output) == answer


@pytest.mark.parametrize(("output", "answer"), FINAL_ANSWERS)
def test_the_default_judge_wants_a_non_empty_final_answer(output: Any, answer: str | None) -> None:
    assert default_completion_judge(output) is bool(answer and answer.strip())
