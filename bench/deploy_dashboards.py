"""What the Grafana dashboards cost Prometheus: every panel query of each dashboard as the range query
Grafana sends on a refresh (last hour, 15 s step), side by side per dashboard, against a real
Prometheus scraping a real sidecar (GPU simulation, audit, alerting) and the CPU engine under traffic.

    ~/.cache/custos/venv/bin/python -m bench.deploy_dashboards --refreshes 20

Prints per dashboard: panels, queries, series returned, and the time of one full refresh (all queries
sequentially, p50 and p95 over the refreshes) and its slowest query.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import httpx

from bench.prometheus import GRAFANA_DASHBOARDS, all_panels, prometheus_token, start_prometheus, substitute
from bench.stack import (
    GPU_DASHBOARD_SIMULATION,
    TINY_MODEL_NAME,
    launch_sidecar,
    start_engine,
    tiny_model_dir,
)


def _range(prom_url: str, expr: str) -> tuple[float, int]:
    now = time.time()
    q = urllib.parse.urlencode({"query": expr, "start": now - 3600, "end": now, "step": 15})
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{prom_url}/api/v1/query_range?{q}", timeout=60) as resp:
        doc = json.loads(resp.read())
    return time.perf_counter() - t0, len(doc["data"]["result"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=20)
    parser.add_argument("--traffic-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="custos-bench-dash-"))
    engine = start_engine(tiny_model_dir())
    procs = [engine.process]
    try:
        sidecar = launch_sidecar(
            work,
            engine.url,
            {"gpu": {"simulation": str(GPU_DASHBOARD_SIMULATION), "interval_s": 1}},
            name="sidecar-bench",
        )
        procs.append(sidecar.process)
        url, headers = sidecar.url, sidecar.headers
        host = url.removeprefix("http://")
        prom = start_prometheus(
            work,
            {"custos": [host], "upstream": [engine.url.removeprefix("http://")]},
            tokens={"custos": prometheus_token()},  # the sidecar's /metrics needs metrics:read
        )
        procs.append(prom.process)
        body = {
            "model": TINY_MODEL_NAME,
            "messages": [{"role": "user", "content": "hi a@b.example"}],
            "max_tokens": 8,
        }
        deadline = time.monotonic() + args.traffic_s
        sent = 0
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < deadline:
                client.post(
                    f"{url}/v1/chat/completions", headers=headers, json={**body, "stream": sent % 2 == 1}
                )
                client.post(f"{url}/v1/chat/completions", json=body)  # 401s
                sent += 2
        time.sleep(3)
        print(
            f"traffic: {sent} requests in {args.traffic_s:.0f}s; {args.refreshes} refreshes per dashboard\n"
        )
        print(
            "| dashboard | panels | queries | series | refresh p50 ms | refresh p95 ms | slowest query ms |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for path in sorted(GRAFANA_DASHBOARDS.glob("*.json")):
            doc = json.loads(path.read_text())
            panels = [p for p in all_panels(doc["panels"]) if p.get("targets")]
            exprs = [substitute(t["expr"]) for p in panels for t in p["targets"]]
            totals, slowest, series = [], 0.0, 0
            for _ in range(args.refreshes):
                total = 0.0
                series = 0
                for expr in exprs:
                    took, n = _range(prom.url, expr)
                    total += took
                    series += n
                    slowest = max(slowest, took)
                totals.append(total)
            p95 = statistics.quantiles(totals, n=20)[-1] if len(totals) >= 2 else totals[0]
            p50 = statistics.median(totals)
            print(
                f"| {doc['uid']} | {len(panels)} | {len(exprs)} | {series} | {p50 * 1000:.1f} "
                f"| {p95 * 1000:.1f} | {slowest * 1000:.1f} |"
            )
    finally:
        for p in reversed(procs):
            p.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
