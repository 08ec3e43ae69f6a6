"""Declared dependencies match what the code imports, and the wheel, bench/ and tests/ keep their borders.

Every ``.py`` file is parsed (``ast``, nothing is imported or run); each import is mapped to the
distribution that installs it (``importlib.metadata``). Then:

- the wheel's packages import only ``[project.dependencies]``, or an extra where that extra is scoped
  (``EXTRA_SCOPES``), or an extra behind ``try: ... except ImportError``;
- modules the base install loads never load an extra when imported (torch stays optional);
- every declared distribution is imported where it is declared for, or says why not
  (``USED_WITHOUT_IMPORT``): no dead weight in the sidecar image;
- tests, benchmarks and the repository's tools import only the base install, the extras ``make test``
  installs and the ``dev`` extra, and every ``dev`` distribution is used;
- bench/ never imports tests/, and the wheel imports neither (neither is shipped).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.machinery
import importlib.metadata as metadata
import re
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.procs import REPO
from sidecar import cli

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
WHEEL_PACKAGES: tuple[str, ...] = tuple(PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
# The repository's Python outside the wheel: tests, benchmarks, and the generators and tools under
# dashboards/ and deploy/.
DEV_SOURCES: tuple[str, ...] = ("tests", "bench", "dashboards", "deploy/tools")
FIRST_PARTY: frozenset[str] = frozenset({*WHEEL_PACKAGES, "tests", "bench"})


@dataclass(frozen=True)
class ExtraScope:
    """Where an extra's distributions may be imported without an ImportError guard (paths from the repo
    root). ``at_import``: modules that load the extra when imported; only the feature itself imports them.
    ``in_functions``: modules every install loads, which import the extra inside functions only."""

    at_import: frozenset[str] = frozenset()
    in_functions: frozenset[str] = frozenset()


EXTRA_SCOPES: dict[str, ExtraScope] = {
    # The CPU engine (`custos inference serve`) and LoRA training. The engine's own modules load torch;
    # sidecar/commands/inference.py is registered by every `custos`, tiny.py gives `custos up` the model
    # path, and lora.py is loaded by the CLI: those import torch, transformers and peft inside functions.
    "inference": ExtraScope(
        at_import=frozenset(
            f"inference/{name}.py"
            for name in ("engine", "sampling", "protocol", "pooling", "responses", "server", "sse")
        ),
        in_functions=frozenset({"sidecar/commands/inference.py", "inference/lora.py", "inference/tiny.py"}),
    ),
    # NVML: only behind an ImportError guard (gpu/nvml_api.py has a stand-in without it).
    "gpu": ExtraScope(),
    # vLLM runs as its own process (inference/vllm.py): never imported.
    "vllm": ExtraScope(),
}

# Declared distributions that no module imports, with where they are used instead: (file, text there).
USED_WITHOUT_IMPORT: dict[str, tuple[str, str]] = {
    "uvloop": ("sidecar/commands/serve.py", 'loop="uvloop"'),  # uvicorn loads it by name
    "safetensors": ("inference/lora.py", "adapter_model.safetensors"),  # the weights format on disk
    "vllm": ("inference/vllm.py", "custos[vllm]"),  # a separate process
    "ruff": ("Makefile", "ruff check"),  # the linter, a command
}

# Files that run in an environment of their own and never import Custos.
OWN_ENVIRONMENT: dict[str, str] = {
    "bench/redaction_presidio.py": "runs in ~/.cache/custos/presidio-venv (Presidio, spaCy)",
}


# -- reading the sources -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the repository root
    module: str  # absolute dotted name; `from a import b` gives "a.b" (b may be a module)
    line: int
    lazy: bool  # inside a function or under `if TYPE_CHECKING:`: not run when the file is imported
    guarded: bool  # inside `try:` whose handler catches ImportError: the file works without it

    @property
    def top(self) -> str:
        return self.module.split(".", 1)[0]

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def module_name(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        name = module_name(path)
        self.package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        self.imports: list[Import] = []
        self._lazy = 0
        self._guarded = 0

    def _add(self, module: str, node: ast.stmt) -> None:
        self.imports.append(Import(self.path, module, node.lineno, self._lazy > 0, self._guarded > 0))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._lazy += 1
        self.generic_visit(node)
        self._lazy -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        type_checking = isinstance(node.test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(
            node.test
        )
        self._lazy += type_checking
        self._visit_all(node.body)
        self._lazy -= type_checking
        self._visit_all(node.orelse)

    def visit_Try(self, node: ast.Try | ast.TryStar) -> None:
        guards = any(_catches_import_error(handler) for handler in node.handlers)
        self._guarded += guards
        self._visit_all(node.body)
        self._guarded -= guards
        self._visit_all([*node.handlers, *node.orelse, *node.finalbody])

    visit_TryStar = visit_Try

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        for alias in node.names:
            self._add(base if alias.name == "*" else f"{base}.{alias.name}", node)

    def _visit_all(self, nodes: Iterable[ast.AST]) -> None:
        for child in nodes:
            self.visit(child)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(c, ast.Name) and c.id in {"ImportError", "ModuleNotFoundError"} for c in caught)


def _python_files(*roots: str) -> list[str]:
    return sorted(
        str(path.relative_to(REPO))
        for root in roots
        for path in (REPO / root).rglob("*.py")
        if "__pycache__" not in path.parts
    )


@functools.cache
def imports_of(*roots: str) -> tuple[Import, ...]:
    found: list[Import] = []
    for path in _python_files(*roots):
        collector = _ImportCollector(path)
        collector.visit(ast.parse((REPO / path).read_text(encoding="utf-8"), filename=path))
        found.extend(collector.imports)
    return tuple(found)


def third_party(imports: Iterable[Import]) -> list[Import]:
    return [i for i in imports if i.top not in sys.stdlib_module_names and i.top not in FIRST_PARTY]


# -- distributions -----------------------------------------------------------------------------------


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: Iterable[str]) -> frozenset[str]:
    # "pyjwt[crypto]>=2.9" -> "pyjwt"; the name is all a requirement string starts with.
    names = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req) for req in requirements)
    return frozenset(normalize(m.group(0)) for m in names if m)


BASE = requirement_names(PYPROJECT["project"]["dependencies"])
EXTRAS: dict[str, frozenset[str]] = {
    extra: requirement_names(reqs) for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items()
}


def make_test_extras() -> tuple[str, ...]:
    """The extras `make test` installs into the test virtualenv (Makefile: pip install -e '.[...]')."""
    found = re.search(r"-e '\.\[([\w,-]+)\]'", (REPO / "Makefile").read_text(encoding="utf-8"))
    assert found, "Makefile: no `pip install ... -e '.[extras]'` line"
    return tuple(found.group(1).split(","))


@functools.cache
def _installed_modules(distribution: str) -> frozenset[str]:
    """Dotted names of the packages and modules a distribution installs (its RECORD)."""
    names: set[str] = set()
    for file in metadata.distribution(distribution).files or ():
        parts = list(file.parts)
        if not parts or parts[0] == ".." or parts[0].endswith((".dist-info", ".data")):
            continue
        stem = parts[-1].split(".", 1)[0]  # "x.cpython-311-x86_64-linux-gnu.so" -> "x"
        if parts[-1].endswith(tuple(importlib.machinery.all_suffixes())) and stem != "__init__":
            parts[-1] = stem
        else:
            parts.pop()
        names.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return frozenset(names)


@functools.cache
def _top_level_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@functools.cache
def distribution_of(module: str) -> str | None:
    """The installed distribution that provides ``module`` (normalized name), or None if none does. A
    namespace shared by several distributions (``opentelemetry``) is resolved on the longest name."""
    candidates = sorted(set(_top_level_distributions().get(module.split(".", 1)[0], [])))
    if len(candidates) <= 1:
        return normalize(candidates[0]) if candidates else None
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        owners = [d for d in candidates if prefix in _installed_modules(d)]
        if len(owners) == 1:
            return normalize(owners[0])
        if owners:
            break
    raise AssertionError(f"{module}: provided by several distributions ({', '.join(candidates)})")


def extras_declaring(distribution: str) -> list[str]:
    return sorted(extra for extra, names in EXTRAS.items() if distribution in names)


# -- the wheel ---------------------------------------------------------------------------------------


def _wheel_import_problem(imp: Import, distribution: str | None) -> str | None:
    if distribution is None:
        return f"{imp.where()}: imports {imp.module}, which no installed distribution provides"
    if distribution in BASE:
        return None
    extras = extras_declaring(distribution)
    if not extras:
        return f"{imp.where()}: imports {imp.module} ({distribution}), declared in no dependency list"
    if imp.guarded:
        return None
    for extra in extras:
        scope = EXTRA_SCOPES.get(extra, ExtraScope())
        if imp.path in scope.at_import or (imp.path in scope.in_functions and imp.lazy):
            return None
    return (
        f"{imp.where()}: imports {imp.module} ({distribution}, extra {'/'.join(extras)}) outside that "
        "extra's scope: import it inside a function of a module in EXTRA_SCOPES, or guard it"
    )


def test_the_wheel_imports_only_what_it_declares() -> None:
    problems = [
        problem
        for imp in third_party(imports_of(*WHEEL_PACKAGES))
        if (problem := _wheel_import_problem(imp, distribution_of(imp.module)))
    ]
    assert not problems, "\n".join(problems)


def _first_party_module(name: str, modules: frozenset[str]) -> str | None:
    parts = name.split(".")
    return next(
        (".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None
    )


def modules_loading_at_import(extra: str) -> set[str]:
    """Wheel files that load one of ``extra``'s distributions when imported, directly or through the
    project's own modules they import at module level."""
    files = {module_name(path): path for path in _python_files(*WHEEL_PACKAGES)}
    eager = [i for i in imports_of(*WHEEL_PACKAGES) if not i.lazy and not i.guarded]
    loading = {
        i.path
        for i in third_party(eager)
        if distribution_of(i.module) in EXTRAS[extra] and distribution_of(i.module) not in BASE
    }
    importers: dict[str, set[str]] = {}
    for i in eager:
        if i.top in WHEEL_PACKAGES and (target := _first_party_module(i.module, frozenset(files))):
            importers.setdefault(files[target], set()).add(i.path)
    pending = list(loading)
    while pending:
        for importer in importers.get(pending.pop(), set()) - loading:
            loading.add(importer)
            pending.append(importer)
    return loading


