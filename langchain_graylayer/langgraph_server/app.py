"""``gray_http_app(router)``: the app for ``langgraph.json``'s ``http.app``.

The LangGraph server merges this app's routes and middleware with its own:

* ``{admin_prefix}/`` — the admin API and dashboard (:mod:`langchain_graylayer.serve.admin`), as
  its own sub-app: the admin token is required as everywhere else;
* ``POST {admin_prefix}/feedback`` is *not* admin: ``{"run_id", "kind", "score"}`` from the user
  the server's auth handler authenticated, for a run of the server's (the ``run_id`` of
  ``runs.wait`` / ``runs.stream``'s metadata event). Counted once, only by the user the run served:
  another user's run id is 404 as an unknown one is, a second feedback for a run is 409;
* a middleware that names the version on the server's ``/runs/wait`` and ``/runs/stream``
  responses: ``X-Agent-Version``, ``X-User-Layer``, ``X-Route-Reason``. It needs
  ``"middleware_order": "auth_first"`` in ``http`` (to know the authenticated user).

The server's own ``/metrics`` cannot be replaced; it exports the process's default Prometheus
registry, where the router's ``graylayer_*`` family is (no user or thread id in any label).
"""

# No "from __future__ import annotations": FastAPI must resolve the feedback route's
# signature, whose model is defined inside the mount function.

import asyncio
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_graylayer.errors import ConfigurationError, StoreError, UnknownRunError
from langchain_graylayer.measuring.feedback import FeedbackKind, check_feedback
from langchain_graylayer.plan.bucketing import unit_key
from langchain_graylayer.serve.admin import mount_admin
from langchain_graylayer.serve.inputs import validation_error_handler

if TYPE_CHECKING:
    from fastapi import FastAPI

    from langchain_graylayer.rollout.controller import RolloutController
    from langchain_graylayer.routing.router import GrayRouter

__all__ = ["VersionHeaders", "gray_http_app"]

_RUN_PATH = re.compile(r"^(?:/threads/(?P<thread>[^/]+))?/runs/(?:wait|stream)$")


def gray_http_app(
    router: "GrayRouter[Any, Any]",
    *,
    controller: "RolloutController | None" = None,
    admin_prefix: str = "/graylayer",
    admin_token: str | None = None,
    app: "FastAPI | None" = None,
) -> "FastAPI":
    """The FastAPI app to name in ``langgraph.json``'s ``http.app`` (see the module docstring).

    ``admin_token`` defaults to ``GRAYLAYER_ADMIN_TOKEN`` (no token: the admin API answers 503).
    With ``"enable_custom_route_auth": true`` the server's auth handler sees these routes too:
    it must accept the admin token (as an admin identity) besides the users' credentials.
    ``app``: add the routes to your own app instead of a new one.
    """
    from fastapi import FastAPI
    from fastapi.exception_handlers import request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError

    prefix = "/" + admin_prefix.strip("/")
    app = app if app is not None else FastAPI(title="graylayer")
    _mount_feedback(app, router, prefix)
    if app.exception_handlers.get(RequestValidationError) is request_validation_exception_handler:
        # FastAPI's own handler answers 500 to a body that quotes NaN or Infinity
        app.add_exception_handler(RequestValidationError, validation_error_handler)
    admin = FastAPI(title="graylayer admin", openapi_url=None, docs_url=None, redoc_url=None)
    mount_admin(admin, router, controller, "/",
                admin_token or os.environ.get("GRAYLAYER_ADMIN_TOKEN"))  # fmt: skip
    app.mount(prefix, admin)
    app.add_middleware(VersionHeaders, router=router)
    return app


def _user_of(scope: Mapping[str, Any]) -> str | None:
    """The identity the server's auth handler gave the request (``None``: unauthenticated)."""
    user = scope.get("user")
    identity = getattr(user, "identity", None) if user is not None else None
    return None if not identity or not getattr(user, "is_authenticated", True) else str(identity)


def _mount_feedback(app: "FastAPI", router: "GrayRouter[Any, Any]", prefix: str) -> None:
    from fastapi import HTTPException, Request
    from pydantic import BaseModel, ConfigDict, Field

    class Feedback(BaseModel):
        model_config = ConfigDict(extra="forbid")
        run_id: str = Field(min_length=1, max_length=64)
        kind: FeedbackKind | None = None
        score: float | None = Field(default=None, ge=0, le=10, allow_inf_nan=False)

    @app.post(f"{prefix}/feedback", status_code=202)
    async def feedback(body: Feedback, request: Request) -> dict[str, Any]:
        user = _user_of(request.scope)
        if user is None:
            raise HTTPException(401, "feedback needs an authenticated user")
        try:
            check_feedback(body.kind, body.score)
        except ConfigurationError as exc:
            raise HTTPException(422, str(exc)) from None
        labels = router.feedback_recorder.index.labels_of(body.run_id)
        # Another user's run is refused exactly as an unknown one: its id tells nothing.
        if labels is None or labels.unit != unit_key(router.plan.effective_salt, user):
            raise HTTPException(404, f"run {body.run_id} is not a run of yours that graylayer "
                                     "routed here, or its feedback window has passed")  # fmt: skip
        key = f"feedback:run:{router.plan.id}:{body.run_id}"
        try:
            first = await asyncio.to_thread(
                router.store.claim_once, key, router.feedback_recorder.index.ttl
            )
        except StoreError as exc:
            raise HTTPException(503, f"feedback not recorded, try again later: {exc}") from None
        if not first:
            raise HTTPException(409, f"feedback for run {body.run_id} was already counted")
        try:
            counted = router.feedback(body.run_id, body.kind, body.score)
        except UnknownRunError as exc:  # expired between the check and now
            raise HTTPException(404, str(exc)) from None
        return {"run_id": body.run_id, "version": counted.version, "layer": counted.layer}


class VersionHeaders:
    """Pure ASGI middleware: ``X-Agent-Version``, ``X-User-Layer`` and ``X-Route-Reason`` on the
    server's run responses (``/runs/wait``, ``/runs/stream``, with or without a thread).

    The version is the thread's (a pinned thread keeps its own) or, for a new thread, the one
    the user's layer and bucket give: what the run's ``route`` node decides, unless the ratio
    moves in between. The store is read in a thread, never on the event loop.
    """

    def __init__(self, app: Any, *, router: "GrayRouter[Any, Any]") -> None:
        self.app, self.router = app, router

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = None
        if scope["type"] == "http" and scope.get("method") == "POST":
            match = _RUN_PATH.match(scope.get("path", ""))
        user = _user_of(scope) if match is not None else None
        if match is None or user is None:
            await self.app(scope, receive, send)
            return
        decision = await asyncio.to_thread(self.router.route, user, match.group("thread"))
        headers = [
            (b"x-agent-version", decision.version.value.encode()),
            (b"x-user-layer", (decision.layer or "unrouted").encode()),
            (b"x-route-reason", decision.reason.value.encode()),
        ]

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, with_headers)
