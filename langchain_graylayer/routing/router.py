"""``GrayRouter``: a Runnable that serves each user the stable or the candidate agent.

The version is picked per user from the user's risk layer and that layer's current ratio (sticky
hash bucketing), and per conversation from the version it started on (a session pin). The router
has its own run in the trace and writes plan, version, layer and request id into the run's
metadata and tags, so every descendant run (chat model, tool, subgraph) carries them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar, Token
from typing import Any, Generic, TypeVar, cast
from uuid import UUID, uuid4

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    BaseCallbackHandler,
    CallbackManagerForChainRun,
)
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import (
    ensure_config,
    get_callback_manager_for_config,
    patch_config,
    set_config_context,
)
from langchain_core.runnables.utils import ConfigurableFieldSpec, get_unique_config_specs
from langchain_core.utils.pydantic import TypeBaseModel
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_graylayer._cache import ExpiringLRU
from langchain_graylayer._types import Identity
from langchain_graylayer.errors import UnknownRunError
from langchain_graylayer.measuring.completion import CompletionJudge, default_completion_judge
from langchain_graylayer.measuring.feedback import FeedbackKind, check_feedback
from langchain_graylayer.measuring.journal import ToolCallJournal
from langchain_graylayer.measuring.labels import (
    FALLBACK_KEY,
    FALLBACK_TAG,
    LAYER_KEY,
    PLAN_KEY,
    REASON_KEY,
    REQUEST_ID_KEY,
    SESSION_KEY,
    VERSION_KEY,
    RunLabels,
    layer_tag,
    plan_tag,
    version_tag,
)
from langchain_graylayer.measuring.prometheus import GraylayerMetrics, default_metrics
from langchain_graylayer.measuring.tracing import GraylayerTracingHandler
from langchain_graylayer.plan.plan import RolloutPlan, Version
from langchain_graylayer.routing.assigner import Assigner, ProfileLoader
from langchain_graylayer.routing.decision import RoutingDecision
from langchain_graylayer.routing.runs import (
    MEASURING,
    Accumulator,
    Call,
    RouterHandler,
    handlers_in,
    own_run_manager,
    with_handlers,
)
from langchain_graylayer.store.memory import MemoryStore
from langchain_graylayer.store.protocols import Store

try:  # langchain-core 1.x makes UUIDv7 run ids; keep ours of the same kind
    from langchain_core.utils.uuid import uuid7 as _uuid7
except ImportError:  # pragma: no cover - releases without it
    _uuid7 = None  # type: ignore[assignment]


def _new_run_id() -> UUID:
    return _uuid7() if _uuid7 is not None else uuid4()


__all__ = [
    "FALLBACK_KEY",
    "LAYER_KEY",
    "PLAN_KEY",
    "REASON_KEY",
    "REQUEST_ID_KEY",
    "VERSION_KEY",
    "GrayRouter",
]

logger = logging.getLogger(__name__)


_AHEAD: ContextVar[tuple[Assigner, Identity, RoutingDecision] | None] = ContextVar(
    "graylayer_decided_ahead", default=None
)
"""A decision the serving layer already made for this request (see ``GrayRouter.decide_ahead``)."""


class _Runtime:
    """The router's per-process state. One plain object, because each read of a pydantic private
    attribute goes through ``BaseModel.__getattr__`` (about 3 µs): too slow for the request path."""

    __slots__ = ("assigner", "handler", "journal", "runs", "runs_lock", "tracing")

    def __init__(self, assigner: Assigner) -> None:
        self.assigner = assigner
        self.handler: RouterHandler | None = None
        self.journal: ToolCallJournal | None = None
        self.tracing: GraylayerTracingHandler | None = None
        # run id → (plan, version, layer): tuples of strings, which the garbage collector stops
        # tracking, so a full index (100 000 runs) does not slow every full collection down.
        self.runs: ExpiringLRU[str, tuple[str, str, str]] = ExpiringLRU(100_000, assigner.clock)
        self.runs_lock = threading.Lock()


Input = TypeVar("Input")
Output = TypeVar("Output")


class GrayRouter(RunnableSerializable[Input, Output], Generic[Input, Output]):
    """Routes each call to ``stable`` or ``candidate`` by the user's layer and that layer's ratio.

    The user id and session id come from ``config["configurable"]`` (``user_id``, and
    ``session_id`` or LangGraph's ``thread_id``). No user id means stable; so does an opted-out
    user, and so does any failure inside graylayer (logged and counted in :meth:`health`).

    Example:
        >>> from langchain_core.runnables import RunnableLambda
        >>> from langchain_graylayer import GrayRouter, MemoryStore, RolloutPlan
        >>> store = MemoryStore()
        >>> router = GrayRouter(
        ...     stable=RunnableLambda(lambda q: f"v1: {q}"),
        ...     candidate=RunnableLambda(lambda q: f"v2: {q}"),
        ...     plan=RolloutPlan.default("refund-v2"),
        ...     store=store,
        ... )
        >>> store.set_ratio("refund-v2", "vip", 1.0)  # users without a profile are 'vip'
        >>> router.invoke("hi", {"configurable": {"user_id": "u1"}})
        'v2: hi'
        >>> router.invoke("hi")  # no user id: stable
        'v1: hi'
    """

    stable: Runnable[Input, Output]
    """Today's agent."""
    candidate: Runnable[Input, Output]
    """The new agent under rollout."""
    plan: RolloutPlan
    store: Store = Field(default_factory=MemoryStore)
    """Where ratios, profiles, cached layers and session pins live."""
    profile_loader: ProfileLoader | None = None
    """Reads a user's profile from your own database instead of the store."""
    clock: Callable[[], float] = time.time
    """POSIX-seconds clock, injectable for tests and simulations."""
    ratio_refresh_interval: float = Field(default=0.5, ge=0)
    """With a networked store, ratios are re-read at most this often (so every replica sees a
    change within about this long, without a store round trip per request)."""
    metrics: GraylayerMetrics | None = None
    """Where runs are measured; ``None`` means
    :func:`~langchain_graylayer.measuring.prometheus.default_metrics` (the global registry)."""
    instrument: bool = True
    """Attach the metrics callback handler to every run (turn off to measure nothing)."""
    completion_judge: CompletionJudge | Runnable[Any, Any] | None = None
    """Decides task completion from the final output. A function runs inline; a Runnable (e.g.
    an LLM-as-judge chain returning a truthy value) runs in the background after the answer, off
    the user's latency. Default: a non-empty final answer."""
    feedback_ttl: float = Field(default=7 * 86400.0, gt=0)
    """How long a run id can receive feedback (the run → version map is also capped)."""
    tracer: Any = None
    """An OpenTelemetry ``Tracer`` (extra ``otel``): every routed request becomes an
    ``invoke_agent`` span with tool and chat child spans. ``None``: no tracing."""
    journal_tool_calls: bool = True
    """Journal the candidate's tool calls (the plan's ``judging.side_effect_tools``, or all) in
    the store, so a rollback can list them for compensation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _runtime: _Runtime = PrivateAttr()

    @property
    def _rt(self) -> _Runtime:
        # Straight from pydantic's private dict: ``self._runtime`` goes through
        # ``BaseModel.__getattr__`` (about 2.5 µs a read, several reads a request).
        return cast(_Runtime, self.__pydantic_private__["_runtime"])  # type: ignore[index]

    def model_post_init(self, context: Any, /) -> None:
        self._runtime = rt = _Runtime(
            Assigner(
                self.plan,
                self.store,
                profile_loader=self.profile_loader,
                clock=self.clock,
                ratio_refresh_interval=self.ratio_refresh_interval,
            )
        )
        if self.tracer is not None:
            rt.tracing = GraylayerTracingHandler(self.tracer, agent_name=self.plan.id)
        if self.journal_tool_calls:
            tools = self.plan.judging.side_effect_tools
            rt.journal = ToolCallJournal(self.store, tools, clock=self.clock)
        if self.instrument:
            metrics = self.metrics if self.metrics is not None else default_metrics()
            judge = self.completion_judge
            if judge is None or isinstance(judge, Runnable):
                judge = default_completion_judge  # a Runnable judge runs in the background
            # One handler measures and journals: each handler on a run costs every event a
            # dispatch through LangChain's callback manager.
            rt.handler = RouterHandler(metrics, judge=judge, journal=rt.journal)
            metrics.init_arms(self.plan.id, self.plan.layer_names)
            metrics.watch_ratios(self.plan, self.store)

    # ------------------------------------------------------------------ Runnable plumbing
    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    @property
    def InputType(self) -> Any:
        return self.stable.InputType

    @property
    def OutputType(self) -> Any:
        return self.stable.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.stable.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.stable.get_output_schema(config)

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        own = [
            ConfigurableFieldSpec(
                id="user_id",
                annotation=str,
                name="User ID",
                description="Who is asking; decides the layer and the version.",
                default="",
                is_shared=True,
            ),
            ConfigurableFieldSpec(
                id="session_id",
                annotation=str,
                name="Session ID",
                description="The conversation; it stays on the version it started on.",
                default="",
                is_shared=True,
            ),
        ]
        ids = {spec.id for spec in own}
        children = [
            spec
            for runnable in (self.stable, self.candidate)
            for spec in runnable.config_specs
            if spec.id not in ids
        ]
        return get_unique_config_specs([*own, *children])

    # ------------------------------------------------------------------ routing
    def route(self, user_id: str | None, session_id: str | None = None) -> RoutingDecision:
        """Which version ``user_id`` gets now, and why, without running anything or pinning.

        Never raises: a failure inside graylayer gives a ``DEGRADED`` stable decision.

        Example:
            >>> from langchain_core.runnables import RunnableLambda
            >>> r = GrayRouter(stable=RunnableLambda(str), candidate=RunnableLambda(str),
            ...                plan=RolloutPlan.default("p"))
            >>> r.route("u1").explain()
            'stable: layer vip (no profile), bucket 5035 >= 0 of 10000 (ratio 0.00%)'
        """
        return self._rt.assigner.route(user_id, session_id)

    def decide_ahead(self, user_id: str | None, session_id: str | None = None) -> RoutingDecision:
        """Route a request before its run starts, pinning its session like a run would.

        For serving layers that must know the version before the agent runs (e.g. to colour
        response headers): pass the result to :meth:`hold_decision` in the request's context
        and the run for the same user and session uses it instead of routing again. Blocks on a
        networked store. Never raises (a failure gives a ``DEGRADED`` stable decision).
        """
        return self._rt.assigner.decide(user_id, session_id)

    def hold_decision(
        self, user_id: str | None, session_id: str | None, decision: RoutingDecision
    ) -> Token[Any]:
        """Make ``decision`` the one this router's runs use in the current context, for this
        user and session only; returns the token to reset it with."""
        return _AHEAD.set((self._rt.assigner, (user_id, session_id), decision))

    def health(self) -> dict[str, int]:
        """Counts since start: ``degraded`` (routing failed), ``fallback`` (candidate raised,
        stable answered), ``unrouted`` (no user id or opt-out)."""
        counts = self._rt.assigner.counts
        return {key: counts[key] for key in ("degraded", "fallback", "unrouted")}

    def trace_id_of(self, run_id: UUID | str) -> str | None:
        """The request's OpenTelemetry trace id (hex), e.g. for an ``X-Trace-ID`` header;
        ``None`` without a tracer or once forgotten (10 minutes after the request)."""
        tracing = self._rt.tracing
        return None if tracing is None else tracing.trace_id_of(run_id)

    def feedback(
        self, run_id: UUID | str, kind: FeedbackKind | str | None, score: float | None = None
    ) -> RunLabels:
        """Attribute later user feedback to the version and layer that served ``run_id``.

        ``run_id`` is the router's root run id (LangServe returns it to clients as
        ``metadata.run_id``; it is also ``graylayer.request_id`` in every run's metadata).

        Args:
            run_id: the routed request.
            kind: ``"bad"``, ``"complaint"``, ``"good"``, or ``None`` with a score only.
            score: an NPS-style score from 0 to 10.

        Returns:
            The labels the feedback was counted under.

        Raises:
            UnknownRunError: the run id was not routed by this router, or has expired; nothing is
                counted.
            ConfigurationError: an unknown kind or a score outside 0-10.
        """
        checked = check_feedback(kind, score)
        rt = self._rt
        with rt.runs_lock:
            served = rt.runs.get(str(run_id))
        if served is None:
            raise UnknownRunError(
                f"run {run_id} is not a request this router routed, or its feedback window "
                f"({self.feedback_ttl:g} s) has passed; the feedback was not counted"
            )
        labels = RunLabels(*served)
        self.record_feedback(labels, checked, score)
        return labels

    def record_feedback(
        self, labels: RunLabels, kind: FeedbackKind | str | None, score: float | None = None
    ) -> None:
        """Count feedback under labels already verified elsewhere (e.g. a signed token)."""
        checked = check_feedback(kind, score)
        handler = self._rt.handler
        if handler is not None:
            handler.metrics.record_feedback(labels, checked, score)

    def _ahead(self, who: Identity) -> RoutingDecision | None:
        held = _AHEAD.get()
        if held is None or held[0] is not self._rt.assigner or held[1] != who:
            return None
        return held[2]

    def _decide(self, config: RunnableConfig) -> RoutingDecision:
        who = _identity(config)
        return self._ahead(who) or self._rt.assigner.decide(*who)

    async def _adecide(self, config: RunnableConfig) -> RoutingDecision:
        who = _identity(config)
        ahead = self._ahead(who)
        if ahead is not None:
            return ahead
        if not self.store.blocking:
            return self._rt.assigner.decide(*who)
        return await asyncio.get_running_loop().run_in_executor(
            None, self._rt.assigner.decide, *who
        )

    # ------------------------------------------------------------------ run bookkeeping
    def _runnable(self, version: Version) -> Runnable[Input, Output]:
        return self.candidate if version is Version.CANDIDATE else self.stable

    def _labelled(self, config: RunnableConfig, decision: RoutingDecision) -> Call:
        run_id = config.pop("run_id", None) or _new_run_id()
        metadata: dict[str, Any] = {
            PLAN_KEY: decision.plan_id,
            VERSION_KEY: decision.version.value,
            REQUEST_ID_KEY: str(run_id),
            REASON_KEY: decision.reason.value,
        }
        tags = [plan_tag(decision.plan_id), version_tag(decision.version.value)]
        if decision.session_id is not None:
            metadata[SESSION_KEY] = decision.session_id
        rt = self._rt
        if decision.layer is not None:
            metadata[LAYER_KEY] = decision.layer
            tags.append(layer_tag(decision.layer))
            served = (decision.plan_id, decision.version.value, decision.layer)
            with rt.runs_lock:
                rt.runs.set(metadata[REQUEST_ID_KEY], served, self.feedback_ttl)
        handlers: list[BaseCallbackHandler] = []
        callbacks = config.get("callbacks")
        present = handlers_in(callbacks)
        measurer = None
        if rt.handler is not None:
            if not any(isinstance(h, MEASURING) for h in present):
                handlers.append(rt.handler)  # it journals the candidate's tool calls too
            if not any(isinstance(h, MEASURING) and not isinstance(h, RouterHandler)
                       for h in present):  # fmt: skip
                measurer = rt.handler.measurer
        if not handlers and rt.journal is not None and decision.version is Version.CANDIDATE:
            handlers.append(rt.journal)
        if rt.tracing is not None and not any(
            isinstance(h, GraylayerTracingHandler) for h in present
        ):
            handlers.append(rt.tracing)
        # What ``merge_configs(config, {"metadata", "tags", "callbacks"})`` gives, without its
        # generic merging of every key (it runs on every request).
        labelled: RunnableConfig = {
            **config,
            "metadata": {**config.get("metadata", {}), **metadata},
            "tags": sorted({*config.get("tags", []), *tags}),
        }
        if handlers:
            labelled["callbacks"] = with_handlers(callbacks, handlers)
        return Call(labelled, run_id, measurer)

    def _fallback_config(self, call: Call, run_manager: Any) -> RunnableConfig:
        """The stable retry's config: relabelled stable, tagged fallback, candidate tag removed."""
        call.fell_back()
        config = call.config
        stale = version_tag(Version.CANDIDATE.value)
        relabelled: RunnableConfig = {
            **config,
            "metadata": {
                **config.get("metadata", {}),
                VERSION_KEY: Version.STABLE.value,
                FALLBACK_KEY: True,
            },
            "tags": [
                *(t for t in config.get("tags", []) if t != stale),
                version_tag(Version.STABLE.value),
                FALLBACK_TAG,
            ],
        }
        callbacks = run_manager.get_child(FALLBACK_TAG)
        callbacks.remove_tags([stale])  # inherited from the router's own run
        return patch_config(relabelled, callbacks=callbacks)

    def _judge_in_background(self, run_id: UUID, decision: RoutingDecision, output: Any) -> None:
        """Run a Runnable completion judge after the answer, off the user's latency."""
        judge, handler = self.completion_judge, self._rt.handler
        if handler is None or not isinstance(judge, Runnable) or decision.layer is None:
            return
        handler.mark_completed(run_id, False)  # counted when (and if) the judge accepts
        labels = RunLabels(decision.plan_id, decision.version.value, decision.layer)
        _JUDGES.submit(_run_judge, judge, output, labels, handler.metrics)

    def _should_fall_back(self, decision: RoutingDecision, exc: BaseException) -> bool:
        if decision.version is not Version.CANDIDATE or not self.plan.fallback_to_stable:
            return False
        if not isinstance(exc, Exception):  # never swallow cancellation or KeyboardInterrupt
            return False
        self._rt.assigner.counts["fallback"] += 1
        logger.warning(
            "candidate of plan %s failed (%s: %s); answering with stable",
            decision.plan_id,
            type(exc).__name__,
            exc,
        )
        return True

    # ------------------------------------------------------------------ invoke
    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> Output:
        config = ensure_config(config)
        decision = self._decide(config)
        call = self._labelled(config, decision)
        config, run_id = call.config, call.run_id
        call.started()
        run_manager = get_callback_manager_for_config(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=run_id
        )
        try:
            output = self._invoke_version(decision.version, input, config, run_manager, kwargs)
        except BaseException as exc:
            if not self._should_fall_back(decision, exc):
                call.ended(None, exc)
                run_manager.on_chain_error(exc)
                raise
            try:
                fallback = self._fallback_config(call, run_manager)
                output = self._call(self.stable, input, fallback, kwargs)
            except BaseException as fallback_exc:
                call.ended(None, fallback_exc)
                run_manager.on_chain_error(fallback_exc)
                raise
        self._judge_in_background(run_id, decision, output)
        call.ended(output)
        run_manager.on_chain_end(output)
        return output

    def _invoke_version(
        self,
        version: Version,
        input: Input,
        config: RunnableConfig,
        run_manager: CallbackManagerForChainRun,
        kwargs: dict[str, Any],
    ) -> Output:
        child = patch_config(config, callbacks=run_manager.get_child())
        return self._call(self._runnable(version), input, child, kwargs)

    @staticmethod
    def _call(
        runnable: Runnable[Input, Output],
        input: Input,
        child: RunnableConfig,
        kwargs: dict[str, Any],
    ) -> Output:
        with set_config_context(child) as context:
            return context.run(runnable.invoke, input, child, **kwargs)

    async def ainvoke(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Output:
        config = ensure_config(config)
        decision = await self._adecide(config)
        call = self._labelled(config, decision)
        config, run_id = call.config, call.run_id
        call.started()
        run_manager = await own_run_manager(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=run_id
        )
        try:
            child = patch_config(config, callbacks=run_manager.get_child())
            output = await self._acall(self._runnable(decision.version), input, child, kwargs)
        except BaseException as exc:
            if not self._should_fall_back(decision, exc):
                call.ended(None, exc)
                await run_manager.on_chain_error(exc)
                raise
            try:
                fallback = self._fallback_config(call, run_manager)
                output = await self._acall(self.stable, input, fallback, kwargs)
            except BaseException as fallback_exc:
                call.ended(None, fallback_exc)
                await run_manager.on_chain_error(fallback_exc)
                raise
        self._judge_in_background(run_id, decision, output)
        call.ended(output)
        await run_manager.on_chain_end(output)
        return output

    @staticmethod
    async def _acall(
        runnable: Runnable[Input, Output],
        input: Input,
        child: RunnableConfig,
        kwargs: dict[str, Any],
    ) -> Output:
        # Awaited in place, as RunnableBranch does: the child sets its own config context, and
        # a task per request (coro_with_context) would cost more than the rest of the routing.
        return await runnable.ainvoke(input, child, **kwargs)

    # ------------------------------------------------------------------ streaming
    def stream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[Output]:
        config = ensure_config(config)
        decision = self._decide(config)
        call = self._labelled(config, decision)
        config, run_id = call.config, call.run_id
        call.started()
        run_manager = get_callback_manager_for_config(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=run_id
        )
        final = Accumulator[Output]()
        try:
            child = patch_config(config, callbacks=run_manager.get_child())
            try:
                for chunk in self._runnable(decision.version).stream(input, child, **kwargs):
                    final.add(chunk)
                    yield chunk
            except Exception as exc:
                # Once a chunk has reached the caller, a switch of version would splice two
                # answers together; fall back only when nothing was sent yet.
                if final.started or not self._should_fall_back(decision, exc):
                    raise
                fallback = self._fallback_config(call, run_manager)
                for chunk in self.stable.stream(input, fallback, **kwargs):
                    final.add(chunk)
                    yield chunk
        except BaseException as exc:
            call.ended(None, exc)
            run_manager.on_chain_error(exc)
            raise
        self._judge_in_background(run_id, decision, final.value)
        call.ended(final.value)
        run_manager.on_chain_end(final.value)

    async def astream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> AsyncIterator[Output]:
        config = ensure_config(config)
        decision = await self._adecide(config)
        call = self._labelled(config, decision)
        config, run_id = call.config, call.run_id
        call.started()
        run_manager: AsyncCallbackManagerForChainRun = await own_run_manager(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=run_id
        )
        final = Accumulator[Output]()
        try:
            child = patch_config(config, callbacks=run_manager.get_child())
            try:
                async for chunk in self._runnable(decision.version).astream(input, child, **kwargs):
                    final.add(chunk)
                    yield chunk
            except Exception as exc:
                if final.started or not self._should_fall_back(decision, exc):
                    raise
                fallback = self._fallback_config(call, run_manager)
                async for chunk in self.stable.astream(input, fallback, **kwargs):
                    final.add(chunk)
                    yield chunk
        except BaseException as exc:
            call.ended(None, exc)
            await run_manager.on_chain_error(exc)
            raise
        self._judge_in_background(run_id, decision, final.value)
        call.ended(final.value)
        await run_manager.on_chain_end(final.value)


def _identity(config: RunnableConfig) -> Identity:
    """The user id and session id in ``config["configurable"]`` (session: LangGraph's
    ``thread_id`` when there is no ``session_id``)."""
    configurable = config.get("configurable") or {}
    user_id = configurable.get("user_id") or None
    session_id = configurable.get("session_id") or configurable.get("thread_id") or None
    return (
        None if user_id is None else str(user_id),
        None if session_id is None else str(session_id),
    )


_JUDGES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="graylayer-judge")


def _run_judge(
    judge: Runnable[Any, Any], output: Any, labels: RunLabels, metrics: GraylayerMetrics
) -> None:
    try:
        accepted = bool(judge.invoke(output, {"callbacks": [], "run_name": "graylayer_judge"}))
    except Exception:
        logger.exception("completion judge failed; the task is counted as not completed")
        metrics.handler_errors.inc()
        return
    if accepted:
        metrics.record_completion(labels)
