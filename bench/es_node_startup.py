"""How long the test Elasticsearch node (bench/es_node) takes to build and to start.

    python bench/es_node_startup.py [--starts 3] [--cold] [--version 9.5.3]

Measured side by side in one run, alternating: a start that maps the class-data archive (the default
once one exists) and a start without it (CUSTOS_ES_CDS=0); "start" = process spawn until the cluster
health is yellow/green. With --cold the whole cache (Maven repository included) is a fresh temporary
directory, so the build step downloads every jar from Maven Central (~90 MB) and compiles the launcher.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=3, help="starts per variant (default 3)")
    ap.add_argument("--cold", action="store_true", help="fresh cache: download from Maven Central and build")
    ap.add_argument(
        "--version", help="Elasticsearch version (default: the one pinned in bench/es_node/pom.xml)"
    )
    args = ap.parse_args(argv)
    if args.starts < 1:
        ap.error("--starts must be at least 1")
    cold_cache = Path(tempfile.mkdtemp(prefix="custos-es-bench-cache-")) if args.cold else None
    if cold_cache is not None:
        os.environ["CUSTOS_CACHE"] = str(cold_cache)
        os.environ.pop("CUSTOS_ES_M2", None)
    if args.version:
        os.environ["CUSTOS_ES_VERSION"] = args.version

    import bench.es_node as es_node  # after the environment is set: it reads the cache location

    try:
        t0 = time.monotonic()
        build = es_node.ensure_built()
        build_s = time.monotonic() - t0
        print(
            f"Elasticsearch {build.version}; build step: {build_s:.1f}s "
            f"({'built' if build.built else 'cached, nothing to do'}; cache {es_node.CACHE})"
        )
        data = Path(tempfile.mkdtemp(prefix="custos-es-bench-"))
        try:
            # The first start of a build has no class-data archive yet; its clean stop writes one.
            node = es_node.ESNode(data / "first")
            had_archive = bool(list(build.home.glob("app-cds-*.jsa")))
            node.start()
            first_start = node.startup_seconds or 0.0
            t0 = time.monotonic()
            node.stop()
            first_stop = time.monotonic() - t0
            print(
                f"first start: {first_start:.1f}s, stop: {first_stop:.1f}s "
                f"({'archive already there' if had_archive else 'writes the class-data archive'})"
            )
            results: dict[str, list[float]] = {"with class-data archive": [], "without (CUSTOS_ES_CDS=0)": []}
            for i in range(args.starts):
                for label in list(results) if i % 2 == 0 else list(results)[::-1]:
                    os.environ["CUSTOS_ES_CDS"] = "0" if "without" in label else "1"
                    node = es_node.ESNode(
                        data / f"n{i}-{len(results[label])}-{'x' if 'without' in label else 'c'}"
                    )
                    node.start()
                    results[label].append(node.startup_seconds or 0.0)
                    node.stop()
            os.environ.pop("CUSTOS_ES_CDS", None)
            print(f"{'warm start (spawn -> yellow)':<34} {'median s':>9} {'min s':>7} {'max s':>7}  n")
            for label, values in results.items():
                print(
                    f"{label:<34} {statistics.median(values):>9.1f} {min(values):>7.1f} {max(values):>7.1f}"
                    f"  {len(values)}"
                )
            print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        finally:
            shutil.rmtree(data, ignore_errors=True)
    finally:
        if cold_cache is not None:
            shutil.rmtree(cold_cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
