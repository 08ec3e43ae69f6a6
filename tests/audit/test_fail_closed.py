"""``fail_closed: true`` with a spool that cannot be written: a real sidecar whose file size limit
(``ulimit -f``) makes spool writes fail with EFBIG, as a full or broken disk would."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

from bench.procs import ManagedProcess, custos_cmd, free_port, wait_http
from bench.stack import deep_merge, default_headers, sidecar_base_config

from .helpers import spool_records, wait_until


def _records(spool: Path) -> list[dict]:
    """The spool's records, or [] while the writer is mid-way through a write it will cut back (a
    short write at the file size limit, e.g. of the loss record, is truncated to whole lines)."""
    try:
        return spool_records(spool)
    except ValueError:
        return []


LIMIT_BLOCKS = 256  # 128 KiB per file: the spool segment hits it after ~90 records


def test_write_errors_close_the_gate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    cfg = deep_merge(
        sidecar_base_config(state, f"http://127.0.0.1:{free_port()}"),
        {
            "server": {"port": port, "log_level": "warning"},
            "audit": {"fail_closed": True, "fsync": "always", "segment_bytes": 64 * 1024 * 1024},
        },
    )
    cfg_path = tmp_path / "sidecar.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    argv = " ".join(custos_cmd("serve", "--config", str(cfg_path)))
    proc = ManagedProcess("sidecar-fsize", ["bash", "-c", f"ulimit -f {LIMIT_BLOCKS} && exec {argv}"])
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc.proc)
        headers = default_headers(cfg, state)
        codes: list[int] = []
        bodies: list[dict] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            for i in range(400):
                r = client.post(
                    "/v1/chat/completions",
                    headers={"x-request-id": f"fc-{i:04d}"},
                    json={"model": "m", "messages": [{"role": "user", "content": "y" * 300}]},
                )
                codes.append(r.status_code)
                bodies.append(r.json())
                if codes.count(503) >= 3:
                    break
        first = codes.index(503)
        assert 40 < first < 300 and set(codes[:first]) == {502}
        assert bodies[first]["error"]["code"] == "audit_unavailable"
        assert "cannot be written" in bodies[first]["error"]["message"]
        # The spool holds whole records only (the failed batch was cut back), all before the failure;
        # the loss is noted for the verifier.
        spool = state / "audit" / "spool"
        everything = wait_until(lambda: _records(spool))
        records = [r for r in everything if r["event"]["action"] != "audit_loss"]
        assert records and all(r["event"]["id"] < f"fc-{first:04d}" for r in records)
        # The loss is a record of the chain too when it fits (it is smaller than the one lost).
        losses = [r for r in everything if r["event"]["action"] == "audit_loss"]
        assert all(r["custos"]["loss"]["reason"] == "write error" for r in losses)
        # fail_closed writes each record before its answer: every request answered before the first
        # 503 has its record; the one whose write failed got the 503.
        assert len(records) == first
        notes = [json.loads(x) for f in spool.glob("*/dropped.jsonl") for x in f.read_bytes().splitlines()]
        assert notes and notes[0]["reason"] == "write error"
        resp = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=10)
        # The closed gate still answers a scrape (its record goes into the headroom, best effort).
        assert resp.status_code == 200
        text = resp.text
        assert 'custos_audit_refused_total{reason="write_error"}' in text
    finally:
        proc.stop()
