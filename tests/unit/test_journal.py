"""The candidate's tool-call journal: only what the plan names as side effects, and no handler on
the candidate's runs when it names none (issue #18: each handler on a run costs every event)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import tool

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.testing import ScriptedChatModel, calls_then_answers

PLAN_ID = "refund-v2"
HANDLERS_SEEN: list[list[str]] = []
"""Per call of ``lookup_order``, the handlers its run reports to."""


@tool
def lookup_order(order_id: str, config: RunnableConfig) -> str:
    """Where an order is."""
    callbacks: Any = config.get("callbacks")
    HANDLERS_SEEN.append([type(h).__name__ for h in getattr(callbacks, "handlers", [])])
    return f"{order_id} has shipped"


@tool
def issue_refund(order_id: str) -> str:
    """Refund an order."""
    return f"refunded {order_id}"


def agent() -> Runnable[Any, Any]:
    script = calls_then_answers(["lookup_order", "issue_refund"], "Refunded.")
    return create_agent(ScriptedChatModel(script=script), [lookup_order, issue_refund])


def served(side_effect_tools: list[str]) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """A candidate request and a stable one under a plan naming ``side_effect_tools``: the
    journal's entries and the handlers each ``lookup_order`` run reported to."""
    plan = RolloutPlan.default(PLAN_ID, judging={"side_effect_tools": side_effect_tools})
    store = MemoryStore()
    for layer in plan.layer_names:
        store.set_ratio(PLAN_ID, layer, 0.5)
    router: GrayRouter[Any, Any] = GrayRouter(
        stable=agent(), candidate=agent(), plan=plan, store=store
    )
    users = [f"user-{n}" for n in range(200)]
    versions = {router.route(user).version: user for user in users}
    HANDLERS_SEEN.clear()
    for version in (Version.CANDIDATE, Version.STABLE):
        config: RunnableConfig = {"configurable": {"user_id": versions[version]}}
        router.invoke({"messages": [("user", "Refund A-1, please.")]}, config)
    entries = [json.loads(entry) for entry in store.tool_calls(PLAN_ID)]
    return entries, list(HANDLERS_SEEN)


def test_a_plan_journals_the_candidates_calls_of_the_tools_it_names() -> None:
    entries, _ = served(["issue_refund"])
    [entry] = entries  # the stable request and the read-only lookup are not journaled
    assert entry["tool"] == "issue_refund"
    assert entry["arguments"] == {"order_id": "A-1"}
    assert entry["layer"] == "vip"


def test_a_star_journals_every_tool_of_the_candidate() -> None:
    entries, _ = served(["*"])
    assert [entry["tool"] for entry in entries] == ["lookup_order", "issue_refund"]


def test_a_plan_that_names_no_side_effect_journals_nothing_and_watches_no_run() -> None:
    entries, handlers = served([])
    assert entries == []
    assert handlers == [[], []]  # candidate and stable: measured from their messages alone
    _, journaled = served(["issue_refund"])
    assert journaled == [["ToolCallJournal"], []]  # the candidate's runs only


@pytest.mark.parametrize("tools", [[""], ["  "], ["issue_refund", ""]])
def test_a_blank_tool_name_fails_at_load(tools: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="side_effect_tools"):
        RolloutPlan.default(PLAN_ID, judging={"side_effect_tools": tools})
