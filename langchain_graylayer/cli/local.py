"""The commands of ``graylayer`` that run here, on the embedded defaults or a store: quickstart,
demo, validate, route, ratio, bucket, redis-migrate."""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

from langchain_graylayer._tables import table
from langchain_graylayer.plan.bucketing import bucket
from langchain_graylayer.plan.plan import RolloutPlan
from langchain_graylayer.store.protocols import Store

__all__ = ["bucket_command", "demo", "quickstart", "redis_migrate", "route", "validate"]


def _load_plan(path: str | None, plan_id: str) -> RolloutPlan:
    return RolloutPlan.from_yaml(path) if path else RolloutPlan.default(plan_id)


def _store(redis_url: str | None) -> Store:
    if redis_url is None:
        from langchain_graylayer.store.memory import MemoryStore

        return MemoryStore()
    from langchain_graylayer.store.redis import RedisStore

    store = RedisStore(redis_url)
    store.ping()  # one line now, not a degraded answer and a logged traceback
    return store


# --------------------------------------------------------------------------- quickstart
def _agents() -> tuple[Any, Any]:
    """Two versions of a tiny customer-service chain with offline fake chat models."""
    from itertools import cycle

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([("system", "{rules}"), ("human", "{question}")])
    v1 = GenericFakeChatModel(messages=cycle([AIMessage("Refunds take 7 days (v1).")]))
    v2 = GenericFakeChatModel(messages=cycle([AIMessage("Refund issued today (v2).")]))
    stable = prompt.partial(rules="Answer from the FAQ.") | v1 | StrOutputParser()
    candidate = prompt.partial(rules="Use the refund tool.") | v2 | StrOutputParser()
    return stable, candidate


def _population(n: int, seed: int, now: datetime) -> list[tuple[str, Any]]:
    """Synthetic users with A-RFM features; a tenth have no profile."""
    from langchain_graylayer.plan.profile import UserProfile

    rng = random.Random(seed)
    users: list[tuple[str, Any]] = []
    for i in range(n):
        if rng.random() < 0.1:
            users.append((f"user-{i:05d}", None))
            continue
        keen = rng.random() < 0.35
        profile = UserProfile(
            last_use_time=now - timedelta(hours=rng.expovariate(1 / (12 if keen else 240))),
            use_count=int(rng.expovariate(1 / (70 if keen else 12))),
            user_value=rng.expovariate(1 / (2_000 if keen else 25_000)),
            accept_score=min(10.0, rng.uniform(6, 10) if keen else rng.uniform(0, 7)),
            allow_gray=rng.random() > 0.02,
        )
        users.append((f"user-{i:05d}", profile))
    return users


def quickstart(args: argparse.Namespace) -> int:
    from langchain_core.runnables import RunnableLambda

    from langchain_graylayer.routing.router import GrayRouter
    from langchain_graylayer.store.memory import MemoryStore

    now = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    plan = _load_plan(args.plan, "refund-agent-v2")
    store = MemoryStore()
    stable, candidate = _agents()
    router: GrayRouter[dict[str, str], str] = GrayRouter(
        stable=stable, candidate=candidate, plan=plan, store=store, clock=now.timestamp
    )
    ratios = dict(zip(plan.layer_names, (0.5, 0.1, 0.01, 0.0, 0.0, 0.0), strict=False))
    for layer, ratio in ratios.items():
        store.set_ratio(plan.id, layer, ratio)
    users = _population(args.users, args.seed, now)
    for user_id, profile in users:
        if profile is not None:
            store.put_profile(user_id, profile)

    print(f"plan {plan.id}: {len(plan.layers)} layers, {len(users)} synthetic users, MemoryStore")
    question = {"question": "Where is my refund?"}
    configs = [{"configurable": {"user_id": u, "session_id": f"{u}-chat"}} for u, _ in users]
    answers = router.batch([question] * len(users), configs)  # type: ignore[arg-type]

    per_layer: dict[str, list[int]] = {name: [0, 0] for name in plan.layer_names}
    unrouted = 0
    for (user_id, _), answer in zip(users, answers, strict=True):
        decision = router.route(user_id, f"{user_id}-chat")
        if decision.layer is None:
            unrouted += 1
            continue
        per_layer[decision.layer][0] += 1
        per_layer[decision.layer][1] += "(v2)" in answer
    rows = [
        (name, n, f"{ratios.get(name, 0.0):.0%}", f"{(c / n if n else 0):.1%}", c)
        for name, (n, c) in per_layer.items()
    ]
    print()
    print(table(rows, ["layer", "users", "ratio", "candidate share", "on candidate"]))
    print(f"opted out (always stable): {unrouted}")

    pinned = next(u for (u, _), a in zip(users, answers, strict=True) if "(v2)" in a)
    layer = router.route(pinned).layer or ""
    store.set_ratio(plan.id, layer, 0.0)
    again = router.invoke(
        question, {"configurable": {"user_id": pinned, "session_id": f"{pinned}-chat"}}
    )
    fresh = router.invoke(question, {"configurable": {"user_id": pinned, "session_id": "new-chat"}})
    print(f"\n{layer} ratio set to 0%: {pinned}'s open conversation still gets {again!r};")
    print(f"a new conversation gets {fresh!r}")
    store.set_ratio(plan.id, layer, ratios[layer])

    print("\nwhy did these users get their version?")
    for user_id, _ in users[:3]:
        print(f"  {user_id}: {router.route(user_id).explain()}")

    broken: GrayRouter[dict[str, str], str] = GrayRouter(
        stable=stable,
        candidate=RunnableLambda(_raise_candidate_bug),
        plan=plan,
        store=store,
        clock=now.timestamp,
    )
    victim = next(u for u, _ in users if broken.route(u).version.value == "candidate")
    answer = broken.invoke(question, {"configurable": {"user_id": victim}})
    print(f"\ncandidate raising for {victim}: the user still got {answer!r}")
    print(f"router counts: {broken.counts()}")
    return 0


