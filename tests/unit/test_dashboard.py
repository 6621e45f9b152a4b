"""The example Grafana dashboard: valid JSON, only real ``graylayer_*`` metrics, no per-user labels.

Its queries are also run against a real Prometheus in ``tests/integration/test_prometheus.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from langchain_graylayer.measuring.evaluation import EvaluationMetrics
from langchain_graylayer.measuring.feedback import FeedbackKind
from langchain_graylayer.measuring.labels import Outcome, RunLabels
from langchain_graylayer.measuring.prometheus import GraylayerMetrics

DASHBOARD = Path(__file__).parents[2] / "examples" / "grafana_dashboard.json"
METRIC = re.compile(r"\bgraylayer_[a-zA-Z0-9_]+")
PER_USER = re.compile(r"user_id|session_id|thread_id|request_id|run_id")


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # collapsed rows hold their panels


def queries() -> list[str]:
    """Every PromQL text of the dashboard: panel targets and template variable queries."""
    dashboard = load()
    texts = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            texts.append(query["query"] if isinstance(query, dict) else query)
    return texts


def _record_evaluations(metrics: EvaluationMetrics, labels: RunLabels) -> None:
    """One of each evaluator series: an outcome, a score, spend, the paused gauge."""
    metrics.outcome(labels.plan, labels, "policy", "pass")
    metrics.scores.labels(labels.plan, labels.version, labels.layer, "policy").inc(1.0)
    metrics.tokens.labels(labels.plan, "policy", "input").inc(10)
    metrics.cost.labels(labels.plan, "policy").inc(0.001)
    metrics.paused.labels(labels.plan, "policy").set(0)


def exported_names() -> set[str]:
    """Sample names a GraylayerMetrics registry exports once every metric has a series."""
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    labels = RunLabels("p", "candidate", "normal")
    metrics.init_arms("p", ["normal"])
    metrics.record_request(labels, Outcome.OK, 0.5, completed=True)
    metrics.record_tool(labels, "lookup", ok=False)
    metrics.record_tokens(labels, input=3, output=2)
    metrics.record_cost(labels, 0.01, "USD")
    metrics.record_feedback(labels, FeedbackKind.BAD, 4)
    metrics.record_unrouted("p", "no_user_id")
    metrics.ratio.labels("p", "normal").set(0.1)
    _record_evaluations(EvaluationMetrics.of(registry), labels)
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_is_a_grafana_dashboard_with_a_prometheus_input() -> None:
    dashboard = load()
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)) >= 11
    for panel in panels(dashboard["panels"]):
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["plan"]["query"]["query"] == "label_values(graylayer_requests_total, plan)"
    assert "label_values(graylayer_requests_total" in variables["layer"]["query"]["query"]


def test_no_two_panels_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load()["panels"]:  # the top-level grid (rows hold their own)
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} covers {cells[x, y]!r}"
                cells[x, y] = panel["title"]


def test_every_metric_exists_in_graylayer_metrics() -> None:
    exported = exported_names()
    used = {name for text in queries() for name in METRIC.findall(text)}
    assert used, "the dashboard queries no graylayer_* metric"
    assert used <= exported, sorted(used - exported)


@pytest.mark.parametrize(
    "metric",
    [
        "graylayer_requests_total",
        "graylayer_task_completions_total",
        "graylayer_tool_calls_total",
        "graylayer_request_duration_seconds_bucket",
        "graylayer_tokens_total",
        "graylayer_feedback_total",
        "graylayer_layer_ratio",
        "graylayer_unrouted_requests_total",
        "graylayer_handler_errors_total",
        "graylayer_evaluations_total",
        "graylayer_evaluation_score_total",
        "graylayer_evaluator_tokens_total",
        "graylayer_evaluator_cost_total",
        "graylayer_evaluator_paused",
    ],
)
def test_every_family_is_on_the_dashboard(metric: str) -> None:
    assert any(metric in text for text in queries())


def test_no_query_groups_or_filters_by_a_user_or_session() -> None:
    for text in queries():
        assert not PER_USER.search(text), text


def test_the_metric_regex_finds_names_in_promql() -> None:
    text = 'sum by (le) (rate(graylayer_request_duration_seconds_bucket{plan="$plan"}[5m]))'
    assert METRIC.findall(text) == ["graylayer_request_duration_seconds_bucket"]
    assert METRIC.findall("rate(graylayer_nope_total[5m])") == ["graylayer_nope_total"]
    assert "graylayer_nope_total" not in exported_names()
