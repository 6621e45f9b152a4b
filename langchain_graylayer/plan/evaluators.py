"""Evaluators: named checks of each run's (or conversation's) quality, judged like any guardrail.

A plan declares evaluators by name (``hallucination``, ``refund_policy``, ...) with how they run:
what kind of implementation, how many runs they sample, per run or per conversation, how many at
once, how long each may take and how much they may spend per hour. Each evaluation yields a score
in [0, 1] where 1 is a pass; the guardrail ``eval:<name>`` compares the candidate's pass rate
with stable's over users, with the same statistics as every other guardrail.

Pure data: the implementations (a function, a Runnable, an ``openevals`` or ``agentevals``
evaluator) are bound in code or imported from ``target``; nothing here imports LangChain.

Example:
    >>> spec = EvaluatorSpec(name="hallucination", kind="openevals", sampling_rate=0.2)
    >>> spec.metric, spec.metric.count_field, spec.metric.higher_is_better
    ('eval:hallucination', 'eval.hallucination.n', True)
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import Field, GetCoreSchemaHandler, field_validator
from pydantic_core import core_schema

from langchain_graylayer._compat import StrEnum
from langchain_graylayer.plan._config import ConfigModel, Seconds

__all__ = [
    "EVAL_PREFIX",
    "EvaluatorKind",
    "EvaluatorMetric",
    "EvaluatorScope",
    "EvaluatorSpec",
    "sampled",
]

EVAL_PREFIX = "eval:"
"""A guardrail metric that starts with this names an evaluator: ``eval:hallucination``."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_NAME_RULE = "1-63 characters of a-z, 0-9 or '_', starting with a letter"


def check_evaluator_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"an evaluator name is {_NAME_RULE}")
    return value


class EvaluatorMetric(str):
    """The guardrail metric of one evaluator: ``"eval:<name>"``, its pass rate over evaluated
    runs (higher is better). Behaves like a :class:`~.gates.GuardrailMetric` for the judge.

    Example:
        >>> m = EvaluatorMetric("eval:refund_policy")
        >>> m.evaluator, m.value, m.pass_field, m.rare
        ('refund_policy', 'eval:refund_policy', 'eval.refund_policy.pass', True)
    """

    __slots__ = ()

    def __new__(cls, value: str) -> EvaluatorMetric:
        if not isinstance(value, str) or not value.startswith(EVAL_PREFIX):
            raise ValueError(f"an evaluator metric is '{EVAL_PREFIX}<evaluator name>'")
        check_evaluator_name(value[len(EVAL_PREFIX) :])
        return super().__new__(cls, value)

    @classmethod
    def of(cls, evaluator: str) -> EvaluatorMetric:
        return cls(EVAL_PREFIX + evaluator)

    @property
    def value(self) -> str:
        return str(self)

    @property
    def evaluator(self) -> str:
        return self[len(EVAL_PREFIX) :]

    @property
    def higher_is_better(self) -> bool:
        return True

    @property
    def relative(self) -> bool:
        """A pass rate: the margin is an absolute difference, as for every rate."""
        return False

    @property
    def rare(self) -> bool:
        """Failures are events like complaints: the judge also runs its exact test on the users
        with a failure (each lands in the candidate with the ratio's odds when the versions do
        not differ, since sampling never looks at the version)."""
        return True

    @property
    def count_field(self) -> str:
        """The per-user evidence field counting this evaluator's evaluated runs."""
        return f"eval.{self.evaluator}.n"

    @property
    def fail_field(self) -> str:
        """The per-user evidence field summing ``1 - score`` (users with one failed)."""
        return f"eval.{self.evaluator}.fail"

    @property
    def pass_field(self) -> str:
        """The per-user evidence field summing this evaluator's scores (1 = pass)."""
        return f"eval.{self.evaluator}.pass"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


class EvaluatorKind(StrEnum):
    """How an evaluator's implementation is called."""

    FUNCTION = "function"
    """``f(input, output, metadata)`` → bool, a number in [0, 1], or ``{"score": ...}``."""
    RUNNABLE = "runnable"
    """``r.invoke({"input", "output", "metadata"})``, e.g. an LLM-as-judge chain; its answer is
    a bool, a number, ``{"score": ...}``, or a message reading pass/fail/yes/no or a number."""
    OPENEVALS = "openevals"
    """An ``openevals`` evaluator, ``f(inputs=..., outputs=...)`` → ``{"key", "score", ...}``."""
    AGENTEVALS = "agentevals"
    """An ``agentevals`` trajectory evaluator, ``f(outputs=<the run's messages>)`` (bind its
    ``reference_outputs`` with ``functools.partial``)."""


class EvaluatorScope(StrEnum):
    """What one evaluation looks at."""

    RUN = "run"
    """Each routed run, right after it ended."""
    CONVERSATION = "conversation"
    """A whole conversation (a session's runs), once it has been idle for ``idle_time``."""


class EvaluatorSpec(ConfigModel):
    """One named evaluator: how it runs, how often, and what it may cost.

    Evaluations run in the background after the run (or conversation) ended, never on the
    request path. A run is sampled by a hash of its run id (a conversation: its session id), so
    the sampling rate is the same for both versions of every layer. An evaluator that fails or
    times out leaves the run "not evaluated", never failed.

    Example:
        >>> EvaluatorSpec(name="policy", max_tokens_per_hour=50_000).timeout
        30.0
    """

    name: str
    """Names the guardrail ``eval:<name>`` and the metrics' ``evaluator`` label."""
    kind: EvaluatorKind = EvaluatorKind.FUNCTION
    target: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    """``"package.module:attribute"`` to import the implementation from, when code does not
    pass it (``GrayRouter(evaluators={name: ...})``)."""
    scope: EvaluatorScope = EvaluatorScope.RUN
    sampling_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of runs (or conversations) evaluated, the same for both versions."""
    idle_time: Seconds = 180.0
    """For ``scope: conversation``: evaluate a conversation this long after its last run."""
    concurrency: int = Field(default=2, ge=1, le=64)
    """Evaluations of this evaluator running at once (each on its own thread)."""
    max_pending: int = Field(default=1000, ge=1, le=1_000_000)
    """Sampled runs waiting for a slot; past this a sampled run is dropped (and counted)."""
    timeout: Seconds = 30.0
    """An evaluation still running after this long counts as ``timeout`` (not evaluated)."""
    max_tokens_per_hour: int | None = Field(default=None, gt=0)
    """Spend cap: tokens the evaluator's own model calls may use in any hour; past it,
    sampling pauses (and says so) until the hour's spend falls below the cap."""
    max_cost_per_hour: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Spend cap in the plan's pricing currency (needs the judge model in ``pricing``)."""
    invert: bool = False
    """The implementation's score measures harm (1 = hallucinated): graylayer counts
    ``1 - score`` as the pass, so every evaluator guardrail reads higher is better."""

    _name = field_validator("name")(classmethod(lambda cls, v: check_evaluator_name(v)))

    @property
    def metric(self) -> EvaluatorMetric:
        """The guardrail metric of this evaluator."""
        return EvaluatorMetric.of(self.name)


def sampled(evaluator: str, key: str, rate: float) -> bool:
    """Whether ``evaluator`` evaluates the run (or conversation) ``key``: a hash of both, so the
    same run is sampled in every process, and a rate that never depends on the version.

    Example:
        >>> sampled("policy", "run-1", 1.0), sampled("policy", "run-1", 0.0)
        (True, False)
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(f"{evaluator}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64
