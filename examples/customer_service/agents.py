"""Two versions of a customer-service agent, built with ``langchain.agents.create_agent``.

``stable`` (v1) looks the order up and leaves refunds to a colleague; ``candidate`` (v2) has a
different system prompt and a second tool, ``issue_refund``, which it uses when the customer asks
for one. Both run offline: their chat model is :class:`OfflineSupportModel`, a small deterministic
model that answers from the conversation so far (no network, no API key), so one agent serves any
number of concurrent requests. Swap it for ``init_chat_model("openai:gpt-4.1")`` or similar to
run the same agents on a real model.

    >>> from examples.customer_service.agents import candidate
    >>> reply = candidate.invoke({"messages": [("user", "Please refund order A-1001.")]})
    >>> reply["messages"][-1].text
    '[v2] Order A-1001 is delivered. I have refunded it: refund R-A-1001 is on its way.'
"""

from __future__ import annotations

import re
import threading
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.tools import StructuredTool, ToolException, tool

from langchain_graylayer.testing import ScriptedChatModel, since_question

__all__ = [
    "CANDIDATE_PROMPT",
    "ORDERS",
    "STABLE_PROMPT",
    "OfflineSupportModel",
    "build_candidate",
    "build_stable",
    "candidate",
    "issue_refund",
    "lookup_order",
    "refunds",
    "stable",
    "support_reply",
]

# --------------------------------------------------------------------------- the shop's data
ORDERS: dict[str, str] = {
    "A-1001": "delivered",
    "A-1002": "shipped",
    "A-1003": "being packed",
}
"""Order id -> status: the demo's order database."""

_REFUNDED: dict[str, str] = {}
_REFUND_LOCK = threading.Lock()


def refunds() -> dict[str, str]:
    """The refunds issued so far, order id -> refund id (a copy)."""
    with _REFUND_LOCK:
        return dict(_REFUNDED)


# --------------------------------------------------------------------------- tools
@tool
def lookup_order(order_id: str) -> str:
    """Return the shipping status of an order, e.g. ``A-1001``."""
    status = ORDERS.get(order_id)
    if status is None:
        return f"order {order_id} does not exist"
    return f"order {order_id} is {status}"


def _issue_refund(order_id: str) -> str:
    """Refund a delivered order; returns the refund id. Side effect: money moves."""
    if ORDERS.get(order_id) != "delivered":
        # handle_tool_error turns this into a ToolMessage with status "error": the agent answers
        # anyway, and graylayer counts a failed tool call against this version.
        raise ToolException(f"order {order_id} cannot be refunded before it is delivered")
    with _REFUND_LOCK:
        refund_id = _REFUNDED.setdefault(order_id, f"R-{order_id}")
    return f"refund {refund_id} issued for order {order_id}"


issue_refund = StructuredTool.from_function(
    _issue_refund, name="issue_refund", handle_tool_error=True
)
"""The candidate's refund tool."""


# --------------------------------------------------------------------------- chat model
_ORDER_ID = re.compile(r"\b[A-Z]-\d{3,}\b")
_USAGE = UsageMetadata(input_tokens=42, output_tokens=12, total_tokens=54)


def support_reply(messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
    """The offline support model's script: since the customer's last message it calls
    ``lookup_order`` for the order id it finds; when the customer asks for a refund and
    ``issue_refund`` is among the bound ``tools``, it calls that next; then it answers from the tool
    results. Its system prompt's ``[tag]`` (e.g. ``[v2]``) starts every answer, so you can see
    which version replied."""
    tag = ""
    for message in messages:
        if isinstance(message, SystemMessage):
            found = re.match(r"\s*(\[[^\]]+\])", message.text)
            tag = found.group(1) if found else tag
    question, results = since_question(messages)
    done = {result.name for result in results}
    order = _ORDER_ID.search(question)
    wants_refund = "refund" in question.lower()
    if order is not None and "lookup_order" in tools and "lookup_order" not in done:
        return _call("lookup_order", order.group(0), len(results))
    refund = wants_refund and "issue_refund" in tools and "issue_refund" not in done
    if order is not None and refund:
        return _call("issue_refund", order.group(0), len(results))
    return AIMessage(_answer(tag, order, wants_refund, results))


def OfflineSupportModel() -> ScriptedChatModel:
    """A deterministic stand-in for an LLM that can call tools, for demos and tests: a
    :class:`~langchain_graylayer.testing.ScriptedChatModel` playing :func:`support_reply`, which
    reports token usage as a provider does.

    Example:
        >>> model = OfflineSupportModel().bind_tools([lookup_order])
        >>> reply = model.invoke([("system", "[v1] Be brief."), ("user", "Where is A-1002?")])
        >>> reply.tool_calls[0]["name"], reply.tool_calls[0]["args"]
        ('lookup_order', {'order_id': 'A-1002'})
    """
    return ScriptedChatModel(script=support_reply, usage=_USAGE, model_name="offline-support")


def _call(name: str, order_id: str, turn: int) -> AIMessage:
    call = {"name": name, "args": {"order_id": order_id}, "id": f"call-{turn}-{name}"}
    return AIMessage("", tool_calls=[call])


def _answer(
    tag: str, order: re.Match[str] | None, wants_refund: bool, results: list[ToolMessage]
) -> str:
    if order is None:
        return f"{tag} Which order is it about? Order ids look like A-1001.".strip()
    order_id = order.group(0)
    status = ORDERS.get(order_id)
    if status is None:
        return f"{tag} I cannot find order {order_id}; please check the id.".strip()
    text = f"{tag} Order {order_id} is {status}."
    refund = next((r for r in results if r.name == "issue_refund"), None)
    if refund is not None and refund.status == "error":
        text += " I could not refund it yet: it has not been delivered."
    elif refund is not None:
        text += f" I have refunded it: refund R-{order_id} is on its way."
    elif wants_refund:
        text += " A colleague will contact you about the refund within two days."
    return text.strip()


# --------------------------------------------------------------------------- the two versions
STABLE_PROMPT = (
    "[v1] You are Acme's customer-service agent. Look the order up before answering. You cannot "
    "refund: tell the customer a colleague will get in touch."
)
CANDIDATE_PROMPT = (
    "[v2] You are Acme's customer-service agent. Look the order up before answering. When the "
    "customer asks for a refund of a delivered order, issue it with the issue_refund tool."
)


def build_stable(**options: Any) -> Any:
    """v1: order lookup only. ``options`` go to ``create_agent`` (e.g. ``checkpointer=``)."""
    return create_agent(
        model=OfflineSupportModel(),
        tools=[lookup_order],
        system_prompt=STABLE_PROMPT,
        name="customer_service_v1",
        **options,
    )


def build_candidate(**options: Any) -> Any:
    """v2: a new system prompt, and it refunds. ``options`` go to ``create_agent``."""
    return create_agent(
        model=OfflineSupportModel(),
        tools=[lookup_order, issue_refund],
        system_prompt=CANDIDATE_PROMPT,
        name="customer_service_v2",
        **options,
    )


stable = build_stable()
"""Today's agent (v1)."""
candidate = build_candidate()
"""The new agent under rollout (v2)."""
