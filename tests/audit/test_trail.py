"""The chain, the spool and the verifier, in-process with real files (no servers needed)."""

from __future__ import annotations

import itertools
import json
import os
import stat
from pathlib import Path

import pytest

from sidecar.audit.canonical import record_hash
from sidecar.audit.config import AuditConfig
from sidecar.audit.keys import load_public_key
from sidecar.audit.record import build_record
from sidecar.audit.spool import list_segments
from sidecar.audit.trail import AuditTrail
from sidecar.audit.verify import Report, load_path, verify

from .helpers import make_ctx, run_verify, spool_records


async def write_trail(state: Path, n: int, start: int = 0, **cfg) -> AuditTrail:
    config = AuditConfig(**{"checkpoint_every": 10, **cfg})
    trail = AuditTrail(config, state)
    await trail.open()
    for i in range(start, start + n):
        trail.append(build_record(make_ctx(i, denied=i % 7 == 3)))
    await trail.close()
    return trail


def check(state: Path, path: Path | None = None) -> Report:
    public = load_public_key(state / "audit" / "signing.pub")
    report = Report()
    return verify(load_path(path or state / "audit" / "spool", report), public, report)


def segment_lines(state: Path) -> tuple[Path, list[bytes]]:
    (seg,) = sorted((state / "audit" / "spool").glob("*/seg-*.jsonl"))
    return seg, seg.read_bytes().splitlines(keepends=True)


async def test_records_chain_and_verify_ok(tmp_path: Path) -> None:
    await write_trail(tmp_path, 25)
    records = spool_records(tmp_path / "audit" / "spool")
    assert [r["audit"]["seq"] for r in records] == list(range(1, 26))
    assert records[0]["audit"]["prev_hash"] == "0" * 64
    for prev, cur in itertools.pairwise(records):
        assert cur["audit"]["prev_hash"] == prev["audit"]["hash"]
        assert record_hash(cur) == cur["audit"]["hash"]
    r = records[3]
    assert r["event"]["id"] == "req-000003" and r["event"]["outcome"] == "failure"
    assert r["event"]["type"] == ["access", "denied"] and r["llm"]["authz"]["decision"] == "deny"
    assert (
        records[0]["llm"]["redactions"] == {"EMAIL": 1} and records[0]["llm"]["usage"]["output_tokens"] == 7
    )
    assert "text" not in records[0]["llm"]["prompt"]  # no raw prompt by default
    report = check(tmp_path)
    assert report.ok, [p.line() for p in report.problems]
    # 25 records, a checkpoint every 10 plus one at close
    assert report.chains[0].checkpoints == 3 and report.chains[0].covered_seq == 25
    key = tmp_path / "audit" / "signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


async def test_chain_continues_after_restart_and_torn_line(tmp_path: Path) -> None:
    await write_trail(tmp_path, 5)
    seg, lines = segment_lines(tmp_path)
    seg.write_bytes(b"".join(lines) + lines[-1][:40])  # a write cut in the middle by kill -9
    await write_trail(tmp_path, 5, start=5)
    records = spool_records(tmp_path / "audit" / "spool")
    assert [r["audit"]["seq"] for r in records] == list(range(1, 11))
    assert check(tmp_path).ok


