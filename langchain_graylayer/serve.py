"""Serving: LangServe / FastAPI routes, traffic colouring, signed feedback, admin API, /metrics.

``add_gray_routes(app, router, path="/agent", ...)`` is the one call:

* the agent routes — LangServe's ``add_routes`` (invoke, batch, stream, stream_events,
  playground) when the ``serve`` extra has LangServe, else plain FastAPI ``invoke`` and ``stream``;
* the user and session come from request headers (``X-User-ID``, ``X-Session-ID``) or your
  ``identify(request)`` function, and **overwrite** whatever the client put in ``configurable``;
* every response carries ``X-Agent-Version``, ``X-User-Layer``, ``X-Run-ID``, ``X-Trace-ID`` and
  ``X-Feedback-Token`` (an HMAC-signed token over the run id, its labels and an expiry);
* ``POST {path}/feedback`` takes ``{run_id, kind, score, token}``: forged, expired or reused tokens
  are refused and counted nowhere;
* an admin API under ``admin_prefix`` (bearer token, compared in constant time) with a dashboard
  page, and ``GET /metrics`` for Prometheus.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prometheus_client import REGISTRY

from langchain_graylayer.errors import ConfigurationError, GraylayerError
from langchain_graylayer.metrics import RunLabels, default_metrics

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from langchain_graylayer.controller import RolloutController
    from langchain_graylayer.decision import RoutingDecision
    from langchain_graylayer.router import GrayRouter

__all__ = ["FeedbackSigner", "InvalidFeedbackTokenError", "add_gray_routes"]

logger = logging.getLogger("langchain_graylayer.serve")

Identity = tuple[str | None, str | None]
Identify = Callable[["Request"], Identity | Awaitable[Identity]]
"""Returns ``(user_id, session_id)`` for a request (e.g. from a verified JWT)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InvalidFeedbackTokenError(GraylayerError):
    """A feedback token that is forged, expired, for another run, or already used."""


class FeedbackSigner:
    """Signs and verifies feedback tokens: ``base64(payload).base64(HMAC-SHA256)``.

    The payload carries the run id, the labels that served it and an expiry, so feedback can be
    counted on any replica without shared state, and cannot be pointed at another version.

    Example:
        >>> signer = FeedbackSigner(b"k" * 32, ttl=60, clock=lambda: 1000.0)
        >>> labels = RunLabels("refund-v2", "candidate", "normal")
        >>> token = signer.sign("run-1", labels)
        >>> signer.verify(token, "run-1") == labels
        True
    """

    def __init__(
        self, secret: bytes, *, ttl: float = 7 * 86400.0, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 16:
            raise ConfigurationError("feedback_secret", "<hidden>", "at least 16 bytes")
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)  # copied per token: no re-keying
        self.ttl = ttl
        self.clock = clock

    def _mac(self, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.digest()

    def sign(self, run_id: str, labels: RunLabels) -> str:
        body = {"r": run_id, "p": labels.plan, "v": labels.version, "l": labels.layer,
                "e": int(self.clock() + self.ttl)}  # fmt: skip
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, run_id: str) -> RunLabels:
        """The labels inside a valid token for ``run_id``.

        Raises:
            InvalidFeedbackTokenError: forged, malformed, expired or for another run.
        """
        try:
            encoded, signature = token.split(".")
            payload = _unb64(encoded)
            valid = hmac.compare_digest(self._mac(payload), _unb64(signature))
            body = json.loads(payload) if valid else None
        except (ValueError, TypeError):
            raise InvalidFeedbackTokenError("malformed feedback token") from None
        if body is None:
            raise InvalidFeedbackTokenError("feedback token signature does not match")
        if body.get("r") != run_id:
            raise InvalidFeedbackTokenError("feedback token is for another run")
        if float(body.get("e", 0)) < self.clock():
            raise InvalidFeedbackTokenError("feedback token has expired")
        return RunLabels(str(body["p"]), str(body["v"]), str(body["l"]))

    @staticmethod
    def fingerprint(token: str) -> str:
        """A short id of a token, to remember that it was used."""
        return hashlib.sha256(token.encode()).hexdigest()[:32]


