"""The admin API and dashboard page, mounted by :func:`~langchain_graylayer.serve.add_gray_routes`.

Every JSON endpoint needs ``Authorization: Bearer <admin token>`` (compared in constant time);
without a configured token the API answers 503 and is never open. The dashboard page itself holds
no data: it asks for the token and calls the API from the browser.

=======  ==================================  =============================================
method   path (under the admin prefix)       what
=======  ==================================  =============================================
GET      ``/``                               the dashboard page (no build step, no assets)
GET      ``/api/status``                     layers: ratio, step, phase, latest verdict;
                                             ``health`` (and its evaluators: paused, spend)
GET      ``/api/audit?limit=N``              the audit log, oldest first
POST     ``/api/pause``, ``/api/resume``     ``{"operator", "reason"}``
POST     ``/api/promote``                    ``{"operator", "layer", "reason"}``
POST     ``/api/rollback``                   ``{"operator", "reason"}``
POST     ``/api/restart``                    ``{"operator", "reason"}``: the plan again from its
                                            first layer (e.g. after a rollback and a fix)
POST     ``/api/ratio``                      ``{"operator", "layer", "ratio", "reason"}``
PUT      ``/api/profiles/{user_id}``         a ``UserProfile``
POST     ``/api/consent/{user_id}``          ``{"allow_gray": bool}``
GET      ``/api/route/{user_id}``            which version and why (``?session_id=``)
=======  ==================================  =============================================

An action answers its audit entry with ``changed`` (false when there was nothing to do, e.g. a
second rollback: nothing is written and the entry is the one that rolled the plan back) and the
plan's ``status``. Bad bodies are 422 (NaN and Infinity included), what the plan's state forbids
is 409 (a ratio after a rollback, before a restart), and a store that is down is 503 with
``{"detail": ..., "store": "unavailable"}``.
"""

# No "from __future__ import annotations": FastAPI must resolve the route signatures,
# whose models are defined inside the mount functions.

import asyncio
import hmac
import math
import time
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any

from langchain_graylayer.errors import ConfigurationError, GraylayerError, StoreError
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.serve.inputs import BadInput, check_id

if TYPE_CHECKING:
    from fastapi import FastAPI

    from langchain_graylayer.rollout.controller import RolloutController
    from langchain_graylayer.routing.router import GrayRouter

__all__ = ["mount_admin"]


