"""What writing the audit record before the answer's last byte costs.

Two sidecars in front of one instant upstream (``bench.audit_load``), in one run, measured in
alternating rounds with wrk:

  early  the shipped code: the record is handed to the kernel (os.write by the writer thread; fsynced
         first with ``fsync: always``) in the audit stage's ``on_response_end``, before the client
         has the last byte
  late   the previous behaviour (patched in at startup): the record is only queued for the writer
         thread after the answer was sent (``on_complete``); kill -9 could lose it

for each ``fsync`` mode given, at 1 connection (latency) and N connections (throughput). Prints p50,
p99 and requests/s, and early/late ratios. Reproduce:

    ~/.cache/custos/venv/bin/python -m bench.audit_write_latency --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from bench.procs import ManagedProcess, free_port, wait_http
from bench.proxy import run_wrk, sidecar_headers

REQUEST = json.dumps(
    {"model": "custos-tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4},
    separators=(",", ":"),
)

# Started with `python -c`: the "late" sidecar gets the old hook (gate only, no write) before it runs.
LATE = """
import sys
import sidecar.stages.audit as a
async def late(self, ctx):
    if not ctx.extras.get(a._GATED):
        await self._admit(ctx, early=True)
a.AuditStage.on_response_end = late
from sidecar.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start(tmp: Path, name: str, upstream: str, fsync: str, late: bool) -> tuple[ManagedProcess, str, Path]:
    port = free_port()
    cfg = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1, "log_level": "warning"},
        "upstream": {"url": upstream},
        "state": {"dir": str(tmp / name / "state")},
        "audit": {"fsync": fsync},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["serve", "--config", str(path)]
    cmd = [sys.executable, "-c", LATE, *argv] if late else [sys.executable, "-m", "sidecar.cli", *argv]
    proc = ManagedProcess(name, cmd)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", timeout=60, proc=proc.proc)
    return proc, url, path


def script(tmp: Path, name: str, headers: dict[str, str]) -> Path:
    auth = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    path = tmp / f"{name}.lua"
    path.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(REQUEST)}\n'
        f'wrk.headers["Content-Type"] = "application/json"\n{auth}\n'
    )
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant")
    p.add_argument("--connections", default="1,16")
    p.add_argument("--fsync", default="interval,always")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    conns = [int(c) for c in args.connections.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="custos-audit-lat-") as t:
        tmp = Path(t)
        up_port = free_port()
        upstream = ManagedProcess(
            "upstream", [sys.executable, "-m", "bench.audit_load", "--port", str(up_port)]
        )
        procs = [upstream]
        try:
            up = f"http://127.0.0.1:{up_port}"
            wait_http(up + "/v1/models", timeout=30, proc=upstream.proc)
            for fsync in args.fsync.split(","):
                variants = {}
                for late in (False, True):
                    name = f"{'late' if late else 'early'}-{fsync}"
                    proc, url, cfg_path = start(tmp, name, up, fsync, late)
                    procs.append(proc)
                    variants[name] = (
                        url + "/v1/chat/completions",
                        script(tmp, name, sidecar_headers(cfg_path)),
                    )
                for c in conns:
                    got: dict[str, list[tuple[float, float, float, int]]] = {n: [] for n in variants}
                    for url, s in variants.values():
                        run_wrk(url, c, 1, s)  # warm-up
                    for _r in range(args.rounds):
                        for n, (url, s) in variants.items():
                            got[n].append(run_wrk(url, c, args.duration, s))
                    med = {
                        n: (*(statistics.median(x[i] for x in v) for i in range(3)), sum(x[3] for x in v))
                        for n, v in got.items()
                    }
                    e, la = med[f"early-{fsync}"], med[f"late-{fsync}"]
                    rows.append(
                        {
                            "fsync": fsync,
                            "connections": c,
                            "early": {"rps": e[0], "p50_ms": e[1], "p99_ms": e[2], "errors": e[3]},
                            "late": {"rps": la[0], "p50_ms": la[1], "p99_ms": la[2], "errors": la[3]},
                            "p50_ratio": e[1] / la[1],
                            "p99_ratio": e[2] / la[2],
                            "rps_ratio": e[0] / la[0],
                        }
                    )
                    print(_line(rows[-1]), flush=True)
                for proc in procs[1:]:
                    proc.stop()
                procs = procs[:1]
        finally:
            for proc in procs:
                proc.stop()
    print()
    print(
        "| fsync | conns | early p50 / p99 ms | late p50 / p99 ms | early req/s | late req/s "
        "| p50 ratio | p99 ratio | req/s ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e, la = r["early"], r["late"]
        print(
            f"| {r['fsync']} | {r['connections']} | {e['p50_ms']:.2f} / {e['p99_ms']:.2f} | "
            f"{la['p50_ms']:.2f} / {la['p99_ms']:.2f} | {e['rps']:.0f} | {la['rps']:.0f} | "
            f"{r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} | {r['rps_ratio']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _line(r: dict) -> str:
    return (
        f"fsync={r['fsync']} c={r['connections']}: early p50 {r['early']['p50_ms']:.2f} ms, late "
        f"{r['late']['p50_ms']:.2f} ms (x{r['p50_ratio']:.2f}); req/s x{r['rps_ratio']:.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
