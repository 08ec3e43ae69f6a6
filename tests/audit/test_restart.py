"""Restarts: a clean stop continues the chain silently; an unclean one (kill -9, crash, power loss)
writes a restart record, and records lost in the crash that a signed checkpoint covers are reported
as missing, never papered over by reused sequence numbers. Plus ``kill -9`` of a real sidecar under
unpaced load: every answered request has its record (it reaches the kernel before the last byte)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.audit_load import UnpacedLoad
from bench.procs import ManagedProcess, free_port, wait_http
from sidecar.audit.config import AuditConfig
from sidecar.audit.keys import load_public_key
from sidecar.audit.record import build_record
from sidecar.audit.spool import CLEAN_STOP, unlock
from sidecar.audit.trail import AuditTrail
from sidecar.audit.verify import Report, load_path, verify

from .helpers import make_ctx, run_verify, spool_records


def check(state: Path) -> Report:
    public = load_public_key(state / "audit" / "signing.pub")
    report = Report()
    return verify(load_path(state / "audit" / "spool", report), public, report)


async def _run(state: Path, n: int, start: int = 0, *, crash: bool = False, **cfg) -> AuditTrail:
    """n records; ``crash``: the process 'dies' (no shutdown: no checkpoint, no clean-stop marker)."""
    trail = AuditTrail(AuditConfig(**{"checkpoint_every": 10, **cfg}), state)
    await trail.open()
    for i in range(start, start + n):
        fut = trail.append(build_record(make_ctx(i)), wait=True)
        if fut is not None:
            await fut
    if crash:
        assert trail.writer is not None and trail._lock_fd is not None
        trail.writer.stop()  # what the kernel had is on disk; nothing else happens
        unlock(trail._lock_fd)
        if trail._cp_task is not None:
            trail._cp_task.cancel()
    else:
        await trail.close()
    return trail


async def test_clean_stop_continues_without_restart_record(tmp_path: Path) -> None:
    await _run(tmp_path, 5)
    (chain,) = (tmp_path / "audit" / "spool").glob("*-w0")
    assert (chain / CLEAN_STOP).exists()
    await _run(tmp_path, 5, start=5)
    records = spool_records(tmp_path / "audit" / "spool")
    assert [r["event"]["action"] for r in records] == ["chat"] * 10
    report = check(tmp_path)
    assert report.ok and not report.warnings


async def test_unclean_stop_writes_a_restart_record(tmp_path: Path) -> None:
    await _run(tmp_path, 25, crash=True)  # checkpoints at 10 and 20; 21-25 not signed
    trail = await _run(tmp_path, 3, start=25)
    records = spool_records(tmp_path / "audit" / "spool")
    restart = records[25]
    assert restart["event"]["action"] == "audit_restart" and restart["audit"]["seq"] == 26
    info = restart["custos"]["restart"]
    assert info["previous_seq"] == 25 and info["previous_hash"] == records[24]["audit"]["hash"]
    assert info["checkpoint_seq"] == 20 and info["unsigned"] == 5 and info["clean"] is False
    assert restart["audit"]["prev_hash"] == records[24]["audit"]["hash"]  # the chain stays linked
    assert trail.chain is not None and trail.chain.seq == 29
    report = check(tmp_path)
    assert report.ok, [p.line() for p in report.problems]  # nothing provably missing: a warning
    (warning,) = report.warnings
    assert "unclean stop before seq 26" in warning and "5 record(s)" in warning
    assert report.chains[0].restarts == 1
    proc = run_verify(
        str(tmp_path / "audit" / "spool"), "--public-key", str(tmp_path / "audit" / "signing.pub")
    )
    assert proc.returncode == 0 and "WARNING: chain" in proc.stdout and "unclean stop" in proc.stdout
    proc = run_verify(
        str(tmp_path / "audit" / "spool"), "--public-key", str(tmp_path / "audit" / "signing.pub"), "--json"
    )
    assert json.loads(proc.stdout)["warnings"]


async def test_signed_records_lost_in_a_crash_are_missing_not_reused(tmp_path: Path) -> None:
    """A kernel crash or power loss took records a checkpoint had already signed (fsync: interval):
    the restart continues from what is on disk, and the verifier proves the loss."""
    await _run(tmp_path, 25, crash=True)
    (seg,) = sorted((tmp_path / "audit" / "spool").glob("*/seg-*.jsonl"))
    lines = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(lines[:17]))  # the disk lost seq 18-25; the checkpoint at 20 survived
    await _run(tmp_path, 6, start=25)
    records = spool_records(tmp_path / "audit" / "spool")
    assert records[17]["event"]["action"] == "audit_restart" and records[17]["audit"]["seq"] == 18
    report = check(tmp_path)
    assert not report.ok
    kinds = [(p.kind, p.seq) for p in report.problems]
    assert kinds == [("missing", 18)], [p.line() for p in report.problems]
    assert "18-20" in report.problems[0].detail and "unclean stop" in report.problems[0].detail


def _sidecar(tmp_path: Path, upstream: str, port: int, name: str, **audit) -> ManagedProcess:
    import yaml

    from bench.procs import custos_cmd
    from bench.stack import deep_merge, sidecar_base_config

    state = tmp_path / "state"
    cfg = deep_merge(
        sidecar_base_config(state, upstream),
        {"server": {"port": port, "log_level": "warning"}, "audit": {"checkpoint_interval_s": 1, **audit}},
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = ManagedProcess(name, custos_cmd("serve", "--config", str(path)))
    wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc.proc)
    return proc


@pytest.mark.parametrize(
    ("fsync", "fail_closed"), [("interval", False), ("never", False), ("always", False), ("interval", True)]
)
def test_kill9_under_unpaced_load_every_answer_has_its_record(
    tmp_path: Path, fsync: str, fail_closed: bool
) -> None:
    """~2 s of unpaced concurrent requests against a sidecar in front of an instant upstream, then
    kill -9: every request a client got 200 for has its record on disk, in every mode, and the
    restarted sidecar writes a restart record that verify reports."""
    from bench.stack import default_headers, sidecar_base_config

    up_port = free_port()
    upstream = ManagedProcess(
        "instant-upstream", [sys.executable, "-m", "bench.audit_load", "--port", str(up_port)]
    )
    sc = sc2 = None
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", timeout=30, proc=upstream.proc)
        port = free_port()
        mode = {"fsync": fsync, "fail_closed": fail_closed}
        sc = _sidecar(tmp_path, f"http://127.0.0.1:{up_port}", port, "sidecar", **mode)
        state = tmp_path / "state"
        headers = default_headers(sidecar_base_config(state, ""), state)
        load = UnpacedLoad(f"http://127.0.0.1:{port}", headers, "k9", concurrency=16).start()
        time.sleep(2.0)
        sc.kill9()
        load.stop()
        ok = load.ok_ids()
        assert len(ok) > 50, f"only {len(ok)} answers in 2 s"
        spool = state / "audit" / "spool"
        on_disk = {r["event"]["id"] for r in spool_records(spool)}
        lost = ok - on_disk
        assert not lost, f"{len(lost)} answered request(s) without a record, e.g. {sorted(lost)[:5]}"
        sc2 = _sidecar(tmp_path, f"http://127.0.0.1:{up_port}", port, "sidecar-2", **mode)
        sc2.stop()
        env = {**os.environ, "CUSTOS_STATE_DIR": str(state)}
        proc = run_verify(env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "WARNING" in proc.stdout and "unclean stop" in proc.stdout, proc.stdout
        restarts = [r for r in spool_records(spool) if r["event"]["action"] == "audit_restart"]
        assert len(restarts) == 1
    finally:
        for p in (sc, sc2, upstream):
            if p is not None:
                p.stop()


def test_verify_fails_when_an_answered_record_is_gone(tmp_path: Path) -> None:
    """The other half of the promise: if an answered request's record is not there (here: removed
    from the middle of the spool), verify does not exit 0."""
    import asyncio

    asyncio.run(_run(tmp_path, 30))
    (seg,) = sorted((tmp_path / "audit" / "spool").glob("*/seg-*.jsonl"))
    lines = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(lines[:12] + lines[13:]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar.cli",
            "audit",
            "verify",
            str(tmp_path / "audit" / "spool"),
            "--public-key",
            str(tmp_path / "audit" / "signing.pub"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "MISSING" in proc.stdout and "13-13" in proc.stdout
