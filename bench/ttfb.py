"""Time to first byte of a stream, direct to the CPU engine vs through the sidecar (every default stage
on), interleaved in one run so machine noise hits both alike.

    ~/.cache/custos/venv/bin/python -m bench.ttfb [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.procs import ManagedProcess, custos_cmd, free_port, wait_http
from bench.stack import tiny_model_dir

MODEL = "custos-tiny"


def first_byte_ms(client: httpx.Client, url: str, headers: dict[str, str], body: dict) -> float:
    t0 = time.perf_counter()
    with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
        r.raise_for_status()
        elapsed = None
        for line in r.iter_lines():  # read to the end so the connection is reused
            if elapsed is None and line.startswith("data: "):
                elapsed = (time.perf_counter() - t0) * 1000
    assert elapsed is not None, "stream had no events"
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    model_dir = tiny_model_dir()
    tmp = Path(tempfile.mkdtemp(prefix="custos-ttfb-"))
    eng_port, sc_port = free_port(), free_port()
    procs = [
        ManagedProcess(
            "engine",
            custos_cmd(
                "inference",
                "serve",
                "--model",
                str(model_dir),
                "--served-model-name",
                MODEL,
                "--port",
                str(eng_port),
            ),
        )
    ]
    try:
        engine = f"http://127.0.0.1:{eng_port}"
        wait_http(engine + "/v1/models", timeout=180)
        cfg = tmp / "custos.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "server": {"host": "127.0.0.1", "port": sc_port},
                    "upstream": {"url": engine},
                    "state": {"dir": str(tmp / "state")},
                }
            )
        )
        procs.append(ManagedProcess("sidecar", custos_cmd("serve", "--config", str(cfg))))
        sidecar = f"http://127.0.0.1:{sc_port}"
        wait_http(sidecar + "/health", timeout=60)
        token = subprocess.run(
            custos_cmd("token", "--config", str(cfg), "--sub", "bench", "--role", "admin"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Call me at 13812345678"}],
            "max_tokens": 4,
            "stream": True,
        }
        direct, proxied = [], []
        with httpx.Client(timeout=60) as client:
            for _ in range(10):  # warm-up
                first_byte_ms(client, engine, {}, body)
                first_byte_ms(client, sidecar, auth, body)
            for _ in range(args.requests):
                direct.append(first_byte_ms(client, engine, {}, body))
                proxied.append(first_byte_ms(client, sidecar, auth, body))
        d50, p50 = statistics.median(direct), statistics.median(proxied)
        q = lambda xs: statistics.quantiles(xs, n=100)[98]  # noqa: E731
        print(f"time to first byte over {args.requests} interleaved streams (ms)")
        print(f"  direct   p50 {d50:7.2f}  p99 {q(direct):7.2f}")
        print(f"  sidecar  p50 {p50:7.2f}  p99 {q(proxied):7.2f}")
        print(f"  added    p50 {p50 - d50:+7.2f}")
        return 0
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    sys.exit(main())
