"""The agent's HTTP routes: LangServe's when installed, else a plain FastAPI invoke and stream;
and ``POST {path}/feedback`` with signed, single-use tokens. Used by
:func:`~langchain_graylayer.serve.add_gray_routes`.
"""

# No "from __future__ import annotations": FastAPI must resolve the route signatures,
# whose models are defined inside the mount functions.

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from langchain_graylayer.errors import (
    ConfigurationError,
    FeedbackTokenReusedError,
    InvalidFeedbackTokenError,
    StoreError,
    UnknownRunError,
)
from langchain_graylayer.measuring.feedback import FeedbackKind
from langchain_graylayer.serve.inputs import FiniteFloat, InputModel, oversized_int

if TYPE_CHECKING:
    from fastapi import FastAPI

    from langchain_graylayer.measuring.feedback import FeedbackSigner
    from langchain_graylayer.routing.router import GrayRouter

__all__ = ["check_input", "jsonable", "mount_agent"]


def jsonable(value: Any) -> Any:
    """A JSON-ready form of an agent's output (messages, pydantic models, LangGraph states)."""
    from langchain_core.load import dumpd
    from langchain_core.load.serializable import Serializable

    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Serializable):
        return dumpd(value)
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump())
    return str(value)


def mount_agent(
    app: "FastAPI",
    router: "GrayRouter[Any, Any]",
    path: str,
    modifier: Callable[[dict[str, Any], Any], Awaitable[dict[str, Any]]],
    signer: "FeedbackSigner",
    use_langserve: bool | None,
) -> None:
    """Mount the agent routes and the feedback route under ``path``."""
    if use_langserve is None:
        try:
            import langserve  # noqa: F401
        except ImportError:
            use_langserve = False
        else:
            use_langserve = True
    if use_langserve:
        from fastapi import Depends
        from langserve import add_routes

        add_routes(
            app,
            router,
            path=path,
            dependencies=[Depends(_input_check(router))],
            per_req_config_modifier=modifier,
            enabled_endpoints=[
                "invoke", "batch", "stream", "stream_events", "playground",
                "input_schema", "output_schema", "config_schema",
            ],
        )  # fmt: skip
    else:
        _mount_plain(app, router, path, modifier)
    _mount_feedback(app, router, path, signer)


def check_input(schema: Any, value: Any, loc: tuple[str | int, ...]) -> None:
    """Validate an agent input as LangServe does, but as a 422 whatever fails.

    Raises:
        RequestValidationError: the input does not fit the agent's input schema; a validator
            that raised something else than a ``ValidationError`` (e.g. LangChain's message
            coercion, a ``TypeError``) is also the client's input, never a 500.
    """
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    try:
        schema.model_validate(value)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": (*loc, *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    except (TypeError, ValueError, LookupError, AttributeError) as exc:
        error = {"type": "value_error", "loc": loc, "msg": f"{type(exc).__name__}: {exc}"}
        raise RequestValidationError([error]) from None


def _input_check(router: "GrayRouter[Any, Any]") -> Callable[[Any], Awaitable[None]]:
    """A dependency of the LangServe routes: their inputs are checked before LangServe's own
    validation, which lets a batch's bad input or a raising validator escape as a 500."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError

    schema = router.get_input_schema()

    async def checked(request: Request) -> None:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        if request.method != "POST" or endpoint not in _RUNS:
            return
        try:
            body = await request.json()
        except ValueError:  # LangServe's 422 too, except that bytes not UTF-8 escaped as a 500
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body",), "msg": "Invalid JSON body (UTF-8)"}]
            ) from None
        if not isinstance(body, dict):
            return
        where = oversized_int(body)
        if where is not None:
            raise RequestValidationError([{"type": "int_too_big", "loc": ("body", *where),
                                           "msg": "an integer within 64 bits"}])  # fmt: skip
        if "config" in body and body["config"] is None:  # LangServe's invoke: a TypeError
            raise RequestValidationError([_not_an_object(("body", "config"))])
        if endpoint == "batch":
            inputs = body.get("inputs")
            if "inputs" in body and not isinstance(inputs, list):  # LangServe: a TypeError
                raise RequestValidationError([{"type": "list_type", "loc": ("body", "inputs"),
                                               "msg": "Input should be a valid list"}])  # fmt: skip
            for i, value in enumerate(inputs or []):
                check_input(schema, value, ("body", "inputs", i))
        elif "input" in body:
            check_input(schema, body["input"], ("body", "input"))

    return checked


def _not_an_object(loc: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "dict_type", "loc": loc, "msg": "Input should be a valid dictionary"}


_RUNS = ("invoke", "batch", "stream", "stream_log", "stream_events")
"""The LangServe endpoints that run the agent on a body's input(s)."""


