"""``RedisStore``: state shared by every replica through Redis (extra ``redis``): one server, a
Redis Cluster or a Sentinel-managed primary.

Key layout (``{prefix}`` is ``"graylayer"`` unless you pass ``prefix=``; the hash tags in braces
keep what a transaction or script touches in one cluster slot, see :mod:`.redis_layout`)::

    {prefix}:{<plan_id>}:ratios             hash    layer -> repr(ratio), e.g. "0.1"
    {prefix}:{<plan_id>}:steps              hash    layer -> step key (written with the ratios)
    {prefix}:{ev:<plan>:<layer>:<step>:<version>}:users   hash  unit key -> counters (JSON)
    {prefix}:{ev:<plan>:<layer>:<step>:<version>}:totals  hash  users, class:i, s:f, p:f:g, pos:f
    {prefix}:profile:{user_id}              string  UserProfile.model_dump_json()
    {prefix}:layer:{user_id}                hash    plan_id -> LayerAssignment.encode(); PEXPIRE ttl
    {prefix}:pin:{plan_id}:{user}:{session} string  SessionPin.encode(); SET NX PX (repin: SET PX)
    {prefix}:{<plan_id>}:candidate-pins     zset    conversation key -> expiry (ms), candidate pins
    {prefix}:{<plan_id>}:candidate-pins-since  hash  "complete" -> ms from which it holds them all
    {prefix}:{<plan_id>}:state              string  the controller's plan state (JSON)
    {prefix}:{<plan_id>}:audit              stream  "entry" -> audit entry (JSON); MAXLEN ~ 100000
    {prefix}:lease:{name}                   string  the holder; SET NX PX ttl, renewed by PEXPIRE
    {prefix}:toolcalls:{plan_id}            stream  "entry" -> tool call (JSON); MAXLEN ~ 100000
    {prefix}:nonce:{key}                    string  "1"; SET NX PX ttl (a feedback token, once)

The layer cache TTL is per *user* key, not per plan: caching a user's layer in one plan restarts
the clock of that user's cached layers in every plan (as :class:`MemoryStore` does). Plan ids
never contain ``:`` (:class:`~langchain_graylayer.plan.RolloutPlan` forbids it); session ids may.
A pin's key ends with its :func:`~langchain_graylayer.store.protocols.conversation_key`: the user
id percent-encoded, then the session id.
``commit`` writes ratios, state and audit entry in one MULTI/EXEC transaction; leases are taken,
renewed and released by Lua scripts, so a holder check and its write cannot interleave. The
layout before cluster support kept the plan keys at ``{prefix}:ratios:{plan_id}`` (and so on):
``graylayer redis-migrate`` moves them (:func:`.redis_layout.migrate_layout`).

Every failure of the client (``redis.RedisError``, a cluster client's ``RedisClusterException``,
``OSError``) and every unreadable value is raised as
:class:`~langchain_graylayer.errors.StoreError` naming the operation and the key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_graylayer.errors import ConfigurationError, StoreError
from langchain_graylayer.plan.assignment import ACTIVITY_CLASSES, LayerAssignment
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store.evidence import ArmKey, ArmTotals, UnitDelta, field_pair
from langchain_graylayer.store.protocols import SessionPin, check_ratio
from langchain_graylayer.store.redis_layout import (
    LayoutMigration,
    Unpipelined,
    legacy_plan_key,
    migrate_layout,
    plan_key,
)
from langchain_graylayer.store.redis_scripts import (
    EVIDENCE_SCRIPT,
    LEASE_SCRIPT,
    PIN_SCRIPT,
    RELEASE_SCRIPT,
)

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        'RedisStore needs the redis client: pip install "langchain-graylayer[redis]"'
    ) from exc

__all__ = ["RedisStore"]

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes of a Redis Cluster, and the scheme redis-py's ``RedisCluster.from_url`` takes."""

_STREAM_MAXLEN = 100_000
"""Approximate bound (``MAXLEN ~``) of each plan's audit stream and tool-call journal."""

_GLOB = re.compile(r"([\\*?\[\]])")


