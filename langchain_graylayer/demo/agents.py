"""The agents: the offline support chat model, the two ``create_agent`` versions, and grading
their answers against the shop's policy."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import Runnable

from langchain_graylayer.demo.world import Order, Shop, intent_of, owed_refund, shop_tools
from langchain_graylayer.testing import ScriptedChatModel, since_question

HANDOFF = "Sorry, I could not work out what you need; a colleague will get back to you."
_ORDER_ID = re.compile(r"\bO-\d+\b")


# --------------------------------------------------------------------------- the agents
@dataclass(frozen=True, slots=True)
class SupportPolicy:
    """The script of a version's offline support model: look up, maybe refund, answer.

    It "understands" a question with probability ``skill`` (decided by a hash of the model family
    and the question, so the same question always gets the same fate). Each reply reports token
    usage from the length of the conversation, as a provider would.
    """

    family: str
    skill: float
    late_refund_share: float = 1.0
    """Share of the shipping fee refunded on a late delivery: v2.0's bug is 0.5."""

    def __call__(self, messages: list[BaseMessage], tools: tuple[str, ...]) -> AIMessage:
        reply = self._reply(messages)
        tokens_in = sum(len(m.text) for m in messages) // 4
        tokens_out = len(reply.text) // 4 + 8
        usage: UsageMetadata = {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
        reply.usage_metadata = usage
        return reply

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        question, tool_results = since_question(messages)
        digest = hashlib.blake2b(f"{self.family}|{question}".encode(), digest_size=8).digest()
        found = _ORDER_ID.search(question)
        if int.from_bytes(digest, "big") / 2**64 >= self.skill or found is None:
            return AIMessage(HANDOFF)
        order_id, intent = found.group(), intent_of(question)
        results = {m.name: m.text for m in tool_results}
        if "lookup_order" not in results:
            return _call("lookup_order", order_id=order_id)
        order = Order(**json.loads(results["lookup_order"]))
        if intent == "track":
            return AIMessage(f"Your order {order_id} ({order.item}) is {order.status}.")
        amount = owed_refund(order, intent)
        if intent == "late":
            amount = round(amount * self.late_refund_share, 2)
        if amount and "issue_refund" not in results:
            reason = "damaged on arrival" if intent == "damaged" else f"{order.days_late} days late"
            return _call("issue_refund", order_id=order_id, amount=amount, reason=reason)
        if not amount:
            return AIMessage(f"Order {order_id} is not eligible for a refund under our policy.")
        return AIMessage(f"I have refunded EUR {amount:.2f} for order {order_id}.")


def _call(name: str, **args: Any) -> AIMessage:
    call_id = f"call-{name}-{args['order_id']}"
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])


def support_agent(
    code: str, shop: Shop, clock: Callable[[], float], middleware: Sequence[Any] = ()
) -> Runnable[Any, Any]:
    """A real ``create_agent`` agent: v1.8 (rule engine), v2.0 (refund bug) or v2.1 (fixed);
    ``middleware``: ``create_agent``'s (e.g. a person approves each refund)."""
    if code == "v1.8":
        policy = SupportPolicy(family="rules", skill=0.60)
    else:
        policy = SupportPolicy(
            family="llm", skill=0.87, late_refund_share=0.5 if code == "v2.0" else 1.0
        )
    return create_agent(
        model=ScriptedChatModel(script=policy, model_name=f"demo-{policy.family}"),
        tools=shop_tools(shop, clock),
        system_prompt="You are the shop's support agent. Look orders up before answering.",
        middleware=list(middleware),
        name=f"support_{code.replace('.', '_')}",
    )


@dataclass(frozen=True, slots=True)
class Grade:
    """What an agent's answer did, against the shop's policy."""

    intent: str
    owed: float
    refunded: float
    handed_off: bool
    correct: bool

    @property
    def wrong_refund(self) -> bool:
        """A refund answer that paid the wrong amount (the bug users are exposed to)."""
        return (
            self.intent != "track"
            and not self.handed_off
            and abs(self.refunded - self.owed) > 0.005
        )


def grade(output: Any, shop: Shop) -> Grade:
    """Grade a ``create_agent`` output state against the question's order and the policy."""
    messages: Sequence[BaseMessage] = (
        output.get("messages", []) if isinstance(output, Mapping) else []
    )
    question = next((m.text for m in messages if isinstance(m, HumanMessage)), "")
    answer = messages[-1].text if messages else ""
    found = _ORDER_ID.search(question)
    order = shop.orders.get(found.group()) if found else None
    intent = intent_of(question)
    refunded = sum(
        float(call["args"].get("amount", 0.0))
        for m in messages
        if isinstance(m, AIMessage)
        for call in m.tool_calls
        if call["name"] == "issue_refund"
    )
    owed = owed_refund(order, intent) if order else 0.0
    handed_off = order is None or not answer or answer == HANDOFF
    if handed_off or order is None:
        correct = False
    elif intent == "track":
        correct = order.status in answer
    else:
        correct = abs(refunded - owed) <= 0.005
    return Grade(intent, owed, refunded, handed_off, correct)


def refund_policy_check(shop: Shop) -> Callable[[Any, Any, Any], bool]:
    """The demo's policy evaluator: a refund answer passes when it paid what the shop's rules
    owe (an answer that tracks an order, or hands off, has nothing to break)."""

    def check(input: Any, output: Any, metadata: Any) -> bool:
        return not grade(output, shop).wrong_refund

    return check
