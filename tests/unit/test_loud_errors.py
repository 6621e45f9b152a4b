"""What a newcomer gets wrong is said at once and plainly: a missing user id, a clock of the
wrong kind, positional arguments, two clocks that disagree."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_graylayer import (
    ConfigurationError,
    GrayRouter,
    MemoryStore,
    RolloutController,
    RolloutPlan,
    UserProfile,
)
from langchain_graylayer.plan import LayerScorer

PLAN = RolloutPlan.default("loud")
ECHO = RunnableLambda(lambda q: q)


def router(**kwargs: Any) -> GrayRouter[Any, Any]:
    return GrayRouter(stable=ECHO, candidate=ECHO, plan=PLAN, instrument=False, **kwargs)


def test_a_missing_user_id_is_logged_with_the_keys_that_were_there(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = router()
    with caplog.at_level(logging.WARNING, "langchain_graylayer"):
        r.invoke("hi", {"configurable": {"userid": "u1", "thread_id": "t"}})  # a typo
        r.invoke("hi", {"configurable": {"userid": "u2"}})
    warnings = [rec.getMessage() for rec in caplog.records if "user_id" in rec.getMessage()]
    assert len(warnings) == 1  # rate-limited
    assert "['thread_id', 'userid']" in warnings[0]
    assert r.counts()["unrouted"] == 2
    assert r.recent_counts()["unrouted"] == 2


def test_unrouted_does_not_count_degraded() -> None:
    class Down(MemoryStore):
        def get_profile(self, user_id: str) -> UserProfile | None:
            raise OSError("down")

    r = router(store=Down())
    r.invoke("hi", {"configurable": {"user_id": "u1"}})
    r.invoke("hi", {})
    assert r.counts() == {"requests": 2, "unrouted": 1, "degraded": 1, "stale": 0, "fallback": 0}


@pytest.mark.parametrize(
    "clock",
    [lambda: datetime(2026, 11, 23, 12, tzinfo=timezone.utc), lambda: datetime(2026, 11, 23, 12)],
)
def test_a_clock_may_return_a_datetime(clock: Any) -> None:
    expected = datetime(2026, 11, 23, 12, tzinfo=timezone.utc).timestamp()
    assert router(clock=clock).clock() == expected
    assert LayerScorer(clock=clock).clock() == expected
    controller = RolloutController(plan=PLAN, store=MemoryStore(), clock=clock)
    assert controller.clock() == expected


@pytest.mark.parametrize("clock", [lambda: "now", lambda: None, 42])
def test_a_wrong_clock_is_refused_at_construction(clock: Any) -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"^clock: got .*; expected (a function returning POSIX seconds|callable)",
    ):
        router(clock=clock)
    with pytest.raises(ConfigurationError, match="clock"):
        LayerScorer(clock=clock)


def test_positional_arguments_name_the_keywords() -> None:
    with pytest.raises(TypeError, match=r"keyword arguments only: GrayRouter\(stable=\.\.\."):
        GrayRouter(ECHO, ECHO, PLAN)  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"RolloutController\(plan=\.\.\., store=\.\.\."):
        RolloutController(PLAN, MemoryStore())  # type: ignore[misc]
