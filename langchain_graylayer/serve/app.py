"""Serving: LangServe / FastAPI routes, traffic colouring, signed feedback, admin API, /metrics.

``add_gray_routes(app, router, path="/agent", ...)`` is the one call:

* the agent routes — LangServe's ``add_routes`` (invoke, batch, stream, stream_events,
  playground) when the ``serve`` extra has LangServe, else plain FastAPI ``invoke`` and ``stream``;
* the user and session come from request headers (``X-User-ID``, ``X-Session-ID``) or your
  ``identify(request)`` function, and **overwrite** whatever the client put in ``configurable``;
* the response of a run carries ``X-Agent-Version``, ``X-User-Layer``, ``X-Run-ID``,
  ``X-Trace-ID`` and ``X-Feedback-Token`` (an HMAC-signed token over the run id, its labels and
  an expiry, issued only for a run the router recorded); a refused request (4xx) carries none;
* ``POST {path}/feedback`` takes ``{run_id, kind, score, token}``: forged, expired or reused tokens,
  and tokens for runs the router never recorded, are refused and counted nowhere;
* bounded input (:mod:`.inputs`): bodies over ``max_body_bytes`` get a 413, identity ids are UTF-8
  of at most 256 characters (else 400), ``NaN`` in a JSON number gets a 422;
* an admin API under ``admin_prefix`` (bearer token, compared in constant time) with a dashboard
  page, and ``GET /metrics`` for Prometheus.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from langchain_core.runnables import RunnableConfig
from prometheus_client import REGISTRY

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.measuring.feedback import FeedbackSigner
from langchain_graylayer.measuring.prometheus import default_metrics
from langchain_graylayer.routing.context import current_request, update_request
from langchain_graylayer.routing.router import identity_of
from langchain_graylayer.serve.inputs import MAX_BODY_BYTES, BadInput, BodyLimit, check_id
from langchain_graylayer.serve.middleware import Identify, VersionHeaders
from langchain_graylayer.store.protocols import conversation_key

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from langchain_graylayer.rollout.controller import RolloutController
    from langchain_graylayer.routing.router import GrayRouter

__all__ = ["add_gray_routes", "config_modifier"]


def config_modifier(
    router: GrayRouter[Any, Any], trust_client_user_id: bool = False
) -> Callable[[dict[str, Any], Any], Awaitable[dict[str, Any]]]:
    """LangServe ``per_req_config_modifier``: the identity from the request wins, always.

    It reads the identity and run id from the request context the middleware opened. With
    ``trust_client_user_id`` a client-sent identity the headers lack is taken from the body,
    and routed here (the run and the response headers then use that decision).
    """

    keeps_threads = any(
        getattr(version, "checkpointer", None) not in (None, False)
        for version in (router.stable, router.candidate)
    )

    async def modify(config: dict[str, Any], request: Request) -> dict[str, Any]:
        from fastapi import HTTPException

        context = current_request()
        user_id, session_id = context.identity if context is not None else (None, None)
        configurable = dict(config.get("configurable") or {})
        if not trust_client_user_id:
            for key in ("user_id", "session_id", "thread_id"):
                configurable.pop(key, None)  # never trust what the client sent
        if user_id:
            configurable["user_id"] = user_id
        if session_id:
            configurable["session_id"] = session_id
        config["configurable"] = configurable
        resolved = identity_of(cast(RunnableConfig, config))
        if resolved[1] is not None:
            # A conversation is (user, session): its LangGraph thread is the user's own, so two
            # users who send the same session id never continue each other's checkpointer thread.
            configurable["session_id"] = resolved[1]  # what the router reads, before thread_id
            configurable["thread_id"] = conversation_key(resolved[0], resolved[1])
        elif keeps_threads:  # LangGraph would fail on a missing thread_id: say so, clearly
            raise HTTPException(
                400,
                "this agent keeps conversations (a LangGraph checkpointer): send a session "
                "(the X-Session-ID header, or your identify() function's session id)",
            )
        if context is not None:
            try:
                for field, value in zip(("user_id", "session_id"), resolved, strict=True):
                    if value is not None:
                        check_id(f"configurable.{field}", value)
            except BadInput as exc:
                raise HTTPException(exc.status, exc.detail) from None
            if resolved != context.identity:  # only client-sent ids differ from the headers'
                update_request(identity=resolved, decision=await router.aroute_request(*resolved))
            if context.run_id is not None:
                config["run_id"] = context.run_id
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
    max_body_bytes: int | None = None,
) -> None:
    """Serve ``router`` on ``app`` with gray-release glue (see the module docstring).

    ``admin_token`` defaults to the ``GRAYLAYER_ADMIN_TOKEN`` environment variable; without one
    the admin API answers 503 (it is never open). ``feedback_secret`` defaults to
    ``GRAYLAYER_FEEDBACK_SECRET``, else a random per-process secret (tokens then only verify on
    the replica that issued them). ``max_body_bytes`` bounds a request body to the agent routes
    and the admin API (default ``GRAYLAYER_MAX_BODY_BYTES``, else 1 MiB); a larger one gets a 413.
    """
    from fastapi.exception_handlers import request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError

    from langchain_graylayer.serve import admin as serve_admin
    from langchain_graylayer.serve import agent as serve_agent
    from langchain_graylayer.serve.inputs import validation_error_handler

    admin_token = admin_token or os.environ.get("GRAYLAYER_ADMIN_TOKEN")
    if max_body_bytes is None:
        max_body_bytes = _env_int("GRAYLAYER_MAX_BODY_BYTES", MAX_BODY_BYTES)
    elif isinstance(max_body_bytes, bool) or max_body_bytes <= 0:
        raise ConfigurationError("max_body_bytes", max_body_bytes, "a positive number of bytes")
    secret = feedback_secret or os.environ.get("GRAYLAYER_FEEDBACK_SECRET", "").encode() or None
    signer = FeedbackSigner(secret or os.urandom(32))
    path = "/" + path.strip("/")
    app.add_middleware(VersionHeaders, router=router, path=path, identify=identify,
                       headers=(user_header, session_header), signer=signer)  # fmt: skip
    serve_agent.mount_agent(
        app, router, path, config_modifier(router, trust_client_user_id), signer, use_langserve
    )
    serve_admin.mount_admin(app, router, controller, admin_prefix, admin_token)
    # Outermost: a body too large is refused before anything is routed or parsed.
    admin_prefix = "/" + admin_prefix.strip("/")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, prefixes=(path, admin_prefix))
    if app.exception_handlers.get(RequestValidationError) is request_validation_exception_handler:
        app.add_exception_handler(RequestValidationError, validation_error_handler)
    if metrics_path:
        _mount_metrics(app, metrics_path, (router.metrics or default_metrics()).registry)


def _env_int(name: str, default: int) -> int:
    """A positive integer from the environment, else ``default``.

    Raises:
        ConfigurationError: set, but not a positive integer.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) <= 0:
        raise ConfigurationError(name, text, "a positive whole number of bytes")
    return int(text)


def _mount_metrics(app: FastAPI, path: str, registry: Any) -> None:
    """``GET {path}`` in Prometheus' text format (a route, so no redirect to ``{path}/``)."""
    from fastapi import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = registry or REGISTRY

    @app.get(path, include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
