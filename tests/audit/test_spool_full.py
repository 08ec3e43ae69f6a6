"""Spool size cap through a real sidecar, one test per ``when_full`` setting. The upstream is a port
nothing listens on: every request still leaves a record (a 502), so the spool fills in seconds."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

from bench.procs import free_port

from .helpers import run_verify, spool_records, wait_until

CAP = 64 * 1024  # the smallest cap allowed; records are ~1.3 KB, so ~45 fill it


def start(start_sidecar, when_full: str, **extra):
    # Retention off and no compression: the cap as it was before issue 21 (tests/audit/test_retention.py
    # covers the default, which prunes instead).
    audit = {
        "max_bytes": CAP,
        "when_full": when_full,
        "block_timeout_s": 1,
        "retention": {"enabled": False},
        "compression": "none",
        **extra,
    }
    return start_sidecar(f"http://127.0.0.1:{free_port()}", config={"audit": audit})


def send(sc, n: int, until: int | None = None) -> list[httpx.Response]:
    out = []
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=30) as client:
        for i in range(n):
            if until is not None and out and out[-1].status_code == until:
                break
            out.append(
                client.post(
                    "/v1/chat/completions",
                    headers={"x-request-id": f"full-{i:04d}"},
                    json={"model": "m", "messages": [{"role": "user", "content": "x" * 200}]},
                )
            )
    return out


def metric(sc, name: str) -> float:
    resp = httpx.get(sc.url + "/metrics", headers=sc.headers, timeout=10)
    # A closed gate still answers a scrape, so the refusal counters stay readable.
    assert resp.status_code == 200, resp.text
    text = resp.text
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


def spool_bytes(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in (tmp_path / "state" / "audit" / "spool").glob("*/seg-*.jsonl"))


def test_fail_closed_refuses_requests_when_full(start_sidecar, tmp_path) -> None:
    sc = start(start_sidecar, "fail_closed")
    codes = [r.status_code for r in send(sc, 120)]
    first = codes.index(503)
    assert 20 < first < 100 and set(codes[:first]) == {502}
    assert set(codes[first:]) == {503}  # stays closed: nothing ships, nothing frees room
    refusal = send(sc, 1)[0]
    assert (
        refusal.json()["error"]["code"] == "audit_unavailable"
        and "full" in refusal.json()["error"]["message"]
    )
    # Every request that was served has its record; refused ones were never served.
    spool = tmp_path / "state" / "audit" / "spool"
    want = {f"full-{i:04d}" for i in range(first)}
    assert wait_until(lambda: {r["event"]["id"] for r in spool_records(spool)} == want)
    assert spool_bytes(tmp_path) <= CAP
    assert metric(sc, "custos_audit_refused_total") >= len(codes) - first


def test_block_waits_then_gives_up(start_sidecar, tmp_path) -> None:
    sc = start(start_sidecar, "block")
    responses = send(sc, 80, until=503)
    codes = [r.status_code for r in responses]
    first = codes.index(503)
    assert 20 < first < 80 and set(codes[:first]) == {502}
    blocked = responses[first]
    assert blocked.json()["error"]["code"] == "audit_unavailable"
    assert "for 1s" in blocked.json()["error"]["message"]  # waited block_timeout_s for room first
    assert blocked.elapsed.total_seconds() >= 0.9
    assert spool_bytes(tmp_path) <= CAP


def test_drop_oldest_keeps_serving_and_counts(start_sidecar, tmp_path) -> None:
    sc = start(start_sidecar, "drop_oldest")
    codes = [r.status_code for r in send(sc, 150)]
    assert set(codes) == {502}  # never refused
    spool = tmp_path / "state" / "audit" / "spool"
    assert wait_until(lambda: spool_records(spool)[-1]["event"]["id"] == "full-0149")
    records = spool_records(spool)
    dropped = metric(sc, "custos_audit_dropped_total")
    assert dropped > 0
    assert records[0]["audit"]["seq"] == dropped + 1  # exactly the counted ones are gone
    assert spool_bytes(tmp_path) <= CAP
    assert "SPOOL FULL" in sc.process.log() and "DROPPED" in sc.process.log()
    sc.stop()
    proc = run_verify(env={**os.environ, "CUSTOS_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 1 and "MISSING" in proc.stdout and "spool full" in proc.stdout
