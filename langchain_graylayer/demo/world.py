"""The demo's world: the layer shares and clock, the scenario and its plan, the shop and its
tools, and the synthetic customers."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from langchain_core.tools import BaseTool, StructuredTool

from langchain_graylayer.plan.gates import DEFAULT_GUARDRAILS
from langchain_graylayer.plan.plan import RolloutPlan
from langchain_graylayer.plan.profile import LayerScorer, UserProfile

LAYER_SHARES: dict[str, float] = {
    "internal": 0.005,
    "early_adopter": 0.10,
    "normal": 0.70,
    "high_value": 0.15,
    "vip": 0.045,
}
"""The source article's population: internal testers, early adopters, normal, high value, VIP."""
STABLE_CODE = "v1.8"
"""The stable version of both acts: the FAQ rule engine."""
START = 1_793_577_600.0  # 2026-11-02 00:00 UTC, a multiple of the tick
DAY, HOUR = 86400.0, 3600.0


def day_number(t: float) -> float:
    """Simulated time as a 1-based day number: day 1 00:00 is 1.0, day 2 12:00 is 2.5. The text,
    the timeline and the plot all count days this way."""
    return 1 + (t - START) / DAY


def at_day(day: float) -> float:
    """The simulated time of a 1-based day number (the inverse of :func:`day_number`)."""
    return START + (day - 1) * DAY


def day_time(t: float) -> str:
    """``day  2 16:15``: the day number and the time of day."""
    elapsed = t - START
    minutes = int(elapsed % DAY // 60)
    return f"day {int(elapsed // DAY) + 1:>2} {minutes // 60:02d}:{minutes % 60:02d}"


# --------------------------------------------------------------------------- the scenario
@dataclass(frozen=True, slots=True)
class Scenario:
    """Traffic, gates and timings of one run (``DEFAULT`` or ``QUICK``)."""

    users: int
    rates: Mapping[str, float]
    """Sampled requests per simulated hour, per layer."""
    steps: Mapping[str, tuple[float, ...]]
    min_samples: Mapping[str, int]
    min_users_at_timeout: Mapping[str, int]
    """Per layer: the candidate users a step needs before its timeout may promote on "no harm
    found". The sample is thin (a few requests per simulated hour), so the small layers are
    promoted on a handful of users; the report says so for every promotion."""
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
    min_users_at_timeout={**dict.fromkeys(LAYER_SHARES, 4), "internal": 3, "normal": 30},
    bake_time=2 * HOUR,
    max_step_time={**dict.fromkeys(LAYER_SHARES, 8 * HOUR), "normal": 24 * HOUR},
)
QUICK = Scenario(
    users=3_000,
    rates=_RATES,
    steps=dict.fromkeys(LAYER_SHARES, (0.5, 1.0)),
    min_samples={"internal": 2, "early_adopter": 3, "normal": 60, "high_value": 3, "vip": 3},
    min_users_at_timeout={**dict.fromkeys(LAYER_SHARES, 3), "internal": 2, "normal": 30},
    bake_time=1 * HOUR,
    max_step_time={**dict.fromkeys(LAYER_SHARES, 3 * HOUR), "normal": 12 * HOUR},
    fix_delay=3 * HOUR,
    aftercare=4 * HOUR,
    max_days=5.0,
)


def demo_plan(plan_id: str, candidate: str, changelog: str, scenario: Scenario) -> RolloutPlan:
    """The demo's plan: the source article's five layers, short steps, gates sized to the sample."""
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
            "min_users_at_timeout": scenario.min_users_at_timeout[name],
            "bake_time": scenario.bake_time,
            "max_step_time": scenario.max_step_time[name],
            "guardrails": [
                *(g.model_dump(mode="json") for g in DEFAULT_GUARDRAILS),
                {"metric": "eval:refund_policy", "margin": 0.03},
            ],
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
                "code": STABLE_CODE,
                "model_name": "rules-engine",
                "changelog": "FAQ rule engine",
            },
            "candidate": {"code": candidate, "model_name": "llm-agent", "changelog": changelog},
            "layers": layers,
            "default_layer": "vip",
            "judging": {"side_effect_tools": ["issue_refund"], "rollback_scope": "plan"},
            # A policy check of every answer, in the background: did a refund pay what
            # the shop's rules say? (GrayRouter(evaluators=...) binds refund_policy_check.)
            "evaluators": [{"name": "refund_policy"}],
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
    """``n`` customers in the source article's layer shares: tagged staff, then A-RFM habits
    drawn per target layer and redrawn until the real scorer puts them in that layer."""
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
