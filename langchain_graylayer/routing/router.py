"""``GrayRouter``: a Runnable that serves each user the stable or the candidate agent.

The version is picked per user from the user's risk layer and that layer's current ratio (sticky
hash bucketing), and per conversation from the version it started on (a session pin). The router
has its own run in the trace and writes plan, version, layer and request id into the run's
metadata and tags, so every descendant run (chat model, tool, subgraph) carries them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar, cast
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import (
    ensure_config,
    get_callback_manager_for_config,
)
from langchain_core.runnables.utils import ConfigurableFieldSpec, get_unique_config_specs
from langchain_core.utils.pydantic import TypeBaseModel
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from typing_extensions import override

from langchain_graylayer._types import Identity, posix_clock
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.measuring.completion import CompletionJudge
from langchain_graylayer.measuring.evaluation import Evaluations
from langchain_graylayer.measuring.feedback import FeedbackKind, FeedbackRecorder
from langchain_graylayer.measuring.labels import (
    FALLBACK_TAG,
    RunLabels,
    cancelled,
    interrupted,
    version_tag,
)
from langchain_graylayer.measuring.output import has_subgraphs, stream_mode_of
from langchain_graylayer.measuring.prometheus import GraylayerMetrics, default_metrics
from langchain_graylayer.plan._config import to_configuration_error
from langchain_graylayer.plan.plan import RolloutPlan, Version
from langchain_graylayer.routing.assigner import Assigner, ProfileLoader
from langchain_graylayer.routing.context import DECISION_KEY, current_request
from langchain_graylayer.routing.decision import RoutingDecision
from langchain_graylayer.routing.observer import Call, RunObserver, labels_of, reads_outputs
from langchain_graylayer.routing.runs import (
    Accumulator,
    ainvoke_child,
    astream_child,
    child_config,
    invoke_child,
    new_run_id,
    own_run_manager,
    paused_in_state,
    paused_in_state_async,
    stream_child,
)
from langchain_graylayer.store.cached import for_requests
from langchain_graylayer.store.memory import MemoryStore
from langchain_graylayer.store.protocols import Store

__all__ = ["GrayRouter", "identity_of"]

logger = logging.getLogger(__name__)


class _State:
    """The router's per-process state. One plain object, because each read of a pydantic private
    attribute goes through ``BaseModel.__getattr__`` (about 3 µs): too slow for the request path."""

    __slots__ = ("assigner", "from_output", "networked", "observer", "warned_no_user")

    def __init__(
        self, assigner: Assigner, observer: RunObserver, networked: bool, from_output: bool
    ) -> None:
        self.assigner = assigner
        self.observer = observer
        self.networked = networked
        self.from_output = from_output
        """Both versions return their messages: count tool calls and tokens from them."""
        self.warned_no_user = float("-inf")


Input = TypeVar("Input")
Output = TypeVar("Output")


class GrayRouter(RunnableSerializable[Input, Output], Generic[Input, Output]):
    """Routes each call to ``stable`` or ``candidate`` by the user's layer and that layer's ratio.

    The user id and session id come from ``config["configurable"]`` (``user_id``, and
    ``session_id`` or LangGraph's ``thread_id``). No user id means stable; so does an opted-out
    user, and so does any failure inside graylayer (logged and counted in :meth:`counts`).

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
    """Measure the runs into ``metrics`` (turn off to measure nothing)."""
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
    """Journal the candidate's calls of the plan's ``judging.side_effect_tools`` (``["*"]``: every
    tool) in the store, so a rollback can list them for compensation; a plan that names none
    journals nothing."""
    measure_from_output: bool = True
    """When both versions are LangGraph agents (a ``messages`` channel, e.g. ``create_agent``),
    count each request's tool calls, tool errors and tokens from the messages it returns or
    streams, with no metrics handler on its descendant runs (cheaper; the same counts). Other
    runnables, streams whose chunks do not show every message, and plans with a cost guardrail
    (a model called inside a tool shows only to the handler) are measured by the handler.
    ``False``: the handler on every run."""

    evaluators: dict[str, Any] = Field(default_factory=dict)
    """Implementations of the plan's evaluators by name — a function, a Runnable, an
    ``openevals`` or ``agentevals`` evaluator — run in the background on sampled runs (an
    evaluator declared with a ``target`` may be left out)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _state_: _State = PrivateAttr()

    @property
    def _state(self) -> _State:
        # Straight from pydantic's private dict: ``self._state_`` goes through
        # ``BaseModel.__getattr__`` (about 2.5 µs a read, several reads a request).
        return cast(_State, self.__pydantic_private__["_state_"])  # type: ignore[index]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(
                "GrayRouter takes keyword arguments only: GrayRouter(stable=..., candidate=..., "
                f"plan=..., store=...); got {len(args)} positional argument(s)"
            )
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:  # name the field, the value and what is valid
            raise to_configuration_error(exc) from None

    _clock = field_validator("clock")(classmethod(lambda cls, value: posix_clock(value)))

    @override
    def model_post_init(self, context: Any, /) -> None:
        if self.plan.chaos is not None:  # a rehearsal: refused unless the process opted in
            from langchain_graylayer.testing.chaos import apply_plan_chaos

            self.stable, self.candidate = apply_plan_chaos(self.plan, self.stable, self.candidate)
        store = for_requests(
            self.store, ratio_refresh=self.ratio_refresh_interval, clock=self.clock
        )
        versions = (self.stable, self.candidate)
        metrics = None
        if self.instrument:
            metrics = self.metrics if self.metrics is not None else default_metrics()
        from_output = (
            self.measure_from_output and metrics is not None and reads_outputs(self.plan, versions)
        )
        observer = RunObserver.of_plan(
            self.plan, store, metrics=metrics, clock=self.clock,
            completion_judge=self.completion_judge, tracer=self.tracer,
            journal_tool_calls=self.journal_tool_calls, feedback_ttl=self.feedback_ttl,
            evaluators=self.evaluators,
            subgraphs=from_output and any(has_subgraphs(version) for version in versions),
        )  # fmt: skip
        assigner = Assigner(self.plan, store, profile_loader=self.profile_loader, clock=self.clock)
        self._state_ = _State(assigner, observer, store.networked, from_output)

    # ------------------------------------------------------------------ Runnable plumbing
    @classmethod
    @override
    def is_lc_serializable(cls) -> bool:
        return False

    @property
    @override
    def InputType(self) -> Any:
        return self.stable.InputType

    @property
    @override
    def OutputType(self) -> Any:
        return self.stable.OutputType

    @override
    def get_input_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.stable.get_input_schema(config)

    @override
    def get_output_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.stable.get_output_schema(config)

    @property
    @override
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        own = [
            ConfigurableFieldSpec(
                id="user_id",
                annotation=str,
                name="User ID",
                description=(
                    "Who is asking; decides the layer and the version. Behind add_gray_routes it "
                    "comes from the request (the X-User-ID header or your identify function): "
                    "a value typed here is ignored."
                ),
                default="",
                is_shared=True,
            ),
            ConfigurableFieldSpec(
                id="session_id",
                annotation=str,
                name="Session ID",
                description=(
                    "The conversation; it stays on the version it started on. Behind "
                    "add_gray_routes it comes from the request (the X-Session-ID header)."
                ),
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
        return self._state.assigner.route(user_id, session_id)

    def route_request(self, user_id: str | None, session_id: str | None = None) -> RoutingDecision:
        """Route a request before its run starts, pinning its session as a run would.

        For serving layers that must know the version before the agent runs (e.g. for response
        headers): open a :class:`~langchain_graylayer.routing.context.RequestContext` with it
        around the run, and the run uses it instead of routing again. Blocks on a networked
        store (see :meth:`aroute_request`). Never raises (a failure gives a ``DEGRADED`` decision).
        """
        return self._state.assigner.assign(user_id, session_id)

    async def aroute_request(
        self, user_id: str | None, session_id: str | None = None
    ) -> RoutingDecision:
        """:meth:`route_request` for async code: off the event loop when the store is networked."""
        state = self._state
        if state.networked:
            return await asyncio.to_thread(state.assigner.assign, user_id, session_id)
        return state.assigner.assign(user_id, session_id)

    def counts(self) -> dict[str, int]:
        """Counts since start: ``requests``, ``unrouted`` (no user id or opt-out), ``degraded``
        (routing failed inside graylayer), ``fallback`` (candidate raised, stable answered)."""
        return self._state.assigner.health.totals()

    def recent_counts(self, window: float = 300.0) -> dict[str, int]:
        """The same counts over the last ``window`` seconds (what an operator should read)."""
        return self._state.assigner.health.recent(window)

    def trace_id_of(self, run_id: UUID | str) -> str | None:
        """The request's OpenTelemetry trace id (hex), e.g. for an ``X-Trace-ID`` header;
        ``None`` without a tracer or once forgotten (10 minutes after the request)."""
        tracing = self._state.observer.tracing
        return None if tracing is None else tracing.trace_id_of(run_id)

    @property
    def evaluations(self) -> Evaluations | None:
        """The plan's evaluators at work (status, drain); ``None`` when the plan has none."""
        return self._state.observer.evaluations

    @property
    def feedback_recorder(self) -> FeedbackRecorder:
        """Counts feedback for this router's runs (by run id, or by a verified token)."""
        return self._state.observer.feedback

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
        return self._state.observer.feedback.for_run(run_id, kind, score)

    def with_decision(self, decision: RoutingDecision) -> Runnable[Input, Output]:
        """This router running with ``decision`` instead of routing, for a serving layer that
        decided before the run (``ConfigurationError`` for a decision of another plan)."""
        if decision.plan_id != self.plan.id:
            raise ConfigurationError("decision.plan_id", decision.plan_id, repr(self.plan.id))
        return self.with_config(configurable={DECISION_KEY: decision})

    def record_run(self, run_id: UUID | str, decision: RoutingDecision) -> RunLabels | None:
        """Record ``run_id`` (a server's own run id) as served under ``decision``, so
        :meth:`feedback` by it counts (``None``: not routed, nothing recorded)."""
        if (labels := labels_of(decision)) is not None:
            self._state.observer.feedback.index.record(str(run_id), labels)
        return labels

    def _decision(self, who: Identity, config: RunnableConfig) -> RoutingDecision | None:
        """The decision given by :meth:`with_decision`, or the serving layer's for ``who``."""
        configurable = config.get("configurable") or {}
        if DECISION_KEY in configurable:  # ensure_config copied it: popped for the children
            return cast(RoutingDecision, configurable.pop(DECISION_KEY))
        context = current_request()
        return None if context is None else context.decision_for(self.plan.id, who)

    def _open(self, config: RunnableConfig | None, mode: str | None) -> Call:
        config = ensure_config(config)
        who = identity_of(config)
        if who[0] is None:
            self._no_user_id(config)
        decision = self._decision(who, config) or self._state.assigner.assign(*who)
        run_id = config.pop("run_id", None) or new_run_id()
        return self._state.observer.open(config, decision, run_id, mode)

    async def _aopen(self, config: RunnableConfig | None, mode: str | None) -> Call:
        config = ensure_config(config)
        who = identity_of(config)
        if who[0] is None:
            self._no_user_id(config)
        decision = self._decision(who, config) or await self.aroute_request(*who)
        run_id = config.pop("run_id", None) or new_run_id()
        return self._state.observer.open(config, decision, run_id, mode)

    def _invoke_mode(self, kwargs: dict[str, Any]) -> str | None:
        """``"values"`` when the request is measured from the states its run goes through
        (plain ``invoke`` of two LangGraph agents), ``None`` when a handler measures it."""
        return "values" if self._state.from_output and not kwargs else None

    def _stream_mode(self, kwargs: dict[str, Any]) -> str | None:
        """The stream mode whose chunks the request is measured from (both versions must
        stream it, for a fallback), ``None`` when a handler measures it."""
        if not self._state.from_output:
            return None
        mode = stream_mode_of(self.candidate, kwargs)
        return mode if mode is not None and mode == stream_mode_of(self.stable, kwargs) else None

    def _no_user_id(self, config: RunnableConfig) -> None:
        """Say so, at most once a minute: a typo in the key sends every user to stable."""
        state = self._state
        now = time.monotonic()
        if now - state.warned_no_user < 60.0:
            return
        state.warned_no_user = now
        keys = sorted(str(k) for k in (config.get("configurable") or {}))
        logger.warning(
            "plan %s: a request without config['configurable']['user_id'] is served the stable "
            "version, unrouted (configurable keys seen: %s)",
            self.plan.id,
            keys or "none",
        )

    # ------------------------------------------------------------------ run bookkeeping
    def _runnable(self, version: Version) -> Runnable[Input, Output]:
        return self.candidate if version is Version.CANDIDATE else self.stable

    def _falls_back(self, call: Call, exc: BaseException) -> bool:
        """Whether stable answers after the candidate raised ``exc``. Never for what is not a
        failure of the candidate: cancellation, ``KeyboardInterrupt``, and LangGraph's control
        flow (an ``interrupt()`` waiting for a person, a command to the parent graph), which
        must reach the graph above untouched so that the thread resumes on the candidate."""
        decision = call.decision
        if decision.version is not Version.CANDIDATE or not self.plan.fallback_to_stable:
            return False
        if not isinstance(exc, Exception) or cancelled(exc) or interrupted(exc):
            return False
        self._state.assigner.health.add("fallback")
        logger.warning(
            "candidate of plan %s failed (%s: %s); answering with stable",
            decision.plan_id,
            type(exc).__name__,
            exc,
        )
        return True

    @staticmethod
    def _fallback_config(call: Call, run_manager: Any) -> RunnableConfig:
        """The stable retry's config: relabelled, and a child of the router's own run tagged
        fallback, without the candidate tag it inherited."""
        callbacks = run_manager.get_child(FALLBACK_TAG)
        callbacks.remove_tags([version_tag(Version.CANDIDATE.value)])
        return child_config(call.fallback_config(), callbacks)

    def _answered(self, call: Call, input: Any, output: Any) -> None:
        observer = self._state.observer
        observer.answered(call, output)
        call.ended(output)
        observer.evaluate(call, input, output)

    # ------------------------------------------------------------------ invoke
    @override
    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> Output:
        call = self._open(config, self._invoke_mode(kwargs))
        call.started()
        run_manager = get_callback_manager_for_config(call.config).on_chain_start(
            None, input, name=call.config.get("run_name") or self.get_name(), run_id=call.run_id
        )
        try:
            try:
                child = child_config(call.config, run_manager.get_child())
                runnable = self._runnable(call.decision.version)
                output = invoke_child(runnable, input, child, kwargs, call.run)
            except BaseException as exc:
                if not self._falls_back(call, exc):
                    raise
                fallback = self._fallback_config(call, run_manager)
                output = invoke_child(self.stable, input, fallback, kwargs, call.run)
        except BaseException as exc:
            call.ended(None, exc)
            run_manager.on_chain_error(exc)
            raise
        self._answered(call, input, output)
        run_manager.on_chain_end(output)
        return output

    @override
    async def ainvoke(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Output:
        call = await self._aopen(config, self._invoke_mode(kwargs))
        call.started()
        run_manager = await own_run_manager(call.config).on_chain_start(
            None, input, name=call.config.get("run_name") or self.get_name(), run_id=call.run_id
        )
        try:
            # Awaited in place, as RunnableBranch does: the child sets its own config context,
            # and a task per request would cost more than the rest of the routing.
            try:
                child = child_config(call.config, run_manager.get_child())
                runnable = self._runnable(call.decision.version)
                output = await ainvoke_child(runnable, input, child, kwargs, call.run)
            except BaseException as exc:
                if not self._falls_back(call, exc):
                    raise
                fallback = self._fallback_config(call, run_manager)
                output = await ainvoke_child(self.stable, input, fallback, kwargs, call.run)
        except BaseException as exc:
            call.ended(None, exc)
            await run_manager.on_chain_error(exc)
            raise
        self._answered(call, input, output)
        await run_manager.on_chain_end(output)
        return output

    # ------------------------------------------------------------------ streaming
    @override
    def stream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[Output]:
        call = self._open(config, self._stream_mode(kwargs))
        call.started()
        run_manager: CallbackManagerForChainRun = get_callback_manager_for_config(
            call.config
        ).on_chain_start(
            None, input, name=call.config.get("run_name") or self.get_name(), run_id=call.run_id
        )
        final = Accumulator[Output]()
        try:
            child = child_config(call.config, run_manager.get_child())
            runnable = self._runnable(call.decision.version)
            try:
                for chunk in stream_child(runnable, input, child, kwargs, call.run):
                    final.add(chunk)
                    yield chunk
            except Exception as exc:
                # Once a chunk has reached the caller, a switch of version would splice two
                # answers together; fall back only when nothing was sent yet.
                if final.started or not self._falls_back(call, exc):
                    raise
                runnable, child = self.stable, self._fallback_config(call, run_manager)
                for chunk in stream_child(runnable, input, child, kwargs, call.run):
                    final.add(chunk)
                    yield chunk
        except BaseException as exc:
            call.ended(None, exc)
            run_manager.on_chain_error(exc)
            raise
        call.paused = final.paused or paused_in_state(runnable, child, kwargs)
        self._answered(call, input, final.value)
        run_manager.on_chain_end(final.value)

    @override
    async def astream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> AsyncIterator[Output]:
        call = await self._aopen(config, self._stream_mode(kwargs))
        call.started()
        run_manager: AsyncCallbackManagerForChainRun = await own_run_manager(
            call.config
        ).on_chain_start(
            None, input, name=call.config.get("run_name") or self.get_name(), run_id=call.run_id
        )
        final = Accumulator[Output]()
        try:
            child = child_config(call.config, run_manager.get_child())
            runnable = self._runnable(call.decision.version)
            try:
                async for chunk in astream_child(runnable, input, child, kwargs, call.run):
                    final.add(chunk)
                    yield chunk
            except Exception as exc:
                if final.started or not self._falls_back(call, exc):
                    raise
                runnable, child = self.stable, self._fallback_config(call, run_manager)
                async for chunk in astream_child(runnable, input, child, kwargs, call.run):
                    final.add(chunk)
                    yield chunk
        except BaseException as exc:
            call.ended(None, exc)
            await run_manager.on_chain_error(exc)
            raise
        call.paused = final.paused or await paused_in_state_async(runnable, child, kwargs)
        self._answered(call, input, final.value)
        await run_manager.on_chain_end(final.value)


def identity_of(config: RunnableConfig) -> Identity:
    """The user id and session id in ``config["configurable"]`` (session: LangGraph's
    ``thread_id`` when there is no ``session_id``)."""
    configurable = config.get("configurable") or {}
    user_id = configurable.get("user_id") or None
    session_id = configurable.get("session_id") or configurable.get("thread_id") or None
    return (
        None if user_id is None else str(user_id),
        None if session_id is None else str(session_id),
    )
