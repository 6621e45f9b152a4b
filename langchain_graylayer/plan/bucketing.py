"""Sticky, language-neutral user bucketing.

``bucket = int.from_bytes(SHA-256(salt + "\\x1f" + user_id)[:8], "big") mod 10 000`` over the UTF-8
bytes, and a user gets the candidate iff ``bucket < round(ratio × 10 000)``.

Why these choices:

* SHA-256 is stable across processes, machines and languages (Python's ``hash()`` is salted per
  process), so every replica and every service that reimplements it agrees.
* The salt is the plan's, never the layer's: raising a ratio from 1% to 10% keeps every user who
  already had the candidate, and a user who moves to another layer keeps the same bucket.
* The unit separator ``\\x1f`` keeps ``("ab", "c")`` and ``("a", "bc")`` apart.
* The ratio threshold is rounded to a whole bucket (resolution 0.01%), so floating point never
  lets one extra bucket in (``0.07 * 10_000 == 700.0000000000001``).

The cases in ``tests/data/bucketing_cases.json`` pin the function for other implementations.
"""

from __future__ import annotations

import hashlib

__all__ = ["BUCKETS", "bucket", "in_candidate", "ratio_threshold", "unit_key"]

BUCKETS = 10_000
"""Number of buckets; ratios have a resolution of 1 / BUCKETS (0.01%)."""


def bucket(salt: str, user_id: str) -> int:
    """Return the user's bucket in ``[0, BUCKETS)`` for a plan salt.

    Example:
        >>> bucket("refund-agent-v2", "user-42")
        758
    """
    digest = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def ratio_threshold(ratio: float) -> int:
    """How many buckets (from 0) get the candidate at ``ratio``, within ``[0, BUCKETS]``."""
    return min(max(round(ratio * BUCKETS), 0), BUCKETS)


def in_candidate(bucket_: int, ratio: float) -> bool:
    """True when a user in ``bucket_`` gets the candidate at ``ratio``.

    Example:
        >>> in_candidate(99, 0.01), in_candidate(100, 0.01)
        (True, False)
    """
    return bucket_ < ratio_threshold(ratio)


def unit_key(salt: str, user_id: str) -> str:
    """The user as the judge's statistics know them: 16 hex digits of a salted SHA-256, so the
    store's per-user records never hold the user id.

    Example:
        >>> unit_key("refund-agent-v2", "user-42")
        '99a92f44f320a29d'
    """
    return hashlib.sha256(f"{salt}\x1funit\x1f{user_id}".encode()).hexdigest()[:16]
