"""Issue 21: the spool is an archive with retention, not a fuse.

Without a sink the default policy prunes the oldest sealed, signed segments (a signed pruning note
first), so a small cap serves indefinitely and ``custos audit verify`` shows what was pruned by policy;
with ``retention.enabled: false`` the cap still closes the gate; sealed segments are compressed and read
transparently (also after a restart); ``archive_dir`` keeps a verifiable copy of everything pruned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import json
import os
import time
from pathlib import Path

import httpx

from sidecar.audit.config import AuditConfig
from sidecar.audit.keys import load_public_key
from sidecar.audit.record import build_record
from sidecar.audit.trail import AuditTrail
from sidecar.audit.verify import Report, load_path, verify

from .helpers import make_ctx, run_verify, spool_records, wait_until
from .test_spool_full import metric

CAP = 64 * 1024  # the smallest cap: 8 KiB segments, ~6 records each


def check(state: Path, path: Path | None = None) -> Report:
    public = load_public_key(state / "audit" / "signing.pub")
    report = Report()
    return verify(load_path(path or state / "audit" / "spool", report), public, report)


def spool(state: Path) -> Path:
    return state / "audit" / "spool"


def seg_files(state: Path) -> list[Path]:
    return sorted(spool(state).glob("*/seg-*"))


def notes(state: Path) -> list[dict]:
    lines = [x for f in spool(state).glob("*/checkpoints.jsonl") for x in f.read_bytes().splitlines()]
    return [json.loads(x) for x in lines if b'"prune"' in x]


async def write(state: Path, n: int, start: int = 0, gate: bool = False, **cfg) -> AuditTrail:
    """``gate``: wait for room before each record, as the audit stage's gate does."""
    trail = AuditTrail(
        AuditConfig(**{"checkpoint_every": 10_000, "checkpoint_interval_s": 3600, **cfg}), state
    )
    await trail.open()
    for i in range(start, start + n):
        if gate:
            assert await trail.wait_for_room(20), trail.problem()
        trail.append(build_record(make_ctx(i)))
        if i % 200 == 0:
            await asyncio.sleep(0.01)  # let the sealer thread compress now and then
    await trail.close()
    return trail


async def test_default_retention_prunes_signed_segments_without_a_sink(tmp_path: Path) -> None:
    trail = await write(tmp_path, 1500, max_bytes=CAP)  # ~2 MB through a 64 KiB cap
    assert trail.writer is not None and trail.writer.lost == 0  # nothing lost: pruned by policy
    records = spool_records(spool(tmp_path))
    first = records[0]["audit"]["seq"]
    assert first > 1 and records[-1]["audit"]["seq"] == 1500
    assert [r["audit"]["seq"] for r in records] == list(range(first, 1501))
    assert sum(p.stat().st_size for p in seg_files(tmp_path)) <= CAP
    got = notes(tmp_path)
    assert got[0]["audit"]["from"] == 1 and got[-1]["audit"]["seq"] == first - 1
    assert {n["audit"]["reason"] for n in got} == {"room"}
    report = check(tmp_path)
    assert report.ok, [p.line() for p in report.problems]
    (chain,) = report.chains
    assert chain.pruned_ranges() == [(1, first - 1)]
    assert "pruned by policy (room)" in report.summary() and f"seq 1-{first - 1}" in report.summary()


async def test_retention_off_without_a_sink_keeps_everything_until_the_cap(tmp_path: Path) -> None:
    # Uncompressed, so the 300 records (~390 KB) overflow the 64 KiB cap whatever the sealer thread's
    # pace; gzipped they shrink ~8x and, when the sealer keeps up, can all fit.
    trail = await write(tmp_path, 300, max_bytes=CAP, retention={"enabled": False}, compression="none")
    assert trail.writer is not None and trail.writer.lost > 0  # past the gate: over the cap, lost
    records = spool_records(spool(tmp_path))
    assert records[0]["audit"]["seq"] == 1 and not notes(tmp_path)


