"""The import graph of the wheel's packages, drawn as layers (docs/ARCHITECTURE.md, "Layers").

    sidecar                  the proxy and the app: wires every feature (config, CLI, stages)
    alerting · inference     features: each imports only the layers below, never the other
    gpu                      GPU telemetry (NVML and its simulation), used by sidecar and alerting
    custos                   the core: sections, errors, YAML files, state files, regexes, FastAPI kit

A package may import packages of lower layers only; within a layer, none of the others. And no module
imports its way back to itself, not even through an import inside a function (the usual way to
hide a loop). Imports under ``if TYPE_CHECKING:`` do not run and are not counted.
"""

from __future__ import annotations

import ast
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS: list[tuple[str, ...]] = [("custos",), ("gpu",), ("alerting", "inference"), ("sidecar",)]
LAYER_OF = {package: level for level, layer in enumerate(LAYERS) for package in layer}


def wheel_packages() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])


@cache
def modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package's __init__)."""
    out = {}
    for package in wheel_packages():
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def runtime_imports(name: str) -> set[str]:
    """The first-party modules ``name`` imports when it runs (anywhere in it, functions included)."""
    path, is_package = modules()[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    known = modules()
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(name, is_package, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in known else source)
    first_party = {m for m in found if m.split(".")[0] in LAYER_OF or m in known}
    return {m for m in first_party if m != name}


def _absolute(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def test_every_wheel_package_has_a_layer() -> None:
    assert sorted(wheel_packages()) == sorted(LAYER_OF)


@pytest.mark.parametrize("package", sorted(LAYER_OF))
def test_packages_import_only_lower_layers(package: str) -> None:
    level = LAYER_OF[package]
    wrong = sorted(
        f"{name} imports {target}"
        for name in modules()
        if name.split(".")[0] == package
        for target in runtime_imports(name)
        if (other := target.split(".")[0]) != package and LAYER_OF.get(other, -1) >= level
    )
    assert not wrong, f"{package} may import only {[p for p, lv in LAYER_OF.items() if lv < level]}"


def test_no_import_loops() -> None:
    graph = {name: runtime_imports(name) & modules().keys() for name in modules()}
    loops = strongly_connected(graph)
    assert not loops, "import loops: " + "; ".join(" -> ".join(loop) for loop in loops)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_loop_finder_finds_loops() -> None:
    # The check above must be able to fail.
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