@pytest.mark.parametrize(
    ("tamper", "kind", "seq"),
    [
        ("edit", "altered", 4),
        ("delete", "missing", 4),
        ("insert", "inserted", 5),
        ("swap", "reordered", 6),
        ("truncate", "missing", 16),
        ("rehash", "checkpoint_mismatch", 10),
    ],
)
async def test_verify_detects_tampering(tmp_path: Path, tamper: str, kind: str, seq: int) -> None:
    await write_trail(tmp_path, 20)
    seg, lines = segment_lines(tmp_path)
    docs = [json.loads(x) for x in lines]
    if tamper == "edit":
        docs[3]["user"]["id"] = "mallory"
    elif tamper == "delete":
        del docs[3]
    elif tamper == "insert":
        forged = json.loads(lines[3])
        forged["event"]["id"] = "forged"
        forged["audit"]["seq"] = 5
        forged["audit"]["prev_hash"] = docs[3]["audit"]["hash"]
        forged["audit"]["hash"] = record_hash(forged)  # a careful forger re-hashes
        docs.insert(4, forged)
    elif tamper == "swap":
        docs[4], docs[5] = docs[5], docs[4]
    elif tamper == "truncate":
        docs = docs[:15]  # the checkpoint at seq 20 (made at close) still names seq 20
    elif tamper == "rehash":
        # Rewrite history consistently: change seq 3, then recompute every later hash and link.
        docs[2]["user"]["id"] = "mallory"
        prev = docs[1]["audit"]["hash"]
        for d in docs[2:]:
            d["audit"]["prev_hash"] = prev
            d["audit"]["hash"] = record_hash(d)
            prev = d["audit"]["hash"]
    seg.write_bytes(b"".join(json.dumps(d).encode() + b"\n" for d in docs))
    report = check(tmp_path)
    assert not report.ok
    first = report.problems[0]
    assert (first.kind, first.seq) == (kind, seq), [p.line() for p in report.problems]
    # The CLI says the same and exits 1.
    proc = run_verify(
        str(tmp_path / "audit" / "spool"), "--public-key", str(tmp_path / "audit" / "signing.pub")
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert kind.upper() in proc.stdout.splitlines()[1]


async def test_verify_detects_forged_checkpoint(tmp_path: Path) -> None:
    await write_trail(tmp_path, 20)
    cp_path = next((tmp_path / "audit" / "spool").glob("*/checkpoints.jsonl"))
    cps = [json.loads(x) for x in cp_path.read_bytes().splitlines()]
    cps[0]["audit"]["seq"] = 12  # claims another position with the old signature
    cp_path.write_bytes(b"".join(json.dumps(c).encode() + b"\n" for c in cps))
    report = check(tmp_path)
    assert [p.kind for p in report.problems] == ["bad_signature"]
    # A checkpoint signed with another key is rejected too.
    other = tmp_path / "other"
    await write_trail(other, 3)
    foreign = json.loads(
        next((other / "audit" / "spool").glob("*/checkpoints.jsonl")).read_bytes().splitlines()[0]
    )
    foreign["audit"]["chain_id"] = cps[1]["audit"]["chain_id"]
    cps[0] = foreign
    cp_path.write_bytes(b"".join(json.dumps(c).encode() + b"\n" for c in cps))
    assert [p.kind for p in check(tmp_path).problems] == ["bad_signature"]


async def test_cli_verify_exit_codes(tmp_path: Path) -> None:
    await write_trail(tmp_path, 12)
    env = {**os.environ, "CUSTOS_STATE_DIR": str(tmp_path)}
    ok = run_verify(env=env)  # no PATH: the spool in the default state dir
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK") and "12 record(s)" in ok.stdout
    missing = run_verify(str(tmp_path / "nope"), env=env)
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    nokey = run_verify(
        str(tmp_path / "audit" / "spool"), "--public-key", str(tmp_path / "absent.pub"), env=env
    )
    assert nokey.returncode == 2 and "absent.pub" in nokey.stderr


async def test_drop_oldest_caps_the_spool_and_says_so(tmp_path: Path) -> None:
    cap = 64 * 1024
    await write_trail(
        tmp_path,
        200,
        max_bytes=cap,
        when_full="drop_oldest",
        checkpoint_every=1000,
        retention={"enabled": False},  # drops only happen with retention off (it prunes otherwise)
        compression="none",
    )
    chain_dir = next((tmp_path / "audit" / "spool").glob("*-w0"))
    size = sum(p.stat().st_size for _f, p in list_segments(chain_dir))
    assert size <= cap
    records = spool_records(tmp_path / "audit" / "spool")
    requests = [r for r in records if r["event"]["action"] != "audit_loss"]
    assert requests[-1]["event"]["id"] == "req-000199" and records[0]["audit"]["seq"] > 1
    notes = [json.loads(x) for x in (chain_dir / "dropped.jsonl").read_bytes().splitlines()]
    assert notes[0]["from"] == 1 and notes[-1]["to"] == records[0]["audit"]["seq"] - 1
    # Each drop is also a record of the chain (shipped like any other), naming the range dropped.
    losses = [r["custos"]["loss"] for r in records if r["event"]["action"] == "audit_loss"]
    assert losses and losses[-1]["to"] == notes[-1]["to"] and "drop_oldest" in losses[-1]["reason"]
    # The gap is reported (records were lost), with the spool's own explanation.
    report = check(tmp_path)
    assert [p.kind for p in report.problems] == ["missing"]
    assert "spool full" in report.problems[0].detail
    assert report.chains[0].lost == notes[-1]["to"]


async def test_damaged_chain_end_starts_a_new_chain(tmp_path: Path) -> None:
    await write_trail(tmp_path, 4)
    seg, lines = segment_lines(tmp_path)
    seg.write_bytes(b"".join(lines) + b"not a record\n")  # a complete line, but garbage
    trail = await write_trail(tmp_path, 3, start=4)
    assert trail.chain is not None and trail.chain.chain_id.endswith("-w1") and trail.chain.seq == 3
    report = check(tmp_path)
    assert [p.kind for p in report.problems] == ["altered"]
    assert "not valid JSON" in report.problems[0].detail
