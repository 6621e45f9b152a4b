"""Small types shared by every layer: the clock and a request's identity."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Clock", "Identity"]

Clock = Callable[[], float]
"""A function returning the current time as POSIX seconds (``time.time`` by default)."""

Identity = tuple[str | None, str | None]
"""A request's ``(user_id, session_id)``; either may be missing."""
