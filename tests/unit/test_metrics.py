"""Tests for langchain_graylayer.measuring (and the output readers of callbacks), without agents.

The windowed in-process accumulators run on an injected clock; Prometheus is read back from a
``CollectorRegistry`` of the test's own.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from prometheus_client import REGISTRY, CollectorRegistry

from langchain_graylayer import MemoryStore, RolloutPlan, Version
from langchain_graylayer.errors import StoreError
from langchain_graylayer.judging.readmodel import ArmStats, LatencySummary
from langchain_graylayer.measuring.completion import default_completion_judge, final_answer
from langchain_graylayer.measuring.feedback import FeedbackKind
from langchain_graylayer.measuring.labels import Outcome, RunLabels
from langchain_graylayer.measuring.prometheus import GraylayerMetrics, default_metrics
from langchain_graylayer.measuring.sources import InProcessSource
from langchain_graylayer.measuring.windows import DURATION_BUCKETS

PLAN = "refund-v2"
LABELS = RunLabels(PLAN, "candidate", "normal")


class Clock:
    """A settable POSIX clock."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def counted(metrics: GraylayerMetrics, window: float, layer: str = "normal") -> int:
    """Requests of the candidate arm on ``layer`` in the last ``window`` seconds."""
    arm = InProcessSource(metrics).snapshot(PLAN, window).arm(layer, Version.CANDIDATE)
    return 0 if arm is None else arm.requests


# --------------------------------------------------------------------------- LatencySummary
TEN = LatencySummary(count=10, sum=12.0, buckets=((0.5, 2), (1.0, 6), (2.0, 9), (math.inf, 10)))
"""10 latencies: 2 up to 0.5 s, 4 in (0.5, 1], 3 in (1, 2], 1 above 2 s."""


@pytest.mark.parametrize(
    ("slo", "slower"),
    [
        pytest.param(0.5, 8.0, id="at-first-bound"),
        pytest.param(1.0, 4.0, id="at-a-bound"),
        pytest.param(2.0, 1.0, id="at-last-finite-bound"),
        pytest.param(0.75, 6.0, id="halfway-in-a-bucket"),  # 2 + 0.5 * 4 below
        pytest.param(1.5, 2.5, id="halfway-in-the-last-finite-bucket"),  # 6 + 0.5 * 3 below
        pytest.param(0.25, 9.0, id="first-bucket-interpolates-from-zero"),  # 0.5 * 2 below
        pytest.param(0.0, 10.0, id="zero"),
        pytest.param(2.5, 1.0, id="beyond-the-last-finite-bound"),  # cannot tell: all above 2
        pytest.param(500.0, 1.0, id="far-beyond"),
    ],
)
def test_slower_than_is_exact_at_bounds_and_interpolated_between(slo: float, slower: float) -> None:
    assert TEN.slower_than(slo) == pytest.approx(slower)


@pytest.mark.parametrize("slo", [0.0, 1.0, 1e9])
def test_slower_than_without_data_is_zero(slo: float) -> None:
    assert LatencySummary().slower_than(slo) == 0.0
    assert math.isnan(LatencySummary().mean)


def test_windowed_latencies_match_the_prometheus_histogram() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    latencies = [0.04, 0.3, 1.0, 1.7, 4.0, 119.0, 200.0]  # 1.0 sits on a bound (le is inclusive)
    for seconds in latencies:
        metrics.record_request(LABELS, Outcome.OK, seconds, completed=True)

    arm = InProcessSource(metrics).snapshot(PLAN, 60).arm("normal", Version.CANDIDATE)

    assert arm is not None
    latency = arm.latency
    assert (latency.count, latency.sum) == (7, pytest.approx(sum(latencies)))
    labels = {"plan": PLAN, "version": "candidate", "layer": "normal"}

    def exported(bound: float) -> float | None:
        le = "+Inf" if math.isinf(bound) else str(bound)
        return registry.get_sample_value(
            "graylayer_request_duration_seconds_bucket", {**labels, "le": le}
        )

    assert [bound for bound, _ in latency.buckets] == [*DURATION_BUCKETS, math.inf]
    assert list(latency.buckets) == [(bound, exported(bound)) for bound, _ in latency.buckets]
    assert latency.slower_than(1.0) == 4  # 1.7, 4, 119, 200
    assert latency.slower_than(120.0) == 1
    assert latency.slower_than(300.0) == 1  # beyond 120 s the histogram cannot tell
    assert latency.mean == pytest.approx(sum(latencies) / 7)


# --------------------------------------------------------------------------- windows
@pytest.mark.parametrize(
    ("event", "now", "window", "included"),
    [
        pytest.param(100.0, 100.0, 30.0, True, id="now"),
        pytest.param(75.0, 100.0, 30.0, True, id="inside"),
        pytest.param(65.0, 100.0, 30.0, False, id="older-than-the-window"),
        pytest.param(70.0, 100.0, 30.0, True, id="first-slot-of-the-window"),
        pytest.param(69.99, 100.0, 30.0, False, id="last-moment-of-the-slot-before"),
        pytest.param(70.0, 109.0, 30.0, True, id="rounded-out-to-whole-slots"),
        pytest.param(100.0, 109.0, 0.0, True, id="zero-window-is-the-current-slot"),
        pytest.param(99.0, 109.0, 0.0, False, id="zero-window-excludes-the-previous-slot"),
    ],
)
def test_the_window_counts_events_of_the_slots_it_covers(
    event: float, now: float, window: float, included: bool
) -> None:
    clock = Clock(event)
    metrics = GraylayerMetrics(registry=None, clock=clock, resolution=10)
    metrics.record_request(LABELS, Outcome.OK, 0.2, completed=True)

    clock.now = now

    assert counted(metrics, window) == int(included)


