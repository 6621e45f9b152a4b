"""The ``graylayer_*`` series scraped by a real Prometheus from a real ``/metrics`` endpoint.

A session fixture serves a fresh ``CollectorRegistry`` with ``prometheus_client``'s HTTP server and
starts ``prometheus`` (scrape interval 1 s) on loopback. Traffic goes through a real GrayRouter;
what Prometheus' HTTP API (``/api/v1/query``) answers must equal what the process recorded, and
the Grafana dashboard's queries must run. (The judge does not read Prometheus: it reads per-user
evidence from the store. These series are for dashboards and alerts.)

``increase()`` extrapolates to the edges of its window. Each series starts at 0 (``init_arms``
before the first scrape), which pins the start; the end is pinned by evaluating at the timestamp
of the last scrape. Then the counts are exact, not just close.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID, uuid4

import pytest
import yaml
from _servers import ManagedProcess, free_port, wait_until
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from prometheus_client import CollectorRegistry, start_http_server

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan, Version
from langchain_graylayer.measuring.evaluation import EvaluationMetrics
from langchain_graylayer.measuring.labels import RunLabels
from langchain_graylayer.measuring.prometheus import GraylayerMetrics

JOB = "graylayer-app"
WINDOW = 120


@dataclass
class Scraped:
    """A Prometheus server (``url``) scraping ``metrics`` every second as job ``JOB``."""

    url: str
    registry: CollectorRegistry
    metrics: GraylayerMetrics

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (at time ``at``, else now): the result's series."""
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        url = f"{self.url}/api/v1/query?{urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def last_scrape(self) -> float:
        """The timestamp of the newest scrape of the app (0 before the first)."""
        # timestamp() of a plain selector is the sample's (of an expression, the query's)
        result = self.query(f'timestamp(up{{job="{JOB}"}})')
        return float(result[0]["value"][1]) if result else 0.0

    def scrape_after(self, moment: float) -> float:
        """Wait for a scrape that started after ``moment``; return its timestamp.

        The margin covers Prometheus aligning scrape timestamps to its schedule (2 ms tolerance).
        """
        after = moment + 0.01
        wait_until(lambda: self.last_scrape() > after, 15, f"a scrape after {moment:.3f}")
        return self.last_scrape()

    def values(self, promql: str, at: float) -> dict[Series, float]:
        """The query's series at ``at``, keyed like :func:`recorded` (without job and instance)."""
        found: dict[Series, float] = {}
        for result in self.query(promql, at):
            labels = dict(result["metric"])
            name = labels.pop("__name__", "")
            labels.pop("job", None)
            labels.pop("instance", None)
            found[name, frozenset(labels.items())] = float(result["value"][1])
        return found


Series = tuple[str, frozenset[tuple[str, str]]]
"""A series: its metric name and its labels."""


