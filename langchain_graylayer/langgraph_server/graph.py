"""``gray_graph(router)``: a GrayRouter as a graph the LangGraph server can load.

The server (``langgraph dev``, LangGraph Platform) loads graphs, not Runnables. The graph is a
parent ``StateGraph`` of three nodes::

    START -> route -> stable    -> END
                   \\-> candidate -> END

* ``route`` decides once per run: the user is the server's authenticated user
  (``configurable.langgraph_auth_user_id``, never the client's own ``user_id``), the session is
  the thread, so a thread stays on the version it started on. It records the decision under the
  server's run id (feedback by that id), writes it into the thread's state (``graylayer``) and
  sends it first as a custom stream event ``{"graylayer": {"version", "layer", "reason"}}``.
* ``stable`` and ``candidate`` run the router with that decision
  (:meth:`~langchain_graylayer.routing.router.GrayRouter.with_decision`), so labels, metrics,
  evidence and the fallback to stable stay graylayer's. Each version graph runs as a subgraph of
  its node: its checkpoints live in the thread, and an ``interrupt()`` in the candidate resumes in
  the candidate node, on the candidate, whatever the ratio is by then.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, TypedDict, get_type_hints

from langchain_core.runnables import RunnableConfig, RunnableLambda
from typing_extensions import NotRequired

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan.assignment import LayerReason
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.routing.decision import RouteReason, RoutingDecision
from langchain_graylayer.routing.router import GrayRouter

__all__ = ["STATE_KEY", "decision_from_state", "gray_graph", "server_identity"]

logger = logging.getLogger(__name__)

STATE_KEY = "graylayer"
"""The thread-state key (and custom stream event key) that names the version of the run."""


def server_identity(config: RunnableConfig) -> tuple[str | None, str | None]:
    """``(user_id, session_id)`` of a run on the LangGraph server: the user its auth handler
    authenticated and the thread. The client's own ``configurable.user_id`` is never read: the
    in-memory runtime copies it from the request, so a client could pick its version."""
    configurable = config.get("configurable") or {}
    user = configurable.get("langgraph_auth_user_id") or None
    thread = configurable.get("thread_id") or None
    return (None if user is None else str(user), None if thread is None else str(thread))


def server_run_id(config: RunnableConfig) -> str | None:
    """The server's id of the run being executed (what its SDK and API call the run)."""
    configurable = config.get("configurable") or {}
    run_id = configurable.get("run_id") or (config.get("metadata") or {}).get("run_id")
    return None if run_id is None else str(run_id)


def _to_state(decision: RoutingDecision, run_id: str | None, owner: str | None) -> dict[str, Any]:
    """The decision as plain JSON for the thread's state (checkpointers store it as is)."""
    fields = {k: getattr(v, "value", v) for k, v in asdict(decision).items()}
    return {**fields, "run_id": run_id, "user_id": owner}


def decision_from_state(value: dict[str, Any]) -> RoutingDecision:
    """The :class:`RoutingDecision` a run's ``route`` node wrote into the thread's state."""
    layer_reason = value.get("layer_reason")
    return RoutingDecision(
        plan_id=str(value["plan_id"]),
        version=Version(value["version"]),
        layer=value.get("layer"),
        reason=RouteReason(value["reason"]),
        bucket=value.get("bucket"),
        ratio=value.get("ratio"),
        layer_reason=None if layer_reason is None else LayerReason(layer_reason),
        score=value.get("score"),
        session_id=value.get("session_id"),
        detail=str(value.get("detail", "")),
        step=str(value.get("step", "")),
        unit=str(value.get("unit", "")),
        activity=int(value.get("activity", 0)),
    )


def _state_schema(*graphs: Any) -> type:
    """The parent's state: the keys (and reducers) of both versions' states, plus ``graylayer``."""
    keys: dict[str, Any] = {}
    for graph in graphs:
        schema = getattr(getattr(graph, "builder", None), "state_schema", None)
        if schema is None:
            raise ConfigurationError(
                "stable/candidate", type(graph).__name__,
                "a compiled LangGraph StateGraph (e.g. create_agent(...) or builder.compile())",
            )  # fmt: skip
        try:
            keys.update(get_type_hints(schema, include_extras=True))
        except TypeError:  # not a TypedDict or a class with annotations
            raise ConfigurationError(
                "state_schema", getattr(schema, "__name__", schema), "a TypedDict state"
            ) from None
    keys[STATE_KEY] = NotRequired[dict[str, Any]]
    state: type = TypedDict("GrayState", keys, total=False)  # type: ignore[misc]
    return state


