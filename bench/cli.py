"""``custos bench ...``: benchmark entry points (present in a source checkout, not in the wheel)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from sidecar.cli import BENCH_HELP

    p = sub.add_parser("bench", help=BENCH_HELP)
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    bsub.required = True
    proxy = bsub.add_parser("proxy", help="proxy overhead: direct vs nginx vs Custos vs LiteLLM (wrk)")
    proxy.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    proxy.add_argument("--connections", default="1,32", help="comma-separated connection counts")
    proxy.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (e.g. not installed)")
    proxy.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    proxy.set_defaults(func=_run_proxy)
    stream = bsub.add_parser(
        "stream", help="token streams: events/s through direct, nginx, Custos (redaction on/off), LiteLLM"
    )
    stream.add_argument("--events", type=int, default=200, help="events per answer (default 200)")
    stream.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    stream.add_argument("--connections", default="1,32", help="comma-separated connection counts")
    stream.add_argument(
        "--answer",
        default="prose",
        help="what the answer says: prose (default) or markdown (headings, lists, line breaks, code)",
    )
    stream.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (e.g. not installed)")
    stream.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    stream.set_defaults(func=_run_stream)
    breakdown = bsub.add_parser(
        "breakdown", help="where a non-streamed request's time goes in the sidecar, stage by stage"
    )
    breakdown.add_argument("--requests", type=int, default=3000, help="measured requests (default 3000)")
    breakdown.add_argument("--warmup", type=int, default=300, help="requests before measuring (default 300)")
    breakdown.set_defaults(func=_run_breakdown)


def _run_proxy(args: argparse.Namespace) -> int:
    from bench.proxy import main, parse_connections

    parse_connections(args.connections)  # bad input: one line, exit 2, before any tool check
    if args.duration < 1:
        from custos.errors import UsageError

        raise UsageError(f"--duration {args.duration}: expected a positive number of seconds")
    return main(args)


def _run_stream(args: argparse.Namespace) -> int:
    from bench.proxy import parse_connections
    from bench.stream import main
    from custos.errors import UsageError

    parse_connections(args.connections)  # bad input: one line, exit 2, before any tool check
    if args.duration < 1 or args.events < 3:
        raise UsageError("--duration must be >= 1 second and --events >= 3 (role, tokens, finish)")
    if args.answer not in ("prose", "markdown"):
        raise UsageError(f"--answer must be prose or markdown, not {args.answer!r}")
    return main(args)


def _run_breakdown(args: argparse.Namespace) -> int:
    from bench.request_breakdown import main

    if args.requests < 1 or args.warmup < 0:
        from custos.errors import UsageError

        raise UsageError("--requests must be >= 1 and --warmup >= 0")
    return main(args)
