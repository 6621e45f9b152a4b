"""The request context: what a serving layer knows about a request before its run starts.

A serving layer (the FastAPI middleware) identifies the user, routes the request once, and
opens a :class:`RequestContext` around the work. Whatever runs inside
reads it: LangServe's config modifier takes the identity and the run id from it, and
:class:`~langchain_graylayer.routing.router.GrayRouter` uses its decision instead of routing again,
so the version announced in the response headers is the version that ran.

One frozen value in one ``ContextVar``, owned here. The only other way a decision reaches a run
is :meth:`~langchain_graylayer.routing.router.GrayRouter.with_decision` (under
:data:`DECISION_KEY` in the run's ``configurable``), for a serving layer that decides in a graph
node, as the LangGraph server's graph does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from uuid import UUID

from langchain_graylayer._types import Identity
from langchain_graylayer.routing.decision import RoutingDecision

__all__ = [
    "DECISION_KEY",
    "RequestContext",
    "current_request",
    "request_context",
    "update_request",
]

DECISION_KEY = "__graylayer_decision"
"""The ``configurable`` key of a decision made before the run (``GrayRouter.with_decision``);
a dunder key, so LangChain never copies it into run metadata."""


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Identity, run id and routing decision of the request being served.

    Example:
        >>> from langchain_graylayer.plan.plan import Version
        >>> from langchain_graylayer.routing.decision import RouteReason, RoutingDecision
        >>> decision = RoutingDecision("p", Version.CANDIDATE, "vip", RouteReason.IN_RATIO)
        >>> with request_context(RequestContext(("u1", "s1"), decision=decision)):
        ...     current_request().decision.version.value
        'candidate'
        >>> current_request() is None
        True
    """

    identity: Identity
    """``(user_id, session_id)`` as the server established them (never the client's say-so)."""
    run_id: UUID | None = None
    """The run id the router's run will have (``None`` for a batch: several runs)."""
    decision: RoutingDecision | None = None
    """The version chosen for ``identity``; ``None`` until someone routed the request."""

    def decision_for(self, plan_id: str, identity: Identity) -> RoutingDecision | None:
        """The decision, if it was made for this plan and this identity (else route anew)."""
        decision = self.decision
        if decision is None or decision.plan_id != plan_id or identity != self.identity:
            return None
        return decision


_CURRENT: ContextVar[RequestContext | None] = ContextVar("graylayer_request", default=None)


def current_request() -> RequestContext | None:
    """The context of the request being served, or ``None`` outside a serving layer."""
    return _CURRENT.get()


@contextmanager
def request_context(context: RequestContext) -> Iterator[RequestContext]:
    """Make ``context`` the current request's for the ``with`` block (and the tasks it starts)."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def update_request(**changes: object) -> RequestContext | None:
    """Replace fields of the current context (e.g. the identity and decision a config modifier
    resolved); returns the new context, or ``None`` outside a serving layer."""
    context = _CURRENT.get()
    if context is None:
        return None
    updated = replace(context, **changes)  # type: ignore[arg-type]
    _CURRENT.set(updated)
    return updated
