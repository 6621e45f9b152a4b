"""langchain-graylayer: gray release of LangChain agents by user risk layer.

Wrap two versions of an agent in a :class:`GrayRouter`; each user gets the stable or the
candidate version from their risk layer and that layer's ratio, sticky per user and pinned per
conversation. A :class:`RolloutController` judges the candidate against the concurrent stable of
the same layer and moves the ratios layer after layer, holds, or rolls back.

These are the names most programs need. The rest is in the subpackages, one per layer of the
design (``plan``, ``store``, ``judging``, ``measuring``, ``routing``, ``rollout``, ``serve``;
``docs/architecture.md`` draws them), and in :mod:`langchain_graylayer.testing` (offline chat
models for your tests). Names that need an optional extra are loaded when first used:
``RedisStore`` (``[redis]``), ``add_gray_routes`` (``[serve]``), and ``gray_graph`` and
``gray_http_app`` for the LangGraph server (``[langgraph-server]``); they are left out of
``__all__`` so that ``import *`` never needs an extra.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from langchain_graylayer.errors import (
    ConfigurationError,
    GraylayerError,
    StoreError,
    UnknownRunError,
)
from langchain_graylayer.measuring.feedback import FeedbackKind
from langchain_graylayer.measuring.labels import RunLabels
from langchain_graylayer.measuring.prometheus import GraylayerMetrics
from langchain_graylayer.measuring.tracing import GraylayerTracingHandler
from langchain_graylayer.plan.gates import Gates, Guardrail
from langchain_graylayer.plan.plan import LayerSpec, RolloutPlan, Version
from langchain_graylayer.plan.profile import UserProfile
from langchain_graylayer.rollout.cleanup import ChatHistoryCleanup, CheckpointerCleanup
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.rollout.state import AuditEntry, LayerPhase, PlanStatus
from langchain_graylayer.routing.decision import RoutingDecision
from langchain_graylayer.routing.router import GrayRouter
from langchain_graylayer.store.memory import MemoryStore

if TYPE_CHECKING:
    from langchain_graylayer.langgraph_server.app import gray_http_app as gray_http_app
    from langchain_graylayer.langgraph_server.graph import gray_graph as gray_graph
    from langchain_graylayer.serve import add_gray_routes as add_gray_routes
    from langchain_graylayer.store.redis import RedisStore as RedisStore

try:
    __version__ = version("langchain-graylayer")
except PackageNotFoundError:  # pragma: no cover - running from a checkout that is not installed
    __version__ = "0+unknown"

__all__ = [
    "AuditEntry",
    "ChatHistoryCleanup",
    "CheckpointerCleanup",
    "ConfigurationError",
    "FeedbackKind",
    "Gates",
    "GrayRouter",
    "GraylayerError",
    "GraylayerMetrics",
    "GraylayerTracingHandler",
    "Guardrail",
    "LayerPhase",
    "LayerSpec",
    "MemoryStore",
    "PlanStatus",
    "RolloutController",
    "RolloutPlan",
    "RoutingDecision",
    "RunLabels",
    "StoreError",
    "UnknownRunError",
    "UserProfile",
    "Version",
    "__version__",
]

_LAZY = {
    "RedisStore": "langchain_graylayer.store.redis",
    "add_gray_routes": "langchain_graylayer.serve",
    "gray_graph": "langchain_graylayer.langgraph_server.graph",
    "gray_http_app": "langchain_graylayer.langgraph_server.app",
}
"""Names whose module needs an optional extra: imported at first use."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*__all__, *_LAZY])
