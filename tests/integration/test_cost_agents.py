"""Cost end to end: two real ``create_agent`` agents behind a GrayRouter, fake chat models that
report ``usage_metadata`` and their ``model_name``, the plan's price table, the product's
controller. A candidate that uses 1.5× the tokens is rolled back on ``cost_per_request``; one
that costs the same is not; an evaluator's judge model run inside a request (tagged
``graylayer:evaluator``) counts in neither tokens nor cost."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from prometheus_client import CollectorRegistry

from langchain_graylayer import (
    GraylayerMetrics,
    GrayRouter,
    MemoryStore,
    RolloutController,
    RolloutPlan,
    Version,
)
from langchain_graylayer.measuring.labels import EVALUATOR_TAG
from langchain_graylayer.rollout.state import AuditAction
from langchain_graylayer.testing import ScriptedChatModel, since_question

MODEL = "gpt-4o-mini-2024-07-18"
PRICE = {"input": 0.15, "output": 0.60}
"""USD per million tokens of ``gpt-4o-mini`` (the table lists the prefix, the model reports the
dated name)."""
PLAN = RolloutPlan.from_dict(
    {
        "id": "cost-v2",
        "layers": [{"name": "everyone", "score_range": [0, 1], "steps": [0.5, 1.0]}],
        "default_layer": "everyone",
        "pricing": {"currency": "USD", "models": {"gpt-4o-mini": PRICE}},
        "gates": {
            "min_samples": 400,
            "guardrails": [{"metric": "cost_per_request", "margin": 0.2}],
        },
    }
)
STABLE_USAGE = UsageMetadata(input_tokens=1000, output_tokens=200, total_tokens=1200)
HEAVY_USAGE = UsageMetadata(input_tokens=1500, output_tokens=300, total_tokens=1800)
USERS = 120


@tool
def lookup_order(order_id: str) -> str:
    """Return the shipping status of an order."""
    return f"order {order_id} has shipped"


def looks_up_each_order(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
    """Looks up every order the question names, one per turn, then answers: a user who asks
    about three orders costs twice what one who asks about one does."""
    question, results = since_question(messages)
    orders = [word for word in question.split() if word.startswith("A-")]
    if len(results) < len(orders):
        order = orders[len(results)]
        call = {"name": tools[0], "args": {"order_id": order}, "id": f"c-{order}"}
        return AIMessage("", tool_calls=[call])
    return AIMessage(f"{len(orders)} orders have shipped.")


def agent(usage: UsageMetadata, name: str) -> Any:
    model = ScriptedChatModel(script=looks_up_each_order, usage=usage, model_name=MODEL)
    return create_agent(model=model, tools=[lookup_order], name=name)


class World:
    def __init__(
        self, candidate_usage: UsageMetadata, plan: RolloutPlan = PLAN, candidate: Any = None
    ) -> None:
        self.store = MemoryStore()
        self.registry = CollectorRegistry()
        self.plan = plan
        self.router: GrayRouter[Any, Any] = GrayRouter(
            stable=agent(STABLE_USAGE, "support_v1"),
            candidate=candidate or agent(candidate_usage, "support_v2"),
            plan=plan, store=self.store, metrics=GraylayerMetrics(registry=self.registry),
        )  # fmt: skip
        self.controller = RolloutController(plan=plan, store=self.store)
        self.controller.step()  # "everyone" at 50 %, a step open
        self.step = self.store.get_steps(plan.id)["everyone"]

    def ask(self, user: int) -> Any:
        orders = " ".join(f"A-{k}" for k in range(1 + user % 3))
        question = {"messages": [("user", f"Where are my orders {orders} ?")]}
        config: RunnableConfig = {"configurable": {"user_id": f"user-{user}"}}
        return self.router.invoke(question, config)

    def sample(self, name: str, version: Version, **labels: str) -> float:
        values = {"plan": self.plan.id, "version": version.value, "layer": "everyone", **labels}
        return self.registry.get_sample_value(name, values) or 0.0


def usd(usage: UsageMetadata) -> float:
    return (usage["input_tokens"] * PRICE["input"] + usage["output_tokens"] * PRICE["output"]) / 1e6


def test_a_candidate_using_15x_the_tokens_is_rolled_back_on_cost() -> None:
    world = World(HEAVY_USAGE)
    for user in range(USERS):
        world.ask(user)
    entries = world.controller.step()

    rollback = [e for e in entries if e.action is AuditAction.ROLLBACK]
    assert rollback, [e.reason for e in entries]
    verdict = rollback[0].verdict or {}
    assert (verdict["rule"], verdict["detail"]) == ("harm", "cost_per_request")
    assert "USD per request" in rollback[0].reason
    (cost,) = verdict["guardrails"]
    assert cost["unit"] == "money"
    assert cost["estimate"] == pytest.approx(0.5, abs=0.15)  # 1.5× per call, users' mix aside
    assert cost["lower"] > 0.2
    assert world.store.get_ratio(PLAN.id, "everyone") == 0.0

    # what each arm's users cost, in the evidence and in graylayer_cost_total
    arms = world.store.read_evidence(PLAN.id, "everyone", world.step)
    for version, usage in ((Version.CANDIDATE, HEAVY_USAGE), (Version.STABLE, STABLE_USAGE)):
        arm = arms[version.value]
        calls = arm.total("input_tokens") / usage["input_tokens"]
        assert calls == int(calls) >= arm.total("requests") * 2  # ≥ one lookup and an answer
        assert arm.total("cost") == pytest.approx(calls * usd(usage))
        assert arm.total("unpriced") == 0
        cost_total = world.sample("graylayer_cost_total", version, currency="USD")
        assert cost_total == pytest.approx(calls * usd(usage))


def test_an_aa_with_heterogeneous_users_is_not_rolled_back_on_cost() -> None:
    world = World(STABLE_USAGE)
    for user in range(USERS):
        world.ask(user)
    entries = world.controller.step()

    assert not [e for e in entries if e.action is AuditAction.ROLLBACK]
    assert world.controller.status()["layers"][0]["ratio"] == 0.5
    verdicts = [e.verdict for e in entries if e.verdict and e.verdict.get("guardrails")]
    (cost,) = verdicts[-1]["guardrails"]
    assert (cost["metric"], cost["unit"], cost["harm"]) == ("cost_per_request", "money", False)
    assert cost["lower"] < 0.2
    arms = world.store.read_evidence(PLAN.id, "everyone", world.step)
    per_request = [arms[v].total("cost") / arms[v].total("requests") for v in arms]
    assert min(per_request) > 0


def test_an_unpriced_model_counts_tokens_not_money() -> None:
    unpriced = PLAN.model_copy(update={"pricing": PLAN.pricing.model_copy(update={"models": {}})})
    world = World(HEAVY_USAGE, unpriced)
    for user in range(USERS):
        world.ask(user)
    entries = world.controller.step()

    arm = world.store.read_evidence(PLAN.id, "everyone", world.step)["candidate"]
    assert arm.total("cost") == 0
    assert arm.total("unpriced") == arm.total("requests")
    assert world.sample("graylayer_cost_total", Version.CANDIDATE, currency="USD") == 0
    rollback = [e for e in entries if e.action is AuditAction.ROLLBACK]
    assert rollback  # 1.5× the tokens is over the budget in tokens too
    (cost,) = (rollback[0].verdict or {})["guardrails"]
    assert cost["unit"] == "tokens"
    assert "tokens per request" in rollback[0].reason


JUDGE_USAGE = UsageMetadata(input_tokens=50_000, output_tokens=5_000, total_tokens=55_000)


def test_an_evaluators_judge_run_is_not_the_agents_cost() -> None:
    """A judge model invoked inside the request (a tool that asks an LLM-as-judge, inheriting
    the request's callbacks and metadata) counts only when it is not tagged
    ``graylayer:evaluator``."""
    judge = ScriptedChatModel(
        script=lambda messages, tools: "PASS", usage=JUDGE_USAGE, model_name=MODEL
    )

    def world_with(tags: list[str]) -> World:
        @tool
        def checked_lookup(order_id: str, config: RunnableConfig) -> str:
            """Return the shipping status of an order, checked by a policy judge."""
            judge_config: RunnableConfig = {**config, "tags": [*config.get("tags", []), *tags]}
            judge.invoke(f"is {order_id} ok?", judge_config)
            return f"order {order_id} has shipped"

        model = ScriptedChatModel(script=looks_up_each_order, usage=STABLE_USAGE, model_name=MODEL)
        candidate = create_agent(model=model, tools=[checked_lookup], name="support_v2")
        world = World(STABLE_USAGE, candidate=candidate)
        world.store.set_ratio(PLAN.id, "everyone", 1.0)
        return world

    tagged, untagged = world_with([EVALUATOR_TAG]), world_with([])
    for world in (tagged, untagged):
        world.ask(0)  # one order: a lookup (one judge call) and an answer
    agent_only = 2 * STABLE_USAGE["input_tokens"]
    assert tagged.sample("graylayer_tokens_total", Version.CANDIDATE, direction="input") == (
        agent_only
    )
    assert tagged.sample("graylayer_cost_total", Version.CANDIDATE, currency="USD") == (
        pytest.approx(2 * usd(STABLE_USAGE))
    )
    step = tagged.store.get_steps(PLAN.id)["everyone"]
    arm = tagged.store.read_evidence(PLAN.id, "everyone", step)["candidate"]
    assert arm.total("input_tokens") == agent_only
    assert arm.total("cost") == pytest.approx(2 * usd(STABLE_USAGE))
    # the same judge call untagged is measured as the agent's (what the tag prevents)
    assert untagged.sample("graylayer_tokens_total", Version.CANDIDATE, direction="input") == (
        agent_only + JUDGE_USAGE["input_tokens"]
    )
