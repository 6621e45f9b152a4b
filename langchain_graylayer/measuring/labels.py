"""What a run is measured under: the metadata keys and tags the router writes into every run (and
the handlers read back), the labels, and how a request ended."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_graylayer._compat import StrEnum

__all__ = [
    "FALLBACK_KEY",
    "FALLBACK_TAG",
    "LAYER_KEY",
    "PLAN_KEY",
    "REASON_KEY",
    "REQUEST_ID_KEY",
    "SESSION_KEY",
    "VERSION_KEY",
    "cancelled",
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


def cancelled(error: BaseException | None) -> bool:
    """True for the exceptions that cancel a run rather than fail it: asyncio's cancellation
    and a generator closed by its consumer (a client that disconnected mid-stream)."""
    return isinstance(error, (asyncio.CancelledError, GeneratorExit))


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
