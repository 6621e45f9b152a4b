"""State stores: the ``Store`` protocol, ``MemoryStore``, and ``RedisStore`` (extra ``redis``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_graylayer.store.memory import MemoryStore
from langchain_graylayer.store.protocols import Store, check_ratio

if TYPE_CHECKING:
    from langchain_graylayer.store.redis import RedisStore as RedisStore

__all__ = ["MemoryStore", "Store", "check_ratio"]  # RedisStore: lazily, needs the [redis] extra


def __getattr__(name: str) -> Any:
    if name == "RedisStore":  # imported lazily: the redis client is an optional extra
        from langchain_graylayer.store.redis import RedisStore as RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
