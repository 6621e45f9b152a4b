"""What a run is measured under: the metadata keys and tags the router writes into every run (and
the handlers read back), the labels, and how a request ended."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_graylayer._compat import StrEnum

__all__ = [
    "EVALUATOR_TAG",
    "FALLBACK_KEY",
    "FALLBACK_TAG",
    "INTERRUPT_KEY",
    "LAYER_KEY",
    "PLAN_KEY",
    "REASON_KEY",
    "REQUEST_ID_KEY",
    "SESSION_KEY",
    "VERSION_KEY",
    "cancelled",
    "carries_interrupt",
    "interrupted",
    "labels_from_metadata",
    "layer_tag",
    "plan_tag",
    "version_tag",
]

PLAN_KEY = "graylayer.plan"
VERSION_KEY = "graylayer.version"
LAYER_KEY = "graylayer.layer"
REQUEST_ID_KEY = "graylayer.request_id"
"""The router's run id; every descendant carries it, even runs detached from the tree."""
REASON_KEY = "graylayer.reason"
SESSION_KEY = "graylayer.session_id"
"""The conversation (trace metadata only, never a metric label)."""
FALLBACK_KEY = "graylayer.fallback"
"""True on the runs of the stable retry after the candidate failed."""
FALLBACK_TAG = "graylayer:fallback"
EVALUATOR_TAG = "graylayer:evaluator"
"""Tags an evaluator's own model runs (an LLM-as-judge): never measured as the agent's runs, so
they count in neither the agent's tokens nor its cost (evaluator spend is reported apart)."""


def plan_tag(plan_id: str) -> str:
    return f"graylayer:plan:{plan_id}"


def version_tag(version: str) -> str:
    return f"graylayer:version:{version}"


def layer_tag(layer: str) -> str:
    return f"graylayer:layer:{layer}"


class Outcome(StrEnum):
    """How a routed request ended."""

    OK = "ok"
    ERROR = "error"
    FALLBACK = "fallback"
    """The candidate failed and stable answered (counted against the candidate)."""
    CANCELLED = "cancelled"
    """The run was cancelled before it ended — most often the client went away mid-stream.
    It says nothing about the version: never an error, and no evidence for the judge."""
    INTERRUPTED = "interrupted"
    """The run stopped without ending, by LangGraph's control flow: an ``interrupt()`` waiting
    for a person (most often), a drain, a command to a parent graph. The thread resumes later on
    the same version (its session pin), and that run is the one that counts: never an error,
    never a completion, and no evidence for the judge."""


_CANCELLATIONS = (asyncio.CancelledError, concurrent.futures.CancelledError, GeneratorExit)

INTERRUPT_KEY = "__interrupt__"
"""Where a LangGraph run that paused at an ``interrupt()`` puts its interrupts (in its output, or
in a streamed chunk)."""


def cancelled(error: BaseException | None) -> bool:
    """True for the exceptions that cancel a run rather than fail it: asyncio's cancellation, a
    cancelled future's (an ``Exception``, unlike asyncio's), and a generator closed by its
    consumer (a client that disconnected mid-stream)."""
    return isinstance(error, _CANCELLATIONS)


def interrupted(error: BaseException | None) -> bool:
    """True for LangGraph's control-flow signals (``langgraph.errors.GraphBubbleUp`` and its
    subclasses: ``GraphInterrupt``, ``ParentCommand``, ...): they stop a run without failing it.

    LangGraph is optional: without ``langgraph.errors`` loaded, no such signal can exist.
    """
    if error is None:
        return False
    errors = sys.modules.get("langgraph.errors")
    bubble_up = getattr(errors, "GraphBubbleUp", None)
    return bubble_up is not None and isinstance(error, bubble_up)


def carries_interrupt(value: Any) -> bool:
    """True when a run's output or a streamed chunk says the run paused at an ``interrupt()``:
    a state or update with ``__interrupt__`` (also as ``(mode, chunk)`` or ``(namespace, mode,
    chunk)`` from several stream modes, or a ``version="v2"`` stream part), or LangGraph's
    ``GraphOutput`` with interrupts. Cheap: it runs on every streamed chunk."""
    if isinstance(value, dict):  # LangGraph's states, updates and stream parts are dicts
        if INTERRUPT_KEY in value:
            return True
        data = value.get("data")  # a ``version="v2"`` stream part
        return isinstance(data, dict) and INTERRUPT_KEY in data and "type" in value
    if isinstance(value, tuple):
        last = value[-1] if 2 <= len(value) <= 3 else None
        return isinstance(last, dict) and INTERRUPT_KEY in last
    return type(value).__name__ == "GraphOutput" and bool(getattr(value, "interrupts", ()))


@dataclass(frozen=True, slots=True)
class RunLabels:
    """The labels a run is measured under."""

    plan: str
    version: str
    layer: str
    step: str = ""
    """The step the run was routed under (empty: not attributable, e.g. a conversation pinned
    before the step began). Never a metric label: it keys the evidence store."""
    unit: str = ""
    """The user as the evidence store knows them (a salted hash, never the user id)."""
    activity: int = 0
    """The user's activity class before the rollout."""

    @property
    def attributable(self) -> bool:
        """True when the run counts as evidence for its step."""
        return bool(self.step and self.unit)


def labels_from_metadata(metadata: Mapping[str, Any] | None) -> RunLabels | None:
    """The labels the router wrote into a run's metadata (``None`` for unrouted or foreign runs)."""
    if not metadata or LAYER_KEY not in metadata or PLAN_KEY not in metadata:
        return None
    return RunLabels(str(metadata[PLAN_KEY]), str(metadata[VERSION_KEY]), str(metadata[LAYER_KEY]))
