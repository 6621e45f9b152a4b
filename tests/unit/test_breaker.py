"""The circuit breaker's state machine, from a table of event sequences; and its thread safety."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest

from langchain_graylayer.errors import StoreError, StoreUnavailableError
from langchain_graylayer.store.breaker import BreakerState, CircuitBreaker

# Events: ``ok`` a call that answers at once; ``slow`` one that answers after 60 ms (the
# threshold is 50 ms); ``fail`` one that raises; ``wait`` the reset timeout passes; ``poke``
# a caller asks whether the store is available (as the background writer does).
# ``probe``: None (the next call is the trial) or the outcomes of successive background probes.
# Expected: the state, and the counters (opened, refused, failed).
CASES: list[tuple[str, list[str] | None, str, str, tuple[int, int, int]]] = [
    ("closed while calls answer", None, "ok ok ok ok", "closed", (0, 0, 0)),
    ("a failure or two stay closed", None, "fail ok fail fail", "closed", (0, 0, 3)),
    ("three failures in a row open it", None, "fail fail fail", "open", (1, 0, 3)),
    ("slow answers count as failures", None, "slow slow slow", "open", (1, 0, 3)),
    ("slow and failed mix", None, "slow fail slow", "open", (1, 0, 3)),
    ("a success resets the run", None, "fail fail ok fail fail", "closed", (0, 0, 4)),
    ("open refuses calls", None, "fail fail fail ok ok", "open", (1, 2, 3)),
    ("no probe: the trial call closes it", None, "fail fail fail wait ok", "closed", (1, 0, 3)),
    ("no probe: a failed trial reopens", None, "fail fail fail wait fail ok", "open", (1, 1, 4)),
    ("no probe: a slow trial reopens", None, "fail fail fail wait slow", "open", (1, 0, 4)),
    ("no probe: reopened, closes later", None, "fail fail fail wait fail wait ok", "closed",
     (1, 0, 4)),
    ("not before the reset timeout", None, "fail fail fail ok", "open", (1, 1, 3)),
    ("probe: the call is refused, the probe closes", ["ok"], "fail fail fail wait ok", "closed",
     (1, 1, 3)),
    ("probe: a failed probe keeps it open", ["fail"], "fail fail fail wait ok ok", "open",
     (1, 2, 4)),
    ("probe: a slow probe keeps it open", ["slow"], "fail fail fail wait ok", "open", (1, 1, 4)),
    ("probe: a poke starts it", ["ok"], "fail fail fail wait poke ok", "closed", (1, 0, 3)),
    ("probe: second probe closes", ["fail", "ok"], "fail fail fail wait poke wait poke ok",
     "closed", (1, 0, 4)),
    ("reopening counts once per outage", None, "fail fail fail wait fail wait fail", "open",
     (1, 0, 5)),
    ("two outages open twice", None, "fail fail fail wait ok fail fail fail", "open", (2, 0, 6)),
]  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, probes: list[str] | None) -> CircuitBreaker:
    probe: Callable[[], Any] | None = None
    if probes is not None:
        outcomes = list(probes)

        def probe() -> None:
            act(clock, outcomes.pop(0))

    return CircuitBreaker(
        failures=3, slow_call=0.05, reset_timeout=1.0, probe=probe, clock=clock,
        start=lambda run: run(),  # the probe runs inline: the table sees its outcome at once
    )  # fmt: skip


def act(clock: Clock, outcome: str) -> str:
    if outcome == "slow":
        clock.now += 0.06
    elif outcome == "fail":
        raise OSError("timed out")
    return "answer"


@pytest.mark.parametrize(("name", "probes", "events", "state", "counters"), CASES)
def test_state_machine(
    name: str, probes: list[str] | None, events: str, state: str, counters: tuple[int, int, int]
) -> None:
    clock = Clock()
    breaker = _breaker(clock, probes)
    for event in events.split():
        if event == "wait":
            clock.now += 1.0
        elif event == "poke":
            breaker.available()
        else:
            with contextlib.suppress(OSError, StoreUnavailableError):
                assert breaker.call(act, clock, event) == "answer"
    assert breaker.state is BreakerState(state), name
    snapshot = breaker.snapshot()
    assert (snapshot["opened"], snapshot["refused"], snapshot["failed"]) == counters, name


def test_a_refused_call_is_a_store_error_and_never_runs() -> None:
    clock, ran = Clock(), []
    breaker = _breaker(clock, None)
    for _ in range(3):
        with pytest.raises(OSError, match="timed out"):
            breaker.call(act, clock, "fail")
    with pytest.raises(StoreError, match="circuit breaker open"):
        breaker.call(ran.append, 1)
    assert ran == []


def test_an_answer_to_a_call_from_before_the_change_is_ignored() -> None:
    clock = Clock()
    breaker = _breaker(clock, None)
    started_closed = 0  # the generation a call admitted now gets
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    breaker.settle(started_closed, ok=True)  # a call that was waiting finally answers
    assert breaker.state is BreakerState.OPEN


def test_threads_see_one_probe_and_consistent_counters() -> None:
    clock, probes, gate = Clock(), [], threading.Event()

    def probe() -> None:
        probes.append(1)
        gate.wait(5)

    breaker = CircuitBreaker(failures=3, reset_timeout=1.0, probe=probe, clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 1.0
    calls, refused = 400, []

    def hammer() -> None:
        for _ in range(calls):
            try:
                breaker.call(lambda: None)
            except StoreUnavailableError:
                refused.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(probes) == 1  # half open: one probe in flight, however many callers
    assert breaker.state is BreakerState.HALF_OPEN
    assert len(refused) == breaker.refused == 8 * calls
    gate.set()
    for _ in range(500):  # the probe answers in a background thread
        if breaker.state is BreakerState.CLOSED:
            break
        threading.Event().wait(0.01)
    assert breaker.state is BreakerState.CLOSED
