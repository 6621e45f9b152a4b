"""Evidence: what each user did in each arm of each step, reduced to per-arm sufficient statistics.

Users are what gets randomised (sticky buckets), and users come back and differ from each other,
so the judge analyses users, not requests (see ``docs/statistics.md``). For every arm — a plan's
(layer, step, version) — the store keeps each user's counters (requests, completions, failures,
tool calls, ...) and, updated with every change, the arm's totals over users:

* ``users``: distinct users, and how many fall in each pre-exposure activity class;
* ``sums[f]``: Σ over users of field ``f``;
* ``products[f, g]``: Σ over users of ``f·g`` (the Gram matrix: squares and cross-products);
* ``positives[f]``: users with ``f > 0`` (e.g. users who complained at least once).

Besides :data:`FIELDS`, an arm keeps *named* fields, whose names contain a dot (an evaluator's
``eval.<name>.n`` and ``eval.<name>.pass``), for the users that have them; their products are
kept with each other (the products with :data:`FIELDS` a ratio of two named fields never needs).

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
    "PRE_STEP",
    "ArmAccumulator",
    "ArmKey",
    "ArmTotals",
    "UnitDelta",
    "accumulate",
    "accumulate_users",
    "activity_class",
    "field_pair",
    "is_named_field",
    "product_changes",
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
    "cost",
    "unpriced",
)
"""The per-user counters every arm keeps. ``failures`` are errors and fallbacks; ``slow`` counts
requests over the plan's latency SLO; ``scores``/``score_sum`` the NPS-style feedback scores;
``cost`` the money of priced model calls and ``unpriced`` the requests with a model call nobody
could price (their cost is unknown, so the cost guardrail compares tokens)."""


PRE_STEP = "pre@"
"""Step keys of a layer's traffic before it opens start with this: its stable users are counted
(how many come sizes its first step), nothing else is kept."""


@dataclass(frozen=True, slots=True)
class ArmKey:
    """Which arm: the plan's layer, the step it was routed under, the version."""

    layer: str
    step: str
    version: str

    @property
    def counts_users_only(self) -> bool:
        """A ``pre`` arm: only its distinct users are kept (a HyperLogLog in Redis)."""
        return self.step.startswith(PRE_STEP)


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
    """The key of ``Σ a·b`` in :attr:`ArmTotals.products` (the pair in :data:`FIELDS` order;
    named fields after them, alphabetically)."""
    order_a, order_b = _ORDER.get(a, _NAMED), _ORDER.get(b, _NAMED)
    if order_a != order_b:
        return (a, b) if order_a < order_b else (b, a)
    return (a, b) if a <= b else (b, a)


def is_named_field(name: str) -> bool:
    """A field outside :data:`FIELDS` that an arm keeps too: its name has a dot."""
    return "." in name


_N = len(FIELDS)
_NAMED = _N
_PAIR_KEYS = [(FIELDS[i], FIELDS[j]) for i in range(_N) for j in range(i, _N)]


Change = tuple[tuple[float, ...] | None, tuple[float, ...]]
"""A user's record as the products last counted it (``None``: never), and as it is now."""