def _mount_plain(
    app: "FastAPI",
    router: "GrayRouter[Any, Any]",
    path: str,
    modifier: Callable[[dict[str, Any], Any], Awaitable[dict[str, Any]]],
) -> None:
    from fastapi import Request
    from fastapi.responses import StreamingResponse
    from pydantic import Field

    class Call(InputModel):
        input: Any
        config: dict[str, Any] = Field(default_factory=dict)

    schema: Any = router.get_input_schema()

    async def config_of(call: Call, request: Request) -> dict[str, Any]:
        check_input(schema, call.input, ("body", "input"))  # as LangServe: a 422, nothing runs
        config = {"configurable": dict(call.config.get("configurable") or {})}
        return await modifier(config, request)

    @app.post(f"{path}/invoke")
    async def invoke(call: Call, request: Request) -> dict[str, Any]:
        config = await config_of(call, request)
        output = await router.ainvoke(call.input, config)  # type: ignore[arg-type]
        return {"output": jsonable(output), "metadata": {"run_id": str(config.get("run_id"))}}

    @app.post(f"{path}/stream")
    async def stream(call: Call, request: Request) -> StreamingResponse:
        config = await config_of(call, request)
        metadata = f"event: metadata\ndata: {json.dumps({'run_id': str(config.get('run_id'))})}\n\n"

        async def events() -> AsyncIterator[str]:
            # Metadata after the first chunk, as LangServe does: the headers go out with the
            # first bytes, and by then the router has recorded the run (its feedback token).
            sent = False
            try:
                async for chunk in router.astream(call.input, config):  # type: ignore[arg-type]
                    if not sent:
                        sent = True
                        yield metadata
                    yield f"event: data\ndata: {json.dumps(jsonable(chunk))}\n\n"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the agent failed: tell the client, in-band
                error = {"status_code": 500, "message": f"{type(exc).__name__}: {exc}"}
                yield f"{'' if sent else metadata}event: error\ndata: {json.dumps(error)}\n\n"
                sent = True
            yield f"{'' if sent else metadata}event: end\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def _mount_feedback(
    app: "FastAPI", router: "GrayRouter[Any, Any]", path: str, signer: "FeedbackSigner"
) -> None:
    from fastapi import Header, HTTPException
    from pydantic import Field

    class Feedback(InputModel):
        run_id: str = Field(min_length=1, max_length=100)
        kind: FeedbackKind | None = None
        score: FiniteFloat | None = Field(default=None, ge=0, le=10)
        token: str | None = Field(default=None, max_length=2000)

    @app.post(f"{path}/feedback", status_code=202)
    async def feedback(
        body: Feedback, x_feedback_token: str | None = Header(default=None)
    ) -> dict[str, Any]:
        token = body.token or x_feedback_token
        if not token:
            raise HTTPException(401, "a feedback token is required (the X-Feedback-Token header "
                                     "of the response that served the run)")  # fmt: skip
        if body.kind is None and body.score is None:
            raise HTTPException(422, "give a kind, a score, or both")
        try:
            labels = await asyncio.to_thread(
                router.feedback_recorder.for_token,
                signer, router.store, token, body.run_id, body.kind, body.score,
            )  # fmt: skip
        except FeedbackTokenReusedError as exc:
            raise HTTPException(409, f"feedback refused: {exc}") from None
        except InvalidFeedbackTokenError as exc:
            raise HTTPException(401, f"feedback refused: {exc}") from None
        except UnknownRunError as exc:
            raise HTTPException(404, f"feedback refused: {exc}") from None
        except ConfigurationError as exc:
            raise HTTPException(422, str(exc)) from None
        except StoreError as exc:
            raise HTTPException(503, f"feedback not recorded, try again later: {exc}") from None
        return {"accepted": True, "version": labels.version, "layer": labels.layer}
