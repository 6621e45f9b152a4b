"""The ``graylayer_*`` metrics of real LangGraph agents behind GrayRouter, counted exactly.

Every test builds ``create_agent`` agents whose chat model (a ``GenericFakeChatModel`` that can
bind tools, from ``test_agents``) decides its next step from the conversation so far and reports
token usage on every reply, as a provider does. Their tools succeed (``lookup_order``), fail the
handled way (``issue_refund``: a ``ToolException`` that ToolNode turns into a ToolMessage with
status "error") or raise (``issue_refund_unhandled``). Each test has its own
``CollectorRegistry`` and ``MemoryStore``; counts are read back from Prometheus and, per user,
from the evidence the router adds to the store (what the judge reads).

Users: ``alice`` has no profile, so her layer is ``vip``, at ratio 1.0 (candidate); ``erin`` is
an early adopter, a layer left at 0.0 (stable). Both layers have a step (committed as the
controller commits one), so their requests are attributed to it as evidence.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, ToolException
from prometheus_client import CollectorRegistry
from test_agents import (
    EARLY_ADOPTER,
    QUESTION,
    RunRecorder,
    issue_refund,
    issue_refund_unhandled,
    lookup_order,
)

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan, UserProfile, Version
from langchain_graylayer.errors import ConfigurationError, UnknownRunError
from langchain_graylayer.measuring.completion import final_answer
from langchain_graylayer.measuring.handler import (
    GraylayerCallbackHandler,
)
from langchain_graylayer.measuring.labels import (
    LAYER_KEY,
    PLAN_KEY,
    REQUEST_ID_KEY,
    VERSION_KEY,
    RunLabels,
)
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.store.evidence import FIELDS as ALL_FIELDS
from langchain_graylayer.store.evidence import ArmTotals
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

PLAN_ID = "support-v2"
ALICE, ERIN = "alice", "erin"
CANDIDATE_ARM = (Version.CANDIDATE, "vip")
STABLE_ARM = (Version.STABLE, "early_adopter")
STEP = "0@1000.000"
"""The step both layers are in (a controller's step key: the step's index and start)."""

STABLE_ANSWER = "[v1] Order A-1 has shipped and arrives on Friday."
CANDIDATE_ANSWER = "[v2] Order A-1 has shipped; a colleague will approve the refund today."
USAGE = UsageMetadata(input_tokens=13, output_tokens=5, total_tokens=18)
"""What every model reply reports."""

FIELDS = tuple(f for f in ALL_FIELDS if f not in ("cost", "unpriced"))
"""The evidence these tests derive from the Prometheus counters (money and unpriced requests
are tests/integration/test_cost_agents.py's: these plans price nothing)."""


# --------------------------------------------------------------------------- agents
@dataclass(frozen=True)
class Agent:
    """One version of the support agent, and what a single run of it does."""

    name: str
    tools: tuple[tuple[BaseTool, str], ...]
    """Each tool it calls, in order, with the status its call ends with."""
    final: str
    raises: bool = False
    """The last tool raises out of the agent (it was not built with ``handle_tool_error``)."""

    def build(self) -> Runnable[Any, Any]:
        calls = [tool.name for tool, _ in self.tools]
        model = ScriptedChatModel(script=calls_then_answers(calls, self.final), usage=USAGE)
        return create_agent(model=model, tools=[tool for tool, _ in self.tools], name=self.name)

    def work(self) -> Counter[str]:
        """The tool calls and tokens one run adds to its arm (even when the run fails)."""
        model_calls = len(self.tools) + (0 if self.raises else 1)
        work = Counter(
            {
                "tokens{direction=input}": model_calls * USAGE["input_tokens"],
                "tokens{direction=output}": model_calls * USAGE["output_tokens"],
            }
        )
        for tool, status in self.tools:
            work[f"tool_calls{{tool={tool.name},status={status}}}"] += 1
        return work


STABLE = Agent("support_v1", ((lookup_order, "ok"),), STABLE_ANSWER)
CANDIDATE = Agent("support_v2", ((lookup_order, "ok"), (issue_refund, "error")), CANDIDATE_ANSWER)
BROKEN = Agent(
    "support_v2",
    ((lookup_order, "ok"), (issue_refund_unhandled, "error")),
    CANDIDATE_ANSWER,
    raises=True,
)
"""A candidate that forgot ``handle_tool_error``: its refund tool raises out of the agent."""
SILENT = Agent("support_v2", ((lookup_order, "ok"),), "")
"""A candidate whose final answer is empty: it ran fine but did not complete the task."""


# --------------------------------------------------------------------------- expectations
def request(outcome: str = "ok", *, completed: bool | None = None) -> Counter[str]:
    """What the end of one routed request adds to its arm."""
    counts = Counter({f"requests{{outcome={outcome}}}": 1, "duration_count": 1})
    if completed if completed is not None else outcome == "ok":
        counts["completions"] += 1
    return counts


def visits(agent: Agent, n: int = 1, *, completed: bool | None = None) -> Counter[str]:
    """``n`` requests served by ``agent`` without error (completed, by default, when the agent
    gives a non-empty answer)."""
    done = bool(agent.final) if completed is None else completed
    one = request("ok", completed=done) + agent.work()
    return Counter({key: value * n for key, value in one.items()})


ARM_METRICS = {
    "graylayer_requests_total": "requests",
    "graylayer_request_duration_seconds_count": "duration_count",
    "graylayer_task_completions_total": "completions",
    "graylayer_tool_calls_total": "tool_calls",
    "graylayer_tokens_total": "tokens",
    "graylayer_feedback_total": "feedback",
    "graylayer_feedback_score_count": "score_count",
    "graylayer_feedback_score_sum": "score_sum",
}


def arm_samples(registry: CollectorRegistry, version: Version, layer: str) -> dict[str, float]:
    """Every non-zero sample of one arm, keyed like ``tool_calls{tool=lookup_order,status=ok}``."""
    found: dict[str, float] = {}
    arm = {"plan": PLAN_ID, "version": version.value, "layer": layer}
    for family in registry.collect():
        for sample in family.samples:
            short = ARM_METRICS.get(sample.name)
            if short is None or not sample.value:
                continue
            if any(sample.labels.get(key) != value for key, value in arm.items()):
                continue
            extra = ",".join(f"{k}={v}" for k, v in sample.labels.items() if k not in arm)
            found[f"{short}{{{extra}}}" if extra else short] = sample.value
    return found


def evidence_of(expected: Counter[str]) -> dict[str, float]:
    """The evidence totals that the expected Prometheus samples of one arm amount to (non-zero
    fields only; ``latency_seconds`` is checked apart)."""

    def total(prefix: str, suffix: str = "") -> float:
        return sum(v for k, v in expected.items() if k.startswith(prefix) and k.endswith(suffix))

    totals = {
        "requests": total("requests{"),
        "completions": expected["completions"],
        "failures": expected["requests{outcome=error}"] + expected["requests{outcome=fallback}"],
        "tool_calls": total("tool_calls{"),
        "tool_errors": total("tool_calls{", "status=error}"),
        "bad": expected["feedback{kind=bad}"],
        "complaints": expected["feedback{kind=complaint}"],
        "good": expected["feedback{kind=good}"],
        "scores": expected["score_count"],
        "score_sum": expected["score_sum"],
        "input_tokens": expected["tokens{direction=input}"],
        "output_tokens": expected["tokens{direction=output}"],
    }
    return {name: float(value) for name, value in totals.items() if value}


def evidence_totals(arm: ArmTotals, fields: tuple[str, ...] = FIELDS) -> dict[str, float]:
    """The arm's non-zero totals of ``fields`` (all but ``latency_seconds`` by default)."""
    return {n: arm.total(n) for n in fields if n != "latency_seconds" and arm.total(n)}


def evidence(store: MemoryStore, version: Version, layer: str) -> ArmTotals | None:
    """One arm's evidence in the step its layer is in (``None``: no user of it yet)."""
    step = store.get_steps(PLAN_ID).get(layer, "")
    return store.read_evidence(PLAN_ID, layer, step).get(version.value)


def assert_exact(
    metrics: GraylayerMetrics,
    store: MemoryStore | None,
    expected: Mapping[tuple[Version, str], Counter[str]],
    *,
    users: Mapping[tuple[Version, str], int] | None = None,
    attributed: Mapping[tuple[Version, str], Counter[str]] | None = None,
    fields: tuple[str, ...] = FIELDS,
) -> None:
    """Prometheus holds exactly ``expected`` per (version, layer) arm, and nothing at all for
    the plan's other arms; so does the store's evidence (for ``fields``), with one user per arm
    unless ``users`` says otherwise.

    ``attributed`` replaces ``expected`` for the evidence where they differ: an arm's evidence
    counts a request under the version it was routed to (a fallback is the candidate's failed
    request), Prometheus each piece of work under the version that did it."""
    registry = metrics.registry
    assert registry is not None
    attributed = expected if attributed is None else attributed
    for layer in RolloutPlan.default(PLAN_ID).layer_names:
        for version in Version:
            key = (version, layer)
            want = expected.get(key, Counter())
            where = f"{version.value} on {layer}"
            assert arm_samples(registry, version, layer) == dict(want), where
            if store is None:
                continue
            arm = evidence(store, version, layer)
            want = attributed.get(key, Counter())
            if not want:
                assert arm is None, where
                continue
            assert arm is not None, where
            wanted = {n: v for n, v in evidence_of(want).items() if n in fields}
            assert evidence_totals(arm, fields) == wanted, where
            assert arm.users == (users or {}).get(key, 1), where
            assert 0 < arm.total("latency_seconds") < 60, where
    if store is not None:  # runs outside a step are never evidence
        layers = RolloutPlan.default(PLAN_ID).layer_names
        assert [store.read_evidence(PLAN_ID, layer, "") for layer in layers] == [{}] * len(layers)


def assert_arms(
    metrics: GraylayerMetrics,
    store: MemoryStore | None,
    *,
    candidate: Counter[str] | None = None,
    stable: Counter[str] | None = None,
    fields: tuple[str, ...] = FIELDS,
) -> None:
    """:func:`assert_exact` for alice's arm (candidate on vip) and erin's (stable on
    early_adopter)."""
    expected = {CANDIDATE_ARM: candidate, STABLE_ARM: stable}
    assert_exact(
        metrics,
        store,
        {arm: counts for arm, counts in expected.items() if counts},
        fields=fields,
    )


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> GraylayerMetrics:
    return GraylayerMetrics(registry=registry)


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.put_profile(ERIN, EARLY_ADOPTER)
    open_step(store, {"vip": 1.0, "early_adopter": 0.0})
    return store


def open_step(store: MemoryStore, ratios: dict[str, float], step: str = STEP) -> None:
    """Move the layers' ratios and start a step on each, as the controller commits them."""
    store.commit(PLAN_ID, ratios=ratios, state="{}", audit=[], steps=dict.fromkeys(ratios, step))


def as_runnable(version: Agent | Runnable[Any, Any]) -> Runnable[Any, Any]:
    return version.build() if isinstance(version, Agent) else version


@pytest.fixture
def make_router(store: MemoryStore, metrics: GraylayerMetrics) -> Any:
    def make(
        stable: Agent | Runnable[Any, Any] = STABLE,
        candidate: Agent | Runnable[Any, Any] = CANDIDATE,
        *,
        plan: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> GrayRouter[Any, Any]:
        kwargs.setdefault("metrics", metrics)
        return GrayRouter(
            stable=as_runnable(stable),
            candidate=as_runnable(candidate),
            plan=RolloutPlan.default(PLAN_ID, **(plan or {})),
            store=store,
            **kwargs,
        )

    return make


def config(user_id: str | None = None, *callbacks: Any, **extra: Any) -> RunnableConfig:
    configurable = {} if user_id is None else {"user_id": user_id}
    return RunnableConfig(configurable=configurable, callbacks=list(callbacks), **extra)


async def serve(router: GrayRouter[Any, Any], mode: str, users: list[str]) -> list[str | None]:
    """Ask each user's question through ``mode``; the final answers each user received."""
    configs = [config(user) for user in users]
    if mode == "batch":
        return [final_answer(o) for o in router.batch([QUESTION] * len(users), configs)]
    if mode == "abatch":
        return [final_answer(o) for o in await router.abatch([QUESTION] * len(users), configs)]
    answers = []
    for cfg in configs:
        if mode == "invoke":
            output = router.invoke(QUESTION, cfg)
        elif mode == "ainvoke":
            output = await router.ainvoke(QUESTION, cfg)
        elif mode == "stream":
            output = list(router.stream(QUESTION, cfg))[-1]
        else:
            output = [chunk async for chunk in router.astream(QUESTION, cfg)][-1]
        answers.append(final_answer(output))
    return answers


def get(registry: CollectorRegistry, name: str, version: Version, layer: str, **labels: str) -> Any:
    arm = {"plan": PLAN_ID, "version": version.value, "layer": layer}
    return registry.get_sample_value(name, {**arm, **labels})


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --------------------------------------------------------------------------- counting per arm
def test_each_arm_counts_requests_latency_completions_tools_and_tokens(
    make_router: Any, store: MemoryStore, registry: CollectorRegistry, metrics: GraylayerMetrics
) -> None:
    router = make_router()

    router.invoke(QUESTION, config(ALICE))
    router.invoke(QUESTION, config(ALICE))
    router.invoke(QUESTION, config(ERIN))

    def candidate(name: str, **labels: str) -> Any:
        return get(registry, name, *CANDIDATE_ARM, **labels)

    assert candidate("graylayer_requests_total", outcome="ok") == 2
    assert candidate("graylayer_requests_total", outcome="error") == 0
    assert candidate("graylayer_requests_total", outcome="fallback") == 0
    assert candidate("graylayer_request_duration_seconds_count") == 2
    assert candidate("graylayer_task_completions_total") == 2
    assert candidate("graylayer_tool_calls_total", tool="lookup_order", status="ok") == 2
    assert candidate("graylayer_tool_calls_total", tool="issue_refund", status="error") == 2
    assert candidate("graylayer_tool_calls_total", tool="issue_refund", status="ok") is None
    assert candidate("graylayer_tokens_total", direction="input") == 2 * 3 * 13  # 3 model calls
    assert candidate("graylayer_tokens_total", direction="output") == 2 * 3 * 5
    assert get(registry, "graylayer_requests_total", *STABLE_ARM, outcome="ok") == 1
    assert get(registry, "graylayer_tokens_total", *STABLE_ARM, direction="input") == 2 * 13

    # the evidence: alice's two requests are one user's, in the step vip is in
    assert set(store.read_evidence(PLAN_ID, "vip", STEP)) == {"candidate"}
    assert set(store.read_evidence(PLAN_ID, "early_adopter", STEP)) == {"stable"}
    arm = store.read_evidence(PLAN_ID, "vip", STEP)["candidate"]
    assert arm.users == 1
    assert evidence_totals(arm) == {
        "requests": 2,
        "completions": 2,
        "tool_calls": 4,
        "tool_errors": 2,
        "input_tokens": 78,
        "output_tokens": 30,
    }
    assert 0 < arm.total("latency_seconds") < 10
    assert arm.product("requests", "requests") == 4  # Σ over users of requests², one user of 2
    assert arm.product("requests", "tool_calls") == 8
    assert (arm.positive("completions"), arm.positive("failures")) == (1, 0)
    erin = store.read_evidence(PLAN_ID, "early_adopter", STEP)["stable"]
    assert (erin.users, erin.total("requests"), erin.total("input_tokens")) == (1, 1, 2 * 13)

    assert_arms(
        metrics,
        store,
        candidate=Counter(
            {
                "requests{outcome=ok}": 2,
                "duration_count": 2,
                "completions": 2,
                "tool_calls{tool=lookup_order,status=ok}": 2,
                "tool_calls{tool=issue_refund,status=error}": 2,
                "tokens{direction=input}": 78,
                "tokens{direction=output}": 30,
            }
        ),
        stable=visits(STABLE),
    )
    assert router._state.observer.handler.pending() == 0


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"])
async def test_every_way_of_calling_counts_each_request_under_its_own_labels(
    make_router: Any, store: MemoryStore, metrics: GraylayerMetrics, mode: str
) -> None:
    router = make_router()

    answers = await serve(router, mode, [ALICE, ERIN, ALICE])

    assert answers == [CANDIDATE_ANSWER, STABLE_ANSWER, CANDIDATE_ANSWER]
    # Streams are judged on what was streamed: the last LangGraph update holds the answer.
    assert_arms(metrics, store, candidate=visits(CANDIDATE, 2), stable=visits(STABLE))
    assert router._state.observer.handler.pending() == 0


OUTCOME_CASES = [
    pytest.param(
        SILENT,
        {},
        "",
        {CANDIDATE_ARM: visits(SILENT, completed=False)},
        None,
        id="empty-answer",
    ),
    pytest.param(
        BROKEN,
        {"fallback_to_stable": False},
        None,
        {CANDIDATE_ARM: request("error") + BROKEN.work()},
        None,
        id="unhandled-tool-error",
    ),
    pytest.param(
        BROKEN,
        {},
        STABLE_ANSWER,
        # The request is the candidate's failure (never a completion); in Prometheus the stable
        # retry's tool calls and tokens are stable's own work, in the same layer ...
        {
            CANDIDATE_ARM: request("fallback") + BROKEN.work(),
            (Version.STABLE, "vip"): STABLE.work(),
        },
        # ... and so in the evidence: alice's request is the candidate's failure, with the
        # candidate's own tool calls and tokens only (the stable retry's work would otherwise
        # pass for candidate tool successes); stable saw no user of its own.
        {CANDIDATE_ARM: request("fallback") + BROKEN.work()},
        id="fallback",
    ),
]


@pytest.mark.parametrize(("candidate", "plan", "answer", "expected", "attributed"), OUTCOME_CASES)
def test_failing_or_empty_candidates_are_counted_but_not_completed(
    make_router: Any,
    store: MemoryStore,
    metrics: GraylayerMetrics,
    candidate: Agent,
    plan: dict[str, Any],
    answer: str | None,
    expected: dict[tuple[Version, str], Counter[str]],
    attributed: dict[tuple[Version, str], Counter[str]] | None,
) -> None:
    router = make_router(candidate=candidate, plan=plan)

    if answer is None:
        with pytest.raises(ToolException, match="above the automatic limit"):
            router.invoke(QUESTION, config(ALICE))
    else:
        assert final_answer(router.invoke(QUESTION, config(ALICE))) == answer

    assert_exact(metrics, store, expected, attributed=attributed)
    assert router._state.observer.handler.pending() == 0


async def test_concurrent_requests_land_on_each_users_version(
    make_router: Any, store: MemoryStore, metrics: GraylayerMetrics
) -> None:
    router = make_router()
    open_step(store, {"vip": 0.5}, step="1@2000.000")
    users = [f"user-{n}" for n in range(200)]
    predicted = {user: router.route(user).version for user in users}
    stable_users = [u for u in users if predicted[u] is Version.STABLE][:10]
    candidate_users = [u for u in users if predicted[u] is Version.CANDIDATE][:10]
    chosen = [u for pair in zip(stable_users, candidate_users, strict=True) for u in pair]

    outputs = await asyncio.gather(*(router.ainvoke(QUESTION, config(u)) for u in chosen))

    answers = {Version.STABLE: STABLE_ANSWER, Version.CANDIDATE: CANDIDATE_ANSWER}
    assert [final_answer(o) for o in outputs] == [answers[predicted[u]] for u in chosen]
    arms = {(Version.STABLE, "vip"): visits(STABLE, 10), CANDIDATE_ARM: visits(CANDIDATE, 10)}
    assert_exact(metrics, store, arms, users=dict.fromkeys(arms, 10))
    assert store.read_evidence(PLAN_ID, "vip", STEP) == {}  # all in the new step
    assert router._state.observer.handler.pending() == 0


# --------------------------------------------------------------------------- completion judges
def test_a_function_judge_decides_completion_inline(
    make_router: Any, store: MemoryStore, metrics: GraylayerMetrics
) -> None:
    def escalated(output: Any) -> bool:
        return "colleague" in (final_answer(output) or "")

    router = make_router(completion_judge=escalated)

    router.invoke(QUESTION, config(ALICE))
    list(router.stream(QUESTION, config(ALICE)))
    router.invoke(QUESTION, config(ERIN))

    assert_arms(
        metrics, store, candidate=visits(CANDIDATE, 2), stable=visits(STABLE, completed=False)
    )


def test_a_runnable_judge_runs_in_the_background(
    make_router: Any, store: MemoryStore, registry: CollectorRegistry, metrics: GraylayerMetrics
) -> None:
    judged: list[str] = []

    def mentions_refund(output: Any) -> bool:
        answer = final_answer(output) or ""
        judged.append(answer)
        return "refund" in answer

    router = make_router(completion_judge=RunnableLambda(mentions_refund))

    router.invoke(QUESTION, config(ERIN))  # stable's answer does not mention the refund
    router.invoke(QUESTION, config(ALICE))

    def judged_both() -> bool:
        # the evidence is told after Prometheus, by the same background task
        arm = evidence(store, *CANDIDATE_ARM)
        return len(judged) == 2 and arm is not None and arm.total("completions") == 1

    wait_for(judged_both)
    assert sorted(judged) == sorted([STABLE_ANSWER, CANDIDATE_ANSWER])
    assert_arms(metrics, store, candidate=visits(CANDIDATE), stable=visits(STABLE, completed=False))
    assert router._state.observer.handler.pending() == 0


def test_stream_messages_mode_is_judged_on_the_streamed_answer(
    make_router: Any, store: MemoryStore, registry: CollectorRegistry
) -> None:
    router = make_router()

    parts = list(router.stream(QUESTION, config(ALICE), stream_mode="messages"))

    streamed = "".join(m.text for m, meta in parts if meta["langgraph_node"] == "model")
    assert streamed == CANDIDATE_ANSWER
    assert arm_samples(registry, *CANDIDATE_ARM)["requests{outcome=ok}"] == 1
    assert arm_samples(registry, *CANDIDATE_ARM)["tokens{direction=input}"] == 3 * 13
    assert get(registry, "graylayer_task_completions_total", *CANDIDATE_ARM) == 1
    arm = store.read_evidence(PLAN_ID, "vip", STEP)["candidate"]
    assert (arm.users, arm.total("completions"), arm.total("input_tokens")) == (1, 1, 3 * 13)


# --------------------------------------------------------------------------- detached runs
def _asked_from(agent: Agent) -> Runnable[Any, Any]:
    """A function that asks ``agent`` (the agent's runs nest under the function's run)."""
    compiled = agent.build()

    def ask(state: dict[str, Any]) -> Any:
        return compiled.invoke(state)

    return RunnableLambda(ask, name=f"ask_{agent.name}")


def _primary_fails_then_fallback() -> Runnable[Any, Any]:
    """The candidate as a RunnableWithFallbacks: its primary calls a tool, then raises."""
    return _asked_from(BROKEN).with_fallbacks([_asked_from(CANDIDATE)])


def _tools_below(recorder: RunRecorder, root: Any) -> list[str]:
    return sorted(run.name for run in recorder.below(root) if run.run_type == "tool")


def test_runs_outside_the_routers_tree_still_count_under_its_labels(
    make_router: Any, store: MemoryStore, metrics: GraylayerMetrics
) -> None:
    router = make_router(candidate=_primary_fails_then_fallback())
    recorder = RunRecorder()

    output = router.invoke(QUESTION, config(ALICE, recorder))

    assert final_answer(output) == CANDIDATE_ANSWER
    # langchain#36072: RunnableWithFallbacks.invoke passes its runnables the config it was
    # given, not its child config, so both function runs hang off the router, beside the
    # fallbacks run rather than under it. (LangGraph graphs are not affected.)
    router_run = recorder.router()
    (fallbacks,) = [run for run in recorder.runs if run.name == "RunnableWithFallbacks"]
    (primary,) = [run for run in recorder.runs if run.name == "ask_support_v2" and run.error]
    (retry,) = [run for run in recorder.runs if run.name == "ask_support_v2" and not run.error]
    assert fallbacks.parent_run_id == router_run.id
    assert primary.parent_run_id == retry.parent_run_id == router_run.id
    assert recorder.below(fallbacks) == []
    assert _tools_below(recorder, primary) == ["issue_refund", "lookup_order"]
    # The router saw no error (the fallbacks caught it); both agents' tool calls are candidate's.
    assert_arms(metrics, store, candidate=request("ok") + BROKEN.work() + CANDIDATE.work())
    assert router._state.observer.handler.pending() == 0


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_a_handler_attached_by_the_caller_counts_runs_detached_from_any_parent(
    metrics: GraylayerMetrics, mode: str
) -> None:
    """At the root of a call, the bug leaves the fallbacks' runs with ``parent_run_id=None``;
    the handler finds their request by the ``graylayer.request_id`` metadata instead."""
    handler = GraylayerCallbackHandler(metrics)
    recorder = RunRecorder()
    request_id = uuid.uuid4()
    labels = {PLAN_KEY: PLAN_ID, VERSION_KEY: "candidate", LAYER_KEY: "vip"}
    cfg: RunnableConfig = {
        "callbacks": [handler, recorder],
        "run_id": request_id,
        "metadata": {**labels, REQUEST_ID_KEY: str(request_id)},
    }

    candidate = _primary_fails_then_fallback()
    if mode == "invoke":
        output = candidate.invoke(QUESTION, cfg)
    else:
        output = await candidate.ainvoke(QUESTION, cfg)

    assert final_answer(output) == CANDIDATE_ANSWER
    detached = [run for run in recorder.runs if run.name == "ask_support_v2"]
    assert len(detached) == 2
    assert [run.parent_run_id for run in detached] == [None, None]
    assert _tools_below(recorder, detached[0]) == ["issue_refund", "lookup_order"]
    # no router: Prometheus only (the evidence is the router's)
    assert_arms(metrics, None, candidate=request("ok") + BROKEN.work() + CANDIDATE.work())
    assert handler.pending() == 0


# --------------------------------------------------------------------------- unrouted requests
def test_unrouted_requests_are_counted_apart(
    make_router: Any, store: MemoryStore, registry: CollectorRegistry, metrics: GraylayerMetrics
) -> None:
    store.put_profile("olga", UserProfile(allow_gray=False))
    router = make_router()

    assert final_answer(router.invoke(QUESTION, config())) == STABLE_ANSWER
    assert final_answer(router.invoke(QUESTION, config("olga"))) == STABLE_ANSWER
    assert final_answer(router.invoke(QUESTION, config("olga"))) == STABLE_ANSWER

    unrouted = "graylayer_unrouted_requests_total"
    assert registry.get_sample_value(unrouted, {"plan": PLAN_ID, "reason": "no_user_id"}) == 1
    assert registry.get_sample_value(unrouted, {"plan": PLAN_ID, "reason": "opt_out"}) == 2
    routed = [
        sample
        for family in registry.collect()
        for sample in family.samples
        if sample.name in ARM_METRICS and sample.value
    ]
    assert routed == []  # not a request, a tool call or a token was counted under an arm
    assert_exact(metrics, store, {})  # nor any evidence, in any step
    # olga's layer would have been vip: unrouted requests are never the evidence of its step
    assert store.read_evidence(PLAN_ID, "vip", STEP) == {}
    assert router._state.observer.handler.pending() == 0


# --------------------------------------------------------------------------- double handlers
REQUEST_FIELDS = ("requests", "completions", "failures")
"""What the router itself sees of a request that a handler of the caller's measures."""


def test_a_handler_the_caller_attached_too_does_not_double_count(
    make_router: Any, store: MemoryStore, metrics: GraylayerMetrics
) -> None:
    router = make_router()
    handler = GraylayerCallbackHandler(metrics)

    router.invoke(QUESTION, config(ALICE, handler))
    list(router.stream(QUESTION, config(ERIN, handler)))

    # The caller's handler measures the runs; the router still adds each request as evidence,
    # once (the tool calls and tokens stay with the caller's handler).
    candidate, stable = visits(CANDIDATE), visits(STABLE)
    assert_arms(metrics, store, candidate=candidate, stable=stable, fields=REQUEST_FIELDS)
    assert handler.pending() == 0
    assert router._state.observer.handler.pending() == 0


async def test_a_handler_the_caller_attached_to_an_async_call_does_not_double_count(
    make_router: Any, store: MemoryStore, metrics: GraylayerMetrics
) -> None:
    """The one handler runs inline under async too (no async twin is needed)."""
    router = make_router()

    await router.ainvoke(QUESTION, config(ALICE, GraylayerCallbackHandler(metrics)))

    assert_arms(metrics, store, candidate=visits(CANDIDATE), fields=REQUEST_FIELDS)


# --------------------------------------------------------------------------- feedback
def test_feedback_is_counted_under_the_labels_of_the_run(
    make_router: Any, store: MemoryStore, registry: CollectorRegistry, metrics: GraylayerMetrics
) -> None:
    router = make_router()
    alice_run, erin_run, anonymous_run = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    router.invoke(QUESTION, config(ALICE, run_id=alice_run))
    router.invoke(QUESTION, config(ERIN, run_id=erin_run))
    router.invoke(QUESTION, config(run_id=anonymous_run))

    def arm(labels: RunLabels) -> tuple[str, str, str, str]:
        return labels.plan, labels.version, labels.layer, labels.step

    assert arm(router.feedback(alice_run, "bad")) == (PLAN_ID, "candidate", "vip", STEP)
    assert arm(router.feedback(str(alice_run), "complaint")) == (PLAN_ID, "candidate", "vip", STEP)
    assert arm(router.feedback(erin_run, "good", 9)) == (PLAN_ID, "stable", "early_adopter", STEP)

    feedback = {"feedback{kind=bad}": 1, "feedback{kind=complaint}": 1}
    score = {"feedback{kind=good}": 1, "score_count": 1, "score_sum": 9}
    assert_arms(
        metrics,
        store,
        candidate=visits(CANDIDATE) + Counter(feedback),
        stable=visits(STABLE) + Counter(score),
    )
    bucket = "graylayer_feedback_score_bucket"
    assert get(registry, bucket, *STABLE_ARM, le="8.0") == 0  # a promoter
    assert get(registry, bucket, *STABLE_ARM, le="9.0") == 1

    alice = store.read_evidence(PLAN_ID, "vip", STEP)["candidate"]
    assert (alice.positive("bad"), alice.positive("complaints")) == (1, 1)
    assert alice.product("bad", "complaints") == 1  # the same user did both

    before = [(s.name, s.labels, s.value) for f in registry.collect() for s in f.samples]

    def all_evidence() -> list[dict[str, ArmTotals]]:
        return [store.read_evidence(PLAN_ID, layer, STEP) for layer in ("vip", "early_adopter")]

    evidence_before = all_evidence()
    with pytest.raises(UnknownRunError):
        router.feedback(uuid.uuid4(), "bad")
    with pytest.raises(UnknownRunError):
        router.feedback(anonymous_run, "bad")  # unrouted: no version to blame
    with pytest.raises(ConfigurationError, match="kind"):
        router.feedback(alice_run, "angry")
    with pytest.raises(ConfigurationError, match="score"):
        router.feedback(alice_run, None, 11)
    after = [(s.name, s.labels, s.value) for f in registry.collect() for s in f.samples]
    assert after == before
    assert all_evidence() == evidence_before


# --------------------------------------------------------------------------- robustness
class BrokenMetrics(GraylayerMetrics):
    """A metrics backend whose request counter fails."""

    def record_request(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("metrics backend broke")


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_failing_handler_never_breaks_the_request(
    make_router: Any, store: MemoryStore, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    registry = CollectorRegistry()
    router = make_router(metrics=BrokenMetrics(registry=registry))

    with caplog.at_level(logging.ERROR, logger="langchain_graylayer.measuring.handler"):
        assert await serve(router, mode, [ALICE]) == [CANDIDATE_ANSWER]

    assert registry.get_sample_value("graylayer_handler_errors_total") == 1
    (record,) = caplog.records
    assert "chain_end" in record.getMessage()
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "metrics backend broke"
    # the other hooks still measured the run, and the request is still evidence (as the router
    # saw it: answered, with a non-empty answer)
    assert arm_samples(registry, *CANDIDATE_ARM) == dict(CANDIDATE.work())
    arm = store.read_evidence(PLAN_ID, "vip", STEP)["candidate"]
    assert evidence_totals(arm, REQUEST_FIELDS) == {"requests": 1, "completions": 1}
    assert router._state.observer.handler.pending() == 0


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_an_abandoned_stream_is_cancelled_not_an_error_and_leaves_no_state(
    make_router: Any, store: MemoryStore, metrics: GraylayerMetrics, mode: str
) -> None:
    router = make_router()

    if mode == "stream":
        stream = router.stream(QUESTION, config(ALICE))
        first = next(stream)
        assert router._state.observer.handler.pending() == 1  # the request is open
        stream.close()
    else:
        astream = router.astream(QUESTION, config(ALICE))
        first = await astream.__anext__()
        assert router._state.observer.handler.pending() == 1
        await astream.aclose()

    assert list(first) == ["model"]  # the caller left after the first model turn
    # The router sees GeneratorExit: a client that went away, not a failure of the version
    # (issue #15: disconnects rolled good candidates back). Prometheus counts it as cancelled,
    # with the model call it made; the judge's evidence has nothing of it.
    one_model_call = Counter({"tokens{direction=input}": 13, "tokens{direction=output}": 5})
    assert_exact(
        metrics, store, {CANDIDATE_ARM: request("cancelled") + one_model_call},
        attributed={},
    )  # fmt: skip
    assert router._state.observer.handler.pending() == 0


def test_no_user_or_session_id_ever_becomes_a_label_value(
    make_router: Any, store: MemoryStore, registry: CollectorRegistry
) -> None:
    user, session, shy_user = "u-5f1c9e", "s-8d2b7a", "u-0a4e61"
    store.put_profile(shy_user, UserProfile(allow_gray=False))
    router = make_router()
    run_id = uuid.uuid4()

    router.invoke(
        QUESTION, {"configurable": {"user_id": user, "session_id": session}, "run_id": run_id}
    )
    list(router.stream(QUESTION, {"configurable": {"user_id": user, "thread_id": session}}))
    router.invoke(QUESTION, {"configurable": {"session_id": session}})
    router.invoke(QUESTION, {"configurable": {"user_id": shy_user, "session_id": session}})
    labels = router.feedback(run_id, "complaint", 2)

    values = [
        value
        for family in registry.collect()
        if family.name.startswith("graylayer_")
        for sample in family.samples
        for value in sample.labels.values()
    ]
    # the routed requests, the unrouted ones and the feedback were all measured
    assert get(registry, "graylayer_requests_total", Version.CANDIDATE, "vip", outcome="ok") == 2
    assert (
        get(registry, "graylayer_feedback_total", Version.CANDIDATE, "vip", kind="complaint") == 1
    )
    assert {"no_user_id", "opt_out"} <= set(values)
    leaked = [v for v in values if any(secret in v for secret in (user, session, shy_user))]
    assert leaked == []
    # the evidence knows the user by an opaque key, and counted both of their requests
    assert labels.unit
    assert user not in labels.unit
    arm = store.read_evidence(PLAN_ID, "vip", STEP)["candidate"]
    assert (arm.users, arm.total("requests"), arm.total("complaints")) == (1, 2, 1)
