"""What ``GrayRouter`` adds to a call, next to calling the chain directly or a ``RunnableBranch``.

Run from the repository root::

    python benchmarks/router_overhead.py            # about 30 s on 2 cores
    python benchmarks/router_overhead.py --quick    # a few seconds, for a smoke check
    python benchmarks/router_overhead.py --json results.json

Every variant serves the same cheap but realistic chain (prompt template → a tiny offline
"model" → string parser) to 1 000 users cycling, a third of them with a profile (so several
layers), every layer at ratio 0.5. Variants are timed in blocks of ``--calls`` calls, and each
round runs every variant once in a shuffled order, so machine noise lands on all of them alike.
The table gives the median time per call over the rounds, its interquartile range, ratios to
the direct chain and to ``RunnableBranch`` from the same run (medians of same-round ratios), and
the µs a call adds to the direct chain (the median of same-round differences). The garbage
collector is off inside a timed block (as ``timeit`` does) and collected between blocks.

The Redis rows start a private ``redis-server`` on a free loopback port and stop it at the end;
they are skipped, with a message, when ``redis-server`` or ``langchain_graylayer.store.redis``
is missing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import langchain_core
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import Runnable, RunnableBranch, RunnableLambda
from prometheus_client import CollectorRegistry

from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan, UserProfile
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.plan.bucketing import bucket, in_candidate
from langchain_graylayer.store import SessionPin, Store, conversation_key

PLAN_ID = "bench"
RATIO = 0.5
NOW = datetime.now(timezone.utc)


# --------------------------------------------------------------------------- the workload
def tiny_model(prompt: Any) -> str:
    """A stand-in for a chat model that costs microseconds: it answers from the prompt text."""
    text = prompt.to_string()
    return f"{text[:48]} -> ok ({len(text)} chars)"


def support_chain(version: str) -> Runnable[dict[str, str], str]:
    """One version of the chain: prompt → tiny model → parser (a three-step RunnableSequence)."""
    prompt = PromptTemplate.from_template(
        f"You are support agent {version}. Customer {{user_id}} asks: {{question}}"
    )
    return prompt | RunnableLambda(tiny_model) | StrOutputParser()


def bare_lambda() -> Runnable[dict[str, str], str]:
    """The floor: one RunnableLambda doing the same string work, no sequence."""

    def answer(inputs: dict[str, str]) -> str:
        text = f"You are support agent v1. Customer {inputs['user_id']} asks: {inputs['question']}"
        return f"{text[:48]} -> ok ({len(text)} chars)"

    return RunnableLambda(answer)


def profile_for(n: int) -> UserProfile | None:
    """Every third user has a profile, spread over the layers; the rest fall in the default."""
    if n % 3:
        return None
    return UserProfile(
        last_use_time=NOW - timedelta(days=n % 30),
        use_count=n % 120,
        user_value=float((n * 97) % 100_000),
        accept_score=float(n % 11),
    )


def seed(store: Store, plan: RolloutPlan, users: list[str]) -> None:
    # The ratios and step keys a controller commits: every routed request also records its
    # user's evidence for the judge (in-process for MemoryStore, a background writer for Redis).
    ratios = dict.fromkeys(plan.layer_names, RATIO)
    steps = dict.fromkeys(plan.layer_names, "0@1700000000.000")
    store.commit(plan.id, ratios=ratios, state="{}", audit=[], steps=steps)
    for n, user in enumerate(users):
        profile = profile_for(n)
        if profile is not None:
            store.put_profile(user, profile)


# --------------------------------------------------------------------------- variants
@dataclass
class Variant:
    """One way of serving the chain, with its own cursor over the users."""

    name: str
    description: str
    runnable: Runnable[Any, Any]
    configs: list[dict[str, Any]] | None
    inputs: list[dict[str, str]]
    samples_ns: list[float] = field(default_factory=list)
    _next: int = 0

    def run_block(self, calls: int) -> float:
        """Time ``calls`` invocations; return nanoseconds per call."""
        invoke, inputs, configs = self.runnable.invoke, self.inputs, self.configs
        count = len(inputs)
        start_at = self._next
        gc.collect()
        gc.disable()
        try:
            begin = time.perf_counter_ns()
            if configs is None:
                for i in range(start_at, start_at + calls):
                    invoke(inputs[i % count])
            else:
                for i in range(start_at, start_at + calls):
                    invoke(inputs[i % count], configs[i % count])
            elapsed = time.perf_counter_ns() - begin
        finally:
            gc.enable()
        self._next = (start_at + calls) % count
        return elapsed / calls


def build_variants(users: list[str], redis_url: str | None) -> list[Variant]:
    stable, candidate = support_chain("v1"), support_chain("v2")
    plan = RolloutPlan.default(PLAN_ID)
    inputs = [{"user_id": u, "question": "where is my refund?"} for u in users]
    by_user = [{"configurable": {"user_id": u}} for u in users]
    with_session = [{"configurable": {"user_id": u, "session_id": f"chat-{u}"}} for u in users]
    salt = plan.effective_salt

    def routed_by_hash(inputs: dict[str, str]) -> bool:
        return in_candidate(bucket(salt, inputs["user_id"]), RATIO)

    branch = RunnableBranch((routed_by_hash, candidate), stable)

    # measured: the journal watches every tool of the candidate (a plan's side_effect_tools)
    journaled = RolloutPlan.default(PLAN_ID, judging={"side_effect_tools": ["*"]})

    def router(store: Store, measured: bool = False) -> GrayRouter[Any, Any]:
        """Routing only (like for like with RunnableBranch), or with graylayer's measuring
        handlers (metrics into a private registry, the candidate tool-call journal)."""
        seed(store, plan, users)
        return GrayRouter(
            stable=stable,
            candidate=candidate,
            plan=journaled if measured else plan,
            store=store,
            metrics=GraylayerMetrics(registry=CollectorRegistry()) if measured else None,
            instrument=measured,
            journal_tool_calls=measured,
        )

    variants = [
        Variant("lambda", "one RunnableLambda, same string work", bare_lambda(), None, inputs),
        Variant("chain", "prompt → model → parser, called directly", stable, None, inputs),
        Variant("branch", "RunnableBranch on hash(user id) over both chains", branch, None, inputs),
        Variant(
            "router_memory", "GrayRouter + MemoryStore", router(MemoryStore()), by_user, inputs
        ),
        Variant(
            "router_measured",
            "GrayRouter + MemoryStore, with metrics and tool journal",
            router(MemoryStore(), measured=True),
            by_user,
            inputs,
        ),
        Variant(
            "router_memory_session",
            "GrayRouter + MemoryStore, session id (pin lookup)",
            router(MemoryStore()),
            with_session,
            inputs,
        ),
    ]
    if redis_url is not None:
        from langchain_graylayer.store.redis import RedisStore

        variants += [
            Variant(
                "router_redis",
                "GrayRouter + RedisStore (loopback)",
                router(RedisStore(redis_url, prefix="bench-a")),
                by_user,
                inputs,
            ),
            Variant(
                "router_redis_session",
                "GrayRouter + RedisStore, session id (pin lookup)",
                router(RedisStore(redis_url, prefix="bench-b")),
                with_session,
                inputs,
            ),
        ]
    return variants


def check_split(variants: list[Variant], users: list[str]) -> str:
    """The share of users each routed variant sends to the candidate (a sanity line)."""
    parts = []
    for variant in variants:
        runnable = variant.runnable
        if isinstance(runnable, GrayRouter):
            share = sum(runnable.route(u).version.value == "candidate" for u in users) / len(users)
            parts.append(f"{variant.name} {share:.1%}")
        elif isinstance(runnable, RunnableBranch):
            condition = runnable.branches[0][0]
            share = sum(bool(condition.invoke({"user_id": u})) for u in users) / len(users)
            parts.append(f"{variant.name} {share:.1%}")
    return "candidate share: " + ", ".join(parts)


# --------------------------------------------------------------------------- redis-server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str | None]:
    """Yield the URL of a private redis-server on loopback, or ``None`` (with a message)."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis rows skipped: no redis-server on PATH", file=sys.stderr)
        yield None
        return
    try:
        import langchain_graylayer.store.redis  # noqa: F401
    except ImportError as exc:
        print(f"redis rows skipped: cannot import RedisStore ({exc})", file=sys.stderr)
        yield None
        return
    import redis

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="graylayer-bench-") as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", workdir]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        print("redis rows skipped: redis-server did not start", file=sys.stderr)
                        url = None  # type: ignore[assignment]
                        break
                    time.sleep(0.02)
            client.close()
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --------------------------------------------------------------------------- measuring
def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def warm_up(variants: list[Variant], calls: int) -> None:
    """Fill every router's layer cache and session pins, then run each variant a little.

    The caches are filled through ``route`` and ``Store.pin_session`` (what the first request of
    each user and session would have written), so a full pass of invocations is not needed.
    """
    for variant in variants:
        router = variant.runnable
        if isinstance(router, GrayRouter) and variant.configs is not None:
            for config in variant.configs:
                configurable = config["configurable"]
                user = configurable["user_id"]
                decision = router.route(user)
                if "session_id" in configurable:
                    pin = SessionPin(decision.version, decision.layer, time.time(), user)
                    key = conversation_key(user, configurable["session_id"])  # the user's own
                    router.store.pin_session(router.plan.id, key, pin, router.plan.session_ttl)
        variant.run_block(calls)