def demo(args: argparse.Namespace) -> int:
    try:
        from langchain_graylayer.demo import run_cli
    except ImportError as exc:  # langchain and langgraph are in the [demo] extra
        print(f"graylayer demo needs its extra ({exc}): pip install 'langchain-graylayer[demo]'")
        return 2
    return run_cli(args.users, args.seed, args.quick, args.out)


def _raise_candidate_bug(_: object) -> str:
    raise RuntimeError("candidate bug: refund rule table missing")


# --------------------------------------------------------------------------- other commands
def validate(args: argparse.Namespace) -> int:
    plan = RolloutPlan.from_yaml(args.plan)
    rows = [
        (
            layer.name,
            "-"
            if layer.score_range is None
            else f"[{layer.score_range[0]}, {layer.score_range[1]})",
            len(layer.members),
            "; ".join(layer.rules) or "-",
            " → ".join(f"{s:g}" for s in layer.steps),
        )
        for layer in plan.layers
    ]
    print(f"plan {plan.id} is valid (default layer: {plan.default_layer_name})")
    print(table(rows, ["layer", "score range", "members", "rules", "steps"]))
    return 0


def route(args: argparse.Namespace) -> int:
    """``graylayer route USER --local``: computed here, from a plan file and a store."""
    from langchain_graylayer.routing.assigner import Assigner

    plan = _load_plan(args.plan, args.plan_id)
    store = _store(args.redis_url)
    if args.redis_url is None:
        print(
            f"local: plan {plan.id}, an empty in-memory store (every ratio 0, no profiles); "
            "use --redis-url for live state, or drop --local to ask the server",
            file=sys.stderr,
        )
    decision = Assigner(plan, store).route(args.user_id, args.session)
    if args.json:
        data = {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(decision).items()}
        print(json.dumps({**data, "explanation": decision.explain()}, indent=2))
    else:
        print(decision.explain())
    return 0


def bucket_command(args: argparse.Namespace) -> int:
    print(bucket(args.salt, args.user_id))
    return 0


def redis_migrate(args: argparse.Namespace) -> int:
    """``graylayer redis-migrate``: move plan keys to the cluster-safe layout; 1 if any remain."""
    from langchain_graylayer.store.redis import RedisStore

    store = RedisStore(args.redis_url, prefix=args.prefix)
    try:
        store.ping()
        done = store.migrate_layout()
    finally:
        store.close()
    print(f"moved {len(done.moved)} key(s) to the cluster-safe layout")
    for key in done.conflicts:
        print(f"conflict: {key} kept; its new name already holds other data (compare by hand)")
    for key in done.changed:
        print(f"changed while copying: {key} kept; stop the old controllers and run again")
    return 0 if done.complete else 1
