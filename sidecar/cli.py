"""The ``custos`` command line. Each feature registers its own subcommands from its own module.

Conventions: a handler returns an exit code; a problem with the user's input raises ``UsageError``
(printed as one clear line, exit 2); nothing prints a traceback to the user.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .config import ConfigError

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
    "alerting.cli",
    "inference.cli",
    "bench.cli",
]


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


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
    return parser


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
