"""The run: what it measured (:class:`DemoResult`) and the simulated days that measure it."""

from __future__ import annotations

import heapq
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import AIMessage, HumanMessage

from langchain_graylayer.demo.agents import grade, refund_policy_check, support_agent
from langchain_graylayer.demo.decisions import Decision, decisions, progress_lines, rolled_back
from langchain_graylayer.demo.world import (
    DAY,
    HOUR,
    LAYER_SHARES,
    QUICK,
    STABLE_CODE,
    START,
    Order,
    Scenario,
    Shop,
    day_number,
    day_time,
    demo_plan,
    make_population,
    owed_refund,
)
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.plan.plan import RolloutPlan, Version
from langchain_graylayer.plan.profile import LayerScorer
from langchain_graylayer.rollout.cleanup import ChatHistoryCleanup
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.rollout.state import AuditEntry
from langchain_graylayer.routing.router import GrayRouter
from langchain_graylayer.store.memory import MemoryStore
from langchain_graylayer.store.protocols import split_conversation_key


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
    """Act one's rollback audit entry, plus ``day`` (its 1-based day number) and ``layers``
    (every layer it moved to 0: the ratio each had before)."""
    sessions_moved: int = 0
    histories_cleared: int = 0
    """Chat messages the ChatHistoryCleanup hook removed."""
    refund_calls: list[dict[str, Any]] = field(default_factory=list)
    """The rollback report's candidate tool calls, each with ``owed`` (what the policy says)."""
    wrong_answers: list[dict[str, Any]] = field(default_factory=list)
    """Every answer that refunded the wrong amount: user, layer, order, refunded, owed, time."""
    complaints: int = 0
    restart_day: float | None = None
    """The 1-based day number at which v2.1 shipped (day 1 00:00 is 1.0)."""
    complete_day: float | None = None
    """The 1-based day number at which every layer was at 100%."""
    completion_before: float = math.nan
    completion_after: float = math.nan
    audit: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    """One row per tick: ``time``, ``day`` (1-based), ``plan``, ``candidate`` (its version),
    ``status``, ``active`` layer, ``ratio_<layer>``, ``requests`` and ``exposed_users`` so far."""
    wall_seconds: float = 0.0

    @property
    def decisions(self) -> list[Decision]:
        """Every promotion, alert and rollback (one row per layer it moved), from the audit."""
        return decisions(self.audit)

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
            "rollback": {
                k: self.rollback.get(k) for k in ("layer", "reason", "time", "old_ratio", "layers")
            },
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


def _refund_line(call: Mapping[str, Any]) -> str:
    """One ``issue_refund`` call on the rollback's review list, beside what the policy owes."""
    a = call["arguments"]
    return (
        f"      {day_time(call['time'])} {call['layer']:<13} {call['session']:<18} "
        f"issue_refund({a['order_id']}, EUR {a['amount']:.2f}, {a['reason']!r})  "
        f"owed EUR {call['owed']:.2f}"
    )


@dataclass(frozen=True, slots=True)
class _Served:
    time: float
    plan: str
    layer: str
    version: Version
    completed: bool


@dataclass(frozen=True, slots=True)
class _Arm:
    requests: int
    completions: int

    @property
    def completion_rate(self) -> float:
        return self.completions / self.requests if self.requests else math.nan


def _window(served: list[_Served], plan_id: str, since: float) -> dict[tuple[str, Version], _Arm]:
    """Requests and completions per (layer, version) of ``plan_id`` since ``since``: the demo's
    own bookkeeping for its report (the judge reads the store's evidence)."""
    counts: dict[tuple[str, Version], list[int]] = {}
    for row in served:
        if row.plan == plan_id and row.time > since:
            arm = counts.setdefault((row.layer, row.version), [0, 0])
            arm[0] += 1
            arm[1] += row.completed
    return {key: _Arm(*value) for key, value in counts.items()}


