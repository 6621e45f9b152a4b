"""Gates: what a layer's candidate must show before its ratio moves, and what rolls it back.

A plan has plan-wide :class:`Judging` settings and default :class:`Gates`; each layer may
override the gates. A guardrail compares candidate with concurrent stable of the same layer on one
metric: a significant harm rolls back; promotion needs non-inferiority within the margin.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan._config import ConfigModel, Delay, Seconds
from langchain_graylayer.plan.evaluators import EVAL_PREFIX, EvaluatorMetric

__all__ = ["DEFAULT_GUARDRAILS", "Gates", "Guardrail", "GuardrailMetric", "Judging"]


class GuardrailMetric(StrEnum):
    """The per-request rates a guardrail can watch."""

    COMPLETION_RATE = "completion_rate"
    """Completed tasks per request (higher is better)."""
    TOOL_SUCCESS_RATE = "tool_success_rate"
    """Successful tool calls per tool call (higher is better)."""
    ERROR_RATE = "error_rate"
    """Failed requests (errors and fallbacks) per request (lower is better)."""
    BAD_FEEDBACK_RATE = "bad_feedback_rate"
    """Bad ratings per request (lower is better)."""
    COMPLAINT_RATE = "complaint_rate"
    """Complaints per request (lower is better)."""
    SLOW_RATE = "slow_rate"
    """Share of requests slower than the guardrail's ``slo_seconds`` (lower is better)."""
    COST_PER_REQUEST = "cost_per_request"
    """The agent's own model cost per request, users as the unit (lower is better): money from
    the plan's ``pricing`` when every request of the step in both arms was priced, else input
    plus output tokens. Its ``margin`` is *relative*: 0.2 = the candidate may cost up to 20 %
    more than stable. Not among the defaults: a plan opts in."""

    @property
    def higher_is_better(self) -> bool:
        return self in (GuardrailMetric.COMPLETION_RATE, GuardrailMetric.TOOL_SUCCESS_RATE)

    @property
    def relative(self) -> bool:
        """The margin is a share of stable's value (cost), not an absolute difference."""
        return self is GuardrailMetric.COST_PER_REQUEST

    @property
    def rare(self) -> bool:
        """Sparse event counts, also checked with the exact conditional test."""
        return self in (
            GuardrailMetric.ERROR_RATE,
            GuardrailMetric.BAD_FEEDBACK_RATE,
            GuardrailMetric.COMPLAINT_RATE,
        )


class Guardrail(ConfigModel):
    """One metric the candidate may not be worse on, and by how much it may trail stable.

    Example:
        >>> Guardrail(metric="completion_rate", margin=0.03).metric.higher_is_better
        True
    """

    metric: GuardrailMetric | EvaluatorMetric
    """A built-in rate, or ``eval:<name>``: the pass rate of the plan's evaluator ``name``."""
    margin: float = Field(default=0.03, ge=0, le=1)
    """Non-inferiority margin, absolute (0.03 = 3 percentage points); for a relative metric
    (``cost_per_request``) a share of stable's value (0.2 = 20 % more), and also the harm
    threshold: a candidate significantly more than that above stable rolls back."""
    slo_seconds: float = Field(default=5.0, gt=0)
    """For ``slow_rate``: the latency objective."""
    delay: Delay = 0.0
    """How late this metric's events arrive after their run (complaints: hours). Events count in
    the step their run was routed under, and a step is not promoted before it has run this long
    past its bake time, so late harm is still seen."""

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, GuardrailMetric):
            if value.startswith(EVAL_PREFIX):
                return EvaluatorMetric(value)
            if value not in GuardrailMetric._value2member_map_:
                known = ", ".join(m.value for m in GuardrailMetric)
                raise ValueError(f"one of {known}, or '{EVAL_PREFIX}<evaluator name>'")
        return value


DEFAULT_GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail(metric=GuardrailMetric.COMPLETION_RATE, margin=0.03),
    Guardrail(metric=GuardrailMetric.TOOL_SUCCESS_RATE, margin=0.03),
    Guardrail(metric=GuardrailMetric.ERROR_RATE, margin=0.02),
    Guardrail(metric=GuardrailMetric.BAD_FEEDBACK_RATE, margin=0.02),
    Guardrail(metric=GuardrailMetric.COMPLAINT_RATE, margin=0.01),
    Guardrail(metric=GuardrailMetric.SLOW_RATE, margin=0.03),
)
"""Completion, tool success, errors, bad feedback, complaints and slow requests."""


