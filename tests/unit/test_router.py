"""GrayRouter routing rules, run bookkeeping, fallback and degradation, with real runnables."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.runnables import RunnableLambda, RunnableSequence
from pydantic import BaseModel

from langchain_graylayer import (
    GrayRouter,
    MemoryStore,
    RolloutPlan,
    StoreError,
    UserProfile,
    Version,
)
from langchain_graylayer.measuring.labels import LAYER_KEY, PLAN_KEY, REQUEST_ID_KEY, VERSION_KEY
from langchain_graylayer.plan import LayerReason, bucket, in_candidate
from langchain_graylayer.routing.context import RequestContext, request_context
from langchain_graylayer.routing.decision import RouteReason
from langchain_graylayer.store.protocols import conversation_key

PLAN_ID = "refund-v2"


def make_router(store: MemoryStore | None = None, **kw: Any) -> GrayRouter[str, str]:
    plan = kw.pop("plan", None) or RolloutPlan.default(PLAN_ID)
    return GrayRouter(
        stable=RunnableLambda(lambda q: f"stable:{q}", name="stable_agent"),
        candidate=RunnableLambda(lambda q: f"candidate:{q}", name="candidate_agent"),
        plan=plan,
        store=store if store is not None else MemoryStore(),
        **kw,
    )


def cfg(user: str | None = None, session: str | None = None, **extra: Any) -> dict[str, Any]:
    configurable = {k: v for k, v in {"user_id": user, "session_id": session}.items() if v}
    return {"configurable": configurable, **extra}


class Recorder(BaseCallbackHandler):
    """Records chain starts (name, run id, parent, metadata, tags) and errors."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.ends: list[Any] = []

    def on_chain_start(self, serialized: Any, inputs: Any, **kw: Any) -> None:
        self.starts.append(kw)

    def on_chain_end(self, outputs: Any, **kw: Any) -> None:
        self.ends.append(outputs)

    def on_chain_error(self, error: BaseException, **kw: Any) -> None:
        self.errors.append(error)


def users_on(version: Version, router: GrayRouter[str, str], n: int = 1) -> list[str]:
    found = [f"user-{i}" for i in range(2000) if router.route(f"user-{i}").version is version]
    return found[:n]