def recorded(registry: CollectorRegistry, plan_id: str) -> dict[Series, float]:
    """Every ``graylayer_*`` sample of the plan, as the process would expose it now."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith("graylayer_") and sample.labels.get("plan") == plan_id
    }


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus not found; install it with: apt-get install -y prometheus"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must not skip the Prometheus tests)")
        pytest.skip(message)
    registry = CollectorRegistry()
    app_port = free_port()
    httpd, thread = start_http_server(app_port, addr="127.0.0.1", registry=registry)
    home: Path = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        binary,
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
    ready = functools.partial(_ready, url)
    try:
        with ManagedProcess(args, name="prometheus", ready=ready, timeout=30, cwd=home):
            scraped = Scraped(url, registry, GraylayerMetrics(registry=registry))
            scraped.scrape_after(0)
            yield scraped
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- the agents
def make_plan(plan_id: str) -> RolloutPlan:
    pilots = [f"pilot-{i}" for i in range(60)]
    return RolloutPlan.from_dict(
        {
            "id": plan_id,
            "layers": [
                {"name": "pilot", "members": pilots},
                {"name": "rest", "score_range": [0, 1]},
            ],
        }
    )


def agent(name: str) -> RunnableLambda[str, str]:
    def answer(question: str) -> str:
        if question == "crash" or (question == "boom" and name == "candidate"):
            raise RuntimeError(f"{name} failed on {question}")
        return "" if question == "empty" else f"{name}: {question}"

    return RunnableLambda(answer, name=f"{name}_agent")


def pick_users(router: GrayRouter[str, str], per_arm: int) -> dict[tuple[str, Version], list[str]]:
    """``per_arm`` users on each (layer, version), found by asking the router (sticky hashing)."""
    found: dict[tuple[str, Version], list[str]] = {}
    for user in [f"pilot-{i}" for i in range(60)] + [f"user-{i}" for i in range(200)]:
        decision = router.route(user)
        assert decision.layer is not None
        users = found.setdefault((decision.layer, decision.version), [])
        if len(users) < per_arm:
            users.append(user)
    assert len(found) == 4, found
    assert all(len(users) == per_arm for users in found.values()), found
    return found


QUESTIONS = ["ok", "ok", "empty", "boom", "crash", "ok"]


def traffic(router: GrayRouter[str, str], users: dict[tuple[str, Version], list[str]]) -> None:
    """Requests of every kind on every arm (different amounts per arm), and some feedback."""
    for arm_index, arm_users in enumerate(users.values()):
        for user_index, user in enumerate(arm_users):
            for k in range(3 + arm_index + user_index):
                run_id = uuid4()
                config: RunnableConfig = {"configurable": {"user_id": user}, "run_id": run_id}
                question = QUESTIONS[(arm_index + user_index + k) % len(QUESTIONS)]
                with contextlib.suppress(RuntimeError):  # crash: both versions raise
                    router.invoke(question, config)
                give_feedback(router, run_id, k)


def give_feedback(router: GrayRouter[str, str], run_id: UUID, k: int) -> None:
    if k == 0:
        router.feedback(run_id, "bad")
    elif k == 1:
        router.feedback(run_id, "good", score=9)
    elif k == 2:
        router.feedback(run_id, "complaint", score=2.5)
    elif k == 3:
        router.feedback(run_id, None, score=7)


# --------------------------------------------------------------------------- tests
def test_prometheus_reads_back_what_the_process_counted(prometheus: Scraped) -> None:
    plan = make_plan(f"prom-{uuid4().hex[:8]}")
    metrics = prometheus.metrics
    metrics.init_arms(plan.id, plan.layer_names)  # every series starts at 0 ...
    prometheus.scrape_after(time.time())  # ... in Prometheus too, so increase() counts from 0
    store = MemoryStore()
    store.set_ratio(plan.id, "pilot", 0.5)
    store.set_ratio(plan.id, "rest", 0.5)
    router: GrayRouter[str, str] = GrayRouter(
        stable=agent("stable"),
        candidate=agent("candidate"),
        plan=plan,
        store=store,
        metrics=metrics,
    )
    traffic(router, pick_users(router, per_arm=3))
    local = recorded(prometheus.registry, plan.id)
    prometheus.scrape_after(time.time())
    last = prometheus.scrape_after(time.time())  # two scrapes after the traffic

    # every series of the plan, as Prometheus stored it at the last scrape
    remote = prometheus.values(f'{{job="{JOB}", plan="{plan.id}"}}', at=last)

    assert remote.keys() == local.keys()
    assert remote == local  # floats go over the wire in their shortest exact form
    # the traffic exercised what is compared, on every arm
    for layer in plan.layer_names:
        for version in Version:
            arm = {"plan": plan.id, "version": version.value, "layer": layer}

            def value(name: str, arm: dict[str, str] = arm, **labels: str) -> float:
                return local[name, frozenset({**arm, **labels}.items())]

            ok = value("graylayer_requests_total", outcome="ok")
            errors = value("graylayer_requests_total", outcome="error")
            fallbacks = value("graylayer_requests_total", outcome="fallback")
            assert ok > value("graylayer_task_completions_total") > 0, arm
            assert min(errors, value("graylayer_feedback_total", kind="bad")) > 0, arm
            assert value("graylayer_feedback_score_count") > 0, arm
            assert (fallbacks > 0) is (version is Version.CANDIDATE), arm
            assert value("graylayer_request_duration_seconds_count") == ok + errors + fallbacks, arm

    # increase() over the window, at the last scrape, is exactly what was counted
    increases = prometheus.values(
        f'sum by (layer, version, outcome) (increase(graylayer_requests_total{{job="{JOB}", '
        f'plan="{plan.id}"}}[{WINDOW}s]))',
        at=last,
    )
    assert increases == {
        ("", labels - {("plan", plan.id)}): value
        for (name, labels), value in local.items()
        if name == "graylayer_requests_total"
    }


def _ready(url: str) -> bool:
    """Prometheus answers its readiness endpoint."""
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=0.5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_dashboard_queries_run_on_prometheus(prometheus: Scraped) -> None:
    path = Path(__file__).parents[2] / "examples" / "grafana_dashboard.json"
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    plan = make_plan(f"prom-{uuid4().hex[:8]}")
    metrics = prometheus.metrics
    metrics.init_arms(plan.id, plan.layer_names, "USD")  # as for a plan that prices its models
    store = MemoryStore()
    store.set_ratio(plan.id, "pilot", 0.1)
    metrics.watch_ratios(plan, store)
    metrics.record_tool(RunLabels(plan.id, "candidate", "pilot"), "lookup", ok=True)
    metrics.record_unrouted(plan.id, "no_user_id")
    evaluations = EvaluationMetrics.of(metrics.registry)  # the evaluator rows' series
    evaluations.outcome(plan.id, RunLabels(plan.id, "candidate", "pilot"), "policy", "pass")
    evaluations.scores.labels(plan.id, "candidate", "pilot", "policy").inc(1.0)
    evaluations.tokens.labels(plan.id, "policy", "input").inc(10)
    evaluations.cost.labels(plan.id, "policy").inc(0.001)
    evaluations.paused.labels(plan.id, "policy").set(0)
    prometheus.scrape_after(prometheus.scrape_after(time.time()))  # rate() needs two samples
    grafana = {"$plan": plan.id, "$layer": "pilot|rest", "$__rate_interval": "1m", "$slo": "5.0"}

    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            promql = re.sub(r"\$\w+", lambda m: grafana[m.group(0)], target["expr"])
            try:
                series = prometheus.query(promql)
            except urllib.error.HTTPError as exc:
                pytest.fail(f"{panel['title']}: {exc}: {exc.read().decode()}\n{promql}")
            assert series, f"{panel['title']}: no series\n{promql}"


# --------------------------------------------------------------------------- tool calls
@tool
def lookup_order(order: str) -> str:
    """Look an order up."""
    if order == "missing":
        raise ValueError("no such order")
    return f"order {order}: shipped"


def tool_agent(question: str, config: RunnableConfig) -> str:
    try:
        return str(lookup_order.invoke({"order": question}, config))
    except ValueError:
        return "sorry"


def test_tool_calls_read_back_from_prometheus(prometheus: Scraped) -> None:
    """A per-tool series appears only at its tool's first call, which ``increase()`` cannot
    count; ``graylayer_tool_results_total`` exists from start-up, so ``increase()`` counts every
    call."""
    plan = make_plan(f"prom-{uuid4().hex[:8]}")
    prometheus.metrics.init_arms(plan.id, plan.layer_names)
    prometheus.scrape_after(time.time())
    store = MemoryStore()
    store.set_ratio(plan.id, "pilot", 1.0)
    both = RunnableLambda(tool_agent)
    router: GrayRouter[str, str] = GrayRouter(
        stable=both, candidate=both, plan=plan, store=store, metrics=prometheus.metrics
    )
    router.invoke("A-1", {"configurable": {"user_id": "pilot-1"}})
    router.invoke("missing", {"configurable": {"user_id": "pilot-1"}})
    last = prometheus.scrape_after(time.time())
    arm = {"plan": plan.id, "version": "candidate", "layer": "pilot"}

    def series(name: str, **labels: str) -> Series:
        return name, frozenset({**arm, **labels}.items())

    def selector(name: str) -> str:
        return f'{name}{{job="{JOB}", plan="{plan.id}", layer="pilot", version="candidate"}}'

    calls, results = "graylayer_tool_calls_total", "graylayer_tool_results_total"
    expected = {series(calls, tool="lookup_order", status=s): 1.0 for s in ("ok", "error")}
    assert prometheus.values(selector(calls), at=last) == expected
    assert {key: recorded(prometheus.registry, plan.id)[key] for key in expected} == expected
    assert prometheus.values(selector(results), at=last) == {
        series(results, status=s): 1.0 for s in ("ok", "error")
    }
    increase = f"sum by (status) (increase({selector(results)}[{WINDOW}s]))"
    assert prometheus.values(increase, at=last) == {
        ("", frozenset({("status", s)})): 1.0 for s in ("ok", "error")
    }
