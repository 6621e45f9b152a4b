"""``CircuitBreaker``: stop asking a store that hangs; find out in the background when it is back.

A hung store (a ``SIGSTOP``-ed or overloaded Redis, a black-holed network) does not refuse
calls: it lets each one wait for its socket timeout. The breaker counts slow and failed calls;
after ``failures`` in a row it *opens*, and calls are refused at once
(:class:`~langchain_graylayer.errors.StoreUnavailableError`) so the caller can serve what it
already knows. After ``reset_timeout`` seconds it goes *half open*: one probe — in a background
thread when a ``probe`` is given, so no request waits on it; otherwise the next call — decides
whether it closes again or stays open for another ``reset_timeout``::

    CLOSED ──(failures slow or failed calls in a row)──▶ OPEN ──(reset_timeout)──▶ HALF_OPEN
      ▲                                                   ▲                          │
      └──────────────────(the probe answers in time)──────┼──────────────────────────┘
                                                          └───(the probe fails or is slow)

Outcomes of calls admitted before the last change of state are ignored: a call that was
already waiting when the breaker opened cannot close it by finally answering.

Hand-written rather than taken from ``pybreaker`` or ``purgatory``: both count exceptions only
(not calls that answer, but late), and in half-open state both let a caller's call through as
the trial, where graylayer probes off the request path; pybreaker's async support needs
tornado. What is needed fits in this module, thread-safe, with an injectable clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from langchain_graylayer.errors import StoreUnavailableError

__all__ = ["BreakerState", "CircuitBreaker"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BreakerState(StrEnum):
    """Where a :class:`CircuitBreaker` is."""

    CLOSED = "closed"
    """Calls go through."""
    OPEN = "open"
    """Calls are refused at once."""
    HALF_OPEN = "half_open"
    """One probe is out; calls are refused until it answers."""


def _in_thread(probe: Callable[[], None]) -> None:
    threading.Thread(target=probe, name="graylayer-breaker-probe", daemon=True).start()


class CircuitBreaker:
    """Refuse calls after ``failures`` slow or failed ones in a row; probe to close.

    Example:
        >>> now = [0.0]
        >>> breaker = CircuitBreaker(failures=2, reset_timeout=1.0, clock=lambda: now[0])
        >>> def fail() -> None:
        ...     raise OSError("timed out")
        >>> for _ in range(2):
        ...     try:
        ...         breaker.call(fail)
        ...     except OSError:
        ...         pass
        >>> breaker.state
        <BreakerState.OPEN: 'open'>
        >>> breaker.call(lambda: "ok")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        StoreUnavailableError: ...
        >>> now[0] += 1.0  # without a probe, the next call is the trial
        >>> breaker.call(lambda: "ok"), breaker.state
        ('ok', <BreakerState.CLOSED: 'closed'>)
    """

    def __init__(
        self,
        *,
        failures: int = 3,
        slow_call: float = 0.05,
        reset_timeout: float = 1.0,
        probe: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: Callable[[Callable[[], None]], None] = _in_thread,
        name: str = "store",
    ) -> None:
        """Args:
        failures: Slow or failed calls in a row that open the breaker.
        slow_call: A call that takes this many seconds or more counts as a failure, even
            when it answers.
        reset_timeout: Seconds the breaker stays open before it probes.
        probe: Called (in a background thread, through ``start``) to test the store while
            half open; ``None``: the next call is the trial.
        clock: Monotonic seconds.
        start: Runs the probe; a background thread unless a test runs it inline.
        name: What is protected, for the log.
        """
        self.failures = failures
        self.slow_call = slow_call
        self.reset_timeout = reset_timeout
        self.probe = probe
        self.name = name
        self._clock = clock
        self._start = start
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._changed_at = clock()
        self._in_a_row = 0
        self.opened = 0
        """Times the breaker opened."""
        self.refused = 0
        """Calls refused while open or half open."""
        self.failed = 0
        """Slow or failed calls counted (in the state they were admitted in)."""

    @property
    def state(self) -> BreakerState:
        return self._state

    def available(self) -> bool:
        """True when calls go through; when open long enough, starts the half-open probe."""
        return self._admit(count_refusal=False) is not None

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` when the breaker lets it through; its time and outcome counted.

        Raises:
            StoreUnavailableError: the breaker is open (``function`` is not called).
        """
        generation = self._admit(count_refusal=True)
        if generation is None:
            raise StoreUnavailableError(f"{self.name} unavailable: circuit breaker open")
        started = self._clock()
        try:
            result = function(*args)
        except BaseException:
            self.settle(generation, ok=False)
            raise
        self.settle(generation, ok=self._clock() - started < self.slow_call)
        return result

    def settle(self, generation: int, *, ok: bool) -> None:
        """Count the outcome of a call admitted in ``generation`` (ignored if the state changed
        since)."""
        with self._lock:
            if generation != self._generation:
                return
            if ok:
                self._in_a_row = 0
                if self._state is BreakerState.HALF_OPEN:
                    self._move(BreakerState.CLOSED)
                return
            self.failed += 1
            self._in_a_row += 1
            if self._state is BreakerState.HALF_OPEN or self._in_a_row >= self.failures:
                self._move(BreakerState.OPEN)

    def record_failure(self) -> None:
        """Count a failure seen outside :meth:`call` (e.g. by a background writer)."""
        self.settle(self._generation, ok=False)

    def snapshot(self) -> dict[str, Any]:
        """State, seconds in it, and the counters (for health endpoints)."""
        with self._lock:
            return {
                "state": self._state.value,
                "seconds_in_state": round(self._clock() - self._changed_at, 3),
                "opened": self.opened,
                "refused": self.refused,
                "failed": self.failed,
            }

    # ------------------------------------------------------------------------- internals
    def _admit(self, *, count_refusal: bool) -> int | None:
        """The generation a call is admitted in, or ``None`` when refused."""
        probe = None
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return self._generation
            if (
                self._state is BreakerState.OPEN
                and self._clock() - self._changed_at >= self.reset_timeout
            ):
                self._move(BreakerState.HALF_OPEN)
                if self.probe is None:
                    return self._generation  # this call is the trial
                probe = self._probing(self._generation)
            if count_refusal:
                self.refused += 1
        if probe is not None:  # outside the lock: the probe settles through it
            self._start(probe)
        return None

    def _probing(self, generation: int) -> Callable[[], None]:
        probe = self.probe
        assert probe is not None

        def run() -> None:
            started = self._clock()
            try:
                probe()
            except Exception:
                self.settle(generation, ok=False)
                return
            self.settle(generation, ok=self._clock() - started < self.slow_call)

        return run

    def _move(self, state: BreakerState) -> None:
        previous, self._state = self._state, state
        self._generation += 1
        self._changed_at = self._clock()
        self._in_a_row = 0
        if state is BreakerState.OPEN:
            self.opened += previous is BreakerState.CLOSED
            if previous is BreakerState.CLOSED:
                logger.warning(
                    "%s: circuit breaker open after %d slow or failed calls; serving the last "
                    "known state, probing every %g s",
                    self.name, self.failures, self.reset_timeout,
                )  # fmt: skip
        elif state is BreakerState.CLOSED:
            logger.warning("%s: circuit breaker closed: the store answers again", self.name)
