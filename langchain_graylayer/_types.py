"""Small types shared by every layer: the clock and a request's identity."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

__all__ = ["Clock", "Identity", "posix_clock"]

Clock = Callable[[], float]
"""A function returning the current time as POSIX seconds (``time.time`` by default)."""

Identity = tuple[str | None, str | None]
"""A request's ``(user_id, session_id)``; either may be missing."""


def posix_clock(clock: Callable[[], Any], field: str = "clock") -> Clock:
    """``clock`` as a function returning POSIX seconds: it may return a number or a ``datetime``
    (naive ones are UTC). Called once here, so a wrong clock fails now, not at the first request.

    Raises:
        ConfigurationError: ``clock`` is not callable, or returns something else.

    Example:
        >>> from datetime import datetime, timezone
        >>> posix_clock(lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))()
        1767225600.0
    """
    from langchain_graylayer.errors import ConfigurationError

    expected = "a function returning POSIX seconds (time.time) or a datetime"
    if not callable(clock):
        raise ConfigurationError(field, clock, expected)
    value = clock()
    if isinstance(value, datetime):
        return lambda: _timestamp(clock())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(field, value, expected)
    return clock


def _timestamp(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
