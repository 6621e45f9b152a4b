"""The base of every configuration model: frozen, strict about unknown fields, clear errors."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from langchain_graylayer.errors import ConfigurationError, add_note

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any) -> Any:
    """Accept seconds (``3600``) or a duration (``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"a duration such as 3600, '90s', '30m', '24h' or '7d', not {value!r}")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    return value


class _Missing:
    def __repr__(self) -> str:
        return "nothing"


_MISSING = _Missing()


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""A positive duration in seconds; YAML may also say ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``."""

Delay = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""A duration in seconds that may be zero (``"0s"``, ``"6h"``)."""


def _loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def to_configuration_error(exc: ValidationError, prefix: str = "") -> ConfigurationError:
    """Turn pydantic's first error into a ConfigurationError naming field, value and expectation."""
    first = exc.errors()[0]
    field = _loc(tuple(first["loc"]))
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigurationError):
        inner = "" if cause.field in ("<root>", field) else cause.field
        sep = "" if inner.startswith("[") else "."
        field = f"{field}{sep}{inner}" if field and inner else (field or inner)
        value, expected = cause.value, cause.expected
    else:
        value = first.get("input")
        expected = first["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
        if first["type"] == "extra_forbidden":
            expected = "no such field (check the spelling)"
        elif first["type"] == "missing":
            value, expected = _MISSING, "a value (the field is required)"
    field = ".".join(p for p in (prefix, field) if p) or "<root>"
    error = ConfigurationError(field, value, expected)
    if len(exc.errors()) > 1:
        add_note(error, f"{len(exc.errors()) - 1} more problem(s):\n{exc}")
    return error


class ConfigModel(BaseModel):
    """Frozen pydantic model whose validation errors are :class:`ConfigurationError`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise to_configuration_error(exc) from None
