"""``custos serve``: run the sidecar proxy on uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse
import os

from ..config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the sidecar proxy in front of the configured upstream")
    p.add_argument("--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or built-in defaults)")
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument("--workers", type=int, help="override server.workers")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    config = load_config(args.config)  # fail fast (exit 2) before any worker starts
    server = config.server
    host = args.host or server.host
    port = args.port or server.port
    workers = args.workers or server.workers
    if args.config:
        # Workers re-read the same file through the app factory.
        os.environ["CUSTOS_CONFIG"] = os.path.abspath(args.config)
    uvicorn.run(
        "sidecar.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level=server.log_level,
        access_log=server.access_log,
        timeout_graceful_shutdown=10,
    )
    return 0
