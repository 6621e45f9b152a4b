"""Evidence: what each user did in each arm of each step, reduced to per-arm sufficient statistics.

Users are what gets randomised (sticky buckets), and users come back and differ from each other,
so the judge analyses users, not requests (see ``docs/statistics.md``). For every arm — a plan's
(layer, step, version) — the store keeps each user's counters (requests, completions, failures,
tool calls, ...) and, updated with every change, the arm's totals over users:

* ``users``: distinct users, and how many fall in each pre-exposure activity class;
* ``sums[f]``: Σ over users of field ``f``;
* ``products[f, g]``: Σ over users of ``f·g`` (the Gram matrix: squares and cross-products);
* ``positives[f]``: users with ``f > 0`` (e.g. users who complained at least once).

From these the judge gets any ratio metric ``Σy/Σn`` with its delta-method variance, exactly,
without reading a single user record. The step is the one the run was routed under, so feedback
that arrives hours later counts in the step its run belonged to.

:class:`ArmAccumulator` is the in-memory reduction that :class:`~.memory.MemoryStore` (and the
simulator) use; ``RedisStore`` keeps the same numbers in Redis with a Lua script.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from langchain_graylayer.plan.assignment import ACTIVITY_CLASSES, activity_class

__all__ = [
    "ACTIVITY_CLASSES",
    "FIELDS",
    "ArmAccumulator",
    "ArmKey",
    "ArmTotals",
    "UnitDelta",
    "accumulate",
    "accumulate_users",
    "activity_class",
    "field_pair",
]

FIELDS: tuple[str, ...] = (
    "requests",
    "completions",
    "failures",
    "tool_calls",
    "tool_errors",
    "bad",
    "complaints",
    "good",
    "slow",
    "latency_seconds",
    "scores",
    "score_sum",
    "input_tokens",
    "output_tokens",
)
"""The per-user counters every arm keeps. ``failures`` are errors and fallbacks; ``slow`` counts
requests over the plan's latency SLO; ``scores``/``score_sum`` the NPS-style feedback scores."""


@dataclass(frozen=True, slots=True)
class ArmKey:
    """Which arm: the plan's layer, the step it was routed under, the version."""

    layer: str
    step: str
    version: str


@dataclass(frozen=True, slots=True)
class UnitDelta:
    """What one user added to one arm: counter increments (fields of :data:`FIELDS`)."""

    arm: ArmKey
    user: str
    """A stable, opaque key of the user (a hash, never the user id)."""
    activity: int
    """The user's pre-exposure activity class (:func:`activity_class`)."""
    counts: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ArmTotals:
    """One arm's sufficient statistics over users (what the judge reads)."""

    users: int = 0
    classes: tuple[int, ...] = (0,) * ACTIVITY_CLASSES
    """Users per activity class."""
    sums: Mapping[str, float] = field(default_factory=dict)
    products: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """Σ f·g over users, keyed by the pair in :data:`FIELDS` order (``(f, g)`` with f ≤ g)."""
    positives: Mapping[str, int] = field(default_factory=dict)

    def total(self, name: str) -> float:
        return self.sums.get(name, 0.0)

    def product(self, a: str, b: str) -> float:
        return self.products.get(field_pair(a, b), 0.0)

    def positive(self, name: str) -> int:
        """Users with ``name > 0`` (e.g. users who complained at least once)."""
        return self.positives.get(name, 0)


_ORDER = {name: index for index, name in enumerate(FIELDS)}


def field_pair(a: str, b: str) -> tuple[str, str]:
    """The key of ``Σ a·b`` in :attr:`ArmTotals.products` (the pair in :data:`FIELDS` order)."""
    return (a, b) if _ORDER.get(a, len(_ORDER)) <= _ORDER.get(b, len(_ORDER)) else (b, a)


class ArmAccumulator:
    """One arm's user records and their running totals, kept exactly as records change.

    When a user's counters change by ``d``, each product ``Σ f·g`` changes by
    ``f·d_g + d_f·g + d_f·d_g`` (old values ``f``, ``g``): an update costs the number of products
    the change touches, and reading the totals costs nothing.

    Example:
        >>> arm = ArmAccumulator()
        >>> arm.add("u1", 0, {"requests": 2, "completions": 1})
        >>> arm.add("u2", 3, {"requests": 1, "completions": 1})
        >>> arm.add("u1", 0, {"requests": 1})
        >>> totals = arm.totals()
        >>> totals.users, totals.sums["requests"], totals.product("requests", "requests")
        (2, 4.0, 10.0)
        >>> totals.product("completions", "requests"), totals.classes
        (4.0, (1, 0, 0, 1, 0))
    """

    __slots__ = ("_classes", "_positives", "_products", "_sums", "_users")

    def __init__(self) -> None:
        self._users: dict[str, dict[str, float]] = {}
        self._classes = [0] * ACTIVITY_CLASSES
        self._sums: dict[str, float] = {}
        self._products: dict[tuple[str, str], float] = {}
        self._positives: dict[str, int] = {}

    def add(self, user: str, activity: int, counts: Mapping[str, float]) -> None:
        record = self._users.get(user)
        if record is None:
            record = self._users[user] = {}
            self._classes[min(max(activity, 0), ACTIVITY_CLASSES - 1)] += 1
        changed = [(name, float(delta)) for name, delta in counts.items() if delta]
        if not changed:
            return
        touched = {name for name, _ in changed}
        names = sorted(touched | record.keys(), key=lambda n: _ORDER.get(n, len(_ORDER)))
        deltas = dict(changed)
        for a, b in itertools.combinations_with_replacement(names, 2):
            da, db = deltas.get(a, 0.0), deltas.get(b, 0.0)
            if not (da or db):
                continue
            va, vb = record.get(a, 0.0), record.get(b, 0.0)
            key = (a, b)
            self._products[key] = self._products.get(key, 0.0) + va * db + da * vb + da * db
        for name, delta in changed:
            old = record.get(name, 0.0)
            new = old + delta
            record[name] = new
            self._sums[name] = self._sums.get(name, 0.0) + delta
            if old <= 0 < new:
                self._positives[name] = self._positives.get(name, 0) + 1
            elif new <= 0 < old:
                self._positives[name] -= 1

    def totals(self) -> ArmTotals:
        return ArmTotals(
            users=len(self._users),
            classes=tuple(self._classes),
            sums=dict(self._sums),
            products=dict(self._products),
            positives=dict(self._positives),
        )

    def __len__(self) -> int:
        return len(self._users)


def accumulate_users(users: Iterable[Mapping[str, float]], activity: int = 0) -> ArmTotals:
    """The totals of one arm whose users' counters are ``users`` (for examples and tests).

    Example:
        >>> accumulate_users([{"requests": 2}, {"requests": 1, "bad": 1}]).positive("bad")
        1
    """
    arm = ArmAccumulator()
    for index, counts in enumerate(users):
        arm.add(f"u{index}", activity, counts)
    return arm.totals()


def accumulate(deltas: Iterable[UnitDelta]) -> dict[ArmKey, ArmTotals]:
    """The totals of each arm the deltas touch (a reference for tests and the simulator)."""
    arms: dict[ArmKey, ArmAccumulator] = {}
    for delta in deltas:
        arms.setdefault(delta.arm, ArmAccumulator()).add(delta.user, delta.activity, delta.counts)
    return {key: arm.totals() for key, arm in arms.items()}