_UNCOLOURED = ("/feedback", "/input_schema", "/output_schema", "/config_schema")


class _Colouring:
    """Pure ASGI middleware: identify, route, pre-generate the run id, colour the response headers.

    The request is routed here, before the agent runs, and the router's run reuses that decision
    (``GrayRouter.hold_decision``): one routing per request, and the headers announce exactly the
    version that runs, even for a stream whose headers go out before its first token.
    """

    def __init__(self, app: Any, *, router: GrayRouter[Any, Any], path: str,
                 identify: Identify | None, headers: tuple[str, str],
                 signer: FeedbackSigner | None) -> None:  # fmt: skip
        self.app, self.router, self.path = app, router, path.rstrip("/")
        self.identify, self.signer = identify, signer
        self.header_names = tuple(name.lower().encode("latin-1") for name in headers)

    def _from_headers(self, scope: dict[str, Any]) -> Identity:
        """The identity headers, read straight from the ASGI scope (no Request object); like
        Starlette's ``headers.get``, the first of repeated headers counts, and empty is none."""
        found: list[bytes | None] = [None, None]
        for name, value in scope.get("headers", ()):
            if name in self.header_names and found[self.header_names.index(name)] is None:
                found[self.header_names.index(name)] = value
        user, session = found
        return (user.decode("latin-1") if user else None,
                session.decode("latin-1") if session else None)  # fmt: skip

    async def _identify(self, scope: dict[str, Any], receive: Any) -> Identity:
        if self.identify is None:
            return self._from_headers(scope)
        from fastapi import Request

        result = self.identify(Request(scope, receive))
        return await result if asyncio.iscoroutine(result) else result  # type: ignore[return-value]

    async def _off_loop(self, method: Callable[..., RoutingDecision], who: Identity) -> Any:
        if self.router.store.blocking:  # a networked store: keep the event loop free
            return await asyncio.to_thread(method, *who)
        return method(*who)

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
        from langchain_graylayer.router import _new_run_id

        user_id, session_id = await self._identify(scope, receive)
        # Without a user id the run routes itself: with trusted client ids, the body may name one.
        decision = None
        if user_id is not None:
            decision = await self._off_loop(self.router.decide_ahead, (user_id, session_id))
        batch = path.endswith("/batch")
        run_id = str(_new_run_id())
        state = scope.setdefault("state", {})
        state["graylayer_identity"] = (user_id, session_id)
        state["graylayer_run_id"] = None if batch else run_id
        server_trace: list[str] = []

        async def coloured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # The config modifier has run by now: it records the identity it really used
                # (which differs from the headers' only when client-sent ids are trusted).
                who = state.get("graylayer_resolved", (user_id, session_id))
                shown = decision
                if shown is None or who != (user_id, session_id):
                    shown = await self._off_loop(self.router.route, who)
                message["headers"] = [
                    *message.get("headers", []),
                    *self._headers(shown, run_id, batch, server_trace),
                ]
            await send(message)

        held = None
        if decision is not None:
            held = self.router.hold_decision(user_id, session_id, decision)
        try:
            tracer = getattr(self.router, "tracer", None)
            if tracer is None:
                await self.app(scope, receive, coloured)
                return
            # A server span makes the request's trace id known before a stream's first byte:
            # the router's request span, started later inside the stream, becomes its child.
            with tracer.start_as_current_span(f"{scope.get('method', 'POST')} {path}") as span:
                server_trace.append(format(span.get_span_context().trace_id, "032x"))
                await self.app(scope, receive, coloured)
        finally:
            if held is not None:
                held.var.reset(held)

    def _headers(
        self, decision: RoutingDecision, run_id: str, batch: bool, server_trace: list[str]
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"x-agent-version", decision.version.value.encode()),
            (b"x-user-layer", (decision.layer or "").encode()),
        ]
        if batch:  # several runs: no single run id, trace id or feedback token to announce
            return headers
        headers.append((b"x-run-id", run_id.encode()))
        trace = self.router.trace_id_of(run_id) or (server_trace[0] if server_trace else run_id)
        headers.append((b"x-trace-id", trace.encode()))
        if self.signer is not None and decision.layer is not None:
            labels = RunLabels(decision.plan_id, decision.version.value, decision.layer)
            headers.append((b"x-feedback-token", self.signer.sign(run_id, labels).encode()))
        return headers