async def test_unshipped_segments_are_never_pruned(tmp_path: Path) -> None:
    """With a sink, retention prunes only what it acknowledged, however full the spool is."""
    config = AuditConfig(max_bytes=CAP, checkpoint_every=10_000, compression="none")  # see above
    trail = AuditTrail(config, tmp_path)
    await trail.open()
    writer = trail.writer
    assert writer is not None
    writer.shipping = True
    writer.acked_seq = 40
    for i in range(300):
        trail.append(build_record(make_ctx(i)))
    await trail.close()
    records = spool_records(spool(tmp_path))
    assert records[0]["audit"]["seq"] <= 41  # everything after the acknowledged seq is still there
    assert all(n["audit"]["seq"] <= 40 for n in notes(tmp_path))
    assert writer.lost > 0  # the cap held: what did not fit was lost, not the unshipped records


async def test_compressed_segments_verify_after_restart(tmp_path: Path) -> None:
    await write(tmp_path, 200, segment_bytes=4096)  # default cap: nothing pruned, many sealed segments
    sealed = wait_until(lambda: [p for p in seg_files(tmp_path) if p.name.endswith(".jsonl.gz")], 10)
    assert sealed
    with gzip.open(sealed[0], "rb") as f:  # plain gzip: zcat reads it
        assert json.loads(f.readline())["audit"]["seq"] == 1
    trail = await write(tmp_path, 100, start=200, segment_bytes=4096)  # continues the same chain
    assert trail.chain is not None and trail.chain.seq == 300
    records = spool_records(spool(tmp_path))
    assert [r["audit"]["seq"] for r in records] == list(range(1, 301))
    report = check(tmp_path)
    assert report.ok, [p.line() for p in report.problems]
    ok = run_verify(env={**os.environ, "CUSTOS_STATE_DIR": str(tmp_path)})
    assert ok.returncode == 0 and "300 record(s)" in ok.stdout, ok.stdout + ok.stderr


async def test_retention_by_age(tmp_path: Path) -> None:
    await write(tmp_path, 200, segment_bytes=4096)
    old = time.time() - 3 * 86400
    segs = seg_files(tmp_path)
    for p in segs[:-1]:
        os.utime(p, (old, old))
    await write(tmp_path, 5, start=200, segment_bytes=4096, retention={"max_age_days": 2})
    got = notes(tmp_path)
    assert got and {n["audit"]["reason"] for n in got} == {"age"}
    records = spool_records(spool(tmp_path))
    assert records[0]["audit"]["seq"] > 1 and records[-1]["audit"]["seq"] == 205
    report = check(tmp_path)
    assert report.ok, [p.line() for p in report.problems]
    assert "pruned by policy (age)" in report.summary()