@pytest.mark.parametrize("extra", sorted(EXTRA_SCOPES))
def test_only_the_features_modules_load_an_extra_when_imported(extra: str) -> None:
    """Everything else imports without the extra installed (the sidecar image has no torch)."""
    assert modules_loading_at_import(extra) == set(EXTRA_SCOPES[extra].at_import)


def test_every_extra_has_a_scope() -> None:
    assert set(EXTRA_SCOPES) == set(EXTRAS) - {"dev"}


def _used_without_import(distribution: str) -> bool:
    if distribution not in USED_WITHOUT_IMPORT:
        return False
    path, text = USED_WITHOUT_IMPORT[distribution]
    assert text in (REPO / path).read_text(encoding="utf-8"), f"USED_WITHOUT_IMPORT[{distribution!r}]: stale"
    return True


def test_every_base_dependency_and_extra_is_imported_by_the_wheel() -> None:
    imported = {distribution_of(i.module) for i in third_party(imports_of(*WHEEL_PACKAGES))}
    declared = BASE.union(*(EXTRAS[extra] for extra in EXTRA_SCOPES))
    unused = sorted(d for d in declared - imported if not _used_without_import(d))
    assert not unused, f"declared in pyproject.toml but imported by no module of the wheel: {unused}"


# -- tests, benchmarks, tools ------------------------------------------------------------------------