def _weighted(arms: Mapping[tuple[str, Version], _Arm], version: Version) -> float:
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
        self.metrics = GraylayerMetrics(registry=None)
        self.served_log: list[_Served] = []
        self.stable = support_agent(STABLE_CODE, self.shop, self.clock)
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
            evaluators={"refund_policy": refund_policy_check(self.shop)},
        )
        controller = RolloutController(
            plan=plan,
            store=self.store,
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
        candidate_name = f"support_{act.plan.candidate.code.replace('.', '_')}"
        version = Version.CANDIDATE if answer.name == candidate_name else Version.STABLE
        self.served_log.append(_Served(at, act.plan.id, layer, version, result.correct))
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
                f"(source {row['target']:.1%})  {sc.rates[name]:g} requests/h sampled"
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
            if act.router.evaluations is not None:  # the tick judges every finished evaluation
                act.router.evaluations.drain(60.0)
            for entry in act.controller.step():
                self._log(entry)
                if entry.action == "rollback" and rollback_at is None:
                    rollback_at = self.now
                    self._record_rollback(entry)
                if entry.action == "cleanup" and act is self.act1:
                    self._report_cleanup()
                if entry.action == "complete":
                    complete_at = self.now
                    self.result.complete_day = day_number(self.now)
            self._timeline(act)
            tick += 1
            if complete_at is not None and self.now >= complete_at + sc.aftercare:
                break
        return self._finish(act)

    def _start_act_two(self) -> _Act:
        before = _window(self.served_log, self.act1.plan.id, START)
        self.result.completion_before = _weighted(before, Version.STABLE)
        for name in LAYER_SHARES:
            arm = before.get((name, Version.STABLE))
            self.result.layers[name]["stable_completion"] = arm.completion_rate if arm else math.nan
        act = self._act("refund-v2-1", "v2.1", "v2.0 with the late-delivery refund rule fixed.")
        self.result.restart_day = day_number(self.now)
        self.echo(
            f"\nact two: {day_time(self.now)}  v2.1 ships (late deliveries refund the whole "
            f"shipping fee); a new plan {act.plan.id} starts from the first layer"
        )
        return act

    def _log(self, entry: AuditEntry) -> None:
        self.result.audit.append(asdict(entry))
        for line in progress_lines(self.result.audit[-1]):
            self.echo(line)

    def _record_rollback(self, entry: AuditEntry) -> None:
        data = asdict(entry)
        moved = {row.layer: row.old_ratio for row in rolled_back(data)}
        self.result.rollback = {**data, "day": day_number(entry.time), "layers": moved}
        rows = (entry.verdict or {}).get("guardrails", ())
        policy = next((g for g in rows if g["metric"] == "eval:refund_policy"), None)
        if policy is not None and policy["candidate_rate"] is not None:
            self.echo(
                f"    policy evaluator refund_policy (every answer, checked in the "
                f"background): {policy['candidate_rate']:.1%} of the candidate's pass vs "
                f"{policy['stable_rate']:.1%} of stable's — {policy['note']}"
            )

    def _report_cleanup(self) -> None:
        report = self.act1.controller.last_rollback_report
        moved = report.sessions_moved if report else ()
        self.result.sessions_moved = len(moved)
        sessions = [split_conversation_key(key)[1] for key in moved]  # hooks get (user, session)
        self.result.histories_cleared = sum(
            self.history_sizes.get(s, 0) for s in sessions if not self.history(s).messages
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
        for call in under[:3]:
            self.echo(_refund_line(call))
        correct = [c for c in self.result.refund_calls if c not in under]
        if correct:
            self.echo(f"    for contrast, one of the {len(correct)} correct refunds on the list:")
            self.echo(_refund_line(correct[0]))

    def _timeline(self, act: _Act) -> None:
        ratios = self.store.get_ratios(act.plan.id)
        status = act.controller.status()
        active = next((r["layer"] for r in status["layers"] if r["phase"] == "active"), "")
        row: dict[str, Any] = {
            "time": self.now,
            "day": round(day_number(self.now), 4),
            "plan": act.plan.id,
            "candidate": act.plan.candidate.code,
            "status": status["status"],
            "active": active,
        }
        row.update({f"ratio_{n}": ratios.get(n, 0.0) for n in LAYER_SHARES})
        row["requests"], row["exposed_users"] = self.served, self.result.exposed_users
        self.result.timeline.append(row)

    def _finish(self, act: _Act) -> DemoResult:
        result = self.result
        result.requests = self.served
        result.audit.sort(key=lambda e: (e["time"], e["plan"]))
        final = self.store.get_ratios(act.plan.id)
        after = _window(self.served_log, act.plan.id, self.now - self.scenario.aftercare)
        whole = _window(self.served_log, act.plan.id, START)  # act two's plan: since v2.1 shipped
        result.completion_after = _weighted(after, Version.CANDIDATE)
        for name, row in result.layers.items():
            arm = whole.get((name, Version.CANDIDATE))
            row["candidate_completion"] = arm.completion_rate if arm else math.nan
            row["ratio"] = final.get(name, 0.0)
            row.setdefault("stable_completion", math.nan)
        return result
