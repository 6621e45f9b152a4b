"""``graylayer demo``: the article's e-commerce case study, played on real agents in simulated days.

Two versions of a customer-service agent built with ``langchain.agents.create_agent`` (offline,
rule-following fake chat models; real ``lookup_order`` and ``issue_refund`` tools) are served
through a real :class:`~.router.GrayRouter`, measured by its real handlers, and judged and moved by
a real :class:`~.controller.RolloutController` ticking on a simulated clock:

* **act one** — candidate v2.0 (the new LLM agent, ~87% of tasks) against v1.8 (the old rule
  engine, ~60%). v2.0 refunds only half the shipping fee on late deliveries, a question only the
  ``normal`` layer asks; the completion judge rejects those answers and users complain. The
  controller must catch it in ``normal`` and roll back: sessions moved and their chat histories
  cleared, and the refund calls listed for review.
* **act two** — the fixed v2.1 is rolled out as a new plan, layer after layer, to 100%.

Real agent calls cost ~5-15 ms each, so the traffic is a thin sample: a fixed number of requests
per simulated hour per layer (users drawn uniformly within their layer). The controller compares
candidate and stable *within one layer*, so per-layer sampling rates bias nothing it judges;
overall completion rates are weighted by the layers' population shares.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from langchain.agents import create_agent
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool

from langchain_graylayer.cleanup import ChatHistoryCleanup
from langchain_graylayer.controller import AuditEntry, RolloutController
from langchain_graylayer.decision import Version
from langchain_graylayer.layering import LayerScorer, UserProfile
from langchain_graylayer.metrics import ArmStats, GraylayerMetrics, InProcessSource
from langchain_graylayer.plan import RolloutPlan
from langchain_graylayer.router import GrayRouter
from langchain_graylayer.store.memory import MemoryStore

__all__ = ["LAYER_SHARES", "DemoResult", "Scenario", "run_cli", "run_demo", "write_outputs"]

LAYER_SHARES: dict[str, float] = {
    "internal": 0.005,
    "early_adopter": 0.10,
    "normal": 0.70,
    "high_value": 0.15,
    "vip": 0.045,
}
"""The article's population: internal testers, early adopters, normal, high value, VIP."""
START = 1_793_577_600.0  # 2026-11-02 00:00 UTC, a multiple of the tick
DAY, HOUR = 86400.0, 3600.0
HANDOFF = "Sorry, I could not work out what you need; a colleague will get back to you."
_ORDER_ID = re.compile(r"\bO-\d+\b")


# --------------------------------------------------------------------------- the scenario
@dataclass(frozen=True, slots=True)
class Scenario:
    """Traffic, gates and timings of one run (``DEFAULT`` or ``QUICK``)."""

    users: int
    rates: Mapping[str, float]
    """Sampled requests per simulated hour, per layer."""
    steps: Mapping[str, tuple[float, ...]]
    min_samples: Mapping[str, int]
    bake_time: float
    max_step_time: Mapping[str, float]
    """Per layer; with ``promote_if_no_harm`` a step is promoted at its timeout if no harm was
    found, so this is how long the harm tests get to look."""
    fix_delay: float = 12 * HOUR
    """From the rollback to v2.1 shipping."""
    aftercare: float = 12 * HOUR
    """Measured at 100% after act two completes ("after" completion)."""
    tick: float = 900.0
    max_days: float = 14.0
    late_share: float = 0.5
    """Share of the normal layer's questions that are late-delivery refunds."""


_RATES = {"internal": 1.5, "early_adopter": 3.0, "normal": 10.0, "high_value": 3.0, "vip": 2.0}
DEFAULT = Scenario(
    users=20_000,
    rates=_RATES,
    steps={
        "internal": (0.5, 1.0),
        "early_adopter": (0.2, 0.5, 1.0),
        "normal": (0.25, 0.5, 1.0),
        "high_value": (0.2, 0.5, 1.0),
        "vip": (0.25, 0.5, 1.0),
    },
    min_samples={"internal": 5, "early_adopter": 5, "normal": 60, "high_value": 5, "vip": 4},
    bake_time=2 * HOUR,
    max_step_time={**dict.fromkeys(LAYER_SHARES, 8 * HOUR), "normal": 24 * HOUR},
)
QUICK = Scenario(
    users=3_000,
    rates=_RATES,
    steps=dict.fromkeys(LAYER_SHARES, (0.5, 1.0)),
    min_samples={"internal": 2, "early_adopter": 3, "normal": 60, "high_value": 3, "vip": 3},
    bake_time=1 * HOUR,
    max_step_time={**dict.fromkeys(LAYER_SHARES, 3 * HOUR), "normal": 12 * HOUR},
    fix_delay=3 * HOUR,
    aftercare=4 * HOUR,
    max_days=5.0,
)