class ArmAccumulator:
    """One arm's user records and their running totals, kept exactly as records change.

    A change to a user's counters updates the user's record, the sums and the positives at
    once (a few additions: what the request path pays) and marks the user; the products
    ``Σ f·g`` are brought up to date when the totals are read (what the controller pays, once a
    tick): each marked user's old contribution ``x·xᵀ`` is replaced by the new one.

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

    __slots__ = (
        "_classes", "_dirty", "_folded", "_forgotten", "_named", "_named_positives",
        "_named_products", "_named_sums", "_positives", "_products", "_sums", "_users",
    )  # fmt: skip

    def __init__(self) -> None:
        self._users: dict[str, list[float]] = {}
        self._folded: dict[str, tuple[float, ...]] = {}
        """Each user's record as the products last counted it."""
        self._dirty: set[str] = set()
        self._forgotten = 0
        """Users whose records :meth:`forget` dropped (still counted in the totals)."""
        self._classes = [0] * ACTIVITY_CLASSES
        self._sums = [0.0] * _N
        self._products = [0.0] * len(_PAIR_KEYS)
        self._positives = [0] * _N
        # Named fields, kept only for the users that have them (an evaluator's few sampled
        # runs): records, sums, products among them (updated at once: off the request path).
        self._named: dict[str, dict[str, float]] = {}
        self._named_sums: dict[str, float] = {}
        self._named_products: dict[tuple[str, str], float] = {}
        self._named_positives: dict[str, int] = {}

    def add(self, user: str, activity: int, counts: Mapping[str, float]) -> None:
        """Add ``counts`` (fields of :data:`FIELDS`, or named fields) to ``user``'s record.

        Raises:
            KeyError: a name that is neither in :data:`FIELDS` nor a named field.
        """
        record = self._users.pop(user, None)  # and back at the end: least recent first
        if record is None:
            record = [0.0] * _N
            self._classes[min(max(activity, 0), ACTIVITY_CLASSES - 1)] += 1
        self._users[user] = record
        sums, positives = self._sums, self._positives
        named: dict[str, float] | None = None
        for name, value in counts.items():
            if value:
                i = _ORDER.get(name)
                if i is None:
                    if not is_named_field(name):
                        raise KeyError(name)
                    named = named or {}
                    named[name] = named.get(name, 0.0) + value
                    continue
                old = record[i]
                new = record[i] = old + value
                sums[i] += value
                if old <= 0 < new:
                    positives[i] += 1
                elif new <= 0 < old:
                    positives[i] -= 1
        self._dirty.add(user)
        if named:
            self._add_named(user, named)

    def _add_named(self, user: str, counts: dict[str, float]) -> None:
        old = self._named.get(user, {})
        new = dict(old)
        for name, value in counts.items():
            before = new.get(name, 0.0)
            after = new[name] = before + value
            self._named_sums[name] = self._named_sums.get(name, 0.0) + value
            flip = (before <= 0 < after) - (after <= 0 < before)
            if flip:
                self._named_positives[name] = self._named_positives.get(name, 0) + flip
        self._named[user] = new
        names = sorted(new)
        products = self._named_products
        for a_index, a in enumerate(names):
            for b in names[a_index:]:
                change = new[a] * new[b] - old.get(a, 0.0) * old.get(b, 0.0)
                if change:
                    key = field_pair(a, b)
                    products[key] = products.get(key, 0.0) + change

    def take_changes(self) -> list[Change]:
        """The (old, new) records of the users changed since the products were last counted,
        marked as counted; hand them to :func:`product_changes`, then to :meth:`fold`."""
        changes = []
        for user in self._dirty:
            new = tuple(self._users[user])
            changes.append((self._folded.get(user), new))
            self._folded[user] = new
        self._dirty.clear()
        return changes

    def fold(self, changes: list[float]) -> None:
        """Add :func:`product_changes` to the products."""
        products = self._products
        for k, change in enumerate(changes):
            if change:
                products[k] += change

    def forget(self, count: int) -> int:
        """Drop the records of up to ``count`` least recently changed users; return how many.

        What they added stays in the totals (their products are folded first), so the totals
        do not move; a forgotten user who comes back starts a new record and counts as one
        more user (see ``MemoryStore(max_evidence_users=...)``).
        """
        users = list(itertools.islice(self._users, max(count, 0)))
        changes: list[Change] = []
        for user in users:
            record = self._users.pop(user)
            folded = self._folded.pop(user, None)
            self._named.pop(user, None)  # its named sums and products are already counted
            if user in self._dirty:
                self._dirty.discard(user)
                changes.append((folded, tuple(record)))
        if changes:
            self.fold(product_changes(changes))
        self._forgotten += len(users)
        return len(users)

    def totals(self, *, fold: bool = True) -> ArmTotals:
        """The arm's totals (``fold=False``: as last folded, for a caller that folds itself)."""
        if fold:
            self.fold(product_changes(self.take_changes()))
        sums = {name: self._sums[i] for i, name in enumerate(FIELDS) if self._sums[i]}
        products = {k: v for k, v in zip(_PAIR_KEYS, self._products, strict=True) if v}
        positives = {name: n for name, n in zip(FIELDS, self._positives, strict=True) if n}
        if self._named:
            sums.update((k, v) for k, v in self._named_sums.items() if v)
            products.update((k, v) for k, v in self._named_products.items() if v)
            positives.update((k, v) for k, v in self._named_positives.items() if v)
        return ArmTotals(
            users=len(self._users) + self._forgotten,
            classes=tuple(self._classes),
            sums=sums,
            products=products,
            positives=positives,
        )

    def __len__(self) -> int:
        """The user records held (users forgotten by :meth:`forget` not included)."""
        return len(self._users)


def product_changes(
    changes: Iterable[tuple[tuple[float, ...] | None, tuple[float, ...]]],
) -> list[float]:
    """What replacing each old record's ``x·xᵀ`` by the new one adds to each product."""
    out, n = [0.0] * len(_PAIR_KEYS), _N
    for old, new in changes:
        k = 0
        for i in range(n):
            new_i, old_i = new[i], old[i] if old else 0.0
            for j in range(i, n):
                out[k] += new_i * new[j] - (old_i * old[j] if old else 0.0)
                k += 1
    return out


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
