"""Instructions per MB of ``custos redact``'s steady state, counted by valgrind: the same on every run.

    ~/.cache/custos/venv/bin/python -m bench.redaction_instructions --against b1f6a88

This box's speed swings threefold from day to day (the same code gave 12.3 and 4.0 MB/s), and side by
side in one run by 10-30%; an instruction count does not move. The command runs under cachegrind (no
cache simulation) on the throughput benchmark's mix and on four copies of it; the difference is the
steady state (start-up, imports and first-seen values cancel out), divided by the extra megabytes.
``--against REV`` counts a git revision of this repository the same way (``git archive`` into a scratch
directory); the ratio is its count over the working tree's (above 1: the working tree needs fewer).
Instructions are a proxy for time, not time: a cache miss costs more than an instruction.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.redaction_throughput import mixed_text
from bench.trees import ROOT, archive_sidecar


def count(root: Path, text: Path, state: Path) -> int:
    """Instructions of one ``custos redact`` run over ``text`` with ``root``'s code."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0", "CUSTOS_STATE_DIR": str(state)}
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    cmd += [sys.executable, "-m", "sidecar.cli", "redact"]
    with text.open("rb") as stdin:
        res = subprocess.run(
            cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=root, check=True
        )
    for line in res.stderr.decode().splitlines():
        if "I   refs:" in line or "I refs:" in line:
            return int(line.rsplit(":", 1)[1].replace(",", "").strip())
    raise RuntimeError(f"no instruction count in valgrind's output:\n{res.stderr.decode()[-2000:]}")


def per_mb(root: Path, one: Path, four: Path, tmp: Path) -> float:
    """Steady-state instructions per MB (10^6 bytes): the two runs side by side (two cores)."""
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda p: count(root, p, tmp / f"state-{p.stem}"), (one, four))
    return (b - a) / ((four.stat().st_size - one.stat().st_size) / 1e6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=1.0, help="size of the mix (the long run: four copies)")
    parser.add_argument("--against", action="append", default=[], metavar="REV", help="a git revision too")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: make bench-deps (or apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        text = mixed_text(args.mb)
        one, four = tmp / "one.txt", tmp / "four.txt"
        one.write_text(text + "\n", encoding="utf-8")
        four.write_text((text + "\n") * 4, encoding="utf-8")
        trees = {"working tree": ROOT}
        for rev in args.against:
            tree = tmp / f"rev-{len(trees)}"
            if (complaint := archive_sidecar(rev, tree)) is not None:
                print(f"--against {rev}: {complaint}", file=sys.stderr)
                return 2
            trees[rev] = tree
        counts = {label: per_mb(root, one, four, tmp) for label, root in trees.items()}
    mine = counts["working tree"]
    print(f"`custos redact`, steady state, on the throughput mix ({args.mb:g} MB and four copies of it)\n")
    print("| code | instructions per MB | working tree's speed against it (its count / ours) |")
    print("|---|---:|---:|")
    for label, value in counts.items():
        ratio = "" if label == "working tree" else f"{value / mine:.3f}x"
        print(f"| {label} | {value / 1e6:,.0f} M | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
