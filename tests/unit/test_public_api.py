"""The public facade: an explicit, sorted ``__all__``, light imports, and runnable docstrings."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
import types

import pytest

import langchain_graylayer

DOCTESTED = [
    "langchain_graylayer.plan.bucketing",
    "langchain_graylayer.routing.decision",
    "langchain_graylayer.errors",
    "langchain_graylayer.plan.profile",
    "langchain_graylayer.plan.plan",
    "langchain_graylayer.routing.router",
    "langchain_graylayer.routing.assigner",
    "langchain_graylayer.measuring.prometheus",
    "langchain_graylayer.measuring.handler",
    "langchain_graylayer.judging.judge",
    "langchain_graylayer.plan.gates",
    "langchain_graylayer.rollout.controller",
    "langchain_graylayer.rollout.cleanup",
    "langchain_graylayer.measuring.prometheus_source",
    "langchain_graylayer.serve.app",
    "langchain_graylayer.store.memory",
]


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions and dunders
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete() -> None:
    names = langchain_graylayer.__all__
    assert names == sorted(names, key=_isort_key)
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(langchain_graylayer, name) is not None


def test_exported_members() -> None:
    public = {
        name
        for name in dir(langchain_graylayer)
        if not name.startswith("_")
        and not isinstance(getattr(langchain_graylayer, name), types.ModuleType)
    }
    assert public - {"TYPE_CHECKING", "Any", "annotations"} <= set(langchain_graylayer.__all__)


def test_import_is_light_and_loads_no_extra() -> None:
    # compared with what langchain-core itself loads (langsmith may pull in OpenTelemetry)
    code = (
        "import sys, langchain_core.runnables, langchain_core.tracers.event_stream; "
        "before = set(sys.modules); "
        "import langchain_graylayer; "
        "heavy = [m for m in ('redis', 'fastapi', 'langserve', 'uvicorn', 'opentelemetry.sdk', "
        "'scipy', 'langgraph') if m in sys.modules and m not in before]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