def mount_admin(
    app: "FastAPI",
    router: "GrayRouter[Any, Any]",
    controller: "RolloutController | None",
    prefix: str,
    token: str | None,
) -> None:
    """Mount the admin API and the dashboard under ``prefix`` (``"/"``: at the root of ``app``,
    e.g. an admin sub-app mounted where the dashboard should be)."""
    from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.routing import APIRoute
    from pydantic import BaseModel, Field

    root = "/" + prefix.strip("/") if prefix.strip("/") else ""  # "": an admin sub-app
    mounted_at = time.time()

    def checked(field: str, value: str | None) -> str | None:
        # The ids the headers may carry, no longer: a longer one could never match a request.
        try:
            return None if value is None else check_id(field, value)
        except BadInput as exc:
            raise HTTPException(exc.status, exc.detail) from None

    class FiniteErrors(APIRoute):
        """Answers a body that fails validation with 422 even when it holds NaN or Infinity:
        FastAPI's own handler echoes the input, which JSON cannot carry, and fails with 500."""

        def get_route_handler(self) -> Any:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    errors = _finite(jsonable_encoder(exc.errors()))
                    return JSONResponse({"detail": errors}, status_code=422)

            return route

    def authorised(authorization: str | None = Header(default=None)) -> None:
        if not token:
            raise HTTPException(503, "the admin API is disabled: set GRAYLAYER_ADMIN_TOKEN")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "admin token required", {"WWW-Authenticate": "Bearer"})

    def need_controller() -> "RolloutController":
        if controller is None:
            raise HTTPException(409, "no controller is configured for this app")
        return controller

    api = APIRouter(
        prefix=f"{root}/api", dependencies=[Depends(authorised)], route_class=FiniteErrors
    )

    class Action(BaseModel):
        operator: str = Field(min_length=1, max_length=100)
        reason: str = Field(default="", max_length=1000)

    class LayerAction(Action):
        layer: str = Field(min_length=1, max_length=63)

    class RatioAction(LayerAction):
        ratio: float = Field(ge=0, le=1, allow_inf_nan=False)

    class Consent(BaseModel):
        allow_gray: bool

    async def act(command: str, **args: Any) -> dict[str, Any]:
        """Run a controller command; its audit entry, ``changed`` (false when there was
        nothing to do: the entry is then the one that put the plan where it is) and the plan's
        ``status`` after it."""
        try:
            outcome = await asyncio.to_thread(need_controller().act, command, **args)
        except ConfigurationError as exc:
            raise HTTPException(422, str(exc)) from None
        except StoreError:
            raise  # 503, by the handler below
        except GraylayerError as exc:
            raise HTTPException(409, str(exc)) from None
        return {**outcome.entry.to_dict(), "changed": outcome.changed,
                "status": outcome.status.value}  # fmt: skip

    def health() -> dict[str, Any]:
        """This replica's router: counts over the last five minutes, and since the app was
        built (``started_at``, ``uptime_seconds``)."""
        out = {"window_seconds": 300, "recent": router.recent_counts(300),
               "since_start": router.counts(), "started_at": mounted_at,
               "uptime_seconds": round(time.time() - mounted_at, 1)}  # fmt: skip
        if router.evaluations is not None:  # paused by a spend cap? (absent without evaluators)
            out["evaluators"] = router.evaluations.status()
        return out

    # a plan that rehearses faults says so in every status (the key is absent otherwise)
    rehearsal = router.plan.chaos
    chaos = {} if rehearsal is None else {"chaos": rehearsal.model_dump(mode="json")}

    @api.get("/status")
    async def status() -> dict[str, Any]:
        if controller is None:
            ratios = await asyncio.to_thread(router.store.get_ratios, router.plan.id)
            return {"plan": router.plan.id, "status": "no controller", "layers": [
                {"layer": name, "ratio": ratios.get(name, 0.0)} for name in router.plan.layer_names
            ], "health": health(), **chaos}  # fmt: skip
        return {**await asyncio.to_thread(controller.status), "health": health(), **chaos}

    @api.get("/audit")
    async def audit(limit: int = 200) -> list[dict[str, Any]]:
        if not 1 <= limit <= 10_000:
            raise HTTPException(422, "limit: expected 1..10000")
        entries = await asyncio.to_thread(need_controller().audit, limit)
        return [e.to_dict() for e in entries]

    @api.post("/pause")
    async def pause(body: Action) -> dict[str, Any]:
        return await act("pause", operator=body.operator, reason=body.reason or "paused")

    @api.post("/resume")
    async def resume(body: Action) -> dict[str, Any]:
        return await act("resume", operator=body.operator, reason=body.reason or "resumed")

    @api.post("/promote")
    async def promote(body: LayerAction) -> dict[str, Any]:
        return await act("promote", layer=body.layer, operator=body.operator,
                         reason=body.reason or "promoted by a human")  # fmt: skip

    @api.post("/rollback")
    async def rollback(body: Action) -> dict[str, Any]:
        return await act("rollback", operator=body.operator,
                         reason=body.reason or "rolled back by a human")  # fmt: skip

    @api.post("/restart")
    async def restart(body: Action) -> dict[str, Any]:
        return await act("restart", operator=body.operator,
                         reason=body.reason or "restarted by a human")  # fmt: skip

    @api.post("/ratio")
    async def ratio(body: RatioAction) -> dict[str, Any]:
        return await act("set_ratio", layer=body.layer, ratio=body.ratio,
                         operator=body.operator, reason=body.reason)  # fmt: skip

    @api.put("/profiles/{user_id}")
    async def put_profile(user_id: str, profile: UserProfile) -> dict[str, Any]:
        checked("user_id", user_id)
        await asyncio.to_thread(router.store.put_profile, user_id, profile)
        return {"user_id": user_id, "stored": True}

    @api.post("/consent/{user_id}")
    async def consent(user_id: str, body: Consent) -> dict[str, Any]:
        checked("user_id", user_id)
        current = await asyncio.to_thread(router.store.get_profile, user_id)
        updated = (current or UserProfile()).model_copy(update={"allow_gray": body.allow_gray})
        await asyncio.to_thread(router.store.put_profile, user_id, updated)
        return {"user_id": user_id, "allow_gray": body.allow_gray}

    @api.get("/route/{user_id}")
    async def route(user_id: str, session_id: str | None = None) -> dict[str, Any]:
        checked("user_id", user_id), checked("session_id", session_id)
        decision = await asyncio.to_thread(router.route, user_id, session_id)
        data = {k: getattr(v, "value", v) for k, v in asdict(decision).items()}
        return {**data, "explanation": decision.explain()}

    app.include_router(api)

    async def dashboard(request: Request) -> HTMLResponse:
        page = (
            resources.files("langchain_graylayer.serve")
            .joinpath("dashboard.html")
            .read_text("utf-8")
        )
        mounted = request.scope.get("root_path", "")  # where a sub-app is mounted
        return HTMLResponse(page.replace("__API__", f"{mounted}{root}/api"))

    for page_path in dict.fromkeys([root or "/", f"{root}/"]):
        app.add_api_route(page_path, dashboard, include_in_schema=False)

    @app.exception_handler(ConfigurationError)
    async def bad_input(_: Any, exc: ConfigurationError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(StoreError)
    async def store_down(_: Any, exc: StoreError) -> JSONResponse:
        detail = f"the store is unavailable, nothing was read or changed: {exc}"
        return JSONResponse({"detail": detail, "store": "unavailable"}, status_code=503)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float spelled as a string (JSON has no such
    numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