def demo_plan(plan_id: str, candidate: str, changelog: str, scenario: Scenario) -> RolloutPlan:
    """The demo's plan: the article's five layers, short steps, gates sized to the sample."""
    layers: list[dict[str, Any]] = []
    ranges = {
        "early_adopter": [0.8, 1.0],
        "normal": [0.6, 0.8],
        "high_value": [0.3, 0.6],
        "vip": [0.0, 0.3],
    }
    for name in LAYER_SHARES:
        layer: dict[str, Any] = {"name": name, "steps": list(scenario.steps[name])}
        layer["gates"] = {
            "min_samples": scenario.min_samples[name],
            "bake_time": scenario.bake_time,
            "max_step_time": scenario.max_step_time[name],
        }
        if name == "internal":
            layer["rules"] = ['group == "staff"']
        else:
            layer["score_range"] = ranges[name]
        layers.append(layer)
    return RolloutPlan.from_dict(
        {
            "id": plan_id,
            "stable": {
                "code": "v1.8",
                "model_name": "rules-engine",
                "changelog": "FAQ rule engine",
            },
            "candidate": {"code": candidate, "model_name": "llm-agent", "changelog": changelog},
            "layers": layers,
            "default_layer": "vip",
            "judging": {"side_effect_tools": ["issue_refund"], "rollback_scope": "plan"},
        }
    )


# --------------------------------------------------------------------------- the shop
@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    item: str
    price: float
    shipping_fee: float
    status: str
    days_late: int = 0
    damaged: bool = False


@dataclass
class Shop:
    """The shop's database: orders the tools read, refunds they write."""

    orders: dict[str, Order] = field(default_factory=dict)
    refunds: list[dict[str, Any]] = field(default_factory=list)


def intent_of(question: str) -> str:
    """``late``, ``damaged`` or ``track``: what a customer's question is about."""
    text = question.lower()
    if "late" in text:
        return "late"
    return "damaged" if "damaged" in text or "broken" in text else "track"


def owed_refund(order: Order, intent: str) -> float:
    """The shop's policy: damaged → the price back; ≥ 2 days late → the shipping fee back."""
    if intent == "damaged" and order.damaged:
        return order.price
    if intent == "late" and order.days_late >= 2:
        return order.shipping_fee
    return 0.0


def shop_tools(shop: Shop, clock: Callable[[], float]) -> list[BaseTool]:
    """The real tools both agent versions call."""

    def lookup_order(order_id: str) -> str:
        """Look an order up: item, price, shipping fee, status, days late, damage report."""
        order = shop.orders.get(order_id)
        return json.dumps(asdict(order)) if order else f"no order {order_id}"

    def issue_refund(order_id: str, amount: float, reason: str) -> str:
        """Refund ``amount`` euros of an order to the customer's payment method."""
        shop.refunds.append({"order_id": order_id, "amount": amount, "time": clock()})
        return f"refund of EUR {amount:.2f} issued for {order_id} ({reason})"

    return [StructuredTool.from_function(lookup_order), StructuredTool.from_function(issue_refund)]


