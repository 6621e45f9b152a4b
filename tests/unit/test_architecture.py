"""The layers of the package, held against its imports (docs/architecture.md draws them).

Every import statement counts — at module level, under ``TYPE_CHECKING`` and inside functions —
because a lazy import is still a dependency of the design.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "langchain_graylayer"
ROOT = "langchain_graylayer"

LAYERS: dict[str, int] = {
    # the foundation: small modules every layer may use
    "errors": 0, "_compat": 0, "_cache": 0, "_tables": 0,
    "_types": 1,
    "plan": 2,       # what a rollout is: bucketing, profiles and scoring, rules, layers, gates
    "store": 3,      # where state lives: small protocols, memory, redis, the caching adapter
    "judging": 4,    # numbers in, verdicts out (pure)
    "testing": 4,    # fake chat models; fault injection (plan chaos, a store that hangs)
    "measuring": 5,  # Prometheus, windows, handlers, tracing, journal, feedback, the sources
    "routing": 6,    # the decision, the assigner, GrayRouter, the request context
    "rollout": 6,    # plan state, transition() (pure), the controller shell, cleanup
    "serve": 7,      # FastAPI / LangServe glue, admin API, dashboard
    "simulate": 8, "demo": 8,  # applications of the library
    "langgraph_server": 8,  # the LangGraph server: the router as a graph, its http.app
    "cli": 9,        # the graylayer command
}  # fmt: skip
"""Each part may import only parts of a lower number (and itself); the facade imports all."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The names of every module ``path`` imports, absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # ``from package import module`` names a module too
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _part(module: str) -> str | None:
    """The layer a module of ours belongs to (``None``: the facade, or not ours)."""
    parts = module.split(".")
    if parts[0] != ROOT or len(parts) == 1:
        return None
    return parts[1]


def _ours(imports: set[str]) -> set[str]:
    return {m for m in imports if m in MODULES}


def test_every_part_has_a_layer() -> None:
    parts = {_part(m) for m in MODULES} - {None}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def test_each_part_imports_only_parts_below_it() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, imports in IMPORTS.items()
        if (part := _part(module)) is not None
        for target in _ours(imports)
        if (other := _part(target)) is not None and other != part and LAYERS[other] >= LAYERS[part]
    )
    assert wrong == []


@pytest.mark.parametrize("part", ["plan", "judging"])
def test_plan_and_judging_import_neither_langchain_nor_prometheus(part: str) -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, imports in IMPORTS.items()
        if _part(module) == part
        for target in imports
        if target.split(".")[0] in ("langchain_core", "langchain", "langgraph", "prometheus_client")
    )
    assert wrong == []


def test_judging_never_imports_measuring() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, imports in IMPORTS.items()
        if _part(module) == "judging"
        for target in _ours(imports)
        if _part(target) == "measuring"
    )
    assert wrong == []


def test_routing_and_rollout_do_not_import_each_other() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, imports in IMPORTS.items()
        if _part(module) in ("routing", "rollout")
        for target in _ours(imports)
        if {_part(module), _part(target)} == {"routing", "rollout"}
    )
    assert wrong == []


def test_nothing_below_serve_imports_a_web_framework() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, imports in IMPORTS.items()
        if (part := _part(module)) is not None and LAYERS[part] < LAYERS["serve"]
        for target in imports
        if target.split(".")[0] in ("fastapi", "starlette", "langserve", "uvicorn")
    )
    assert wrong == []


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imports in IMPORTS.items():
        # a package's __init__ is where its modules are gathered, not a dependency of them
        graph[module] = {t for t in _ours(imports) if not module.startswith(t + ".")}
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_modules_are_small_and_the_top_level_is_short() -> None:
    large = {name: n for name, path in MODULES.items()
             if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600}  # fmt: skip
    assert large == {}
    top = [p for p in PACKAGE.iterdir() if p.suffix == ".py"]
    assert len(top) <= 10, top


def test_the_architecture_page_names_only_modules_that_exist() -> None:
    """docs/architecture.md says who owns what by module path; a path that no longer exists
    (a module renamed or merged) would send a reader to nothing."""
    import re

    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)`", text))
    assert named, "the page names no module"
    missing = sorted(
        p for p in named if not (PACKAGE / p).exists() and not (PACKAGE.parent / p).exists()
    )
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
