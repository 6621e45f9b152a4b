"""State stores: small protocols, one per concern, and their implementations.

:class:`MemoryStore` (in process, the default) and ``RedisStore`` (extra ``redis``, loaded at first
use) implement every protocol of :mod:`.protocols`; :func:`.cached.for_requests` puts a
networked store behind caches for the request path.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from langchain_graylayer.store.cached import CachedStore, for_requests
from langchain_graylayer.store.memory import MemoryStore
from langchain_graylayer.store.protocols import (
    JournalStore,
    LeaseStore,
    NonceStore,
    PinStore,
    ProfileStore,
    RatioStore,
    RoutingStore,
    SessionPin,
    StateStore,
    Store,
    check_ratio,
    conversation_key,
    split_conversation_key,
)

if TYPE_CHECKING:
    from langchain_graylayer.store.redis import RedisStore as RedisStore

__all__ = [  # RedisStore: lazily, it needs the [redis] extra
    "CachedStore",
    "JournalStore",
    "LeaseStore",
    "MemoryStore",
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
    "for_requests",
    "split_conversation_key",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":  # imported lazily: the redis client is an optional extra
        return import_module("langchain_graylayer.store.redis").RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
