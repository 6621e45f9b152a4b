"""langchain-graylayer: gray release of LangChain agents by user risk layer.

Wrap two versions of an agent in a :class:`GrayRouter`; each user gets the stable or the
candidate version from their risk layer and that layer's ratio, sticky per user and pinned per
conversation. Optional extras are loaded lazily: ``from langchain_graylayer import RedisStore``
works once the ``[redis]`` extra is installed (it is left out of ``__all__`` so that
``import *`` never needs an extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_graylayer.errors import (
    ConfigurationError,
    GraylayerError,
    StoreError,
    UnknownRunError,
)
from langchain_graylayer.judging.judge import Verdict, judge
from langchain_graylayer.judging.readmodel import ArmStats, MetricSource, Snapshot
from langchain_graylayer.measuring.completion import default_completion_judge
from langchain_graylayer.measuring.handler import (
    GraylayerCallbackHandler,
)
from langchain_graylayer.measuring.prometheus import GraylayerMetrics, default_metrics
from langchain_graylayer.measuring.prometheus_source import PrometheusSource
from langchain_graylayer.measuring.sources import InProcessSource
from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason
from langchain_graylayer.plan.bucketing import BUCKETS, bucket, in_candidate, ratio_threshold
from langchain_graylayer.plan.gates import Gates, Guardrail, GuardrailMetric, Judging
from langchain_graylayer.plan.plan import (
    DEFAULT_STEPS,
    LayerSpec,
    RolloutPlan,
    Version,
    VersionInfo,
)
from langchain_graylayer.plan.profile import (
    LayerScorer,
    ScoreTerms,
    ScoreWeights,
    ScoringConfig,
    UserProfile,
)
from langchain_graylayer.plan.rules import TagRule
from langchain_graylayer.rollout.cleanup import (
    ChatHistoryCleanup,
    CheckpointerCleanup,
    RollbackReport,
)
from langchain_graylayer.rollout.controller import RolloutController
from langchain_graylayer.rollout.state import AuditEntry, LayerPhase, PlanStatus
from langchain_graylayer.routing.assigner import Assigner
from langchain_graylayer.routing.decision import RouteReason, RoutingDecision
from langchain_graylayer.routing.router import GrayRouter
from langchain_graylayer.store import MemoryStore, Store
from langchain_graylayer.store.protocols import SessionPin

if TYPE_CHECKING:
    from langchain_graylayer.store.redis import RedisStore as RedisStore

__version__ = "0.1.0"

__all__ = [
    "BUCKETS",
    "DEFAULT_STEPS",
    "ArmStats",
    "Assigner",
    "AuditEntry",
    "ChatHistoryCleanup",
    "CheckpointerCleanup",
    "ConfigurationError",
    "Gates",
    "GrayRouter",
    "GraylayerCallbackHandler",
    "GraylayerError",
    "GraylayerMetrics",
    "Guardrail",
    "GuardrailMetric",
    "InProcessSource",
    "Judging",
    "LayerAssignment",
    "LayerPhase",
    "LayerReason",
    "LayerScorer",
    "LayerSpec",
    "MemoryStore",
    "MetricSource",
    "PlanStatus",
    "PrometheusSource",
    "RollbackReport",
    "RolloutController",
    "RolloutPlan",
    "RouteReason",
    "RoutingDecision",
    "ScoreTerms",
    "ScoreWeights",
    "ScoringConfig",
    "SessionPin",
    "Snapshot",
    "Store",
    "StoreError",
    "TagRule",
    "UnknownRunError",
    "UserProfile",
    "Verdict",
    "Version",
    "VersionInfo",
    "__version__",
    "bucket",
    "default_completion_judge",
    "default_metrics",
    "in_candidate",
    "judge",
    "ratio_threshold",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":  # the redis client is an optional extra
        from langchain_graylayer.store.redis import RedisStore as RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
