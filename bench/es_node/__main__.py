"""Run a test Elasticsearch node by hand: ``python -m bench.es_node [--port P] [--data-dir D]``.

Ctrl-C (or SIGTERM) stops it gracefully. ``--build-only`` resolves and builds the launcher and exits
(what ``make test`` can call up front so the first test does not pay for Maven).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from bench.es_node import EsNodeError, ensure_built, start_elasticsearch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.es_node", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: a temporary one, removed)")
    parser.add_argument("--cluster-name", default="custos-test")
    parser.add_argument(
        "-E",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra node setting, repeatable",
    )
    parser.add_argument("--build-only", action="store_true", help="build the launcher and exit")
    args = parser.parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: must be between 1 and 65535")
    settings: dict[str, str] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"-E {item!r}: expected KEY=VALUE")
        settings[key] = value
    try:
        started = time.monotonic()
        build = ensure_built(quiet=False)
        what = "built" if build.built else "up to date"
        print(
            f"launcher for Elasticsearch {build.version} {what} in {time.monotonic() - started:.1f}s "
            f"({build.home})",
            flush=True,
        )
        if args.build_only:
            return 0
        node = start_elasticsearch(
            args.port, args.data_dir, cluster_name=args.cluster_name, settings=settings
        )
    except EsNodeError as exc:
        print(f"es_node: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while starting: start_elasticsearch() already killed the JVM
        return 130
    print(
        f"Elasticsearch {node.version} ready at {node.url} in {node.startup_seconds:.1f}s "
        f"(data {node.data_dir}, log {node.log_path}); Ctrl-C stops it",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while node.alive():
            time.sleep(0.5)
        print(
            f"Elasticsearch exited with {node.proc.returncode if node.proc else None}; log {node.log_path}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
        return 0 if node.stop() is not None else 1
    finally:
        node.destroy() if node.owns_data_dir else node.kill()


if __name__ == "__main__":
    sys.exit(main())
