"""Per-request cost of the audit stage on the hot path (``on_request`` + ``on_complete``).

Real request contexts (as the earlier stages leave them), the real stage with its real spool writer
thread on a temporary directory; measured in the event loop per request. Side by side: building the
record alone, sealing it into the chain alone, and the whole stage with default settings
(``fsync: interval``) and with ``fail_closed`` (awaits its batch being written and fsynced).

    ~/.cache/custos/venv/bin/python -m bench.audit_stage --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sidecar.audit.chain import Chain
from sidecar.audit.config import AuditConfig
from sidecar.audit.record import build_record
from sidecar.context import Decision, Identity, RequestContext
from sidecar.stages.audit import AuditStage


def make_ctx(i: int) -> RequestContext:
    body = json.dumps(
        {
            "model": "custos-tiny",
            "stream": False,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"Summarise ticket {i} for jane@example.com"},
            ],
        }
    ).encode()
    ctx = RequestContext(
        request_id=f"{i:032x}",
        method="POST",
        path="/v1/chat/completions",
        query=b"",
        headers=[],
        client_ip="10.1.2.3",
        body=body,
    )
    ctx.json  # noqa: B018 - the parse stage has parsed it already
    ctx.model = "custos-tiny"
    ctx.identity = Identity("alice@example.com", ("analyst", "tester"))
    ctx.decision = Decision(True, "model:infer", "roles.analyst")
    ctx.redactions = {"EMAIL": 1}
    ctx.usage.prompt_tokens, ctx.usage.completion_tokens = 31, 64
    ctx.finish_reasons = ["stop"]
    ctx.prompt_sha256 = "ab" * 32
    ctx.output_sha256 = "cd" * 32
    ctx.trace_id = "0af7651916cd43dd8448eb211c80319c"
    ctx.status = 200
    ctx.response_bytes = 812
    ctx.finished = ctx.started + 0.25
    return ctx


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def row(name: str, samples: list[float]) -> dict[str, Any]:
    us = [x * 1e6 for x in samples]
    return {
        "case": name,
        "p50_us": round(statistics.median(us), 1),
        "p90_us": round(pct(us, 0.9), 1),
        "p99_us": round(pct(us, 0.99), 1),
    }


class _NoApp:
    """Stands in for the sidecar app: the stage mounts its admin endpoint at startup."""

    def mount(self, *_args: Any) -> None:
        return None


async def bench_stage(n: int, warmup: int, end: bool = False, **cfg: Any) -> list[float]:
    """``end``: also run ``on_response_end`` as the pipeline does (the record is written there,
    before the answer's last byte: wall time includes the writer thread's write)."""
    with tempfile.TemporaryDirectory() as tmp:
        stage = AuditStage(AuditConfig(**cfg), Path(tmp))
        await stage.startup(_NoApp())
        ctxs = [make_ctx(i) for i in range(n + warmup)]
        samples = []
        clock = time.perf_counter
        for i, ctx in enumerate(ctxs):
            t0 = clock()
            await stage.on_request(ctx)
            if end:
                await stage.on_response_end(ctx)
            await stage.on_complete(ctx)
            dt = clock() - t0
            if i >= warmup:
                samples.append(dt)
            if i % 64 == 0:
                await asyncio.sleep(0)  # let the writer's completions run, as between real requests
        await stage.shutdown()
        return samples


def bench_parts(n: int) -> tuple[list[float], list[float]]:
    ctxs = [make_ctx(i) for i in range(n)]
    build, seal = [], []
    chain = Chain("bench-w0")
    clock = time.perf_counter
    for ctx in ctxs:
        t0 = clock()
        rec = build_record(ctx)
        t1 = clock()
        chain.seal(rec)
        t2 = clock()
        build.append(t1 - t0)
        seal.append(t2 - t1)
    return build, seal


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    n, warmup = args.requests, 500
    build, seal = bench_parts(n)
    rows = [row("build record", build), row("seal (canonical JSON + SHA-256)", seal)]
    rows.append(row("stage, defaults (fsync interval)", asyncio.run(bench_stage(n, warmup))))
    rows.append(row("stage, fsync always", asyncio.run(bench_stage(n, warmup, fsync="always"))))
    m = max(2000, n // 10)
    rows.append(
        row(
            "stage + on_response_end, fsync interval (awaits write)",
            asyncio.run(bench_stage(m, warmup, end=True)),
        )
    )
    rows.append(
        row(
            "stage + on_response_end, fsync always (awaits write+fsync)",
            asyncio.run(bench_stage(m, warmup, end=True, fsync="always")),
        )
    )
    rows.append(
        row(
            "stage, fail_closed + fsync always (awaits write)",
            asyncio.run(bench_stage(max(2000, n // 10), warmup, fsync="always", fail_closed=True)),
        )
    )
    print(f"{'case':<52} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8}")
    for r in rows:
        print(f"{r['case']:<52} {r['p50_us']:>8} {r['p90_us']:>8} {r['p99_us']:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
