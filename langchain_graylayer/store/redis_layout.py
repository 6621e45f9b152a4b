"""Where :class:`~langchain_graylayer.store.redis.RedisStore` keeps each thing, the migration
from the layout before Redis Cluster support, and what a cluster client cannot pipeline.

A Redis Cluster runs a transaction or a Lua script only when all its keys hash to one slot. A
key's slot is the hash of its *hash tag* (the text between the first ``{`` and the next ``}``),
so the keys that change together carry the same tag and everything else is spread over slots:

================================  =========  ======================================================
key                               hash tag   touched together by
================================  =========  ======================================================
``{prefix}:{<plan>}:ratios``      the plan   ``commit`` (MULTI/EXEC): ratios, steps, state, audit
``{prefix}:{<plan>}:steps``       the plan   ``commit``
``{prefix}:{<plan>}:state``       the plan   ``commit``
``{prefix}:{<plan>}:audit``       the plan   ``commit``
``{prefix}:{<plan>}:candidate-*`` the plan   a pipeline (the index of candidate pins, by expiry)
``{prefix}:{ev:<arm>}:totals``    the arm    the evidence script (totals and user records)
``{prefix}:{ev:<arm>}:users``     the arm    the evidence script; a HyperLogLog for stable
``{prefix}:profile:<user>``       none       one key per command (``put_profile`` pipelines
``{prefix}:layer:<user>``         none       its two deletes without a transaction)
``{prefix}:pin:<plan>:<conv>``    none       the pin script (one key)
``{prefix}:lease:<name>``         none       the lease scripts (one key each)
``{prefix}:toolcalls:<plan>``     none       XADD (one key)
``{prefix}:nonce:<key>``          none       SET NX (one key)
================================  =========  ======================================================

Plan ids never contain braces (:class:`~langchain_graylayer.plan.RolloutPlan` allows
``[a-z0-9_-]``) and the prefix may not either, so each tag is exactly the plan id or the arm.

Deployments written before this layout kept the four plan keys at ``{prefix}:ratios:<plan>``
(and ``steps``, ``state``, ``audit``). :func:`migrate_layout` (``graylayer redis-migrate``)
moves them: each key is copied with DUMP/RESTORE (type, content and TTL kept), and the old key
is deleted only by a script that first checks it still holds exactly what was copied. A key
whose new name already holds something else is a conflict: both are left as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PLAN_KINDS",
    "LayoutMigration",
    "Unpipelined",
    "legacy_plan_key",
    "migrate_layout",
    "plan_key",
]

PLAN_KINDS = ("ratios", "steps", "state", "audit")
"""The per-plan keys that share the plan's hash tag."""

_GLOB = re.compile(r"([\\*?\[\]])")

# Delete KEYS[1] only if it still holds exactly the value that was copied (one key: any slot).
_DELETE_IF_SAME = """
if redis.call('DUMP', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def plan_key(prefix: str, plan_id: str, kind: str) -> str:
    """``{prefix}:{<plan_id>}:<kind>``: one slot for all of a plan's transactional keys."""
    return f"{prefix}:{{{plan_id}}}:{kind}"


def legacy_plan_key(prefix: str, plan_id: str, kind: str) -> str:
    """The key of the layout before cluster support, ``{prefix}:<kind>:<plan_id>``."""
    return f"{prefix}:{kind}:{plan_id}"


@dataclass(frozen=True)
class LayoutMigration:
    """What :func:`migrate_layout` did, as lists of the *old* key names.

    Attributes:
        moved: copied to the new name, then deleted.
        conflicts: the new name already held something else; both keys left untouched.
        changed: written by someone while being copied; the copy was undone, run again.
    """

    moved: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when no old key is left behind."""
        return not self.conflicts and not self.changed


def _legacy_keys(client: Any, prefix: str) -> list[tuple[str, str, str]]:
    """(old key, plan id, kind) of every key in the old layout."""
    found = []
    for kind in PLAN_KINDS:
        head = legacy_plan_key(prefix, "", kind)
        for raw in client.scan_iter(match=_GLOB.sub(r"\\\1", head) + "*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            plan_id = key[len(head) :]
            if plan_id and ":" not in plan_id and "{" not in plan_id:
                found.append((key, plan_id, kind))
    return sorted(found)


def migrate_layout(client: Any, prefix: str) -> LayoutMigration:
    """Move every plan key of the old layout to its hash-tagged name; safe to run again.

    Run it once after upgrading, with the old version's controllers stopped (routers may keep
    serving: until a plan is moved its ratios read as empty, which routes everyone to stable,
    and :meth:`RedisStore.get_plan_state` refuses to start a controller from scratch).

    Args:
        client: A ``redis.Redis``, ``RedisCluster`` or Sentinel primary client.
        prefix: The store's key prefix.
    """
    import redis

    delete_if_same = client.register_script(_DELETE_IF_SAME)
    moved, conflicts, changed = [], [], []
    for old, plan_id, kind in _legacy_keys(client, prefix):
        new = plan_key(prefix, plan_id, kind)
        payload = client.dump(old)
        if payload is None:  # expired or deleted since the scan
            continue
        existing = client.dump(new)
        if existing is None:
            ttl = client.pttl(old)
            try:
                client.restore(new, max(int(ttl), 0), payload)
            except redis.ResponseError as exc:  # BUSYKEY: written since our DUMP
                if "BUSYKEY" not in str(exc):
                    raise
                conflicts.append(old)
                continue
        elif existing != payload:
            conflicts.append(old)
            continue
        if delete_if_same(keys=[old], args=[payload]):
            moved.append(old)
        else:  # the old key changed while we copied it: undo our copy, keep the old key
            delete_if_same(keys=[new], args=[payload])
            changed.append(old)
    return LayoutMigration(tuple(moved), tuple(conflicts), tuple(changed))


class Unpipelined:
    """A pipeline's interface that runs each command at once, for a cluster client: redis-py's
    cluster pipelines refuse scripts and PFCOUNT (one round trip per command instead)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._replies: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Unpipelined:
            self._replies.append(command(*args, **kwargs))
            return self

        return call

    def execute(self) -> list[Any]:
        """The replies, in the order the commands ran."""
        return self._replies
