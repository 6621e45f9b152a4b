"""Plans: what a rollout is, before anything runs.

A :class:`RolloutPlan` (from YAML, a dict or code) names the two versions, the layers low risk
first with their steps and gates, and how users are scored into layers (the A-RFM score over a
:class:`UserProfile`, tag rules, explicit members). Bucketing is pure: the same user gets the same
bucket in every process and language. Nothing here imports LangChain or Prometheus.
"""

from __future__ import annotations

from langchain_graylayer.plan.assignment import LayerAssignment, LayerReason
from langchain_graylayer.plan.bucketing import BUCKETS, bucket, in_candidate, ratio_threshold
from langchain_graylayer.plan.evaluators import EvaluatorSpec
from langchain_graylayer.plan.gates import Gates, Guardrail, GuardrailMetric, Judging
from langchain_graylayer.plan.plan import (
    DEFAULT_STEPS,
    LayerSpec,
    RolloutPlan,
    Version,
    VersionInfo,
)
from langchain_graylayer.plan.pricing import ModelPrice, Pricing
from langchain_graylayer.plan.profile import LayerScorer, ScoreWeights, ScoringConfig, UserProfile
from langchain_graylayer.plan.rules import TagRule

__all__ = [
    "BUCKETS",
    "DEFAULT_STEPS",
    "EvaluatorSpec",
    "Gates",
    "Guardrail",
    "GuardrailMetric",
    "Judging",
    "LayerAssignment",
    "LayerReason",
    "LayerScorer",
    "LayerSpec",
    "ModelPrice",
    "Pricing",
    "RolloutPlan",
    "ScoreWeights",
    "ScoringConfig",
    "TagRule",
    "UserProfile",
    "Version",
    "VersionInfo",
    "bucket",
    "in_candidate",
    "ratio_threshold",
]
