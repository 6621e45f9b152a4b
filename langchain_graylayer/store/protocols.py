"""The store's protocols: small seams, one per concern, and ``Store``, which has them all.

==================  ========================================================  ==================
protocol            what it keeps                                             who uses it
==================  ========================================================  ==================
``RatioStore``      each layer's candidate ratio and current step             router, controller
``EvidenceStore``   per-user counters of each arm and their totals            router, controller
``ProfileStore``    user profiles and the cached layer of each user           router, admin API
``PinStore``        pins: the version each user's conversation started on   router, cleanup
``StateStore``      the controller's plan state and audit log, atomically     controller
``LeaseStore``      leases: which controller replica acts                     controller
``JournalStore``    the candidate's tool calls, for compensation              journal, cleanup
``NonceStore``      set-once keys with expiry (a feedback token counts once)  feedback
==================  ========================================================  ==================

:class:`~langchain_graylayer.store.memory.MemoryStore` implements every one in process;
:class:`~langchain_graylayer.store.redis.RedisStore` in Redis, shared by replicas. A networked
store (``networked = True``) is wrapped once by
:class:`~langchain_graylayer.store.cached.CachedStore` where requests are served, so the request
path reads ratios from memory and never waits on a journal write.

Implementations raise :class:`~langchain_graylayer.errors.StoreError` when the backend fails;
the router turns that into a stable answer, never a failed request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import quote, unquote

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan.assignment import LayerAssignment
from langchain_graylayer.plan.plan import Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.store.evidence import ArmTotals, UnitDelta

__all__ = [
    "EvidenceStore",
    "JournalStore",
    "LeaseStore",
    "NonceStore",
    "PinStore",
    "ProfileStore",
    "RatioStore",
    "RoutingStore",
    "SessionPin",
    "StateStore",
    "Store",
    "check_ratio",
    "conversation_key",
    "split_conversation_key",
]


def check_ratio(ratio: float) -> float:
    """Validate a ratio in ``[0, 1]``.

    Raises:
        ConfigurationError: when the ratio is outside ``[0, 1]`` or not a number.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise ConfigurationError("ratio", ratio, "a number in [0, 1]")
    return float(ratio)


def conversation_key(user_id: str | None, session_id: str) -> str:
    """One user's conversation: the session id scoped to its user.

    Pins are stored under it, so two users who send the same session id never share a pin; behind
    ``add_gray_routes`` it is also the LangGraph ``thread_id``, so they never share a checkpointer
    thread either. The user id is percent-encoded (so it holds no ``:``), the session id follows
    as it is: one key per ``(user, session)``, and :func:`split_conversation_key` inverts it.

    Example:
        >>> conversation_key("alice", "chat-1")
        'alice:chat-1'
        >>> conversation_key("a:b", "c"), conversation_key("a", "b:c")
        ('a%3Ab:c', 'a:b:c')
    """
    return f"{quote(user_id or '', safe='')}:{session_id}"


def split_conversation_key(key: str) -> tuple[str, str]:
    """``(user_id, session_id)`` of a :func:`conversation_key` (e.g. one a cleanup hook got).

    Example:
        >>> split_conversation_key("j%C3%B6rg:chat:1")
        ('jörg', 'chat:1')
    """
    user, separator, session = key.partition(":")
    if not separator:
        raise ValueError(f"not a conversation key (no ':'): {key!r}")
    return unquote(user), session


@dataclass(frozen=True, slots=True)
class SessionPin:
    """The version (and layer) a conversation started on, and whose conversation it is."""

    version: Version
    layer: str | None
    created_at: float
    user_id: str | None = None
    """The user whose conversation it is. The router stores each pin under
    :func:`conversation_key` and follows it only for this user: a pin without one is
    followed by nobody."""

    def encode(self) -> str:
        """Compact form for stores: ``version|layer|created_at|user_id`` (user id last, as is)."""
        return f"{self.version.value}|{self.layer or ''}|{self.created_at!r}|{self.user_id or ''}"

    @classmethod
    def decode(cls, text: str) -> SessionPin:
        """Inverse of :meth:`encode`."""
        version, layer, created, *user = text.split("|", 3)
        return cls(Version(version), layer or None, float(created), (user or [""])[0] or None)

    def belongs_to(self, user_id: str | None) -> bool:
        """True when the pin is ``user_id``'s (a pin without a user belongs to nobody)."""
        return self.user_id is not None and self.user_id == user_id


@runtime_checkable
class RatioStore(Protocol):
    """Each layer's candidate ratio, per plan."""

    def get_ratios(self, plan_id: str) -> dict[str, float]:
        """Every layer's candidate ratio for ``plan_id``; unset layers are absent (ratio 0)."""
        ...

    def get_ratio(self, plan_id: str, layer: str) -> float:
        """One layer's ratio, 0.0 when unset."""
        ...

    def set_ratio(self, plan_id: str, layer: str, ratio: float) -> None:
        """Atomically set one layer's ratio."""
        ...

    def get_steps(self, plan_id: str) -> dict[str, str]:
        """Each layer's current step key (what the controller committed with its ratio); runs
        are attributed to the step they were routed under. Unset layers are absent."""
        ...