def config_modifier(trust_client_user_id: bool = False) -> Callable[[dict[str, Any], Any], Any]:
    """LangServe ``per_req_config_modifier``: the identity from the request wins, always."""

    def modify(config: dict[str, Any], request: Request) -> dict[str, Any]:
        state = request.scope.get("state", {})
        user_id, session_id = state.get("graylayer_identity", (None, None))
        configurable = dict(config.get("configurable") or {})
        if not trust_client_user_id:
            for key in ("user_id", "session_id", "thread_id"):
                configurable.pop(key, None)  # never trust what the client sent
        if user_id:
            configurable["user_id"] = user_id
        if session_id:
            configurable["session_id"] = session_id
            configurable["thread_id"] = session_id  # LangGraph checkpointers key on thread_id
        config["configurable"] = configurable
        resolved_session = configurable.get("session_id") or configurable.get("thread_id")
        state["graylayer_resolved"] = (configurable.get("user_id"), resolved_session)
        if state.get("graylayer_run_id"):
            config["run_id"] = UUID(state["graylayer_run_id"])
        return config

    return modify


def add_gray_routes(
    app: FastAPI,
    router: GrayRouter[Any, Any],
    *,
    path: str = "/agent",
    controller: RolloutController | None = None,
    identify: Identify | None = None,
    user_header: str = "X-User-ID",
    session_header: str = "X-Session-ID",
    admin_prefix: str = "/graylayer",
    admin_token: str | None = None,
    feedback_secret: bytes | None = None,
    metrics_path: str | None = "/metrics",
    use_langserve: bool | None = None,
    trust_client_user_id: bool = False,
) -> None:
    """Serve ``router`` on ``app`` with gray-release glue (see the module docstring).

    ``admin_token`` defaults to the ``GRAYLAYER_ADMIN_TOKEN`` environment variable; without one
    the admin API answers 503 (it is never open). ``feedback_secret`` defaults to
    ``GRAYLAYER_FEEDBACK_SECRET``, else a random per-process secret (tokens then only verify on
    the replica that issued them).
    """
    from langchain_graylayer import serve_admin, serve_agent

    admin_token = admin_token or os.environ.get("GRAYLAYER_ADMIN_TOKEN")
    secret = feedback_secret or os.environ.get("GRAYLAYER_FEEDBACK_SECRET", "").encode() or None
    signer = FeedbackSigner(secret or os.urandom(32))
    path = "/" + path.strip("/")
    app.add_middleware(_Colouring, router=router, path=path, identify=identify,
                       headers=(user_header, session_header), signer=signer)  # fmt: skip
    serve_agent.mount_agent(
        app, router, path, config_modifier(trust_client_user_id), signer, use_langserve
    )
    serve_admin.mount_admin(app, router, controller, admin_prefix, admin_token)
    if metrics_path:
        _mount_metrics(app, metrics_path, (router.metrics or default_metrics()).registry)


def _mount_metrics(app: FastAPI, path: str, registry: Any) -> None:
    """``GET {path}`` in Prometheus' text format (a route, so no redirect to ``{path}/``)."""
    from fastapi import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = registry or REGISTRY

    @app.get(path, include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