def gray_graph(router: GrayRouter[Any, Any], *, name: str = "graylayer") -> Any:
    """A compiled graph that serves ``router`` on the LangGraph server.

    Both versions must be compiled LangGraph graphs with TypedDict states (a ``create_agent``
    agent is one). Compile them without a checkpointer: the server's checkpointer holds the
    thread, theirs included. Point ``langgraph.json`` at the result, and give the server a
    custom auth handler: a run without an authenticated user is served stable, unrouted.

    Example:
        >>> from langgraph.graph import START, StateGraph
        >>> from langchain_graylayer import GrayRouter, RolloutPlan
        >>> class S(TypedDict):
        ...     text: str
        >>> def version(tag):
        ...     b = StateGraph(S)
        ...     b.add_node("answer", lambda s: {"text": f"{tag}: {s['text']}"})
        ...     b.add_edge(START, "answer")
        ...     return b.compile()
        >>> router = GrayRouter(stable=version("v1"), candidate=version("v2"),
        ...                     plan=RolloutPlan.default("p"))
        >>> graph = gray_graph(router)
        >>> config = {"configurable": {"langgraph_auth_user_id": "u1", "thread_id": "t1"}}
        >>> out = graph.invoke({"text": "hi"}, config)
        >>> out["text"], out["graylayer"]["version"]
        ('v1: hi', 'stable')
    """
    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph

    schema = _state_schema(router.stable, router.candidate)

    def routed(decision: RoutingDecision, config: RunnableConfig) -> dict[str, Any]:
        run_id = server_run_id(config)
        if run_id is not None:
            router.record_run(run_id, decision)
        shown = {"version": decision.version.value, "layer": decision.layer,
                 "reason": decision.reason.value}  # fmt: skip
        try:
            get_stream_writer()({STATE_KEY: shown})
        except Exception:  # no stream to write to (e.g. invoked outside the server)
            logger.debug("no stream writer for the graylayer event", exc_info=True)
        return {STATE_KEY: _to_state(decision, run_id, server_identity(config)[0])}

    def route(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return routed(router.route_request(*server_identity(config)), config)

    async def aroute(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        # off the event loop when the store is networked (the server's blocking detector)
        return routed(await router.aroute_request(*server_identity(config)), config)

    def prepared(
        version: Version, state: dict[str, Any], config: RunnableConfig
    ) -> tuple[Any, dict[str, Any], RunnableConfig]:
        decision = decision_from_state(state[STATE_KEY])
        if decision.version is not version:  # the conditional edge chose by the same field
            raise RuntimeError(f"{version.value} node reached with a {decision.version} run")
        run_id = server_run_id(config)
        if run_id is not None and run_id != state[STATE_KEY].get("run_id"):
            router.record_run(run_id, decision)  # a resumed run: its answer gets feedback too
        user_id, thread_id = server_identity(config)
        configurable = dict(config.get("configurable") or {})
        # What the router reads: the server's user, never the client's say-so.
        configurable["user_id"], configurable["session_id"] = user_id, thread_id
        values = {k: v for k, v in state.items() if k != STATE_KEY}
        child: RunnableConfig = {**config, "configurable": configurable}
        return router.with_decision(decision), values, child

    def version_node(version: Version) -> RunnableLambda[Any, Any]:
        def run(state: dict[str, Any], config: RunnableConfig) -> Any:
            routed_router, values, child = prepared(version, state, config)
            return routed_router.invoke(values, child)

        async def arun(state: dict[str, Any], config: RunnableConfig) -> Any:
            routed_router, values, child = prepared(version, state, config)
            return await routed_router.ainvoke(values, child)

        return RunnableLambda(run, afunc=arun, name=version.value)

    def which(state: dict[str, Any]) -> str:
        return str(state[STATE_KEY]["version"])

    builder: Any = StateGraph(schema)
    builder.add_node("route", RunnableLambda(route, afunc=aroute, name="route"))
    builder.add_node(Version.STABLE.value, version_node(Version.STABLE))
    builder.add_node(Version.CANDIDATE.value, version_node(Version.CANDIDATE))
    builder.add_edge(START, "route")
    builder.add_conditional_edges("route", which, [Version.STABLE.value, Version.CANDIDATE.value])
    builder.add_edge(Version.STABLE.value, END)
    builder.add_edge(Version.CANDIDATE.value, END)
    return builder.compile(name=name)
