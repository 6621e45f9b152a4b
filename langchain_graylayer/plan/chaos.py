"""``Chaos``: the faults a rehearsal injects into one version — failing and slow tools, slow and
timed-out model calls, a version that raises — so a team can prove, in staging or CI, that the
judge rolls back what it should and that users are still served.

This module is the data only (a plan's ``chaos:`` block, or a test's own ``Chaos(...)``); the
faults are injected by :mod:`langchain_graylayer.testing.chaos`. Which calls fail is decided from
the seed and the call's number (:func:`draw`), so a rehearsal replays exactly.

Example:
    >>> chaos = Chaos(seed=7, tool_error_rate=0.3)
    >>> chaos.version, chaos.describe()
    ('candidate', 'candidate: tool_error_rate=0.3, seed=7')
    >>> [draw(7, "tool", n) < 0.3 for n in range(6)]
    [False, False, True, False, False, False]
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan._config import ConfigModel, parse_duration

__all__ = ["ALLOW_CHAOS_ENV", "Chaos", "draw"]

ALLOW_CHAOS_ENV = "GRAYLAYER_ALLOW_CHAOS"
"""The environment variable a process must set to ``1`` before a plan's ``chaos:`` may run."""

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
FaultDelay = Annotated[float, BeforeValidator(parse_duration), Field(ge=0.0, le=300.0)]
"""A delay of 0 to 300 s; YAML may also say ``"250ms"`` or ``"2s"``."""

_FAULTS = ("error_rate", "tool_error_rate", "tool_delay", "model_timeout_rate", "model_delay")


class Chaos(ConfigModel):
    """Faults to inject into one version (the candidate unless ``version`` says otherwise).

    Rates are the share of calls that fail, chosen by ``seed``; delays apply to every call.
    """

    seed: int = 0
    """Decides which calls fail: the same seed and the same calls fail the same way."""
    version: Literal["stable", "candidate"] = "candidate"
    """The version whose runs get the faults."""
    error_rate: Rate = 0.0
    """Share of the version's runs that raise as they start (a crashing agent)."""
    tool_error_rate: Rate = 0.0
    """Share of tool calls that raise."""
    tool_delay: FaultDelay = 0.0
    """Seconds added before every tool call (a slow tool)."""
    tools: frozenset[str] = frozenset()
    """Only these tools get tool faults (empty: every tool)."""
    model_timeout_rate: Rate = 0.0
    """Share of chat model calls that raise ``TimeoutError`` (after ``model_delay``)."""
    model_delay: FaultDelay = 0.0
    """Seconds added before every chat model call (a slow model)."""

    @model_validator(mode="after")
    def _some_fault(self) -> Chaos:
        if not any(getattr(self, name) for name in _FAULTS):
            raise ConfigurationError(
                "chaos", {}, f"at least one fault above zero: one of {', '.join(_FAULTS)}"
            )
        return self

    def describe(self) -> str:
        """One line: the version and every fault that is on, e.g. for a log line or a status."""
        faults = [f"{name}={getattr(self, name):g}" for name in _FAULTS if getattr(self, name)]
        if self.tools:
            faults.append(f"tools={','.join(sorted(self.tools))}")
        return f"{self.version}: {', '.join(faults)}, seed={self.seed}"


def draw(seed: int, kind: str, number: int) -> float:
    """A uniform number in ``[0, 1)`` for the ``number``-th call of ``kind`` (pure, stable
    across processes and Python versions)."""
    digest = hashlib.blake2b(f"{seed}:{kind}:{number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
