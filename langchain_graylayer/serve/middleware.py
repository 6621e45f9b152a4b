"""The serving middleware: who is asking, which version serves them, and the response headers
that say so (version, layer, run id, trace id, feedback token) for a run that ran."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from langchain_graylayer._types import Identity
from langchain_graylayer.measuring.feedback import FeedbackSigner
from langchain_graylayer.routing.context import RequestContext, current_request, request_context
from langchain_graylayer.routing.runs import new_run_id
from langchain_graylayer.serve.inputs import BadInput, check_id, id_from_header, send_json

if TYPE_CHECKING:
    from fastapi import Request

    from langchain_graylayer.routing.router import GrayRouter

__all__ = ["Identify", "VersionHeaders"]

Identify = Callable[["Request"], Identity | Awaitable[Identity]]
"""Returns ``(user_id, session_id)`` for a request (e.g. from a verified JWT)."""


_UNCOLOURED = ("/feedback", "/input_schema", "/output_schema", "/config_schema")


class VersionHeaders:
    """Pure ASGI middleware: identify, route, pick the run id, and name the version in headers.

    The request is routed here, before the agent runs, and opened as a
    :class:`~langchain_graylayer.routing.context.RequestContext`: the config modifier takes the
    identity and run id from it and the router's run reuses its decision. One routing per
    request, and the headers announce exactly the version that runs.

    The response's headers are held until its first body bytes: by then an invoke has run and a
    stream has started, so the router has recorded the run. Only a recorded run gets a feedback
    token, and a refused request (a 4xx, e.g. a body that fails validation) that ran nothing is
    announced as nothing: no version, no run id, no token.
    """

    def __init__(self, app: Any, *, router: GrayRouter[Any, Any], path: str,
                 identify: Identify | None, headers: tuple[str, str],
                 signer: FeedbackSigner | None) -> None:  # fmt: skip
        self.app, self.router, self.path = app, router, path.rstrip("/")
        self.identify, self.signer = identify, signer
        self.header_names = tuple(name.lower().encode("latin-1") for name in headers)
        self.header_titles = headers

    def _from_headers(self, scope: dict[str, Any]) -> Identity:
        """The identity headers, read straight from the ASGI scope (no Request object); like
        Starlette's ``headers.get``, the first of repeated headers counts, and empty is none.
        Their bytes are UTF-8 (see :mod:`.inputs`); raises :class:`BadInput` otherwise."""
        found: list[bytes | None] = [None, None]
        for name, value in scope.get("headers", ()):
            if name in self.header_names and found[self.header_names.index(name)] is None:
                found[self.header_names.index(name)] = value
        user, session = (
            None if raw is None else id_from_header(self.header_titles[i], raw)
            for i, raw in enumerate(found)
        )
        return user, session

    async def _identify(self, scope: dict[str, Any], receive: Any) -> Identity:
        if self.identify is None:
            return self._from_headers(scope)
        from fastapi import Request

        result = self.identify(Request(scope, receive))
        user, session = await result if asyncio.iscoroutine(result) else result  # type: ignore[misc]
        return (None if user is None else check_id("user id", str(user)),
                None if session is None else check_id("session id", str(session)))  # fmt: skip

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        agent_call = (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and path.startswith(self.path + "/")
        )
        if not agent_call or path.endswith(_UNCOLOURED) or "/playground" in path:
            await self.app(scope, receive, send)
            return
        try:
            who = await self._identify(scope, receive)
        except BadInput as exc:
            await send_json(send, exc.status, {"detail": exc.detail})
            return
        # Without a user id the run routes itself (as unrouted, unless a trusting config
        # modifier finds a user id in the body and routes that).
        decision = None if who[0] is None else await self.router.aroute_request(*who)
        batch = path.endswith("/batch")
        run_id = new_run_id()
        server_trace: list[str] = []
        held: list[dict[str, Any]] = []

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                held.append(message)  # until the body: the run has been recorded by then
                return
            if held:
                start = held.pop()
                # The config modifier has run by now, and may have routed another identity.
                served = current_request() or context
                start["headers"] = [
                    *start.get("headers", []),
                    *self._headers(start["status"], served, str(run_id), batch, server_trace),
                ]
                await send(start)
            await send(message)

        context = RequestContext(who, None if batch else run_id, decision)
        with request_context(context):
            tracer = getattr(self.router, "tracer", None)
            if tracer is None:
                await self.app(scope, receive, with_headers)
                return
            # A server span makes the request's trace id known before a stream's first byte:
            # the router's request span, started later inside the stream, becomes its child.
            with tracer.start_as_current_span(f"{scope.get('method', 'POST')} {path}") as span:
                server_trace.append(format(span.get_span_context().trace_id, "032x"))
                await self.app(scope, receive, with_headers)

    def _headers(
        self,
        status: int,
        served: RequestContext,
        run_id: str,
        batch: bool,
        server_trace: list[str],
    ) -> list[tuple[bytes, bytes]]:
        token = None
        if not batch and self.signer is not None:
            token = self.router.feedback_recorder.token_for(self.signer, run_id)
        if 400 <= status < 500 and token is None:
            return []  # refused before anything ran (a recorded run would have a token)
        decision = served.decision or self.router.route(*served.identity)  # no user: no I/O
        headers = [
            (b"x-agent-version", decision.version.value.encode()),
            # "unrouted": graylayer did not route it (no user id, opt-out, or degraded routing)
            (b"x-user-layer", (decision.layer or "unrouted").encode()),
            (b"x-route-reason", decision.reason.value.encode()),
        ]
        if batch:  # several runs: no single run id, trace id or feedback token to announce
            return headers
        headers.append((b"x-run-id", run_id.encode()))
        trace = self.router.trace_id_of(run_id) or (server_trace[0] if server_trace else run_id)
        headers.append((b"x-trace-id", trace.encode()))
        if token is not None:  # the labels the run was recorded under, step and unit included
            headers.append((b"x-feedback-token", token.encode()))
        return headers
