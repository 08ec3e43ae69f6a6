"""Cost of the in-process alert engine, side by side in one run.

Rows, each for a small, medium and large deployment (GPUs x request-metric label sets):
  parse        the /metrics text -> samples (what every evaluation reads), our line parser
  client parse the same with prometheus-client's parser (the alternative this replaced)
  rules        the 17 default rules over the in-memory store (PromQL subset)
  cycle        one full evaluation: parse + ingest + rules + dispatch sync + trim
  cpu/interval the cycle's share of one core at the default 15 s interval
Plus: replay speed (virtual minutes per wall second, GPU simulation scenario) and dispatch
throughput (alert groups notified per second through the webhook receiver to a local aiohttp server).

Run: ``~/.cache/custos/venv/bin/python -m bench.alerting_eval [--cycles N]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SIZES = {"small": (1, 2), "medium": (8, 10), "large": (64, 40)}  # (GPUs, models)
ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "other"]
STATUS = ["2xx", "4xx", "5xx", "cancelled"]
SCENARIO = Path(__file__).resolve().parents[1] / "alerting" / "scenarios" / "gpu-saturated.yaml"


def exposition(gpus: int, models: int) -> bytes:
    reg = CollectorRegistry()
    req = Counter("custos_requests", "", ["route", "model", "status_class", "role"], registry=reg)
    lat = Histogram(
        "custos_request_duration_seconds",
        "",
        ["route", "model", "status_class"],
        registry=reg,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
    )
    for r in ROUTES:
        for m in range(models):
            for s in STATUS:
                req.labels(r, f"m{m}", s, "analyst").inc(100)
                lat.labels(r, f"m{m}", s).observe(0.3)
    auth = Counter("custos_auth_failures", "", ["reason"], registry=reg)
    auth.labels("expired").inc(3)
    names = [
        "utilization_ratio",
        "memory_used_bytes",
        "memory_total_bytes",
        "temperature_celsius",
        "lost",
        "power_watts",
        "sm_clock_hertz",
        "row_remap_pending",
        "retired_pages_pending",
        "row_remap_failure",
    ]
    gauges = {n: Gauge(f"custos_gpu_{n}", "", ["gpu", "uuid", "name", "mig"], registry=reg) for n in names}
    xid = Counter("custos_gpu_xid_errors", "", ["gpu", "uuid", "name", "mig", "xid"], registry=reg)
    ecc = Counter(
        "custos_gpu_ecc_errors", "", ["gpu", "uuid", "name", "mig", "error", "counter"], registry=reg
    )
    for g in range(gpus):
        lb = (str(g), f"GPU-{g}", "H100", "")
        for n, gauge in gauges.items():
            gauge.labels(*lb).set(0.5 if n == "utilization_ratio" else 1)
        xid.labels(*lb, "79").inc(0)
        for e in ("single_bit", "double_bit"):
            for c in ("volatile", "aggregate"):
                ecc.labels(*lb, e, c).inc(0)
    return generate_latest(reg)


async def bench_cycle(gpus: int, models: int, cycles: int) -> dict[str, float]:
    from alerting.config import AlertingConfig
    from alerting.service import AlertingService
    from alerting.tsdb import _slow_parse, parse_exposition

    text = exposition(gpus, models)
    with tempfile.TemporaryDirectory() as tmp:
        svc = AlertingService(AlertingConfig(), Path(tmp), self_metrics=lambda: text)
        parse_t, slow_t, rules_t, cycle_t = [], [], [], []
        now = 1_767_258_000.0
        for _ in range(cycles):
            t0 = time.perf_counter()
            samples = parse_exposition(text.decode())
            parse_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _slow_parse(text.decode(), None)
            slow_t.append(time.perf_counter() - t0)
            svc.store.ingest("self", samples, now)
            t0 = time.perf_counter()
            for g in svc.groups:
                await svc.engine.evaluate_group(g, now)
            rules_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await svc.evaluate(now + 0.5)
            cycle_t.append(time.perf_counter() - t0)
            now += 15
        await svc.stop()
    series = len(parse_exposition(text.decode()))
    return {
        "series": series,
        "parse": statistics.median(parse_t),
        "slow": statistics.median(slow_t),
        "rules": statistics.median(rules_t),
        "cycle": statistics.median(cycle_t),
    }


async def bench_replay() -> tuple[float, float]:
    from alerting.config import AlertingConfig
    from alerting.replay import Replay, load_scenario
    from alerting.rules import load_rule_files

    scenario = load_scenario(SCENARIO)
    t0 = time.perf_counter()
    await Replay(AlertingConfig(), load_rule_files(), scenario).run()
    return scenario.length_s, time.perf_counter() - t0


async def bench_dispatch(groups: int) -> float:
    from aiohttp import web

    from alerting.config import AlertingConfig
    from alerting.dispatch import Dispatcher
    from alerting.model import Alert
    from alerting.receivers import Notifier

    got = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal got
        await request.read()
        got += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cfg = AlertingConfig.model_validate(
        {
            "receivers": [{"name": "default", "webhook_configs": [{"url": f"http://127.0.0.1:{port}/hook"}]}],
            "route": {"receiver": "default", "group_by": ["alertname", "gpu"], "group_wait": "0s"},
        }
    )
    notifier = Notifier(cfg)
    d = Dispatcher(cfg, notifier)
    now = time.time()
    d.sync(
        [
            Alert({"alertname": "GPUHot", "gpu": str(i)}, {"summary": "hot"}, starts_at=now)
            for i in range(groups)
        ],
        now,
    )
    t0 = time.perf_counter()
    await d.tick(now)
    elapsed = time.perf_counter() - t0
    await notifier.close()
    await runner.cleanup()
    assert got == groups, got
    return groups / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20)
    args = ap.parse_args()
    print("| size | series | parse ms | client parse ms | rules ms | cycle ms | cpu per 15s interval |")
    print("|------|-------:|---------:|----------------:|---------:|---------:|---------------------:|")
    for name, (gpus, models) in SIZES.items():
        r = asyncio.run(bench_cycle(gpus, models, args.cycles))
        print(
            f"| {name} ({gpus} GPUs, {models} models) | {r['series']} | {r['parse'] * 1e3:.1f} | "
            f"{r['slow'] * 1e3:.1f} | "
            f"{r['rules'] * 1e3:.1f} | {r['cycle'] * 1e3:.1f} | {r['cycle'] / 15 * 100:.2f}% |"
        )
    virtual, wall = asyncio.run(bench_replay())
    print(
        f"\nreplay: {virtual / 60:.0f} virtual minutes (GPU simulation, 2 GPUs, 17 rules, 15s steps) "
        f"in {wall:.2f}s "
        f"wall = {virtual / 60 / wall:.0f} virtual min/s"
    )
    rate = asyncio.run(bench_dispatch(200))
    print(f"dispatch: 200 alert groups -> webhook (local aiohttp server): {rate:.0f} notifications/s")


if __name__ == "__main__":
    main()