class TestRouting:
    def test_no_user_id_is_stable_and_unrouted(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        assert router.invoke("q") == "stable:q"
        assert router.invoke("q", cfg(session="s1")) == "stable:q"
        decision = router.route(None)
        assert (decision.version, decision.reason) == (Version.STABLE, RouteReason.NO_USER_ID)
        assert router.counts()["unrouted"] == 2

    def test_ratio_decides_by_bucket(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 0.3)
        router = make_router(store)
        for i in range(200):
            user = f"u{i}"
            expected = in_candidate(bucket(PLAN_ID, user), 0.3)
            decision = router.route(user)
            assert decision.layer == "vip"
            assert decision.layer_reason is LayerReason.NO_PROFILE
            assert decision.bucket == bucket(PLAN_ID, user)
            assert (decision.version is Version.CANDIDATE) is expected
            assert decision.reason is (
                RouteReason.IN_RATIO if expected else RouteReason.OUT_OF_RATIO
            )
            assert router.invoke("q", cfg(user)) == ("candidate:q" if expected else "stable:q")

    def test_same_answer_in_every_router_sharing_nothing_but_the_plan(self) -> None:
        stores = [MemoryStore(), MemoryStore()]
        for store in stores:
            store.set_ratio(PLAN_ID, "vip", 0.25)
        a, b = make_router(stores[0]), make_router(stores[1])
        assert all(a.route(f"u{i}").version is b.route(f"u{i}").version for i in range(500))

    def test_profiles_layer_users_by_score(self) -> None:
        store = MemoryStore()
        now = datetime(2026, 11, 23, tzinfo=timezone.utc)
        store.put_profile(
            "keen", UserProfile(last_use_time=now, use_count=100, user_value=0, accept_score=10)
        )
        router = make_router(store, clock=now.timestamp)
        decision = router.route("keen")
        assert decision.layer == "early_adopter"
        assert decision.layer_reason is LayerReason.SCORE
        assert decision.score == pytest.approx(1.0)
        assert "layer early_adopter (score 1.000)" in decision.explain()

    def test_opt_out_is_always_stable_even_at_full_ratio(self) -> None:
        store = MemoryStore()
        for layer in RolloutPlan.default(PLAN_ID).layer_names:
            store.set_ratio(PLAN_ID, layer, 1.0)
        store.put_profile("shy", UserProfile(allow_gray=False, accept_score=10))
        router = make_router(store)
        assert router.invoke("q", cfg("shy")) == "stable:q"
        assert router.route("shy").reason is RouteReason.OPT_OUT
        assert "opted out" in router.route("shy").explain()

    def test_consent_change_applies_at_once_despite_layer_cache(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        assert router.route("u1").version is Version.CANDIDATE  # cached as vip, no profile
        store.put_profile("u1", UserProfile(allow_gray=False))
        assert router.route("u1").reason is RouteReason.OPT_OUT

    def test_layer_is_cached_with_the_plan_ttl(self) -> None:
        now = [1_000_000.0]
        store = MemoryStore(clock=lambda: now[0])
        loads: list[str] = []

        def loader(user_id: str) -> UserProfile | None:
            loads.append(user_id)
            return None

        router = make_router(store, profile_loader=loader, clock=lambda: now[0])
        for _ in range(5):
            router.route("u1")
        assert loads == ["u1"]
        now[0] += 86400 + 1
        router.route("u1")
        assert loads == ["u1", "u1"]

    def test_profile_loader_replaces_the_store(self) -> None:
        store = MemoryStore()
        store.put_profile("u1", UserProfile(allow_gray=False))
        router = make_router(store, profile_loader=lambda uid: UserProfile(accept_score=10))
        decision = router.route("u1")
        assert decision.reason is not RouteReason.OPT_OUT
        assert decision.layer_reason is LayerReason.SCORE

    def test_explicit_members_route_by_their_layer_ratio(self) -> None:
        plan = RolloutPlan.from_dict(
            {"id": PLAN_ID, "layers": [{"name": "internal", "members": ["alice"]},
                                        *RolloutPlan.default(PLAN_ID).model_dump()["layers"]]}
        )  # fmt: skip
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "internal", 1.0)
        router = make_router(store, plan=plan)
        assert router.invoke("q", cfg("alice")) == "candidate:q"
        assert router.route("alice").layer_reason is LayerReason.MEMBERSHIP
        assert router.invoke("q", cfg("mallory")) == "stable:q"


class TestSessions:
    def test_session_stays_on_its_version_when_the_ratio_falls(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        assert router.invoke("q", cfg("u1", "conv-1")) == "candidate:q"
        store.set_ratio(PLAN_ID, "vip", 0.0)
        assert router.invoke("q", cfg("u1", "conv-1")) == "candidate:q"
        assert router.route("u1", "conv-1").reason is RouteReason.PINNED
        assert router.invoke("q", cfg("u1", "conv-2")) == "stable:q"  # a new conversation

    def test_thread_id_pins_like_session_id(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        config = {"configurable": {"user_id": "u1", "thread_id": "t-9"}}
        assert router.invoke("q", config) == "candidate:q"
        store.set_ratio(PLAN_ID, "vip", 0.0)
        assert router.invoke("q", config) == "candidate:q"
        assert set(store.pinned_sessions(PLAN_ID)) == {conversation_key("u1", "t-9")}

    def test_layer_change_never_moves_an_inflight_session(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        router.invoke("q", cfg("u1", "conv-1"))
        store.put_profile("u1", UserProfile(accept_score=10, use_count=100))  # no longer vip
        decision = router.route("u1", "conv-1")
        assert (decision.version, decision.layer) == (Version.CANDIDATE, "vip")

    def test_consent_withdrawn_mid_conversation_wins_over_the_pin(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        assert router.invoke("q", cfg("u1", "conv-1")) == "candidate:q"
        store.put_profile("u1", UserProfile(allow_gray=False))
        assert router.invoke("q", cfg("u1", "conv-1")) == "stable:q"
        assert router.route("u1", "conv-1").reason is RouteReason.OPT_OUT

    def test_a_session_id_pinned_by_another_user_is_not_followed(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        assert router.invoke("q", cfg("alice", "shared-id")) == "candidate:q"
        store.set_ratio(PLAN_ID, "vip", 0.0)
        assert router.invoke("q", cfg("mallory", "shared-id")) == "stable:q"
        mallorys = router.route("mallory", "shared-id")  # her own conversation, pinned to stable
        assert (mallorys.version, mallorys.reason) == (Version.STABLE, RouteReason.PINNED)
        pin = store.get_pin(PLAN_ID, conversation_key("alice", "shared-id"))
        assert pin is not None
        assert pin.user_id == "alice"
        assert router.invoke("q", cfg("alice", "shared-id")) == "candidate:q"

    def test_route_does_not_pin(self) -> None:
        store = MemoryStore()
        router = make_router(store)
        router.route("u1", "conv-1")
        assert store.pinned_sessions(PLAN_ID) == {}

    def test_unrouted_requests_are_not_pinned(self) -> None:
        store = MemoryStore()
        store.put_profile("shy", UserProfile(allow_gray=False))
        router = make_router(store)
        router.invoke("q", cfg("shy", "conv-1"))
        assert store.pinned_sessions(PLAN_ID) == {}


class TestRunBookkeeping:
    def test_router_run_is_parent_and_labels_reach_descendants(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        inner = RunnableLambda(lambda q: q.upper(), name="inner")
        router = GrayRouter(
            stable=RunnableLambda(str), candidate=RunnableSequence(inner, RunnableLambda(str)),
            plan=RolloutPlan.default(PLAN_ID), store=store,
        )  # fmt: skip
        recorder = Recorder()
        router.invoke("q", cfg("u1", callbacks=[recorder], metadata={"mine": 1}, tags=["t"]))
        root, *children = recorder.starts
        assert root["name"] == "GrayRouter"
        assert root["parent_run_id"] is None
        assert root["metadata"][REQUEST_ID_KEY] == str(root["run_id"])
        assert children
        assert children[0]["parent_run_id"] == root["run_id"]
        for start in recorder.starts:
            meta = start["metadata"]
            assert meta[PLAN_KEY] == PLAN_ID
            assert meta[VERSION_KEY] == "candidate"
            assert meta[LAYER_KEY] == "vip"
            assert meta[REQUEST_ID_KEY] == str(root["run_id"])
            assert meta["mine"] == 1
            assert {"graylayer:version:candidate", "graylayer:layer:vip", "t"} <= set(start["tags"])
        assert [s["name"] for s in children] == ["RunnableSequence", "inner", "str"]

    def test_given_run_id_becomes_the_request_id(self) -> None:
        recorder = Recorder()
        run_id = UUID("01900000-0000-7000-8000-000000000001")
        make_router().invoke("q", cfg("u1", callbacks=[recorder], run_id=run_id))
        assert recorder.starts[0]["run_id"] == run_id
        assert recorder.starts[1]["metadata"][REQUEST_ID_KEY] == str(run_id)

    def test_schemas_are_the_stable_versions(self) -> None:
        class Question(BaseModel):
            text: str

        stable = RunnableLambda(lambda q: q.text).with_types(input_type=Question, output_type=str)
        router = GrayRouter(
            stable=stable, candidate=RunnableLambda(str), plan=RolloutPlan.default("p")
        )
        assert (
            router.get_input_schema().model_json_schema()
            == stable.get_input_schema().model_json_schema()
        )
        assert router.InputType is Question
        assert router.OutputType is str

    def test_config_specs_declare_user_and_session(self) -> None:
        specs = {spec.id: spec for spec in make_router().config_specs}
        assert {"user_id", "session_id"} <= set(specs)
        schema = make_router().config_schema(include=["configurable"]).model_json_schema()
        assert "user_id" in str(schema)

    def test_errors_are_reported_on_the_router_run_and_raised(self) -> None:
        def boom(_: str) -> str:
            raise RuntimeError("stable broke")

        router = GrayRouter(
            stable=RunnableLambda(boom),
            candidate=RunnableLambda(str),
            plan=RolloutPlan.default("p"),
        )
        recorder = Recorder()
        with pytest.raises(RuntimeError, match="stable broke"):
            router.invoke("q", cfg("u1", callbacks=[recorder]))
        assert len(recorder.errors) == 2  # the lambda's run, then the router's

    async def test_async_paths_route_and_label(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        recorder = Recorder()
        assert await router.ainvoke("q", cfg("u1", callbacks=[recorder])) == "candidate:q"
        assert recorder.starts[1]["metadata"][VERSION_KEY] == "candidate"
        assert [c async for c in router.astream("q", cfg("u1"))] == ["candidate:q"]
        assert await router.abatch(["a", "b"], [cfg("u1"), cfg()]) == ["candidate:a", "stable:b"]

    @pytest.mark.parametrize("streamed", [False, True])
    async def test_own_events_await_a_non_inline_async_handler_in_place(
        self, streamed: bool
    ) -> None:
        """LangChain gathers a non-inline async handler (LangServe's event aggregator is one):
        a task per event. The router's own two events await it in place; its children do not
        change. Counted as tasks made per request, against the same handler run inline."""

        class Recording(AsyncCallbackHandler):
            def __init__(self, inline: bool) -> None:
                self.run_inline = inline
                self.names: list[str] = []

            async def on_chain_start(self, serialized: Any, inputs: Any, **kw: Any) -> None:
                self.names.append(kw.get("name") or "")

            async def on_chain_end(self, outputs: Any, **kw: Any) -> None:
                self.names.append("end")

        loop = asyncio.get_running_loop()
        made = 0

        def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
            nonlocal made
            made += 1
            return asyncio.Task(coro, loop=loop, **kw)

        async def tasks_for(handler: Recording) -> int:
            nonlocal made
            made, config = 0, cfg("u1", callbacks=[handler])
            if streamed:
                assert [c async for c in router.astream("q", config)] == ["stable:q"]
            else:
                assert await router.ainvoke("q", config) == "stable:q"
            return made

        router = make_router()
        loop.set_task_factory(counting)
        try:
            inline, gathered = Recording(inline=True), Recording(inline=False)
            extra = await tasks_for(gathered) - await tasks_for(inline)
        finally:
            loop.set_task_factory(None)
        assert gathered.names == inline.names == ["GrayRouter", "stable_agent", "end", "end"]
        assert extra == 2  # the version's start and end, gathered as before; none for the router

    def test_batch_routes_each_input_by_its_own_config(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        assert router.batch(["a", "b", "c"], [cfg("u1"), cfg(), cfg("u2")]) == [
            "candidate:a", "stable:b", "candidate:c"
        ]  # fmt: skip


def failing_candidate(store: MemoryStore, **plan_kw: Any) -> GrayRouter[str, str]:
    def broken(_: str) -> str:
        raise ValueError("candidate bug")

    return GrayRouter(
        stable=RunnableLambda(lambda q: f"stable:{q}"),
        candidate=RunnableLambda(broken),
        plan=RolloutPlan.default(PLAN_ID, **plan_kw),
        store=store,
    )


class TestFallback:
    def test_candidate_failure_is_answered_by_stable(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = failing_candidate(store)
        recorder = Recorder()
        with caplog.at_level(logging.WARNING, "langchain_graylayer.routing.router"):
            assert router.invoke("q", cfg("u1", callbacks=[recorder])) == "stable:q"
        assert "candidate bug" in caplog.text
        assert router.counts()["fallback"] == 1
        retry = recorder.starts[-1]
        assert retry["metadata"][VERSION_KEY] == "stable"
        assert retry["metadata"]["graylayer.fallback"] is True
        assert recorder.ends[-1] == "stable:q"  # the router's own run ends with the answer

    def test_fallback_can_be_turned_off(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = failing_candidate(store, fallback_to_stable=False)
        with pytest.raises(ValueError, match="candidate bug"):
            router.invoke("q", cfg("u1"))

    async def test_async_and_streaming_fallback(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = failing_candidate(store)
        assert await router.ainvoke("q", cfg("u1")) == "stable:q"
        assert list(router.stream("q", cfg("u1"))) == ["stable:q"]
        assert [c async for c in router.astream("q", cfg("u1"))] == ["stable:q"]
        assert router.counts()["fallback"] == 3

    def test_stream_failure_after_first_chunk_is_not_spliced(self) -> None:
        def half(_: str) -> Any:
            yield "partial"
            raise ValueError("mid-stream")

        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = GrayRouter(
            stable=RunnableLambda(str),
            candidate=RunnableLambda(half),
            plan=RolloutPlan.default(PLAN_ID),
            store=store,
        )
        chunks: list[str] = []
        with pytest.raises(ValueError, match="mid-stream"):
            chunks.extend(router.stream("q", cfg("u1")))
        assert chunks == ["partial"]

    def test_stable_failure_is_never_retried(self) -> None:
        def broken(_: str) -> str:
            raise ValueError("stable bug")

        router = GrayRouter(
            stable=RunnableLambda(broken),
            candidate=RunnableLambda(str),
            plan=RolloutPlan.default("p"),
        )
        with pytest.raises(ValueError, match="stable bug"):
            router.invoke("q", cfg("u1"))
        assert router.counts()["fallback"] == 0


class BrokenStore(MemoryStore):
    """A store whose backend is down: every read raises StoreError, as RedisStore does."""

    def __init__(self, broken: set[str]) -> None:
        super().__init__()
        for name in broken:
            setattr(self, name, self._down(name))

    @staticmethod
    def _down(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise StoreError(f"{name}: connection refused")

        return call


class TestDegradation:
    @pytest.mark.parametrize(
        "method", ["get_ratio", "get_cached_layer", "get_profile", "get_pin", "pin_session"]
    )
    def test_store_outage_serves_stable_and_is_counted(
        self, method: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = BrokenStore({method})
        router = make_router(store)
        with caplog.at_level(logging.WARNING):
            assert router.invoke("q", cfg("u1", "s1")) == "stable:q"
        decision = router.route_request("u1", "s1")
        assert decision.reason is RouteReason.DEGRADED
        assert "connection refused" in decision.explain()
        assert router.counts()["degraded"] == 2
        assert "routing failed" in caplog.text

    def test_profile_loader_failure_degrades(self) -> None:
        def loader(_: str) -> UserProfile:
            raise ConnectionError("user db down")

        router = make_router(profile_loader=loader)
        assert router.invoke("q", cfg("u1")) == "stable:q"
        assert router.route("u1").reason is RouteReason.DEGRADED


class CountingStore(MemoryStore):
    networked = True  # pretend to be networked, so the router caches ratios

    def __init__(self) -> None:
        super().__init__()
        self.ratio_reads = 0

    def get_ratios(self, plan_id: str) -> dict[str, float]:
        self.ratio_reads += 1
        return super().get_ratios(plan_id)


class TestRatioCache:
    def test_networked_store_is_not_read_per_request_and_changes_arrive(self) -> None:
        now = [0.0]
        store = CountingStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store, clock=lambda: now[0], ratio_refresh_interval=0.5)
        for _ in range(100):
            router.route("u1")
        assert store.ratio_reads == 1
        store.set_ratio(PLAN_ID, "vip", 0.0)
        now[0] += 0.6
        assert router.route("u1").version is Version.STABLE
        assert store.ratio_reads == 2

    def test_failed_refresh_keeps_last_known_ratios(self) -> None:
        now = [0.0]
        store = CountingStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store, clock=lambda: now[0])
        assert router.route("u1").version is Version.CANDIDATE

        def down(plan_id: str) -> dict[str, float]:
            raise StoreError("down")

        store.get_ratios = down  # type: ignore[method-assign]
        now[0] += 10
        assert router.route("u1").version is Version.CANDIDATE
        assert router.counts()["degraded"] == 0

    async def test_async_routing_with_a_blocking_store(self) -> None:
        store = CountingStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        assert await make_router(store).ainvoke("q", cfg("u1")) == "candidate:q"


class TestDecidedAhead:
    """A serving layer routes first (for its headers); the run reuses that decision."""

    async def test_the_run_uses_the_request_context_decision_for_the_same_user_and_session(
        self,
    ) -> None:
        store = MemoryStore()
        router = make_router(store)  # every ratio 0: routing again would give stable
        store.set_ratio(PLAN_ID, "vip", 1.0)
        decision = router.route_request("u1", "s1")
        store.set_ratio(PLAN_ID, "vip", 0.0)
        with request_context(RequestContext(("u1", "s1"), decision=decision)):
            assert decision.version is Version.CANDIDATE
            assert await router.ainvoke("q", cfg("u1", "s1")) == "candidate:q"
            assert router.invoke("q", cfg("u1", "s1")) == "candidate:q"
            # Another user, or the same user in another session, is routed on its own.
            assert await router.ainvoke("q", cfg("u2", "s1")) == "stable:q"
            assert await router.ainvoke("q", cfg("u1", "s2")) == "stable:q"

    async def test_a_decision_for_another_plan_is_not_used(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        first = make_router(store)
        second = make_router(MemoryStore(), plan=RolloutPlan.default("another-plan"))
        with request_context(RequestContext(("u1", None), decision=first.route_request("u1"))):
            assert await second.ainvoke("q", cfg("u1")) == "stable:q"

    def test_assigning_ahead_pins_the_session_like_a_run(self) -> None:
        store = MemoryStore()
        store.set_ratio(PLAN_ID, "vip", 1.0)
        router = make_router(store)
        router.route_request("u1", "s1")
        pin = store.get_pin(PLAN_ID, conversation_key("u1", "s1"))
        assert pin is not None
        assert pin.version is Version.CANDIDATE


def test_the_feedback_index_leaves_nothing_for_the_garbage_collector_to_track() -> None:
    """Each routed run stays in the feedback index for days; its entry must not make every full
    collection slower (a long-running server keeps up to 100 000 of them)."""
    import gc

    store = MemoryStore()
    store.set_ratio(PLAN_ID, "vip", 0.5)
    router = make_router(store, instrument=False)
    for i in range(200):
        router.invoke("q", cfg(f"user-{i}"))
    # A collection stops tracking a tuple once everything in it is untracked: the labels tuple
    # first, then the entry holding it (the second pass, when they were examined out of order).
    gc.collect()
    gc.collect()
    entries = list(router._state.observer.feedback.index._runs._data.values())
    assert len(entries) == 200
    assert not [entry for entry in entries if gc.is_tracked(entry) or gc.is_tracked(entry[0])]
