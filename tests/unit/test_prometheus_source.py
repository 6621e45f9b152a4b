"""PrometheusSource: PromQL escaping, the queries it sends, and how it reads Prometheus' answers.

The answers come from a small real HTTP server on loopback (``http.server`` in a thread) that
plays Prometheus' query API with canned JSON; nothing is mocked. The same source against a real
Prometheus is in ``tests/integration/test_prometheus.py``.
"""

from __future__ import annotations

import doctest
import json
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import CollectorRegistry

import langchain_graylayer.measuring.prometheus_source as prometheus_source
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.judging.readmodel import ArmStats, LatencySummary, MetricSource
from langchain_graylayer.measuring.feedback import FeedbackKind
from langchain_graylayer.measuring.labels import Outcome, RunLabels
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.measuring.prometheus_source import PrometheusSource, escape_label_value
from langchain_graylayer.measuring.windows import DURATION_BUCKETS
from langchain_graylayer.plan.plan import Version

NOW = 1_700_000_000.25
# One complete double-quoted PromQL string literal: no raw newline, every quote escaped.
STRING_LITERAL = r'"(?:[^"\\\n\r]|\\[\\"nr])*"'


def unquote(literal: str) -> str:
    """Decode a PromQL string literal as Prometheus' lexer does (Go escapes)."""
    assert re.fullmatch(STRING_LITERAL, literal), f"not one string literal: {literal!r}"
    escapes = {"\\": "\\", '"': '"', "n": "\n", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes[m.group(1)], literal[1:-1])


# --------------------------------------------------------------------------- a canned Prometheus
@dataclass
class Seen:
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class CannedPrometheus:
    """A real HTTP server on 127.0.0.1 answering Prometheus API paths with canned bodies."""

    url: str = ""
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    """Metric name (as in the query) or path → (HTTP status, JSON-able body or raw bytes)."""
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)

    def vector(self, metric: str, series: list[tuple[dict[str, str], str]]) -> None:
        result = [{"metric": labels, "value": [NOW, value]} for labels, value in series]
        self.answers[metric] = (200, success(result))

    def answer(self, path: str, query: str) -> tuple[int, Any]:
        if path == "/api/v1/query":
            found = re.search(r"increase\((graylayer_\w+)\{", query)
            key = found.group(1) if found else query
            return self.answers.get(key, (200, success([])))
        return self.answers.get(path, (404, {"status": "error", "error": "not found"}))

    @property
    def queries(self) -> list[str]:
        return [s.params["query"][0] for s in self.seen if s.path == "/api/v1/query"]


