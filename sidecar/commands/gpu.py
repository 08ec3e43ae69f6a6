"""``custos gpu``: check GPU telemetry and browse the simulation scenarios.

- ``custos gpu sample``: read every GPU once (real NVML, or ``--sim FILE``) and print the metrics
  exactly as /metrics would show them; exit 1 when NVML is unavailable (the reason goes to stderr).
- ``custos gpu scenarios``: the bundled simulation scenarios (docs/gpu-simulation.md).
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpu", help="GPU telemetry: one sample now, or the simulation scenarios")
    gsub = p.add_subparsers(dest="gpu_command", metavar="COMMAND")
    gsub.required = True
    s = gsub.add_parser("sample", help="read every GPU once and print the metrics (Prometheus text)")
    s.add_argument("--sim", metavar="FILE", help="use the NVML simulation with this scenario (file or name)")
    s.add_argument(
        "--at",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --sim: the scenario time to sample at (default 0)",
    )
    s.add_argument("--names", choices=("custos", "dcgm", "both"), default="custos", help="metric names")
    s.set_defaults(func=run_sample)
    sc = gsub.add_parser("scenarios", help="list the bundled simulation scenarios")
    sc.set_defaults(func=run_scenarios)


def run_sample(args: argparse.Namespace) -> int:
    from custos.errors import UsageError
    from gpu.collector import GpuCollector
    from gpu.nvml_api import real_nvml

    if args.at < 0:
        raise UsageError(f"--at: {args.at} is negative; scenario time starts at 0")
    if args.sim:
        from gpu.sim import SimulatedNvml, load_scenario

        nvml = SimulatedNvml(load_scenario(args.sim), clock=lambda: 0.0, time_offset=args.at)
        collector = GpuCollector(nvml, source="simulation", names=args.names)
        if args.at > 0:
            # Counters (energy) and events (XIDs) accumulate between samples: take one at 0 first.
            nvml.time_offset = 0.0
            collector.sample()
            nvml.time_offset = args.at
    else:
        if args.at:
            raise UsageError("--at needs --sim (real GPUs only have the present)")
        collector = GpuCollector(real_nvml(), source="nvml", names=args.names)
    collector.sample()
    sys.stdout.write(collector.exposition().decode())
    up = collector.up
    collector.stop()
    return 0 if up else 1


def run_scenarios(args: argparse.Namespace) -> int:
    from gpu.sim import SCENARIO_DIR, load_scenario

    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        sc = load_scenario(path)
        desc = " ".join(sc.description.split())
        print(f"{path.stem:15} {len(sc.gpus)} GPU(s)  {desc}")
    return 0