def measure(
    variants: list[Variant], rounds: int, calls: int, budget: float, rng: random.Random
) -> int:
    """Run up to ``rounds`` rounds (fewer if ``budget`` seconds run out); return how many ran."""
    deadline = time.perf_counter() + budget
    order = list(variants)
    done = 0
    while done < rounds and (done < 3 or time.perf_counter() < deadline):
        rng.shuffle(order)
        for variant in order:
            variant.samples_ns.append(variant.run_block(calls))
        done += 1
    return done


def summarise(variants: list[Variant]) -> dict[str, dict[str, Any]]:
    """Median and quartiles per variant; ratios are medians of same-round ratios (paired)."""
    by_name = {v.name: v.samples_ns for v in variants}

    def paired(samples: list[float], base: list[float]) -> float:
        return statistics.median(s / b for s, b in zip(samples, base, strict=True))

    def added(samples: list[float], base: list[float]) -> float:
        return statistics.median(s - b for s, b in zip(samples, base, strict=True))

    rows: dict[str, dict[str, Any]] = {}
    for variant in variants:
        q1, median, q3 = quartiles(variant.samples_ns)
        rows[variant.name] = {
            "description": variant.description,
            "median_us": median / 1000,
            "q1_us": q1 / 1000,
            "q3_us": q3 / 1000,
            "iqr_us": (q3 - q1) / 1000,
            "vs_chain": paired(variant.samples_ns, by_name["chain"]),
            "vs_branch": paired(variant.samples_ns, by_name["branch"]),
            "over_chain_us": added(variant.samples_ns, by_name["chain"]) / 1000,
            "samples_us": [round(s / 1000, 3) for s in variant.samples_ns],
        }
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| variant | what | median µs/call | IQR µs | × chain | × branch | + µs/call over chain |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| `{name}` | {row['description']} | {row['median_us']:.1f} | {row['iqr_us']:.1f} "
            f"| {row['vs_chain']:.2f} | {row['vs_branch']:.2f} | {row['over_chain_us']:+.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, for a smoke check")
    parser.add_argument("--rounds", type=int, help="rounds (default 30, quick 6)")
    parser.add_argument(
        "--calls", type=int, help="calls per variant per round (default 100, quick 30)"
    )
    parser.add_argument(
        "--budget", type=float, help="seconds of timed rounds at most (default 40, quick 4)"
    )
    parser.add_argument("--users", type=int, default=1000, help="distinct user ids (default 1000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the round order shuffle")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (6 if args.quick else 30)
    calls = args.calls or (30 if args.quick else 100)
    budget = args.budget or (4.0 if args.quick else 40.0)
    users = [f"user-{n:05d}" for n in range(args.users)]

    started = time.perf_counter()
    with redis_server() as redis_url:
        variants = build_variants(users, redis_url)
        warm_up(variants, calls)
        rounds = measure(variants, rounds, calls, budget, random.Random(args.seed))
        split = check_split(variants, users)
        for variant in variants:
            store = getattr(variant.runnable, "store", None)
            with suppress(Exception):
                if store is not None and hasattr(store, "close"):
                    store.close()
    rows = summarise(variants)
    took = time.perf_counter() - started

    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "langchain_core": langchain_core.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "calls_per_round": calls,
        "users": len(users),
        "ratio": RATIO,
        "redis": redis_url is not None,
        "seconds": round(took, 1),
    }
    print(
        f"router overhead: {rounds} rounds x {calls} calls per variant, {len(users)} users, "
        f"ratio {RATIO}, Python {meta['python']}, langchain-core {meta['langchain_core']}, "
        f"{meta['cpus']} CPUs, {took:.1f} s"
    )
    print(split)
    print()
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "variants": rows}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