@runtime_checkable
class ProfileStore(Protocol):
    """User profiles, and each user's cached layer assignment per plan."""

    def get_profile(self, user_id: str) -> UserProfile | None:
        """The user's profile, or ``None``."""
        ...

    def put_profile(self, user_id: str, profile: UserProfile) -> None:
        """Store a profile and forget the user's cached layers (so consent applies at once)."""
        ...

    def get_cached_layer(self, plan_id: str, user_id: str) -> LayerAssignment | None:
        """The cached layer assignment, or ``None`` when absent or expired."""
        ...

    def cache_layer(
        self, plan_id: str, user_id: str, assignment: LayerAssignment, ttl: float
    ) -> None:
        """Cache a layer assignment for ``ttl`` seconds."""
        ...


@runtime_checkable
class PinStore(Protocol):
    """Session pins: the version each conversation started on.

    A store keeps pins under the key it is given; the router gives each user's conversation its
    own, :func:`conversation_key` ``(user_id, session_id)``, and so do ``pinned_sessions``' keys.
    """

    def get_pin(self, plan_id: str, session_id: str) -> SessionPin | None:
        """The version the session is pinned to, or ``None``."""
        ...

    def pin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> SessionPin:
        """Pin the session unless it is already pinned; return the pin in force (first wins)."""
        ...

    def pinned_sessions(
        self, plan_id: str, version: Version | None = None
    ) -> dict[str, SessionPin]:
        """Live pins of a plan (optionally of one version), by the key they were pinned under."""
        ...

    def repin_session(self, plan_id: str, session_id: str, pin: SessionPin, ttl: float) -> None:
        """Overwrite a session's pin (a rollback moves candidate sessions back to stable)."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """The controller's state of each plan and its audit log, changed together atomically."""

    def get_plan_state(self, plan_id: str) -> str | None:
        """The controller's state of a plan (an opaque JSON document), or ``None``."""
        ...

    def commit(
        self,
        plan_id: str,
        *,
        ratios: Mapping[str, float],
        state: str,
        audit: Sequence[str],
        steps: Mapping[str, str] | None = None,
    ) -> None:
        """Atomically set these ratios (and their layers' step keys), replace the plan state and
        append the audit entries (JSON documents; none, e.g. when only the latest verdict is
        remembered).

        All or nothing: when the backend fails, none of it is applied (``StoreError``).
        Ratios are validated first (``ConfigurationError``) and nothing is written then either.
        """
        ...

    def read_audit(self, plan_id: str, limit: int | None = None) -> list[str]:
        """Audit entries (JSON documents), oldest first; the newest ``limit`` when given."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """Named leases with a holder and an expiry (which controller replica acts)."""

    def try_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take the lease ``name`` for ``ttl`` seconds, or renew it if ``holder`` has it.

        Returns False while another holder's lease is live; a lapsed lease can be taken.
        """
        ...

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up, only if ``holder`` has it."""
        ...

    def lease_holder(self, name: str) -> str | None:
        """Who holds the lease now, or ``None``."""
        ...


@runtime_checkable
class JournalStore(Protocol):
    """The candidate's tool calls, kept for compensation after a rollback."""

    def record_tool_call(self, plan_id: str, entry: str) -> None:
        """Append a candidate tool call (a JSON document) to a bounded journal."""
        ...

    def tool_calls(self, plan_id: str) -> list[str]:
        """The journal's entries (JSON documents), oldest first."""
        ...


@runtime_checkable
class NonceStore(Protocol):
    """Keys that can be claimed once, until they expire."""

    def claim_once(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds: True the first time, False while it is claimed."""
        ...


@runtime_checkable
class EvidenceStore(Protocol):
    """Per-user counters of each arm (a plan's layer, step and version) and their totals."""

    def add_evidence(self, plan_id: str, deltas: Sequence[UnitDelta]) -> None:
        """Add what users did; each arm's totals stay exact (``docs/statistics.md``)."""
        ...

    def read_evidence(self, plan_id: str, layer: str, step: str) -> dict[str, ArmTotals]:
        """The totals of each version's arm of ``layer`` at ``step`` (absent: no user yet)."""
        ...


@runtime_checkable
class RoutingStore(
    RatioStore, ProfileStore, PinStore, JournalStore, NonceStore, EvidenceStore, Protocol
):
    """What the request path uses: ratios and steps, profiles and the layer cache, pins, the
    journal, feedback nonces, and the evidence it records."""

    networked: bool
    """True when calls do network I/O: where requests are served the store is then wrapped in a
    :class:`~langchain_graylayer.store.cached.CachedStore`, and async code calls it off the event
    loop."""


@runtime_checkable
class Store(RoutingStore, StateStore, LeaseStore, Protocol):
    """Everything routers and controllers share: every protocol above."""