class Gates(ConfigModel):
    """When a layer's step may move: samples, time, guardrails and the timeout policy."""

    min_samples: int = Field(default=200, ge=1)
    """Candidate users at the current step before a promotion on non-inferiority."""
    size_steps: bool = True
    """Open a layer at the first of its steps that can gather ``min_users_at_timeout``
    candidate users within ``max_step_time``, judged by the layer's own stable traffic before
    it opened (a small layer skips a 1 % step that would hold nobody); False: always the
    first step."""
    min_users_at_timeout: int = Field(default=30, ge=1)
    """Candidate users a step needs before its timeout may promote on "no harm found": fewer
    is not evidence, and the step holds with an alert instead."""
    bake_time: Seconds = 3600.0
    """Minimum time at a step before promotion."""
    max_step_time: Seconds = 86400.0
    """After this long at a step with no decision, the timeout policy applies."""
    timeout_policy: Literal["promote_if_no_harm", "hold"] = "promote_if_no_harm"
    """At ``max_step_time``: promote when no harm was found in at least ``min_users_at_timeout``
    candidate users (a quiet layer may never reach ``min_samples``), or keep holding for a
    human."""
    guardrails: tuple[Guardrail, ...] = DEFAULT_GUARDRAILS

    @model_validator(mode="after")
    def _consistent(self) -> Gates:
        if self.max_step_time < self.bake_time:
            raise ConfigurationError(
                "max_step_time", self.max_step_time, f">= bake_time ({self.bake_time:g} s)"
            )
        metrics = [g.metric for g in self.guardrails]
        for index, metric in enumerate(metrics):
            if metric in metrics[:index]:
                raise ConfigurationError(
                    f"guardrails[{index}].metric", metric.value, "each metric at most once"
                )
        return self


class Judging(ConfigModel):
    """Plan-wide judging: error budget, hard floors, the article's QoS, rollback scope."""

    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    """False-rollback budget of the whole plan, split over guardrails and layers."""
    n_star: float = Field(default=400.0, gt=0)
    """Tuning of the always-valid harm tests: the users (both arms) at which they are
    tightest; small values catch collapses sooner."""
    ni_n_star: float = Field(default=5000.0, gt=0)
    """Tuning of the non-inferiority tests (in users), which conclude at larger samples."""
    srm_alpha: float = Field(default=0.001, gt=0, lt=0.5)
    """Significance of the sample-ratio mismatch check on users (a mismatch holds and alerts)."""
    srm_min_users: int = Field(default=100, ge=1)
    """Users (both arms) in a step before the sample-ratio check speaks."""
    max_error_rate: float | None = Field(default=0.2, gt=0, le=1)
    """Hard floor on the candidate alone: roll back when its error rate (errors and fallbacks)
    is *significantly* above this (an always-valid one-sample bound over users, with its share
    of ``alpha``) once ``floor_min_samples`` candidate users are in — unless stable's error rate
    in the same step is above half the floor (an outage of both); ``None`` disables it."""
    floor_min_samples: int = Field(default=10, ge=2)
    """Candidate users before the hard floor may act."""
    qos_weights: tuple[float, float, float] = (0.3, 0.2, 0.5)
    """The article's (wU, wT, wB); high-risk defaults (0.3, 0.2, 0.5)."""
    qos_threshold: float = Field(default=0.8, ge=0, le=1)
    qos_gate: bool = False
    """Also require the candidate's QoS ≥ ``qos_threshold`` to promote (it is always reported)."""
    max_latency: float = Field(default=5.0, gt=0)
    """The QoS score's ``max_latency`` in seconds."""
    rollback_scope: Literal["plan", "layer"] = "plan"
    """A rollback sets every layer to 0 (``plan``) or only the harmed layer (``layer``)."""
    side_effect_tools: tuple[str, ...] = ()
    """Tools whose candidate calls are journaled for compensation after a rollback (``"*"``:
    every tool). Empty: none, and no journal watches the candidate's runs (a handler on the runs
    of a candidate request costs LangChain's dispatch of every event: ~0.2 ms on a one-tool
    agent, ~3% of it)."""

    @model_validator(mode="after")
    def _tools(self) -> Judging:
        if any(not isinstance(name, str) or not name.strip() for name in self.side_effect_tools):
            raise ConfigurationError(
                "side_effect_tools", list(self.side_effect_tools),
                'tool names (non-empty strings), or ["*"] for every tool',
            )  # fmt: skip
        return self

    @model_validator(mode="after")
    def _weights(self) -> Judging:
        if any(w < 0 for w in self.qos_weights) or abs(sum(self.qos_weights) - 1) > 1e-9:
            raise ConfigurationError(
                "qos_weights", list(self.qos_weights), "three weights >= 0 summing to 1"
            )
        return self