# --------------------------------------------------------------------------- the agents
class SupportModel(BaseChatModel):
    """An offline chat model that follows a version's rules: look up, maybe refund, answer.

    It "understands" a question with probability ``skill`` (decided by a hash of the model family
    and the question, so the same question always gets the same fate), and ``create_agent`` can
    bind tools to it (the replies already name the tools).
    """

    family: str
    skill: float
    late_refund_share: float = 1.0
    """Share of the shipping fee refunded on a late delivery: v2.0's bug is 0.5."""

    @property
    def _llm_type(self) -> str:
        return "graylayer-demo-support"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._reply(messages)
        tokens = sum(len(m.text) for m in messages) // 4
        reply.usage_metadata = {
            "input_tokens": tokens,
            "output_tokens": len(reply.text) // 4 + 8,
            "total_tokens": tokens + len(reply.text) // 4 + 8,
        }
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        last = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        question = messages[last].text
        digest = hashlib.blake2b(f"{self.family}|{question}".encode(), digest_size=8).digest()
        found = _ORDER_ID.search(question)
        if int.from_bytes(digest, "big") / 2**64 >= self.skill or found is None:
            return AIMessage(HANDOFF)
        order_id, intent = found.group(), intent_of(question)
        results = {m.name: m.text for m in messages[last:] if isinstance(m, ToolMessage)}
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