def test_every_record_lands_in_the_window_of_its_time() -> None:
    clock = Clock(1_000.0)
    metrics = GraylayerMetrics(registry=None, clock=clock, resolution=10)
    metrics.record_request(LABELS, Outcome.ERROR, 0.2, completed=False)
    metrics.record_tool(LABELS, "lookup", ok=False)
    metrics.record_feedback(LABELS, FeedbackKind.BAD, 3)
    clock.now = 1_100.0
    metrics.record_request(LABELS, Outcome.FALLBACK, 0.4, completed=False)
    metrics.record_request(LABELS, Outcome.OK, 0.6, completed=False)
    metrics.record_completion(LABELS)  # a background judge accepted it
    metrics.record_tool(LABELS, "lookup", ok=True)
    metrics.record_tokens(LABELS, input=120, output=30)
    metrics.record_feedback(LABELS, FeedbackKind.GOOD, 9)
    metrics.record_feedback(LABELS, FeedbackKind.COMPLAINT)
    metrics.record_feedback(LABELS, None, 10)

    recent = metrics.window(PLAN, 60)[("normal", Version.CANDIDATE)]
    both = metrics.window(PLAN, 600)[("normal", Version.CANDIDATE)]

    assert replace(recent, latency=LatencySummary()) == ArmStats(
        requests=2,
        fallbacks=1,
        completions=1,
        tool_calls=1,
        input_tokens=120,
        output_tokens=30,
        feedback_complaint=1,
        feedback_good=1,
        feedback_score_count=2,
        feedback_score_sum=19.0,
    )
    assert (recent.latency.count, recent.latency.sum) == (2, pytest.approx(1.0))
    assert (both.requests, both.errors, both.fallbacks, both.failures) == (3, 1, 1, 2)
    assert (both.tool_calls, both.tool_errors, both.feedback_bad) == (2, 1, 1)
    assert (both.feedback_score_count, both.feedback_score_sum) == (3, 22.0)
    assert metrics.window("another-plan", 600) == {}


def test_slots_beyond_retention_are_dropped() -> None:
    clock = Clock(0.0)
    metrics = GraylayerMetrics(registry=None, clock=clock, resolution=10, retention=60)
    metrics.record_request(LABELS, Outcome.OK, 0.1, completed=True)  # slot 0

    clock.now = 60.0  # slot 6: slot 0 is still within 60 s of retention
    metrics.record_request(LABELS, Outcome.OK, 0.1, completed=True)
    assert counted(metrics, 10_000) == 2

    clock.now = 70.0  # slot 7: a new slot drops slot 0
    metrics.record_request(LABELS, Outcome.OK, 0.1, completed=True)
    assert counted(metrics, 10_000) == 2


def test_arms_and_layers_are_kept_apart() -> None:
    metrics = GraylayerMetrics(registry=None)
    metrics.record_request(LABELS, Outcome.OK, 0.1, completed=True)
    metrics.record_request(RunLabels(PLAN, "stable", "normal"), Outcome.OK, 0.1, completed=True)
    metrics.record_request(RunLabels(PLAN, "candidate", "vip"), Outcome.OK, 0.1, completed=True)

    assert set(metrics.window(PLAN, 60)) == {
        ("normal", Version.CANDIDATE),
        ("normal", Version.STABLE),
        ("vip", Version.CANDIDATE),
    }
    assert counted(metrics, 60) == 1


# --------------------------------------------------------------------------- ArmStats
def test_rates_without_a_denominator_are_nan() -> None:
    empty = ArmStats()
    assert math.isnan(empty.completion_rate)
    assert math.isnan(empty.tool_success_rate)
    assert math.isnan(empty.latency.mean)
    assert empty.failures == 0

    no_tools = ArmStats(requests=4, completions=3)
    assert no_tools.completion_rate == 0.75
    assert math.isnan(no_tools.tool_success_rate)


def test_rates_and_failures() -> None:
    stats = ArmStats(requests=10, errors=1, fallbacks=2, completions=6, tool_calls=8, tool_errors=2)
    assert (stats.completion_rate, stats.tool_success_rate, stats.failures) == (0.6, 0.75, 3)


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

    assert series("graylayer_requests_total") == every_arm("outcome", ("ok", "error", "fallback"))
    assert series("graylayer_request_duration_seconds_count") == every_arm()
    assert series("graylayer_task_completions_total") == every_arm()
    assert series("graylayer_tokens_total") == every_arm("direction", ("input", "output"))
    assert series("graylayer_feedback_total") == every_arm("kind", ("bad", "complaint", "good"))
    assert series("graylayer_feedback_score_count") == every_arm()
    assert series("graylayer_tool_calls_total") == set()  # tool names are not known in advance
    assert metrics.window(PLAN, 3600) == {}  # zero series are not data


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