def success(result: list[Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        canned = self.server.canned
        url = urlsplit(self.path)
        params = parse_qs(url.query)
        canned.seen.append(Seen(url.path, params, dict(self.headers)))
        time.sleep(canned.delay)
        status, body = canned.answer(url.path, params.get("query", [""])[0])
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    canned: CannedPrometheus

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is what the timeout test wants


@pytest.fixture
def prom() -> Iterator[CannedPrometheus]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.canned = CannedPrometheus(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server.canned
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens once the socket is closed


def source(url: str, **kwargs: Any) -> PrometheusSource:
    return PrometheusSource(url, clock=lambda: NOW, **kwargs)


# --------------------------------------------------------------------------- escaping
ESCAPE_CASES = [
    ("refund-v2", "refund-v2"),
    ('a"b', 'a\\"b'),
    ("a\\b", "a\\\\b"),
    ("a\nb", "a\\nb"),
    ("a\rb", "a\\rb"),
    ("ends with \\", "ends with \\\\"),
    ('\\"', '\\\\\\"'),
    ('"} or vector(1) or {"', '\\"} or vector(1) or {\\"'),
    ("ünïcødé\tand tab", "ünïcødé\tand tab"),
    ("", ""),
]


@pytest.mark.parametrize(("value", "escaped"), ESCAPE_CASES)
def test_escape_label_value(value: str, escaped: str) -> None:
    assert escape_label_value(value) == escaped
    assert unquote(f'"{escaped}"') == value  # one literal, decoding back to the value


@pytest.mark.parametrize(
    "plan_id",
    [value for value, _ in ESCAPE_CASES]
    + ['x"} or vector(1) or {"', 'x",plan=~".*', '\\"}[1s])) or vector(1) #'],
)
def test_a_plan_id_cannot_break_out_of_its_matcher(plan_id: str) -> None:
    shape = re.compile(
        r"sum by \(layer, version(?:, \w+)?\) \(increase\(graylayer_\w+"
        rf"\{{plan=(?P<plan>{STRING_LITERAL}),job=\"agents\"\}}\[60s\]\)\)"
    )
    for query in (
        PrometheusSource("http://p", matchers={"job": "agents"}).queries(plan_id, 60).values()
    ):
        match = shape.fullmatch(query)
        assert match is not None, query
        assert unquote(match["plan"]) == plan_id


# --------------------------------------------------------------------------- queries
def test_queries_one_per_family() -> None:
    queries = PrometheusSource("http://p", matchers={"job": "agents"}).queries("refund-v2", 3600)
    assert queries["requests"] == (
        "sum by (layer, version, outcome) "
        '(increase(graylayer_requests_total{plan="refund-v2",job="agents"}[3600s]))'
    )

    def query(by: str, metric: str) -> str:
        selector = '{plan="refund-v2",job="agents"}[3600s]'
        return f"sum by (layer, version{by}) (increase(graylayer_{metric}{selector}))"

    assert queries == {
        "requests": query(", outcome", "requests_total"),
        "completions": query("", "task_completions_total"),
        "tool_calls": query(", status", "tool_results_total"),
        "tokens": query(", direction", "tokens_total"),
        "feedback": query(", kind", "feedback_total"),
        "feedback_score_count": query("", "feedback_score_count"),
        "feedback_score_sum": query("", "feedback_score_sum"),
        "latency_buckets": query(", le", "request_duration_seconds_bucket"),
        "latency_count": query("", "request_duration_seconds_count"),
        "latency_sum": query("", "request_duration_seconds_sum"),
    }


def test_matcher_values_are_escaped_too() -> None:
    queries = PrometheusSource("http://p", matchers={"ns": 'a"b', "job": "x"}).queries("p", 60)
    assert '{plan="p",ns="a\\"b",job="x"}[60s]' in queries["requests"]


def test_every_queried_metric_exists_in_graylayer_metrics() -> None:
    registry = CollectorRegistry()
    metrics = GraylayerMetrics(registry=registry)
    labels = RunLabels("p", "candidate", "normal")
    metrics.record_request(labels, Outcome.OK, 0.5, completed=True)
    metrics.record_tool(labels, "lookup", ok=True)
    metrics.record_tokens(labels, input=1, output=1)
    metrics.record_feedback(labels, FeedbackKind.BAD, 3)
    exported = {sample.name for family in registry.collect() for sample in family.samples}
    queried = {
        re.search(r"increase\((\w+)\{", q)[1]  # type: ignore[index]
        for q in PrometheusSource("http://p").queries("p", 60).values()
    }
    assert len(queried) == 10
    assert queried <= exported


@pytest.mark.parametrize(
    ("window", "duration"),
    [(0.2, "1s"), (1, "1s"), (59.5, "60s"), (120, "120s"), (3600.0, "3600s")],
)
def test_window_is_whole_seconds_at_least_one(window: float, duration: str) -> None:
    assert PrometheusSource("http://p").queries("p", window)["requests"].endswith(f"[{duration}]))")


@pytest.mark.parametrize("window", [0, -60, math.nan, math.inf, True, "60"])
def test_invalid_window_is_a_configuration_error(window: Any) -> None:
    with pytest.raises(ConfigurationError, match="window"):
        PrometheusSource("http://p").snapshot("p", window)


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("name", ["job", "_x", "k8s_namespace", "A1", "__name__"])
def test_valid_matcher_names(name: str) -> None:
    assert PrometheusSource("http://p", matchers={name: "v"}).matchers == {name: "v"}


@pytest.mark.parametrize(
    "name", ["", "1job", "job-name", "job name", 'job"', "jöb", "job}", "plan", "a=b", 3]
)
def test_invalid_matcher_names_are_rejected(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="matchers"):
        PrometheusSource("http://p", matchers={name: "v"})


def test_matcher_values_must_be_strings() -> None:
    with pytest.raises(ConfigurationError, match="matchers\\['job'\\]"):
        PrometheusSource("http://p", matchers={"job": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("url", ["localhost:9090", "ftp://p", "file:///etc/passwd", ""])
def test_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigurationError, match="url"):
        PrometheusSource(url)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, "5"])
def test_timeout_must_be_positive(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        PrometheusSource("http://p", timeout=timeout)


def test_defaults_protocol_and_repr() -> None:
    src = PrometheusSource("http://prom:9090/", headers={"Authorization": "Bearer s3cret"})
    assert (src.url, src.timeout, src.matchers) == ("http://prom:9090", 5.0, {})
    assert isinstance(src, MetricSource)
    assert "s3cret" not in repr(src)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(prometheus_source, optionflags=doctest.ELLIPSIS)
    assert (result.failed, result.attempted > 0) == (0, True)


# --------------------------------------------------------------------------- parsing answers
def arm(layer: str, version: str, **extra: str) -> dict[str, str]:
    return {"layer": layer, "version": version, **extra}


def test_snapshot_reads_every_family(prom: CannedPrometheus) -> None:
    cand = {"layer": "normal", "version": "candidate"}
    prom.vector(
        "graylayer_requests_total",
        [
            ({**cand, "outcome": "ok"}, "10.2"),  # increase() extrapolates: rounded
            ({**cand, "outcome": "error"}, "1"),
            ({**cand, "outcome": "fallback"}, "2.4"),
            (arm("normal", "stable", outcome="ok"), "20"),
            (arm("vip", "stable", outcome="ok"), "0"),  # series exist, no traffic
            (arm("normal", "canary", outcome="ok"), "5"),  # not a Version: skipped
            ({"version": "stable", "outcome": "ok"}, "5"),  # no layer: skipped
        ],
    )
    prom.vector(
        "graylayer_task_completions_total",
        [(cand, "7.6"), (arm("normal", "stable"), "18"), (arm("vip", "stable"), "0")],
    )
    prom.vector(
        "graylayer_tool_results_total",
        [
            ({**cand, "status": "ok"}, "5"),
            ({**cand, "status": "error"}, "1"),
            ({**cand, "status": "timeout"}, "9"),  # unknown status: ignored
        ],
    )
    prom.vector(
        "graylayer_tokens_total",
        [({**cand, "direction": "input"}, "100.4"), ({**cand, "direction": "output"}, "50")],
    )
    prom.vector(
        "graylayer_feedback_total",
        [
            ({**cand, "kind": "bad"}, "1"),
            ({**cand, "kind": "complaint"}, "1"),
            ({**cand, "kind": "good"}, "3"),
            (arm("early", "candidate", kind="bad"), "1"),  # feedback only: present
        ],
    )
    prom.vector("graylayer_feedback_score_count", [(cand, "2")])
    prom.vector("graylayer_feedback_score_sum", [(cand, "12.5")])
    le = [*(str(b) for b in DURATION_BUCKETS[:3]), "+Inf"]  # a shortened histogram
    prom.vector(
        "graylayer_request_duration_seconds_bucket",
        [({**cand, "le": b}, v) for b, v in zip(le, ["3", "8.4", "12", "13.1"], strict=True)],
    )
    prom.vector("graylayer_request_duration_seconds_count", [(cand, "13.1")])
    prom.vector("graylayer_request_duration_seconds_sum", [(cand, "4.75")])

    snapshot = source(prom.url).snapshot("refund-v2", 3600)

    assert (snapshot.plan_id, snapshot.window, snapshot.error) == ("refund-v2", 3600, None)
    assert snapshot.arm("normal", Version.CANDIDATE) == ArmStats(
        requests=13, errors=1, fallbacks=2, completions=8, tool_calls=6, tool_errors=1,
        input_tokens=100, output_tokens=50, feedback_bad=1, feedback_complaint=1,
        feedback_good=3, feedback_score_count=2, feedback_score_sum=12.5,
        latency=LatencySummary(13, 4.75, ((0.05, 3), (0.1, 8), (0.25, 12), (math.inf, 13))),
    )  # fmt: skip
    assert snapshot.arm("normal", Version.STABLE) == ArmStats(requests=20, completions=18)
    assert snapshot.arm("vip", Version.STABLE) == ArmStats()  # real data: no traffic
    assert snapshot.arm("vip", Version.CANDIDATE) is None  # no series: no data
    assert snapshot.arm("early", Version.CANDIDATE) == ArmStats(feedback_bad=1)
    assert set(snapshot.arms) == {
        ("normal", Version.CANDIDATE),
        ("normal", Version.STABLE),
        ("vip", Version.STABLE),
        ("early", Version.CANDIDATE),
    }


def test_requests_go_to_the_query_api_at_one_instant_with_headers(prom: CannedPrometheus) -> None:
    src = source(prom.url, headers={"Authorization": "Bearer s3cret"}, matchers={"job": "a"})
    src.snapshot("p", 60)
    assert prom.queries == list(src.queries("p", 60).values())
    assert {s.path for s in prom.seen} == {"/api/v1/query"}
    assert {s.params["time"][0] for s in prom.seen} == {f"{NOW:.3f}"}
    assert {s.headers["Authorization"] for s in prom.seen} == {"Bearer s3cret"}


def test_rounding_keeps_the_histogram_cumulative(prom: CannedPrometheus) -> None:
    cand = {"layer": "l", "version": "candidate"}
    prom.vector(
        "graylayer_request_duration_seconds_bucket",
        [
            ({**cand, "le": "0.5"}, "2.5"),
            ({**cand, "le": "1.0"}, "2.4"),
            ({**cand, "le": "+Inf"}, "3"),
        ],
    )
    latency = source(prom.url).snapshot("p", 60).arms[("l", Version.CANDIDATE)].latency
    assert latency.buckets == ((0.5, 2), (1.0, 2), (math.inf, 3))  # round(2.5) == 2, not 2 > 2


def test_empty_answers_mean_no_arms_and_no_error(prom: CannedPrometheus) -> None:
    snapshot = source(prom.url).snapshot("p", 60)
    assert (snapshot.arms, snapshot.error) == ({}, None)
    assert len(prom.queries) == 10


# --------------------------------------------------------------------------- outages
def assert_outage(snapshot: Any, url: str, *fragments: str) -> None:
    assert snapshot.arms == {}
    assert snapshot.error is not None
    assert snapshot.error.startswith(f"Prometheus at {url}: the ")
    for fragment in fragments:
        assert fragment in snapshot.error


def test_closed_port_is_an_error_snapshot() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert_outage(source(url).snapshot("p", 60), url, "requests query failed", "refused")


def test_timeout_is_an_error_snapshot(prom: CannedPrometheus) -> None:
    prom.delay = 1.0
    started = time.monotonic()
    snapshot = source(prom.url, timeout=0.2).snapshot("p", 60)
    assert_outage(snapshot, prom.url, "timed out")
    assert time.monotonic() - started < 0.9  # gave up at the first query


BAD_ANSWERS = [
    ((500, b"internal error"), "HTTP 500"),
    ((400, {"status": "error", "errorType": "bad_data", "error": "parse error"}), "bad_data"),
    ((200, {"status": "error", "errorType": "timeout", "error": "query timed out"}), "timeout"),
    ((200, {"status": "success", "data": {"resultType": "matrix", "result": []}}), "matrix"),
    ((200, {"status": "success"}), "malformed"),
    ((200, b"<html>not json</html>"), "not JSON"),
    ((200, b"[1, 2]"), "malformed"),
    ((200, success([{"metric": arm("l", "stable"), "value": [NOW, "NaN"]}])), "non-finite"),
    ((200, success([{"metric": arm("l", "stable"), "value": "12"}])), "malformed"),
    ((200, success([{"metric": arm("l", "stable"), "value": [NOW, "x"]}])), "malformed"),
    ((200, success([{"value": [NOW, "1"]}])), "malformed"),
]


@pytest.mark.parametrize(("canned", "fragment"), BAD_ANSWERS)
def test_failed_or_malformed_answers_are_error_snapshots(
    prom: CannedPrometheus, canned: tuple[int, Any], fragment: str
) -> None:
    prom.answers["graylayer_requests_total"] = canned
    assert_outage(source(prom.url).snapshot("p", 60), prom.url, "requests query", fragment)


def test_a_later_failure_discards_what_was_read(prom: CannedPrometheus) -> None:
    prom.vector("graylayer_requests_total", [(arm("l", "stable", outcome="ok"), "10")])
    prom.answers["graylayer_request_duration_seconds_sum"] = (503, b"overloaded")
    assert_outage(source(prom.url).snapshot("p", 60), prom.url, "latency_sum query", "HTTP 503")


def test_a_bucket_without_numeric_le_is_an_error_snapshot(prom: CannedPrometheus) -> None:
    series = [(arm("l", "stable", le="fast"), "1")]
    prom.vector("graylayer_request_duration_seconds_bucket", series)
    assert_outage(source(prom.url).snapshot("p", 60), prom.url, "latency_buckets query")
