"""Exceptions raised by langchain-graylayer.

Every exception derives from :class:`GraylayerError`::

    GraylayerError
    ├── ConfigurationError (also a ValueError)   an invalid plan, rule or argument
    ├── StoreError                               the state store could not be read or written
    │   └── StoreUnavailableError                not asked: its circuit breaker is open
    ├── UnknownRunError (also a LookupError)     feedback for a run id unknown or expired
    ├── InvalidFeedbackTokenError                a feedback token forged, expired or for another
    │   │                                        run
    │   └── FeedbackTokenReusedError             a feedback token already used
    ├── ControllerBusyError                      another writer holds the plan's write lock
    ├── PlanStateError                           not possible in the plan's state (e.g. a ratio
    │                                            on a rolled-back plan before a restart)
    └── AdminAPIError                            the admin API could not be reached, or refused

A user request never fails because of graylayer: the router catches ``StoreError`` (and anything
else that goes wrong while routing), logs it, counts it and serves the stable version.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdminAPIError",
    "ConfigurationError",
    "ControllerBusyError",
    "FeedbackTokenReusedError",
    "GraylayerError",
    "InvalidFeedbackTokenError",
    "PlanStateError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownRunError",
    "add_note",
]


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (where tracebacks do not print notes)."""
    notes = list(getattr(exc, "__notes__", []))
    notes.append(note)
    setattr(exc, "__notes__", notes)  # noqa: B010 - add_note() does not exist on 3.10


class GraylayerError(Exception):
    """Base class of every error raised by langchain-graylayer."""


class ConfigurationError(GraylayerError, ValueError):
    """An invalid plan or argument, naming the field, the value and what would be valid.

    Example:
        >>> err = ConfigurationError("layers[1].steps", [0.5, 0.1], "increasing values in (0, 1]")
        >>> str(err)
        'layers[1].steps: got [0.5, 0.1]; expected increasing values in (0, 1]'
    """

    def __init__(self, field: str, value: Any, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}: got {value!r}; expected {expected}")


class StoreError(GraylayerError):
    """The state store (memory, Redis, ...) failed to read or write."""


class StoreUnavailableError(StoreError):
    """The store was not asked: its circuit breaker is open after slow or failed calls (the
    request path then serves this replica's last known state, or stable)."""


class UnknownRunError(GraylayerError, LookupError):
    """Feedback names a run id this router did not route, or whose record has expired.

    Such feedback is rejected, never counted against a guessed version.
    """


class InvalidFeedbackTokenError(GraylayerError):
    """A feedback token that is forged, expired, for another run, or already used."""


class FeedbackTokenReusedError(InvalidFeedbackTokenError):
    """A valid feedback token that was already used: feedback counts once."""


class ControllerBusyError(GraylayerError):
    """Another writer holds the plan's write lock; nothing was changed. Retry shortly."""


class PlanStateError(GraylayerError):
    """A human command that the plan's state does not allow (e.g. promoting a rolled-back plan:
    restart it first). Nothing was changed."""


class AdminAPIError(GraylayerError):
    """The admin API could not be reached, or refused the request."""
