"""Audit retention (issue 21): a small spool cap without Elasticsearch, and the cost of compression.

Three runs of a real ``custos serve`` (no Elasticsearch) in front of a recording upstream stub:

1. ``retention``: the default policy with ``audit.max_bytes`` = 256 KiB and sustained load from a few
   client threads: requests answered, refused (503), records pruned under signed notes, fill gauge,
   spool size, and ``custos audit verify`` on the result.
2. ``fuse``: the same cap with ``retention.enabled: false`` and ``compression: none`` (the behaviour
   before issue 21): requests answered before the first 503.
3. ``records``: uncompressed spool of real records from mixed traffic (chat completions and
   model lists), then gzip levels 1/6/9 and, when the ``zstandard`` package can be imported, zstd
   levels 3/9 on those bytes: ratio, CPU time to compress and decompress.

    ~/.cache/custos/venv/bin/python -m bench.audit_retention --duration 30
    PYTHONPATH=/path/to/zstandard ~/.cache/custos/venv/bin/python -m bench.audit_retention  # with zstd
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import custos_cmd
from bench.stack import Sidecar, launch_sidecar
from bench.upstream import RecordingUpstream

CHAT = {"model": "custos-tiny", "messages": [{"role": "user", "content": "Summarise ticket 4711, please."}]}


def start(tmp: Path, upstream: str, audit: dict[str, Any], name: str) -> Sidecar:
    return launch_sidecar(tmp / name, upstream, {"audit": audit}, name=name)


def metric(url: str, headers: dict[str, str], name: str) -> float:
    text = httpx.get(url + "/metrics", headers=headers, timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def load(url: str, headers: dict[str, str], threads: int, duration: float, mixed: bool = False) -> dict:
    codes: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def worker(k: int) -> None:
        mine: dict[int, int] = {}
        i = 0
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < deadline:
                i += 1
                kind = i % 10 if mixed else 0
                rid = {"x-request-id": f"b{k}-{i}"}
                if kind < 8:
                    r = client.post("/v1/chat/completions", headers={**headers, **rid}, json=CHAT)
                else:
                    r = client.get("/v1/models", headers={**headers, **rid})
                mine[r.status_code] = mine.get(r.status_code, 0) + 1
        with lock:
            for c, n in mine.items():
                codes[c] = codes.get(c, 0) + n

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return {"codes": codes, "seconds": time.monotonic() - started}


def spool_size(state: Path) -> int:
    return sum(p.stat().st_size for p in (state / "audit" / "spool").glob("*/seg-*"))


def verify(state: Path) -> tuple[int, str]:
    env = {**os.environ, "CUSTOS_STATE_DIR": str(state)}
    proc = subprocess.run(custos_cmd("audit", "verify"), capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout.strip().splitlines()


def run_retention(tmp: Path, upstream: str, args: argparse.Namespace) -> None:
    cap = args.cap_kib * 1024
    sidecar = start(tmp, upstream, {"max_bytes": cap}, "retention")
    try:
        res = load(sidecar.url, sidecar.headers, args.threads, args.duration)
        pruned = metric(sidecar.url, sidecar.headers, "custos_audit_pruned_records_total")
        fill = metric(sidecar.url, sidecar.headers, "custos_audit_spool_fill_ratio")
        lost = metric(sidecar.url, sidecar.headers, "custos_audit_records_lost_total")
        records = metric(sidecar.url, sidecar.headers, "custos_audit_records_total")
    finally:
        sidecar.stop()
    total = sum(res["codes"].values())
    rc, out = verify(sidecar.state_dir)
    print(f"\n## 1. default retention, max_bytes {args.cap_kib} KiB, no sink, {args.threads} threads")
    print(f"requests {total} in {res['seconds']:.1f}s = {total / res['seconds']:.0f}/s; codes {res['codes']}")
    print(f"records {records:.0f}, pruned {pruned:.0f}, lost {lost:.0f}, fill gauge at the end {fill:.3f}")
    print(f"spool on disk after stop: {spool_size(sidecar.state_dir)} bytes (cap {cap})")
    print(f"custos audit verify: exit {rc}")
    for line in out:
        print(f"    {line}")


def run_fuse(tmp: Path, upstream: str, args: argparse.Namespace) -> None:
    cap = args.cap_kib * 1024
    audit = {
        "max_bytes": cap,
        "when_full": "block",
        "block_timeout_s": 1,
        "retention": {"enabled": False},
        "compression": "none",
    }
    sidecar = start(tmp, upstream, audit, "fuse")
    served = 0
    try:
        with httpx.Client(base_url=sidecar.url, headers=sidecar.headers, timeout=60) as client:
            while served < 100_000:
                if client.post("/v1/chat/completions", json=CHAT).status_code == 503:
                    break
                served += 1
        fill = metric(sidecar.url, sidecar.headers, "custos_audit_spool_fill_ratio")
    finally:
        sidecar.stop()
    print(f"\n## 2. retention off, no compression, max_bytes {args.cap_kib} KiB, when_full: block")
    print(f"answered before the first 503: {served}; fill gauge then {fill:.3f}")


def run_records(tmp: Path, upstream: str, args: argparse.Namespace) -> None:
    sidecar = start(tmp, upstream, {"compression": "none"}, "records")
    try:
        res = load(sidecar.url, sidecar.headers, args.threads, args.record_seconds, mixed=True)
    finally:
        sidecar.stop()
    segs = sorted((sidecar.state_dir / "audit" / "spool").glob("*/seg-*.jsonl"))
    data = b"".join(p.read_bytes() for p in segs)
    n = data.count(b"\n")
    print(f"\n## 3. compression of {n} real records ({len(data) / n:.0f} B each, mixed: {res['codes']})")
    print(f"{'codec':10} {'ratio':>6} {'comp MB/s':>10} {'comp us/rec':>12} {'decomp MB/s':>12}")
    codecs: list[tuple[str, Any, Any]] = [
        (f"gzip-{lvl}", lambda b, lvl=lvl: gzip.compress(b, lvl, mtime=0), gzip.decompress)
        for lvl in (1, 6, 9)
    ]
    try:
        import zstandard

        for lvl in (3, 9):
            codecs.append(
                (
                    f"zstd-{lvl}",
                    zstandard.ZstdCompressor(level=lvl).compress,
                    zstandard.ZstdDecompressor().decompress,
                )
            )
    except ImportError:
        print("(zstandard not importable: zstd rows skipped)")
    mb = len(data) / 1e6
    for name, comp, decomp in codecs:
        t = time.process_time()
        out = comp(data)
        tc = time.process_time() - t
        t = time.process_time()
        decomp(out)
        td = time.process_time() - t
        print(f"{name:10} {len(data) / len(out):6.1f} {mb / tc:10.0f} {tc / n * 1e6:12.1f} {mb / td:12.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=30, help="seconds of load in the retention run")
    ap.add_argument("--record-seconds", type=float, default=15, help="seconds of mixed load for run 3")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--cap-kib", type=int, default=256)
    ap.add_argument("--runs", default="retention,fuse,records", help="comma-separated subset of the runs")
    args = ap.parse_args()
    runs = set(args.runs.split(","))
    up = RecordingUpstream()
    try:
        with tempfile.TemporaryDirectory(prefix="custos-retention-") as tmp:
            for name, run in (("retention", run_retention), ("fuse", run_fuse), ("records", run_records)):
                if name in runs:
                    run(Path(tmp), up.url, args)
                    up.clear()
    finally:
        up.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