def support_agent(code: str, shop: Shop, clock: Callable[[], float]) -> Runnable[Any, Any]:
    """A real ``create_agent`` agent: v1.8 (rule engine), v2.0 (refund bug) or v2.1 (fixed)."""
    if code == "v1.8":
        model = SupportModel(family="rules", skill=0.60)
    else:
        model = SupportModel(
            family="llm", skill=0.87, late_refund_share=0.5 if code == "v2.0" else 1.0
        )
    return create_agent(
        model=model,
        tools=shop_tools(shop, clock),
        system_prompt="You are the shop's support agent. Look orders up before answering.",
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


# --------------------------------------------------------------------------- the population
_FEATURES = {  # (days since last use), (uses in 30 days), (value), (acceptance 0-10)
    "internal": ((0, 2), (40, 100), (0, 5_000), (6, 10)),
    "early_adopter": ((0, 3), (45, 100), (0, 10_000), (7, 10)),
    "normal": ((1, 10), (10, 60), (2_000, 30_000), (3.5, 8)),
    "high_value": ((4, 20), (2, 25), (25_000, 80_000), (1.5, 6)),
    "vip": ((15, 30), (0, 6), (60_000, 250_000), (0, 3)),
}


@dataclass(frozen=True, slots=True)
class Customer:
    """A synthetic user: A-RFM habits, from which a profile is built at any simulated time."""

    user_id: str
    gap_days: float
    use_count: int
    value: float
    accept: float
    staff: bool = False

    def profile(self, now: float) -> UserProfile:
        return UserProfile(
            last_use_time=now - self.gap_days * DAY,
            use_count=self.use_count,
            user_value=self.value,
            accept_score=self.accept,
            tags={"group": "staff" if self.staff else "customer"},
        )


def make_population(n: int, rng: np.random.Generator, plan: RolloutPlan) -> list[Customer]:
    """``n`` customers in the article's layer shares: tagged staff, then A-RFM habits drawn per
    target layer and redrawn until the real scorer puts them in that layer."""
    scorer = LayerScorer(plan.scoring, clock=lambda: START)
    customers: list[Customer] = []
    for name, share in LAYER_SHARES.items():
        spec = plan.layer(name)
        for _ in range(round(n * share)):
            while True:
                gap, uses, value, accept = (float(rng.uniform(*r)) for r in _FEATURES[name])
                user_id = f"user-{len(customers):05d}"
                customer = Customer(
                    user_id, gap, int(uses), round(value, 2), accept, name == "internal"
                )
                if spec.score_range is None or spec.contains_score(
                    scorer.score(customer.profile(START)), top=spec.score_range[1] == 1.0
                ):
                    break
            customers.append(customer)
    return customers


# --------------------------------------------------------------------------- the result
@dataclass
class DemoResult:
    """Everything the run measured; :meth:`summary` is what the same seed always reproduces."""

    users: int
    seed: int
    quick: bool
    layers: dict[str, dict[str, float]]
    """Per layer: ``users``, ``share`` (realised), ``target``, ``requests``, ``stable_completion``,
    ``candidate_completion`` (v2.1 over act two), ``ratio`` (final)."""
    requests: int = 0
    rollback: dict[str, Any] = field(default_factory=dict)
    """Act one's rollback audit entry, plus ``day`` (simulated days from the start)."""
    sessions_moved: int = 0
    histories_cleared: int = 0
    """Chat messages the ChatHistoryCleanup hook removed."""
    refund_calls: list[dict[str, Any]] = field(default_factory=list)
    """The rollback report's candidate tool calls, each with ``owed`` (what the policy says)."""
    wrong_answers: list[dict[str, Any]] = field(default_factory=list)
    """Every answer that refunded the wrong amount: user, layer, order, refunded, owed, time."""
    complaints: int = 0
    restart_day: float | None = None
    complete_day: float | None = None
    completion_before: float = math.nan
    completion_after: float = math.nan
    audit: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def exposed_users(self) -> int:
        """Distinct users who received a wrong refund answer."""
        return len({w["user"] for w in self.wrong_answers})

    @property
    def exposure_share(self) -> float:
        return self.exposed_users / self.users

    def summary(self) -> dict[str, Any]:
        """The run's outcome without wall-clock numbers: identical for the same seed."""
        return {
            "users": self.users,
            "seed": self.seed,
            "requests": self.requests,
            "shares": {k: round(v["share"], 5) for k, v in self.layers.items()},
            "rollback": {k: self.rollback.get(k) for k in ("layer", "reason", "time", "old_ratio")},
            "sessions_moved": self.sessions_moved,
            "refund_calls": len(self.refund_calls),
            "exposed_users": self.exposed_users,
            "exposure_share": round(self.exposure_share, 6),
            "complaints": self.complaints,
            "restart_day": None if self.restart_day is None else round(self.restart_day, 4),
            "complete_day": None if self.complete_day is None else round(self.complete_day, 4),
            "completion_before": round(self.completion_before, 4),
            "completion_after": round(self.completion_after, 4),
            "audit": [
                (e["plan"], e["action"], e["layer"], e["new_ratio"], e["time"]) for e in self.audit
            ],
            "final_ratios": {k: v["ratio"] for k, v in self.layers.items()},
        }


# --------------------------------------------------------------------------- the simulation
_ITEMS = (
    ("headphones", 79.0),
    ("kettle", 34.5),
    ("running shoes", 119.0),
    ("desk lamp", 42.0),
    ("phone case", 15.99),
    ("backpack", 64.0),
)
_QUESTIONS = {
    "track": ("Where is my order {o}?", "Has order {o} shipped yet?"),
    "damaged": ("My order {o} arrived damaged, I want a refund.", "The {item} in {o} is broken."),
    "late": (
        "Order {o} came {d} days late. Do I get money back?",
        "My parcel {o} was {d} days late, what is your refund policy?",
    ),
}


def _day_time(t: float) -> str:
    elapsed = t - START
    minutes = int(elapsed % DAY // 60)
    return f"day {int(elapsed // DAY) + 1:>2} {minutes // 60:02d}:{minutes % 60:02d}"


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:g}%"


def _weighted(arms: Mapping[tuple[str, Version], ArmStats], version: Version) -> float:
    """Completion per layer, weighted by the layers' population shares (the sample is
    stratified, so a pooled rate would over-weight the small layers)."""
    rates = {
        name: arms[(name, version)].completion_rate
        for name in LAYER_SHARES
        if (name, version) in arms
    }
    rates = {k: v for k, v in rates.items() if not math.isnan(v)}
    total = sum(LAYER_SHARES[k] for k in rates)
    return sum(LAYER_SHARES[k] * v for k, v in rates.items()) / total if total else math.nan


@dataclass
class _Act:
    plan: RolloutPlan
    router: GrayRouter[Any, Any]
    controller: RolloutController


class _Simulation:
    """The simulated days: traffic through the real router, one controller tick per tick."""

    def __init__(self, scenario: Scenario, users: int, seed: int, echo: Callable[[str], None]):
        self.scenario, self.seed, self.echo = scenario, seed, echo
        self.rng = np.random.default_rng(seed)
        self.now = START
        self.shop = Shop()
        self.store = MemoryStore(clock=self.clock)
        self.metrics = GraylayerMetrics(registry=None, clock=self.clock, resolution=scenario.tick)
        self.stable = support_agent("v1.8", self.shop, self.clock)
        self.histories: dict[str, InMemoryChatMessageHistory] = {}
        self.history_sizes: dict[str, int] = {}
        self.intents: dict[str, str] = {}
        self.pending: list[tuple[float, int, GrayRouter[Any, Any], uuid.UUID, str]] = []
        self.served = 0
        self.act1 = self._act("refund-v2-0", "v2.0", "New LLM agent with refund tools.")
        self.act2: _Act | None = None
        customers = make_population(users, self.rng, self.act1.plan)
        self.customers = {c.user_id: c for c in customers}
        scorer = LayerScorer(self.act1.plan.scoring, clock=self.clock)
        self.by_layer: dict[str, list[str]] = {name: [] for name in LAYER_SHARES}
        for c in customers:
            layer = self.act1.plan.assign_layer(c.user_id, c.profile(START), scorer).layer
            self.by_layer[layer or "vip"].append(c.user_id)
        self.result = DemoResult(
            users,
            seed,
            scenario is QUICK,
            layers={
                name: {
                    "users": len(ids),
                    "share": len(ids) / users,
                    "target": LAYER_SHARES[name],
                    "requests": 0,
                }
                for name, ids in self.by_layer.items()
            },
        )

    def clock(self) -> float:
        return self.now

    def history(self, session_id: str) -> InMemoryChatMessageHistory:
        return self.histories.setdefault(session_id, InMemoryChatMessageHistory())

    def _act(self, plan_id: str, code: str, changelog: str) -> _Act:
        plan = demo_plan(plan_id, code, changelog, self.scenario)
        router: GrayRouter[Any, Any] = GrayRouter(
            stable=self.stable,
            candidate=support_agent(code, self.shop, self.clock),
            plan=plan,
            store=self.store,
            clock=self.clock,
            metrics=self.metrics,
            profile_loader=lambda user_id: self.customers[user_id].profile(self.now),
            completion_judge=lambda output: grade(output, self.shop).correct,
        )
        controller = RolloutController(
            plan=plan,
            store=self.store,
            source=InProcessSource(self.metrics),
            clock=self.clock,
            cleanup_hooks=[ChatHistoryCleanup(self.history)],
            holder=f"demo-{plan_id}",
        )
        return _Act(plan, router, controller)

    # ------------------------------------------------------------------ traffic
    def _ticket(self, layer: str) -> tuple[str, str]:
        rng, n = self.rng, len(self.shop.orders)
        late = self.scenario.late_share if layer == "normal" else 0.0
        if layer in ("high_value", "vip"):
            late = 0.2
        draw = rng.random()
        intent = (
            "late" if draw < late else ("track" if draw < late + (1 - late) * 0.6 else "damaged")
        )
        item, price = _ITEMS[int(rng.integers(len(_ITEMS)))]
        order = Order(
            f"O-{n:06d}",
            item,
            price,
            float(rng.choice([3.99, 4.99, 6.99])),
            "in transit" if intent == "track" and rng.random() < 0.5 else "delivered",
            days_late=int(rng.integers(2, 10)) if intent == "late" else 0,
            damaged=intent == "damaged",
        )
        self.shop.orders[order.order_id] = order
        self.intents[order.order_id] = intent
        template = _QUESTIONS[intent][int(rng.integers(2))]
        return template.format(o=order.order_id, item=item, d=order.days_late), order.order_id

    def _serve(self, act: _Act, layer: str, at: float) -> None:
        self.now = at
        ids = self.by_layer[layer]
        user = ids[int(self.rng.integers(len(ids)))]
        question, order_id = self._ticket(layer)
        session = f"{user}-d{int((at - START) // DAY) + 1}"
        self.served += 1
        run_id = uuid.UUID(int=(self.seed % 2**32) << 64 | self.served)
        config: Any = {"configurable": {"user_id": user, "session_id": session}, "run_id": run_id}
        output = act.router.invoke({"messages": [HumanMessage(question)]}, config)
        answer = output["messages"][-1]
        self.history(session).add_messages([HumanMessage(question), AIMessage(answer.text)])
        self.history_sizes[session] = self.history_sizes.get(session, 0) + 2
        self.result.layers[layer]["requests"] += 1
        result = grade(output, self.shop)
        if result.wrong_refund:
            self.result.wrong_answers.append(
                {
                    "user": user,
                    "layer": layer,
                    "agent": answer.name,
                    "order": order_id,
                    "refunded": result.refunded,
                    "owed": result.owed,
                    "time": at,
                }
            )
        draw = self.rng.random()
        if result.wrong_refund:
            kind = "complaint" if draw < 0.8 else "bad"
        elif result.handed_off:
            kind = "complaint" if draw < 0.01 else ("bad" if draw < 0.2 else "")
        else:
            kind = "good" if draw < 0.3 else ""
        if kind:
            when = at + float(self.rng.uniform(120, 1800))  # users react minutes later
            heapq.heappush(self.pending, (when, self.served, act.router, run_id, kind))

    def _feedback_until(self, t: float) -> None:
        while self.pending and self.pending[0][0] < t:
            when, _, router, run_id, kind = heapq.heappop(self.pending)
            self.now = when
            router.feedback(run_id, kind)
            self.result.complaints += kind == "complaint"

    # ------------------------------------------------------------------ the run
    def run(self) -> DemoResult:
        sc, echo = self.scenario, self.echo
        plan = self.act1.plan
        echo(f"{self.result.users} synthetic users; layers by A-RFM score and staff tag:")
        for name, row in self.result.layers.items():
            echo(
                f"  {name:<13} {int(row['users']):>6} users  {row['share']:6.2%} "
                f"(article {row['target']:.1%})  {sc.rates[name]:g} requests/h sampled"
            )
        echo(
            f"\nact one: {plan.candidate.code} ({plan.candidate.changelog}) vs {plan.stable.code} "
            f"({plan.stable.changelog}), plan {plan.id}"
        )
        act, complete_at, rollback_at = self.act1, None, None
        tick = 0
        while self.now < START + sc.max_days * DAY:
            t0 = START + tick * sc.tick
            arrivals = sorted(
                (t0 + float(self.rng.uniform(0, sc.tick)), name)
                for name, rate in sc.rates.items()
                for _ in range(int(self.rng.poisson(rate * sc.tick / HOUR)))
            )
            for at, layer in arrivals:
                self._feedback_until(at)
                self._serve(act, layer, at)
            self._feedback_until(t0 + sc.tick)
            self.now = t0 + sc.tick
            if (
                self.act2 is None
                and rollback_at is not None
                and self.now >= rollback_at + sc.fix_delay
            ):
                act = self.act2 = self._start_act_two()
            for entry in act.controller.step():
                self._log(entry)
                if entry.action == "rollback" and rollback_at is None:
                    rollback_at = self.now
                    self.result.rollback = {**asdict(entry), "day": (self.now - START) / DAY}
                if entry.action == "cleanup" and act is self.act1:
                    self._report_cleanup()
                if entry.action == "complete":
                    complete_at = self.now
                    self.result.complete_day = (self.now - START) / DAY
            self._timeline(act)
            tick += 1
            if complete_at is not None and self.now >= complete_at + sc.aftercare:
                break
        return self._finish(act)

    def _start_act_two(self) -> _Act:
        before = self.metrics.window(self.act1.plan.id, self.now - START)
        self.result.completion_before = _weighted(before, Version.STABLE)
        for name in LAYER_SHARES:
            arm = before.get((name, Version.STABLE))
            self.result.layers[name]["stable_completion"] = arm.completion_rate if arm else math.nan
        act = self._act("refund-v2-1", "v2.1", "v2.0 with the late-delivery refund rule fixed.")
        self.result.restart_day = (self.now - START) / DAY
        self.echo(
            f"\nact two: {_day_time(self.now)}  v2.1 ships (late deliveries refund the whole "
            f"shipping fee); a new plan {act.plan.id} starts from the first layer"
        )
        return act

    def _log(self, entry: AuditEntry) -> None:
        self.result.audit.append(asdict(entry))
        if entry.action == "hold":
            return
        ratios = f"{_pct(entry.old_ratio):>5} → {_pct(entry.new_ratio):<5}"
        if entry.action in ("cleanup", "complete"):
            ratios = " " * 13
        self.echo(
            f"  {_day_time(entry.time)}  {entry.layer or 'all layers':<13} {ratios} "
            f"{entry.action}: {entry.reason}"
        )

    def _report_cleanup(self) -> None:
        report = self.act1.controller.last_rollback_report
        moved = report.sessions_moved if report else ()
        self.result.sessions_moved = len(moved)
        self.result.histories_cleared = sum(
            self.history_sizes.get(s, 0) for s in moved if not self.history(s).messages
        )
        for call in report.compensation if report else ():
            args = call.get("arguments") or {}
            order = self.shop.orders.get(str(args.get("order_id")))
            owed = owed_refund(order, self.intents[order.order_id]) if order else math.nan
            self.result.refund_calls.append({**call, "owed": owed})
        under = [
            c for c in self.result.refund_calls if c["arguments"]["amount"] < c["owed"] - 0.005
        ]
        missing = sum(c["owed"] - c["arguments"]["amount"] for c in under)
        self.echo(
            f"    {len(moved)} sessions moved to stable, {self.result.histories_cleared} chat "
            f"messages cleared; {len(self.result.refund_calls)} issue_refund calls to review, "
            f"{len(under)} under-refunded (EUR {missing:.2f} still owed), e.g.:"
        )
        for call in under[:3] + [c for c in self.result.refund_calls if c not in under][:1]:
            a = call["arguments"]
            self.echo(
                f"      {_day_time(call['time'])} {call['layer']:<13} {call['session']:<18} "
                f"issue_refund({a['order_id']}, EUR {a['amount']:.2f}, {a['reason']!r})  "
                f"owed EUR {call['owed']:.2f}"
            )

    def _timeline(self, act: _Act) -> None:
        ratios = self.store.get_ratios(act.plan.id)
        status = act.controller.status()
        active = next((r["layer"] for r in status["layers"] if r["phase"] == "active"), "")
        arms = self.metrics.window(act.plan.id, 12 * HOUR)
        row: dict[str, Any] = {
            "time": self.now,
            "day": round((self.now - START) / DAY, 4),
            "plan": act.plan.id,
            "status": status["status"],
            "active": active,
        }
        row.update({f"ratio_{n}": ratios.get(n, 0.0) for n in LAYER_SHARES})
        for version in Version:
            arm = arms.get((active, version))
            n = arm.requests if arm else 0
            row[f"{version.value}_requests_12h"] = n
            # fewer than 10 requests make a rate that is mostly noise; leave the cell empty
            rate = round(arm.completion_rate, 4) if arm and n >= 10 else None
            row[f"{version.value}_completion_12h"] = rate
        row["requests"], row["exposed_users"] = self.served, self.result.exposed_users
        self.result.timeline.append(row)

    def _finish(self, act: _Act) -> DemoResult:
        result = self.result
        result.requests = self.served
        result.audit.sort(key=lambda e: (e["time"], e["plan"]))
        final = self.store.get_ratios(act.plan.id)
        after = self.metrics.window(act.plan.id, self.scenario.aftercare)
        whole = self.metrics.window(act.plan.id, self.now - (result.restart_day or 0) * DAY - START)
        result.completion_after = _weighted(after, Version.CANDIDATE)
        for name, row in result.layers.items():
            arm = whole.get((name, Version.CANDIDATE))
            row["candidate_completion"] = arm.completion_rate if arm else math.nan
            row["ratio"] = final.get(name, 0.0)
            row.setdefault("stable_completion", math.nan)
        return result


# --------------------------------------------------------------------------- entry points
def run_demo(
    users: int | None = None,
    seed: int = 7,
    quick: bool = False,
    *,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Play both acts and print the progress and the summary; returns what was measured.

    Example (not run here: it takes seconds):
        result = run_demo(users=3000, seed=1, quick=True, echo=lambda line: None)
        result.rollback["layer"], result.layers["vip"]["ratio"]   # ('normal', 1.0)
    """
    scenario = QUICK if quick else DEFAULT
    started = time.perf_counter()
    result = _Simulation(scenario, users or scenario.users, seed, echo).run()
    result.wall_seconds = time.perf_counter() - started
    _print_summary(result, echo)
    return result


def _print_summary(r: DemoResult, echo: Callable[[str], None]) -> None:
    echo("\nlayer          users   share  requests  v1.8 done  v2.1 done  ratio")
    for name, row in r.layers.items():
        echo(
            f"{name:<13} {int(row['users']):>6} {row['share']:>7.2%} {int(row['requests']):>9} "
            f"{row['stable_completion']:>10.1%} {row['candidate_completion']:>10.1%} "
            f"{_pct(row['ratio']):>6}"
        )
    echo(f"\nreal agent calls: {r.requests} in {r.wall_seconds:.1f} s; complaints: {r.complaints}")
    if r.rollback:
        echo(
            f"act one: rolled back {_day_time(r.rollback['time'])} ({r.rollback['day']:.1f} "
            f"simulated days in), layer {r.rollback['layer']} at {_pct(r.rollback['old_ratio'])}: "
            f"{r.rollback['reason']}"
        )
    echo(
        f"exposure to the bug: {r.exposed_users} users got a wrong refund answer "
        f"({len(r.wrong_answers)} answers) = {r.exposure_share:.3%} of {r.users} users "
        f"(article: 0.09% of 5M; requirement <= 0.1%)"
    )
    if r.complete_day is not None:
        echo(
            f"full rollout: every layer at 100% {_day_time(START + r.complete_day * DAY)} "
            f"({r.complete_day:.1f} simulated days in; article: day 10)"
        )
    else:
        echo("full rollout: NOT reached in the simulated window")
    echo(
        f"completion (layer-share weighted): before {r.completion_before:.1%} (v1.8 stable), "
        f"after {r.completion_after:.1%} (v2.1 at 100%); article: 60% → 87%"
    )
    echo(f"audit: {len(r.audit)} entries over both plans; the last three:")
    for entry in r.audit[-3:]:
        what = " ".join(str(entry[key]) for key in ("plan", "action", "layer") if entry[key])
        echo(f"  {_day_time(entry['time'])} {what}: {entry['reason']}")


def write_outputs(result: DemoResult, out: str | Path) -> list[str]:
    """Write ``audit.json``, ``timeline.csv``, ``summary.json`` and (with matplotlib)
    ``rollout.png`` into ``out``; returns one line per file written or skipped."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.json").write_text(json.dumps(result.audit, indent=1, default=str) + "\n")
    (folder / "summary.json").write_text(json.dumps(result.summary(), indent=1) + "\n")
    with (folder / "timeline.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result.timeline[0]))
        writer.writeheader()
        writer.writerows(result.timeline)
    lines = [f"wrote {folder / name}" for name in ("audit.json", "timeline.csv", "summary.json")]
    try:
        import importlib

        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return [*lines, "rollout.png skipped: pip install matplotlib to draw it"]
    days = [row["day"] for row in result.timeline]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 6.5))
    for name in LAYER_SHARES:
        top.step(days, [row[f"ratio_{name}"] for row in result.timeline], where="post", label=name)
    top.set_ylabel("candidate ratio")
    top.legend(loc="center right", fontsize="small")
    for key, label in (("candidate", "candidate"), ("stable", "stable v1.8")):
        series = [row[f"{key}_completion_12h"] for row in result.timeline]
        bottom.plot(days, [math.nan if v is None else v for v in series], label=label)
    bottom.set_ylabel("completion, active layer (12 h)")
    bottom.set_xlabel("simulated days")
    bottom.legend(loc="lower right", fontsize="small")
    for axis in (top, bottom):
        for day, text in ((result.rollback.get("day"), "rollback"), (result.restart_day, "v2.1")):
            if day is not None:
                axis.axvline(day, color="grey", linestyle="--", linewidth=0.8)
                axis.annotate(text, (day, 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    top.set_title("graylayer demo: v2.0 rolled back in normal, v2.1 to 100% in every layer")
    fig.tight_layout()
    fig.savefig(folder / "rollout.png", dpi=110)
    plt.close(fig)
    return [*lines, f"wrote {folder / 'rollout.png'}"]


def run_cli(users: int | None, seed: int, quick: bool, out: str | None) -> int:
    """``graylayer demo``: run, print, and write the files when ``out`` is given."""
    result = run_demo(users, seed, quick)
    if out:
        for line in write_outputs(result, out):
            print(line)
    ok = result.rollback.get("layer") == "normal" and result.complete_day is not None
    return 0 if ok else 1
