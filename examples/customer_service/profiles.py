"""Demo users, one per layer, so every layer has someone to try the example with.

``graylayer serve --profiles examples.customer_service.profiles:DEMO_PROFILES`` (and the example's
``app.py``, with an in-memory store) puts them into the store at start.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from langchain_graylayer import UserProfile

__all__ = ["DEMO_PROFILES"]

_NOW = datetime.now(timezone.utc)
DEMO_PROFILES: dict[str, UserProfile] = {
    # staff by tag: the `internal` layer
    "carol": UserProfile(tags={"group": "staff"}),
    # used yesterday, often, low spend, likes trying new things: early_adopter
    "dave": UserProfile(
        last_use_time=_NOW - timedelta(days=1), use_count=80, user_value=500, accept_score=9
    ),
    # a big, rare, conservative customer: vip
    "erin": UserProfile(
        last_use_time=_NOW - timedelta(days=25), use_count=2, user_value=90_000, accept_score=1
    ),
    # said no to experiments: always stable
    "frank": UserProfile(allow_gray=False),
}
"""Profiles seeded into an in-memory store, so every layer has someone to try the demo with."""
