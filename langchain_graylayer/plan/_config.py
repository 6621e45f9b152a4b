"""The base of every configuration model: frozen, strict about unknown fields, clear errors;
and bounded YAML loading (:func:`load_yaml`)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import yaml
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

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise to_configuration_error(exc) from None


MAX_YAML_BYTES = 1024 * 1024
"""The largest YAML document :func:`load_yaml` reads (1 MiB; a plan is a few kB)."""

MAX_YAML_NODES = 100_000
"""The most values a YAML document may hold once its aliases are expanded (a plan: hundreds)."""


def load_yaml(
    text: str | bytes,
    *,
    field: str = "<yaml>",
    max_bytes: int = MAX_YAML_BYTES,
    max_nodes: int = MAX_YAML_NODES,
) -> Any:
    """Parse ``text`` (bytes: UTF-8) as YAML, safe tags only, within bounds that fail fast.

    A YAML alias is a reference, so a few lines of anchors (a "billion laughs") can stand for
    billions of values that whatever walks the result (validation, printing) would visit. The
    document is composed first and its values counted with every alias expanded (shared nodes
    counted once per use, memoised, so counting is linear in the document's size).

    Raises:
        ConfigurationError: invalid YAML or UTF-8, more than ``max_bytes`` bytes, nesting too
            deep to parse, or more than ``max_nodes`` values after alias expansion; the message
            names the limit.

    Example:
        >>> load_yaml("a: &x [1, 2]\\nb: *x")
        {'a': [1, 2], 'b': [1, 2]}
    """
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise ConfigurationError(
            field, f"more than {max_bytes} bytes", f"a YAML document of at most {max_bytes} "
            "bytes (max_bytes)"
        )  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(field, "<yaml>", f"UTF-8 text ({exc})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigurationError(field, "<yaml>", f"valid YAML ({exc})") from None
    except RecursionError:
        raise ConfigurationError(field, "<yaml>", "YAML nested less deeply") from None
    if root is None:
        return None
    expanded = _expanded_size(root, max_nodes)
    if expanded > max_nodes:
        raise ConfigurationError(
            field,
            f"more than {max_nodes} values once its aliases are expanded",
            f"at most {max_nodes} values after alias expansion (max_nodes); "
            "a YAML alias that repeats a large anchor many times is refused",
        )
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many values ``root`` stands for with its aliases expanded, counted up to just past
    ``limit`` (then the count stops growing: the caller only compares)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again is a cycle
    # Post-order without recursion: a node's size is known once its children's are.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done and children:
            if id(node) in open_nodes:
                return limit + 1  # a recursive anchor (&a [*a]) stands for infinitely many
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        open_nodes.discard(id(node))
        total = 1 + sum(sizes.get(id(child), 0) for child in children)
        sizes[id(node)] = min(total, limit + 1)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
