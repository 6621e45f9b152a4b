"""The simulator's evidence: each arm's user records and totals, in numpy.

:class:`UserArm` keeps the numbers :class:`~langchain_graylayer.store.evidence.ArmAccumulator`
keeps (users, classes, sums, the Gram matrix, positives), updated a batch of users at a time
(a test holds the two equal); :class:`SeenUsers` keeps only who was seen, for the ``pre`` arms
the controller reads only user counts from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from langchain_graylayer.plan.assignment import ACTIVITY_CLASSES
from langchain_graylayer.store.evidence import FIELDS, ArmTotals, field_pair

__all__ = ["N_FIELDS", "SeenUsers", "UserArm"]

Array = npt.NDArray[Any]
N_FIELDS = len(FIELDS)
_PAIRS = [(i, j) for i in range(N_FIELDS) for j in range(i, N_FIELDS)]
_PAIR_KEYS = [field_pair(FIELDS[i], FIELDS[j]) for i, j in _PAIRS]


class SeenUsers:
    """A ``pre`` arm (a layer's stable traffic before it opens): the controller reads only how
    many distinct users it saw, so that is all this keeps."""

    __slots__ = ("seen",)

    def __init__(self, size: int) -> None:
        self.seen = np.zeros(size, dtype=bool)

    def add(self, users: Array, activity: Array, counts: Array) -> None:
        self.seen[users] = True

    def totals(self) -> ArmTotals:
        return ArmTotals(users=int(self.seen.sum()))

    @property
    def users(self) -> int:
        return int(self.seen.sum())


class UserArm:
    """One arm's user records and totals (the numpy twin of ``ArmAccumulator``)."""

    __slots__ = ("classes", "gram", "positives", "row_of", "rows", "sums", "users")

    def __init__(self, size: int) -> None:
        self.row_of = np.full(size, -1, dtype=np.int64)
        self.rows = np.zeros((64, N_FIELDS))
        self.users = 0
        self.classes = np.zeros(ACTIVITY_CLASSES, dtype=np.int64)
        self.sums = np.zeros(N_FIELDS)
        self.gram = np.zeros((N_FIELDS, N_FIELDS))
        self.positives = np.zeros(N_FIELDS, dtype=np.int64)

    def add(self, users: Array, activity: Array, counts: Array) -> None:
        """Add ``counts[i]`` (a row of FIELDS) to user ``users[i]`` (a layer-local index)."""
        if not len(users):
            return
        unique, inverse = np.unique(users, return_inverse=True)
        delta = np.zeros((len(unique), N_FIELDS))
        np.add.at(delta, inverse, counts)
        new = unique[self.row_of[unique] < 0]
        if len(new):
            new_activity = np.zeros(len(unique), dtype=np.int64)
            new_activity[inverse] = activity
            fresh = self.row_of[unique] < 0
            need = self.users + len(new)
            if need > len(self.rows):
                grown = np.zeros((max(need, 2 * len(self.rows)), N_FIELDS))
                grown[: self.users] = self.rows[: self.users]
                self.rows = grown
            self.row_of[new] = np.arange(self.users, need)
            self.users = need
            self.classes += np.bincount(new_activity[fresh], minlength=ACTIVITY_CLASSES)
        rows = self.row_of[unique]
        old = self.rows[rows]
        now = old + delta
        self.gram += now.T @ now - old.T @ old
        self.sums += delta.sum(axis=0)
        self.positives += (now > 0).sum(axis=0) - (old > 0).sum(axis=0)
        self.rows[rows] = now

    def totals(self) -> ArmTotals:
        sums = {name: float(self.sums[i]) for i, name in enumerate(FIELDS) if self.sums[i]}
        products = {key: float(self.gram[i, j]) for key, (i, j) in zip(_PAIR_KEYS, _PAIRS,
                                                                        strict=True)}  # fmt: skip
        positives = {name: int(self.positives[i]) for i, name in enumerate(FIELDS)}
        return ArmTotals(self.users, tuple(int(c) for c in self.classes), sums, products,
                         positives)  # fmt: skip