def _dev_sources() -> list[Import]:
    return [i for i in third_party(imports_of(*DEV_SOURCES)) if i.path not in OWN_ENVIRONMENT]


def test_tests_and_benchmarks_import_only_what_the_dev_install_declares() -> None:
    installed = BASE.union(*(EXTRAS[extra] for extra in make_test_extras()))
    problems = []
    for imp in _dev_sources():
        distribution = distribution_of(imp.module)
        if distribution is None and imp.guarded:
            continue  # an optional comparison (e.g. zstandard in bench/audit_retention.py)
        if distribution not in installed:
            problems.append(
                f"{imp.where()}: imports {imp.module} ({distribution}), not in {make_test_extras()}"
            )
    assert not problems, "\n".join(problems)


def _is_pytest_plugin(distribution: str) -> bool:
    return any(ep.group == "pytest11" for ep in metadata.distribution(distribution).entry_points)


def test_every_dev_dependency_is_used() -> None:
    imported = {distribution_of(i.module) for i in _dev_sources()}
    unused = sorted(
        d for d in EXTRAS["dev"] - imported if not _is_pytest_plugin(d) and not _used_without_import(d)
    )
    assert not unused, f"in the dev extra but imported by no test, benchmark or tool: {unused}"


def test_the_dev_extra_repeats_nothing_from_the_base_install() -> None:
    assert not EXTRAS["dev"] & BASE


