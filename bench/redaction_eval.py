"""Redaction quality: leak rate per PII type and over-redaction per near-miss kind, Custos and
Presidio side by side on the same labelled set (bench/redaction_data.py).

    ~/.cache/custos/venv/bin/python -m bench.redaction_eval --per-type 200

Leak: a PII value keeps at least one letter or digit outside every detected span (it survives, at
least partly). Altered: a detected span overlaps a near-miss value (an order number, a timestamp, a
wrong-checksum ID). Presidio runs in ~/.cache/custos/presidio-venv (see bench/redaction_presidio.py);
its results are reported at its default score threshold (0: every result is applied) and at 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.redaction_data import build
from sidecar.redaction.engine import Redactor
from sidecar.redaction.policy import Policy

PRESIDIO_PY = (
    Path(os.environ.get("CUSTOS_CACHE", Path.home() / ".cache" / "custos")) / "presidio-venv/bin/python"
)


def leaked(value_span: tuple[int, int], text: str, spans: list[tuple[int, int]]) -> bool:
    start, end = value_span
    for i in range(start, end):
        if text[i].isalnum() and not any(s <= i < e for s, e in spans):
            return True
    return False


def altered(value_span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    start, end = value_span
    return any(s < end and start < e for s, e in spans)


def score(records: list[dict], spans: list[list[tuple[int, int]]]) -> tuple[dict, dict]:
    leaks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    over: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for rec, found in zip(records, spans, strict=True):
        for p in rec["pii"]:
            leaks[p["type"]][1] += 1
            leaks[p["type"]][0] += leaked((p["start"], p["end"]), rec["text"], found)
        for n in rec["nonpii"]:
            over[n["kind"]][1] += 1
            over[n["kind"]][0] += altered((n["start"], n["end"]), found)
    return leaks, over


def pct(pair: list[int]) -> str:
    return f"{100 * pair[0] / pair[1]:.1f}%" if pair[1] else "-"


def total(d: dict) -> list[int]:
    return [sum(v[0] for v in d.values()), sum(v[1] for v in d.values())]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-type", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-presidio", action="store_true")
    p.add_argument("--show-misses", type=int, default=0, help="print this many misses per type")
    args = p.parse_args(argv)

    records = build(args.per_type, args.seed)
    redactor = Redactor(Policy(), b"bench-key")
    t0 = time.perf_counter()
    ours = [[(e.start, e.end) for e in redactor.find(r["text"])] for r in records]
    ours_s = time.perf_counter() - t0
    size = sum(len(r["text"].encode()) for r in records)
    o_leaks, o_over = score(records, ours)

    presidio = None
    if not args.no_presidio and PRESIDIO_PY.exists():
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
            src.write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
            )
            script = Path(__file__).with_name("redaction_presidio.py")
            res = subprocess.run(
                [str(PRESIDIO_PY), str(script), "spans", str(src), str(dst)],
                capture_output=True,
                text=True,
                check=True,
            )
            timing = json.loads(res.stdout.strip().splitlines()[-1])
            raw = [json.loads(line) for line in dst.read_text().splitlines()]
        presidio = {
            thr: score(records, [[(s, e) for s, e, _, sc in found if sc >= thr] for found in raw])
            for thr in (0.0, 0.5)
        }

    print(
        f"records: {len(records)} ({size / 1e6:.2f} MB), Custos {size / ours_s / 1e6:.1f} MB/s on this set"
        + (f", Presidio {timing['mb_per_s']:.3f} MB/s" if presidio else "")
    )
    head = "| PII type | n | Custos leak |" + (
        " Presidio leak (thr 0) | Presidio leak (thr 0.5) |" if presidio else ""
    )
    print("\n" + head)
    print(
        "|" + "---|" * head.count("|")[:-1]
        if False
        else "|---|---:|---:|" + ("---:|---:|" if presidio else "")
    )
    for type_ in sorted(o_leaks):
        row = f"| {type_} | {o_leaks[type_][1]} | {pct(o_leaks[type_])} |"
        if presidio:
            row += f" {pct(presidio[0.0][0][type_])} | {pct(presidio[0.5][0][type_])} |"
        print(row)
    row = f"| **all PII** | {total(o_leaks)[1]} | **{pct(total(o_leaks))}** |"
    if presidio:
        row += f" {pct(total(presidio[0.0][0]))} | {pct(total(presidio[0.5][0]))} |"
    print(row)
    head = "| near-miss (non-PII) | n | Custos altered |" + (
        " Presidio altered (thr 0) | Presidio altered (thr 0.5) |" if presidio else ""
    )
    print("\n" + head)
    print("|---|---:|---:|" + ("---:|---:|" if presidio else ""))
    for kind in sorted(o_over):
        row = f"| {kind} | {o_over[kind][1]} | {pct(o_over[kind])} |"
        if presidio:
            row += f" {pct(presidio[0.0][1][kind])} | {pct(presidio[0.5][1][kind])} |"
        print(row)
    row = f"| **all non-PII** | {total(o_over)[1]} | **{pct(total(o_over))}** |"
    if presidio:
        row += f" {pct(total(presidio[0.0][1]))} | {pct(total(presidio[0.5][1]))} |"
    print(row)

    if args.show_misses:
        shown: dict[str, int] = defaultdict(int)
        for rec, found in zip(records, ours, strict=True):
            for pii in rec["pii"]:
                if (
                    leaked((pii["start"], pii["end"]), rec["text"], found)
                    and shown[pii["type"]] < args.show_misses
                ):
                    shown[pii["type"]] += 1
                    print("LEAK", pii["type"], repr(pii["value"]), "in", repr(rec["text"]))
            for n in rec["nonpii"]:
                if altered((n["start"], n["end"]), found) and shown[n["kind"]] < args.show_misses:
                    shown[n["kind"]] += 1
                    print("ALTERED", n["kind"], repr(n["value"]), "in", repr(rec["text"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