async def test_archive_keeps_a_verifiable_copy_of_what_is_pruned(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    trail = await write(tmp_path, 600, gate=True, max_bytes=CAP, archive_dir=str(archive))
    assert trail.writer is not None and trail.writer.lost == 0
    assert notes(tmp_path)  # the spool pruned, after archiving
    files = sorted(archive.glob("*/seg-*.jsonl.gz"))
    assert files and not list(archive.rglob(".*.tmp"))
    public = load_public_key(tmp_path / "audit" / "signing.pub")
    report = Report()
    report = verify(load_path(archive, report), public, report)
    assert report.ok, [p.line() for p in report.problems]
    (chain,) = report.chains
    assert chain.first_seq == 1 and chain.last_seq and chain.last_seq >= notes(tmp_path)[-1]["audit"]["seq"]
    # The CLI verifies an archive directory like a spool.
    proc = run_verify(str(archive), "--public-key", str(tmp_path / "audit" / "signing.pub"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Tampering in the archive is caught like anywhere else.
    with gzip.open(files[0], "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with gzip.open(files[0], "wb") as f:
        f.write(b"".join(lines[:2] + lines[3:]))
    report = Report()
    report = verify(load_path(archive, report), public, report)
    assert not report.ok and report.problems[0].kind == "missing"


def _load(sc, n: int, threads: int = 4) -> list[int]:
    body = {"model": "custos-tiny", "messages": [{"role": "user", "content": "hello " * 30}]}

    def worker(k: int) -> list[int]:
        codes = []
        with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=30) as client:
            for i in range(k, n, threads):
                r = client.post("/v1/chat/completions", headers={"x-request-id": f"ret-{i:05d}"}, json=body)
                codes.append(r.status_code)
        return codes

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [c for batch in pool.map(worker, range(threads)) for c in batch]


def test_small_cap_without_sink_serves_indefinitely(upstream, start_sidecar, tmp_path) -> None:
    cap = 256 * 1024
    sc = start_sidecar(upstream.url, config={"audit": {"max_bytes": cap}})
    n = 5000  # ~7 MB of records (~0.5 MB compressed) through a 256 KiB cap
    codes = _load(sc, n)
    assert codes.count(200) == n, {c: codes.count(c) for c in set(codes)}
    assert metric(sc, "custos_audit_spool_fill_ratio") < 0.8
    assert metric(sc, "custos_audit_pruned_records_total") > 500
    assert metric(sc, "custos_audit_records_lost_total") == 0
    assert metric(sc, "custos_audit_backlog_records") == 0  # no sink: nothing is "not yet shipped"
    log = sc.process.log()
    assert "no sink configured" in log and "retention:" in log
    sc.stop()
    spool_dir = tmp_path / "state" / "audit" / "spool"
    size = sum(p.stat().st_size for p in spool_dir.glob("*/seg-*"))
    assert size <= cap
    ids = {r["event"]["id"] for r in spool_records(spool_dir)}
    assert f"ret-{n - 1:05d}" in ids and "ret-00000" not in ids
    proc = run_verify(env={**os.environ, "CUSTOS_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pruned by policy (room)" in proc.stdout and "seq 1-" in proc.stdout


def test_block_with_retention_off_blocks_as_today(upstream, start_sidecar, tmp_path) -> None:
    audit = {"max_bytes": CAP, "when_full": "block", "block_timeout_s": 1, "retention": {"enabled": False}}
    sc = start_sidecar(upstream.url, config={"audit": audit})
    codes = []
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=30) as client:
        for i in range(2000):  # sealed segments are compressed: many more than 64 KiB of records
            r = client.post(
                "/v1/chat/completions",
                headers={"x-request-id": f"blk-{i:04d}"},
                json={"model": "custos-tiny", "messages": [{"role": "user", "content": "x" * 200}]},
            )
            codes.append(r.status_code)
            if r.status_code == 503:
                break
    assert codes[-1] == 503 and set(codes[:-1]) == {200} and len(codes) > 20
    assert "for 1s" in r.json()["error"]["message"]
    assert metric(sc, "custos_audit_spool_fill_ratio") >= 0.8  # the alert fires before this point
    assert metric(sc, "custos_audit_pruned_records_total") == 0
    assert "retention off" in sc.process.log()


def test_compressed_segments_ship_after_restart(
    upstream, start_sidecar, elasticsearch, es_index_prefix, tmp_path
) -> None:
    """A first run without a sink seals and compresses its segments; after a restart with
    Elasticsearch configured the shipper reads them (from seq 1), and both trails verify."""
    from .es_helpers import audit_config, wait_es_ids
    from .test_shipping_es import _cli

    def send(sc, ids: list[str]) -> None:
        with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=30) as client:
            for rid in ids:
                body = {"model": "custos-tiny", "messages": [{"role": "user", "content": "hi"}]}
                r = client.post("/v1/chat/completions", headers={"x-request-id": rid}, json=body)
                assert r.status_code == 200

    first = [f"gz-{i:03d}" for i in range(40)]
    sc = start_sidecar(upstream.url, config={"audit": {"segment_bytes": 4096}}, name="nosink")
    send(sc, first)
    sc.stop()
    chain = next(p for p in spool(tmp_path / "state").iterdir() if p.is_dir())
    assert len(list(chain.glob("seg-*.jsonl.gz"))) >= 5
    cfg = audit_config(elasticsearch.url, es_index_prefix, segment_bytes=4096)
    sc = start_sidecar(upstream.url, config=cfg, name="sink")
    second = [f"gz-{i:03d}" for i in range(40, 60)]
    send(sc, second)
    docs = wait_es_ids(elasticsearch.url, es_index_prefix, set(first + second))
    ours = [d for d in docs if str(d["event"]["id"]).startswith("gz-")]
    assert len(ours) == 60 and len({d["_id"] for d in ours}) == 60  # each once
    sc.stop()
    env = {**os.environ, "CUSTOS_STATE_DIR": str(tmp_path / "state")}
    local = run_verify(env=env)
    assert local.returncode == 0, local.stdout + local.stderr
    key = str(tmp_path / "state" / "audit" / "signing.pub")
    index, cps = f"{es_index_prefix}-2*", f"{es_index_prefix}-checkpoints"
    remote = _cli(
        "verify", "--es", elasticsearch.url, "--index", index, "--checkpoint-index", cps, "--public-key", key
    )
    assert remote.returncode == 0, remote.stdout + remote.stderr