# -- borders: the wheel ships neither bench/ nor tests/, and bench/ stands on its own ----------------


def test_bench_never_imports_tests() -> None:
    offending = [i.where() for i in imports_of("bench") if i.top == "tests"]
    assert not offending, f"bench/ must not depend on tests/ (move what it needs into bench/): {offending}"


def test_the_wheel_imports_neither_bench_nor_tests() -> None:
    offending = [
        f"{i.where()}: {i.module}" for i in imports_of(*WHEEL_PACKAGES) if i.top in {"bench", "tests"}
    ]
    assert not offending, offending


def test_the_extractor_sees_guards_laziness_and_relative_imports() -> None:
    source = (
        "import a.b\nfrom . import c\nfrom ..d import e\n"
        "try:\n    import f\nexcept (ImportError, OSError):\n    g = None\n"
        "if TYPE_CHECKING:\n    import h\n"
        "def k():\n    import m\n"
    )
    collector = _ImportCollector("pkg/sub/mod.py")
    collector.visit(ast.parse(source))
    assert [(i.module, i.lazy, i.guarded) for i in collector.imports] == [
        ("a.b", False, False),
        ("pkg.sub.c", False, False),
        ("pkg.d.e", False, False),
        ("f", False, True),
        ("h", True, False),
        ("m", True, False),
    ]
    assert distribution_of("opentelemetry.sdk.trace") == "opentelemetry-sdk"
    assert distribution_of("opentelemetry.trace") == "opentelemetry-api"
    assert distribution_of("yaml") == "pyyaml"


# -- `custos bench` from a checkout and from a wheel -------------------------------------------------


def _bench_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["bench"]


def test_bench_commands_register_from_the_source_checkout() -> None:
    assert cli.bench_in_source_checkout()
    sub = next(a for a in _bench_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"proxy", "stream", "breakdown"} <= set(sub.choices)


def test_a_bench_module_elsewhere_is_not_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = importlib.machinery.ModuleSpec("bench", None, origin="/opt/elsewhere/bench/__init__.py")
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: elsewhere)
    assert not cli.bench_in_source_checkout()
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    assert not cli.bench_in_source_checkout()


@pytest.mark.parametrize("argv", [["bench"], ["bench", "proxy", "--duration", "5"]])
def test_an_installed_wheel_says_bench_needs_a_checkout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.setattr(cli, "bench_in_source_checkout", lambda: False)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("custos: error: bench: the benchmarks need a source checkout") and err.count("\n") == 1
    )
