"""CPU cost of GPU telemetry sampling, with the NVML simulation backend (no GPU needed).

One ``GpuCollector.sample()`` reads every field of every GPU through the NVML-shaped interface,
builds the metric families and renders the Prometheus text that /metrics appends. Rows compare GPU
counts and metric-name sets side by side; the last column is the sampler thread's CPU share at the
default 5 s interval. (With real NVML each call also crosses into the driver: typically tens of µs
per call, which this does not include.)

Run: ``~/.cache/custos/venv/bin/python -m bench.observability_gpu [--samples N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from gpu.collector import GpuCollector
from gpu.sim import SimulatedNvml, parse_scenario


def scenario(gpus: int) -> dict:
    return {
        "name": f"bench-{gpus}",
        "gpus": [
            {
                "name": "NVIDIA H100 80GB HBM3",
                "jitter": 3,
                "processes": [{"pid": 1000 + i, "name": "vllm"}],
                "baseline": {"utilization": 60, "temperature": 55, "power_w": 400},
            }
            for i in range(gpus)
        ],
        "events": [{"at": 0, "gpu": "all", "ramp": {"utilization": 95}, "over": 600}],
    }


def measure(gpus: int, names: str, samples: int) -> dict[str, float]:
    sim = SimulatedNvml(parse_scenario(scenario(gpus), "bench"))
    c = GpuCollector(sim, source="simulation", names=names)
    for _ in range(5):
        c.sample()
    cpu: list[float] = []
    for _ in range(samples):
        t0 = time.thread_time_ns()
        c.sample()
        cpu.append((time.thread_time_ns() - t0) / 1e6)
    p50 = statistics.median(cpu)
    return {"p50_ms": p50, "max_ms": max(cpu), "bytes": len(c.exposition()), "cpu_pct_5s": p50 / 5000 * 100}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args(argv)
    print(
        f"{'GPUs':>4} {'names':>7} {'CPU ms/sample p50':>18} {'max':>7} {'text bytes':>11} {'CPU % @5s':>10}"
    )
    for gpus in (1, 2, 8):
        for names in ("custos", "both"):
            r = measure(gpus, names, args.samples)
            print(
                f"{gpus:>4} {names:>7} {r['p50_ms']:>18.2f} {r['max_ms']:>7.2f} {r['bytes']:>11} "
                f"{r['cpu_pct_5s']:>10.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