def _as_str(value: Any) -> str:
    """A reply as ``str``, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _millis(ttl: float) -> int:
    return max(1, round(ttl * 1000))


def _totals(raw: Mapping[Any, Any]) -> ArmTotals:
    """An arm's totals from its Redis hash (see ``EVIDENCE_SCRIPT``)."""
    classes = [0] * ACTIVITY_CLASSES
    sums: dict[str, float] = {}
    products: dict[tuple[str, str], float] = {}
    positives: dict[str, int] = {}
    users = 0
    for key, value in raw.items():
        kind, _, rest = _as_str(key).partition(":")
        number = float(_as_str(value))
        if kind == "users":
            users = int(number)
        elif kind == "class":
            classes[min(int(rest), ACTIVITY_CLASSES - 1)] += int(number)
        elif kind == "s":
            sums[rest] = number
        elif kind == "p":
            a, b = rest.split(":")
            products[field_pair(a, b)] = number
        elif kind == "pos":
            positives[rest] = int(number)
    return ArmTotals(users, tuple(classes), sums, products, positives)


def _entries(reply: Any) -> list[str]:
    """The ``entry`` field of each item of an XRANGE reply, in the reply's order."""
    entries: list[str] = []
    for entry_id, fields in reply or ():
        value = fields.get("entry", fields.get(b"entry"))
        if value is None:
            raise ValueError(f"stream entry {_as_str(entry_id)} has no 'entry' field")
        entries.append(_as_str(value))
    return entries


