"""``custos bench ...``: benchmark entry points (present in a source checkout, not in the wheel)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark from bench/ (source checkout only)")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    bsub.required = True
    proxy = bsub.add_parser("proxy", help="proxy overhead: direct vs nginx vs Custos vs LiteLLM (wrk)")
    proxy.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    proxy.add_argument("--connections", default="1,32", help="comma-separated connection counts")
    proxy.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (e.g. not installed)")
    proxy.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    proxy.set_defaults(func=_run_proxy)


def _run_proxy(args: argparse.Namespace) -> int:
    from bench.proxy import main

    return main(args)
