"""The ``custos`` command line. Each feature registers its own subcommands from its own module.

Conventions: a handler returns an exit code; a problem with the user's input raises ``UsageError``
(printed as one clear line, exit 2); nothing prints a traceback to the user.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from custos.errors import ConfigError, UsageError

# Modules with a ``register(subparsers)`` function, one per feature.
COMMAND_MODULES: list[str] = [
    "sidecar.commands.serve",
    "sidecar.commands.redact",
    "sidecar.commands.audit",
    "sidecar.commands.token",
    "sidecar.commands.policy",
    "sidecar.commands.up",
    "sidecar.commands.gpu",
    "sidecar.commands.top",
    "sidecar.commands.config",
    "sidecar.commands.completion",
    "sidecar.commands.tls",
    "sidecar.commands.keys",
    "sidecar.commands.alerts",
    "sidecar.commands.inference",
]
BENCH_HELP = "run a benchmark from bench/ (source checkout only)"


class CustosArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors also exit 2, in our format
        self.print_usage(sys.stderr)
        print(f"custos: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        # argparse reports arguments no parser took ("unrecognized arguments") from the top-level
        # parser, with the top-level usage; name the subcommand they were given to instead.
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            leaf_parser(self, ns).error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


def leaf_parser(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the subcommand ``ns`` was parsed for (``custos audit verify``'s)."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = getattr(ns, sub.dest, None) if sub is not None and sub.dest else None
        if sub is None or chosen not in sub.choices:
            return parser
        parser = sub.choices[chosen]


def build_parser() -> argparse.ArgumentParser:
    parser = CustosArgumentParser(
        prog="custos",
        description="Compliance and observability sidecar for self-hosted LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"custos {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CustosArgumentParser)
    sub.required = True
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that feature is not part of this installation
            raise
        module.register(sub)
    register_bench(sub)
    return parser


def bench_in_source_checkout() -> bool:
    """Whether ``bench/`` sits beside the packages' own sources, as in a clone (an editable install
    included). A wheel never ships it, and an unrelated ``bench`` module elsewhere on the path is not ours."""
    spec = importlib.util.find_spec("bench")
    if spec is None or spec.origin is None:
        return False
    return Path(spec.origin).resolve().parent.parent == Path(__file__).resolve().parent.parent


def register_bench(sub: argparse._SubParsersAction) -> None:
    """``custos bench``: the benchmarks' own subcommands from a source checkout; from an installed wheel,
    a command that says they need one (so ``custos bench`` explains itself instead of "invalid choice")."""
    if bench_in_source_checkout():
        importlib.import_module("bench.cli").register(sub)
        return
    stub = sub.add_parser("bench", help=BENCH_HELP)
    stub.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    stub.set_defaults(func=_bench_needs_a_checkout)


def _bench_needs_a_checkout(args: argparse.Namespace) -> int:
    raise UsageError(
        "bench: the benchmarks need a source checkout of Custos (bench/ is not part of the installed "
        "package); run `custos bench` from a clone with an editable install (make setup)"
    )


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigError) as exc:
        print(f"custos: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    # Under `python -m sidecar.cli` this file runs as `__main__`, a second copy of the module whose
    # UsageError is not the one commands raise; run the real module's main instead.
    from sidecar.cli import main as _main

    sys.exit(_main())
