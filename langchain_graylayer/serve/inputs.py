"""What graylayer's HTTP routes accept: identity ids, body sizes, finite numbers.

* **Identity ids.** A user id or session id is a Unicode string of at most
  :data:`MAX_ID_LENGTH` characters, compared exactly (no case folding, no normalisation). In the
  identity headers it travels as UTF-8 bytes (what curl, ``requests`` and most servers send); in
  a URL path (the admin API's ``/profiles/{user_id}``) as percent-encoded UTF-8, which every HTTP
  client produces. Both decode to the same string, so a profile or an opt-out stored through the
  admin API applies to that user's requests. A header that is not valid UTF-8, or an id that is
  too long, is refused with a 400 naming the header.
* **Body size.** :class:`BodyLimit` refuses a request body over its limit with a 413 and a JSON
  body, whether the client announced a ``Content-Length`` or streamed a chunked body.
* **Finite numbers.** JSON parsed by Python accepts ``NaN`` and ``Infinity``. :data:`FiniteFloat`
  and :class:`InputModel` refuse them (422), and :func:`validation_error_handler` answers 422 for
  any body that fails validation, even when the error has to quote a ``NaN``.
"""

# No "from __future__ import annotations": pydantic resolves the annotations of InputModel.

import json
import math
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_ID_LENGTH",
    "BadInput",
    "BodyLimit",
    "FiniteFloat",
    "InputModel",
    "check_id",
    "id_from_header",
    "json_safe",
    "oversized_int",
    "send_json",
    "validation_error_handler",
]

MAX_ID_LENGTH = 256
"""The longest user id or session id accepted, in characters."""

MAX_BODY_BYTES = 1024 * 1024
"""The default limit of a request body to graylayer's routes (1 MiB)."""

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A float that may not be ``NaN`` or infinite (a 422 names the field)."""


class InputModel(BaseModel):
    """Base of request bodies: unknown fields ignored, ``NaN`` and infinities refused."""

    model_config = ConfigDict(allow_inf_nan=False)


class BadInput(Exception):
    """A request refused before anything ran: its status and the message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def check_id(field: str, value: str) -> str:
    """``value`` if it is a usable identity id, else :class:`BadInput` (400) naming ``field``."""
    if len(value) > MAX_ID_LENGTH:
        raise BadInput(
            400, f"{field}: got {len(value)} characters; expected at most {MAX_ID_LENGTH}"
        )
    return value


def id_from_header(name: str, raw: bytes) -> str | None:
    """The id in a header's raw bytes (UTF-8), ``None`` when empty.

    Raises:
        BadInput: not UTF-8, or too long.
    """
    if not raw:
        return None
    if len(raw) > 4 * MAX_ID_LENGTH:  # no need to decode a megabyte to refuse it
        raise BadInput(400, f"{name}: got {len(raw)} bytes; expected at most {MAX_ID_LENGTH} "
                            "characters")  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(400, f"{name}: not valid UTF-8; send identity ids as UTF-8 bytes") from None
    return check_id(name, text)


def oversized_int(value: Any) -> tuple[str | int, ...] | None:
    """Where in a parsed JSON ``value`` an integer lies outside the signed/unsigned 64-bit range
    (which LangServe's serializer cannot write back, a 500), or ``None``."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not -(2**63) <= item < 2**64:
                return loc
        elif isinstance(item, dict):
            stack.extend((v, (*loc, str(k))) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(item))
    return None


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its name (``"NaN"``, ``"Infinity"``),
    so it renders as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


async def validation_error_handler(_: Any, exc: Any) -> Any:
    """FastAPI's 422 for a request that failed validation, safe for inputs that quote ``NaN``
    (FastAPI's own handler fails to render them, and answers 500)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    errors = json_safe(jsonable_encoder(exc.errors()))
    return JSONResponse({"detail": errors}, status_code=422)


async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    """Answer an ASGI request with ``body`` as JSON, from a middleware."""
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """Pure ASGI middleware: request bodies under ``prefixes`` are read whole, up to
    ``max_bytes``, before the route runs; a larger one is refused with a 413 and nothing runs.

    Counting what arrives (not trusting ``Content-Length``) makes the limit hold for chunked
    bodies too. After the body, the route's ``receive`` is the server's again, so it still hears
    a client that disconnects.
    """

    def __init__(self, app: Any, *, max_bytes: int, prefixes: Iterable[str]) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.prefixes = tuple(p.rstrip("/") + "/" for p in prefixes)

    def _too_large(self, size: int) -> dict[str, Any]:
        return {"detail": f"request body: got more than {self.max_bytes} bytes ({size} so far); "
                          f"expected at most {self.max_bytes} (max_body_bytes)",
                "max_body_bytes": self.max_bytes}  # fmt: skip

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path + "/").startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_json(send, 413, self._too_large(int(value)))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the route hear it
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await send_json(send, 413, self._too_large(size))
                return
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    """A ``receive`` that returns ``messages`` first, then what the server sends."""
    pending = list(messages)

    async def replay() -> dict[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replay
