"""Per-request cost of the observability stages, side by side in one run.

Rows (each: ``on_request`` + ``on_complete`` on a realistic context, as the pipeline calls them):
  metrics               the metrics stage, one process (in-memory values)
  metrics multiprocess  the same with PROMETHEUS_MULTIPROC_DIR (mmap-backed values, workers > 1)
  metrics stream        a streamed answer (adds TTFT and time-per-token histograms)
  tracing (no export)   the tracing stage with no exporter: traceparent -> ctx.trace_id
  tracing (2 spans)     request span + upstream span (tracing.stage_spans: false), exported by the
                        SDK's batch processor to an exporter that drops them (SDK cost, not network)
  tracing (10 spans)    the same plus one span per stage (8 stages; the default)

Run: ``~/.cache/custos/venv/bin/python -m bench.observability_metrics [--requests N]``
Each row runs in its own subprocess (prometheus-client's value storage is fixed per process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROWS = [
    "metrics",
    "metrics multiprocess",
    "metrics stream",
    "tracing (no export)",
    "tracing (2 spans)",
    "tracing (10 spans)",
]
STAGE_NAMES = ["metrics", "authenticate", "parse", "authorize", "ratelimit", "redact", "observe", "audit"]


def _drive(coro: Any) -> None:
    # The stages' hooks do not await on this path: run them without an event loop's overhead.
    try:
        coro.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover
        raise RuntimeError("stage awaited unexpectedly")


def _ctx(stream: bool) -> Any:
    from sidecar.context import Decision, Identity, RequestContext

    ctx = RequestContext(
        request_id="0" * 32,
        method="POST",
        path="/v1/chat/completions",
        query=b"",
        headers=[
            (b"authorization", b"Bearer x"),
            (b"content-type", b"application/json"),
            (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ],
        client_ip="127.0.0.1",
        body=b'{"model":"m","messages":[]}',
    )
    ctx.model = "llama-3.1-8b-instruct"
    ctx.identity = Identity(subject="alice", roles=("analyst",))
    ctx.decision = Decision(allowed=True, permission="model:invoke:llama", rule="analyst")
    ctx.status = ctx.upstream_status = 200
    ctx.usage.prompt_tokens, ctx.usage.completion_tokens = 42, 128
    ctx.redactions = {"EMAIL_ADDRESS": 1}
    ctx.stream = stream
    if stream:
        ctx.first_byte_at = ctx.started + 0.05
        ctx.first_token_at = ctx.started + 0.05
    ctx.finished = ctx.started + 1.2
    return ctx


def run_row(row: str, n: int) -> dict[str, float]:
    from sidecar.config import Config

    config = Config.model_validate(
        {"gpu": {"enabled": False}, "tracing": {"stage_spans": row != "tracing (2 spans)"}}
    )
    samples: list[float] = []
    if row.startswith("metrics"):
        from sidecar.stages.metrics import MetricsStage

        stage = MetricsStage(config.metrics, config.gpu)
        stream = row == "metrics stream"
        for i in range(n + 500):
            ctx = _ctx(stream)
            t0 = time.perf_counter_ns()
            _drive(stage.on_request(ctx))
            _drive(stage.on_complete(ctx))
            if i >= 500:
                samples.append(time.perf_counter_ns() - t0)
    else:
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        from sidecar.stages.tracing import TracingStage

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        spans = row != "tracing (no export)"
        stage = TracingStage(config.tracing, str(config.upstream.url), exporter=Drop() if spans else None)
        for i in range(n + 500):
            ctx = _ctx(False)
            t0 = time.perf_counter_ns()
            _drive(stage.on_request(ctx))
            if spans:
                for name in STAGE_NAMES:
                    with stage.stage_span(ctx, name):
                        pass
                with stage.stage_span(ctx, "upstream"):
                    pass
            _drive(stage.on_complete(ctx))
            if i >= 500:
                samples.append(time.perf_counter_ns() - t0)
        if stage.provider is not None:
            stage.provider.shutdown()
    samples.sort()
    q = statistics.quantiles(samples, n=100)
    return {
        "p50_us": q[49] / 1000,
        "p90_us": q[89] / 1000,
        "p99_us": q[98] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(args.row, args.requests)))
        return 0
    results = {}
    for row in ROWS:
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with tempfile.TemporaryDirectory(prefix="custos-bench-mp-") as mp:
            if row == "metrics multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = mp
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.observability_metrics",
                    "--row",
                    row,
                    "--requests",
                    str(args.requests),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
        results[row] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'row':24} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'mean µs':>8}   ({args.requests} each)")
    for row, r in results.items():
        print(f"{row:24} {r['p50_us']:8.1f} {r['p90_us']:8.1f} {r['p99_us']:8.1f} {r['mean_us']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
