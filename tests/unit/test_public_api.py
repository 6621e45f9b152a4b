"""The public facade: exactly these names, sorted, light to import, and docstrings that run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest

import langchain_graylayer

PUBLIC = [
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
# need an extra: loaded at first use, not in __all__
LAZY = {"RedisStore", "add_gray_routes", "gray_graph", "gray_http_app"}


def test_exported_members() -> None:
    """What ``from langchain_graylayer import ...`` offers is exactly this list (as in httpx's
    ``test_exported_members``): adding or dropping a public name is a decision, not an accident."""
    assert langchain_graylayer.__all__ == PUBLIC
    assert dir(langchain_graylayer) == sorted([*PUBLIC, *LAZY])
    for name in [*PUBLIC, *LAZY]:
        assert getattr(langchain_graylayer, name) is not None


def test_all_is_sorted() -> None:
    def ruff_order(name: str) -> tuple[int, str]:  # RUF022: CONSTANTS, Classes, functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert sorted(PUBLIC, key=ruff_order) == PUBLIC


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    assert langchain_graylayer.__version__ == version("langchain-graylayer")


def test_every_exception_derives_from_graylayer_error() -> None:
    from langchain_graylayer import errors

    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type):
            assert issubclass(value, errors.GraylayerError), name


def test_import_is_light_and_loads_no_extra() -> None:
    # compared with what langchain-core itself loads (langsmith may pull in OpenTelemetry)
    code = (
        "import sys, langchain_core.runnables, langchain_core.tracers.event_stream; "
        "before = set(sys.modules); "
        "import langchain_graylayer; "
        "heavy = [m for m in ('redis', 'fastapi', 'langserve', 'uvicorn', 'opentelemetry.sdk', "
        "'numpy', 'scipy', 'langgraph', 'itsdangerous') if m in sys.modules and m not in before]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _modules() -> list[str]:
    """Every module of the package (the demo and the simulator need their extras)."""
    found = pkgutil.walk_packages(langchain_graylayer.__path__, "langchain_graylayer.")
    return sorted(m.name for m in found if not m.name.endswith("__main__"))


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