def _client(url: str, timeout: float) -> Any:
    """A decoding client with ``timeout`` seconds for a connection or a reply; a
    ``RedisCluster`` for a ``redis+cluster://`` or ``rediss+cluster://`` URL.

    One immediate retry heals a pooled connection the server dropped (a restart); redis-py's
    default (ten retries with backoff) would hold a request for seconds in an outage. A call
    that *timed out* is never retried: it would double the wait, and a server that is only slow
    could run a write (an evidence increment, a journal entry) twice.
    """
    scheme, _, rest = url.partition("://")
    cluster = scheme in _CLUSTER_SCHEMES
    try:
        return (RedisCluster if cluster else redis.Redis).from_url(
            f"{_CLUSTER_SCHEMES[scheme]}://{rest}" if cluster else url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
    except ValueError as exc:  # e.g. an http:// URL
        raise ConfigurationError(
            "url", url, f"a redis://, rediss://, redis+cluster:// or unix:// URL ({exc})"
        ) from exc
    except RedisClusterException as exc:  # a cluster client asks a node for the slots at once
        raise StoreError(f"no node of the Redis Cluster answered: {exc}") from exc


class RedisStore:
    """State in Redis, so that every replica routes and pins alike.

    Pass a URL (the store builds and owns a client with ``decode_responses=True``;
    ``redis+cluster://`` names any node of a Redis Cluster) or a client of your own, decoding
    or not: a ``redis.Redis``, a ``redis.cluster.RedisCluster``, or a Sentinel-managed primary
    (``redis.sentinel.Sentinel(...).master_for(name)``). Calls block on the network, so
    ``networked`` is true: where requests are served it is wrapped in a ``CachedStore``, and async
    code calls it off the event loop.

    Example:
        >>> store = RedisStore("redis://localhost:6379/0")  # doctest: +SKIP
        >>> store.set_ratio("refund-v2", "early_adopter", 0.1)  # doctest: +SKIP
        >>> store.get_ratios("refund-v2")  # doctest: +SKIP
        {'early_adopter': 0.1}
        >>> on_a_cluster = RedisStore("redis+cluster://10.0.0.5:7000")  # doctest: +SKIP
    """

    networked = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | RedisCluster | None = None,
        prefix: str = "graylayer",
        socket_timeout: float = 0.5,
        evidence_ttl: float = 7 * 86400.0,
    ) -> None:
        """Connect to Redis.

        Args:
            url: A Redis URL such as ``"redis://localhost:6379/0"``, or
                ``"redis+cluster://10.0.0.5:7000"`` for a Redis Cluster (any node; the client
                finds the others).
            client: An existing client instead of ``url`` (``redis.Redis``, ``RedisCluster``
                or a Sentinel primary); ``close()`` leaves it open.
            prefix: Namespace of every key, so several deployments can share a server; no
                braces (they would change the keys' cluster hash tags).
            evidence_ttl: Seconds an arm's evidence is kept after its last write.
            socket_timeout: Seconds to wait for a connection or a reply (URL clients only).

        Raises:
            ConfigurationError: unless exactly one of ``url`` and ``client`` is given, when
                ``url`` is not a Redis URL, or when ``prefix`` holds a brace.
        """
        if url is not None and client is not None:
            raise ConfigurationError("client", client, "either url= or client=, not both")
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError("prefix", prefix, "a key prefix without '{' or '}'")
        if client is None:
            if not url:
                raise ConfigurationError(
                    "url", url, "a Redis URL such as 'redis://localhost:6379/0', or client="
                )
            client = _client(url, socket_timeout)
        self._url = url
        self._copies: dict[float, RedisStore] = {}
        self._owns_client = url is not None
        self._client: Any = client
        self._cluster = isinstance(client, RedisCluster)
        self._prefix = prefix
        self._pin_script: Any = self._client.register_script(PIN_SCRIPT)
        self._lease_script: Any = self._client.register_script(LEASE_SCRIPT)
        self._release_script: Any = self._client.register_script(RELEASE_SCRIPT)
        self._evidence_script: Any = self._client.register_script(EVIDENCE_SCRIPT)
        self._evidence_ttl = evidence_ttl

    def with_timeout(self, seconds: float) -> RedisStore:
        """This store on its own connections that wait at most ``seconds`` for a connection or
        a reply: what the request path calls (``for_requests`` asks for it), while the
        controller and the admin API keep ``socket_timeout``. ``close()`` closes it too.

        A store built with ``client=`` cannot copy its client's settings: it returns itself.
        """
        if self._url is None:
            return self
        copy = self._copies.get(seconds)
        if copy is None:  # one copy per timeout, however many routers share this store
            copy = self._copies[seconds] = RedisStore(
                self._url,
                prefix=self._prefix,
                socket_timeout=seconds,
                evidence_ttl=self._evidence_ttl,
            )
        return copy

    @contextmanager
    def _guard(self, operation: str, key: str) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, RedisClusterException, OSError, ValueError) as exc:
            raise StoreError(f"Redis {operation} of {key!r} failed: {exc}") from exc

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _plan_key(self, plan_id: str, kind: str) -> str:
        return plan_key(self._prefix, plan_id, kind)

    def _mget(self, keys: list[str]) -> list[Any]:
        """MGET, split by slot on a cluster (which refuses a cross-slot MGET)."""
        if self._cluster:
            return list(self._client.mget_nonatomic(keys))
        return list(self._client.mget(keys))

    def _batch(self) -> Any:
        """A non-transactional pipeline, or on a cluster its stand-in (see ``Unpipelined``)."""
        if self._cluster:
            return Unpipelined(self._client)
        return self._client.pipeline(transaction=False)

    # ratios -------------------------------------------------------------------------------
    def get_ratios(self, plan_id: str) -> dict[str, float]:
        key = self._plan_key(plan_id, "ratios")
        with self._guard("get_ratios", key):
            raw = self._client.hgetall(key)
            return {_as_str(layer): float(_as_str(ratio)) for layer, ratio in raw.items()}

    def get_ratio(self, plan_id: str, layer: str) -> float:
        key = self._plan_key(plan_id, "ratios")
        with self._guard("get_ratio", key):
            raw = self._client.hget(key, layer)
            return 0.0 if raw is None else float(_as_str(raw))

    def set_ratio(self, plan_id: str, layer: str, ratio: float) -> None:
        ratio = check_ratio(ratio)  # before any I/O: a bad ratio never reaches Redis
        key = self._plan_key(plan_id, "ratios")
        with self._guard("set_ratio", key):
            self._client.hset(key, layer, repr(ratio))

    def get_steps(self, plan_id: str) -> dict[str, str]:
        key = self._plan_key(plan_id, "steps")
        with self._guard("get_steps", key):
            raw = self._client.hgetall(key)
            return {_as_str(layer): _as_str(step) for layer, step in raw.items()}

    # profiles and the layer cache ---------------------------------------------------------
    def get_profile(self, user_id: str) -> UserProfile | None:
        key = self._key("profile", user_id)
        with self._guard("get_profile", key):
            raw = self._client.get(key)
            return None if raw is None else UserProfile.model_validate_json(raw)

    def put_profile(self, user_id: str, profile: UserProfile) -> None:
        key = self._key("profile", user_id)
        with self._guard("put_profile", key):
            # Two keys in two cluster slots, so no MULTI: the layer cache is read before the
            # profile, and until the DEL lands a router serves the layer it served before.
            pipe = self._client.pipeline(transaction=False)
            pipe.set(key, profile.model_dump_json())
            pipe.delete(self._key("layer", user_id))
            pipe.execute()

    def get_cached_layer(self, plan_id: str, user_id: str) -> LayerAssignment | None:
        key = self._key("layer", user_id)
        with self._guard("get_cached_layer", key):
            raw = self._client.hget(key, plan_id)
            return None if raw is None else LayerAssignment.decode(_as_str(raw))

    def cache_layer(
        self, plan_id: str, user_id: str, assignment: LayerAssignment, ttl: float
    ) -> None:
        key = self._key("layer", user_id)
        with self._guard("cache_layer", key):
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(key, plan_id, assignment.encode())
            pipe.pexpire(key, _millis(ttl))
            pipe.execute()

    # session pins -------------------------------------------------------------------------
    def get_pin(self, plan_id: str, session_id: str) -> SessionPin | None:
        key = self._key("pin", plan_id, session_id)
        with self._guard("get_pin", key):
            raw = self._client.get(key)
            return None if raw is None else SessionPin.decode(_as_str(raw))

    def _index_candidate(self, pipe: Any, plan_id: str, session_id: str, ttl: float) -> None:
        """Queue the index of the plan's candidate pins (before the pin itself: an entry whose
        pin is not the candidate's, or is gone, is harmless; a missing one would not be)."""
        now, index = round(time.time() * 1000), self._plan_key(plan_id, "candidate-pins")
        pipe.zadd(index, {session_id: now + _millis(ttl)})
        pipe.zremrangebyscore(index, "-inf", now)  # expired pins leave the index as they come
        # From when on every live candidate pin is in the index (pins from before it expired).
        pipe.hsetnx(self._plan_key(plan_id, "candidate-pins-since"), "complete", now + _millis(ttl))

    def pin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> SessionPin:
        key = self._key("pin", plan_id, session_id)
        with self._guard("pin_session", key):
            if pin.version is Version.CANDIDATE:
                index = self._client.pipeline(transaction=False)  # one slot: the plan's tag
                self._index_candidate(index, plan_id, session_id, ttl)
                index.execute()
            raw = self._pin_script(keys=[key], args=[pin.encode(), _millis(ttl)])
            if raw is None:  # cannot happen (see PIN_SCRIPT); never report a pin not in force
                raise StoreError(f"Redis pin_session of {key!r} found no pin in force")
            return SessionPin.decode(_as_str(raw))

    def pinned_sessions(
        self, plan_id: str, version: Version | None = None
    ) -> dict[str, SessionPin]:
        """The plan's live pins, by conversation key (``version``: of that version only).

        The candidate's pins (what a rollback moves) are read from the plan's index of them,
        not by scanning every pin; until the index covers every live candidate pin (for one
        pin TTL after it was first written, e.g. after an upgrade) they are scanned for.
        """
        if version is Version.CANDIDATE:
            indexed = self._indexed_candidates(plan_id)
            if indexed is not None:
                return indexed
        head = self._key("pin", plan_id, "")
        match = _GLOB.sub(r"\\\1", head) + "*"
        pins: dict[str, SessionPin] = {}
        with self._guard("pinned_sessions", match):
            keys = [_as_str(k) for k in self._client.scan_iter(match=match, count=1000)]
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                for key, raw in zip(chunk, self._mget(chunk), strict=True):
                    if raw is None:  # expired or unpinned since the scan
                        continue
                    pin = SessionPin.decode(_as_str(raw))
                    if version is None or pin.version == version:
                        pins[key[len(head) :]] = pin
        return pins

    def _indexed_candidates(self, plan_id: str) -> dict[str, SessionPin] | None:
        """The candidate's pins from the plan's index; ``None`` while the index may miss some."""
        index = self._plan_key(plan_id, "candidate-pins")
        with self._guard("pinned_sessions", index):
            now = round(time.time() * 1000)
            complete = self._client.hget(
                self._plan_key(plan_id, "candidate-pins-since"), "complete"
            )
            if complete is None or now < int(_as_str(complete)):
                return None
            self._client.zremrangebyscore(index, "-inf", now)
            sessions = [_as_str(member) for member in self._client.zrange(index, 0, -1)]
            pins: dict[str, SessionPin] = {}
            for start in range(0, len(sessions), 1000):
                chunk = sessions[start : start + 1000]
                keys = [self._key("pin", plan_id, session) for session in chunk]
                for session, raw in zip(chunk, self._mget(keys), strict=True):
                    pin = None if raw is None else SessionPin.decode(_as_str(raw))
                    if pin is not None and pin.version is Version.CANDIDATE:
                        pins[session] = pin
            return pins

    def repin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> None:
        key = self._key("pin", plan_id, session_id)
        with self._guard("repin_session", key):
            pipe = self._client.pipeline(transaction=False)  # one round trip (two slots)
            if pin.version is Version.CANDIDATE:
                self._index_candidate(pipe, plan_id, session_id, ttl)
            else:
                pipe.zrem(self._plan_key(plan_id, "candidate-pins"), session_id)
            pipe.set(key, pin.encode(), px=_millis(ttl))  # after the index, as in pin_session
            pipe.execute()

    # controller state ---------------------------------------------------------------------
    def get_plan_state(self, plan_id: str) -> str | None:
        """The controller's state, or ``None`` for a plan never started.

        Raises:
            StoreError: when the state is only under its name before cluster support: a
                controller must not start that plan from scratch (``graylayer redis-migrate``).
        """
        key = self._plan_key(plan_id, "state")
        with self._guard("get_plan_state", key):
            raw = self._client.get(key)
            if raw is None and self._client.exists(legacy_plan_key(self._prefix, plan_id, "state")):
                raise StoreError(
                    f"plan {plan_id!r} has its state under the key layout before cluster "
                    f"support; run `graylayer redis-migrate` once to move it to {key!r}"
                )
            return None if raw is None else _as_str(raw)

    def commit(
        self,
        plan_id: str,
        *,
        ratios: Mapping[str, float],
        state: str,
        audit: Sequence[str],
        steps: Mapping[str, str] | None = None,
    ) -> None:
        checked = {layer: repr(check_ratio(ratio)) for layer, ratio in ratios.items()}  # no I/O
        key = self._plan_key(plan_id, "state")
        with self._guard("commit", key):
            pipe = self._client.pipeline(transaction=True)  # MULTI ... EXEC
            if checked:  # HSET needs at least one field
                pipe.hset(self._plan_key(plan_id, "ratios"), mapping=checked)
            if steps:
                pipe.hset(self._plan_key(plan_id, "steps"), mapping=dict(steps))
            pipe.set(key, state)
            for entry in audit:
                pipe.xadd(self._plan_key(plan_id, "audit"), {"entry": entry}, maxlen=_STREAM_MAXLEN)
            pipe.execute()

    def read_audit(self, plan_id: str, limit: int | None = None) -> list[str]:
        if limit is not None and limit < 0:
            raise ConfigurationError("limit", limit, "None or a non-negative number of entries")
        if limit == 0:
            return []
        key = self._plan_key(plan_id, "audit")
        with self._guard("read_audit", key):
            if limit is None:
                return _entries(self._client.xrange(key))
            return _entries(self._client.xrevrange(key, count=limit))[::-1]

    def try_lease(self, name: str, holder: str, ttl: float) -> bool:
        key = self._key("lease", name)
        with self._guard("try_lease", key):
            return bool(self._lease_script(keys=[key], args=[holder, _millis(ttl)]))

    def release_lease(self, name: str, holder: str) -> None:
        key = self._key("lease", name)
        with self._guard("release_lease", key):
            self._release_script(keys=[key], args=[holder])

    def lease_holder(self, name: str) -> str | None:
        key = self._key("lease", name)
        with self._guard("lease_holder", key):
            raw = self._client.get(key)
            return None if raw is None else _as_str(raw)

    # candidate tool-call journal ----------------------------------------------------------
    def record_tool_call(self, plan_id: str, entry: str) -> None:
        key = self._key("toolcalls", plan_id)
        with self._guard("record_tool_call", key):
            self._client.xadd(key, {"entry": entry}, maxlen=_STREAM_MAXLEN)

    def tool_calls(self, plan_id: str) -> list[str]:
        key = self._key("toolcalls", plan_id)
        with self._guard("tool_calls", key):
            return _entries(self._client.xrange(key))

    # evidence -----------------------------------------------------------------------------
    def _arm_keys(self, plan_id: str, arm: ArmKey) -> tuple[str, str]:
        tag = "{ev:" + ":".join((plan_id, arm.layer, arm.step, arm.version)) + "}"
        return self._key(tag, "totals"), self._key(tag, "users")

    def add_evidence(self, plan_id: str, deltas: Sequence[UnitDelta]) -> None:
        arms: dict[ArmKey, list[Any]] = {}
        seen: dict[ArmKey, set[str]] = {}
        for delta in deltas:
            if delta.arm.counts_users_only:
                seen.setdefault(delta.arm, set()).add(delta.user)
                continue
            counts = [(name, value) for name, value in delta.counts.items() if value]
            args = arms.setdefault(delta.arm, [])
            args += [delta.user, delta.activity, len(counts)]
            for name, value in counts:
                args += [name, repr(float(value))]
        if not arms and not seen:
            return
        with self._guard("add_evidence", plan_id):
            pipe = self._batch()
            for arm, args in arms.items():
                self._evidence_script(
                    keys=list(self._arm_keys(plan_id, arm)),
                    args=[_millis(self._evidence_ttl), *args],
                    client=None if self._cluster else pipe,
                )
            for arm, users in seen.items():  # 12 kB per arm however many users come
                key = self._arm_keys(plan_id, arm)[1]
                pipe.pfadd(key, *sorted(users))
                pipe.pexpire(key, _millis(self._evidence_ttl))
            pipe.execute()

    def read_evidence(self, plan_id: str, layer: str, step: str) -> dict[str, ArmTotals]:
        versions = [v.value for v in Version]
        arms = [ArmKey(layer, step, v) for v in versions]
        with self._guard("read_evidence", plan_id):
            pipe = self._batch()
            for arm in arms:
                totals, users = self._arm_keys(plan_id, arm)
                if arm.counts_users_only:
                    pipe.pfcount(users)
                else:
                    pipe.hgetall(totals)
            replies = pipe.execute()
        result = {}
        for arm, reply in zip(arms, replies, strict=True):
            if arm.counts_users_only and reply:
                result[arm.version] = ArmTotals(users=int(reply))
            elif not arm.counts_users_only and reply:
                result[arm.version] = _totals(reply)
        return result

    # nonces -------------------------------------------------------------------------------
    def claim_once(self, key: str, ttl: float) -> bool:
        full = self._key("nonce", key)
        with self._guard("claim_once", full):
            return bool(self._client.set(full, "1", nx=True, px=_millis(ttl)))

    # administration -----------------------------------------------------------------------
    def migrate_layout(self) -> LayoutMigration:
        """Move the plan keys of the layout before cluster support to their new names.

        Idempotent; see :func:`.redis_layout.migrate_layout` (``graylayer redis-migrate``).

        Raises:
            StoreError: when Redis fails; what was moved stays moved, nothing is lost.
        """
        with self._guard("migrate_layout", self._prefix):
            return migrate_layout(self._client, self._prefix)

    def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            StoreError: when it does not (within ``socket_timeout`` for URL clients).
        """
        with self._guard("ping", self._prefix):
            self._client.ping()

    def close(self) -> None:
        """Close the connections of a client this store built; a client passed in stays open."""
        for copy in self._copies.values():
            copy.close()
        if self._owns_client:
            with self._guard("close", self._prefix):
                self._client.close()
