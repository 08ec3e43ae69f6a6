"""Records are bounded and total; the spool cap holds even when the gate is bypassed; losses are
counted, noted and reported by the verifier. In-process, with real files."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import orjson

from custos.errors import ProxyError
from sidecar.audit.chain import Chain
from sidecar.audit.config import AuditConfig
from sidecar.audit.keys import load_public_key
from sidecar.audit.record import FIELD_LIMITS, build_record, fallback_record
from sidecar.audit.trail import AuditTrail
from sidecar.audit.verify import Report, load_path, verify
from sidecar.context import Decision, Identity

from .helpers import make_ctx, spool_records

MARK = "…[truncated "


def sealed_size(record: dict) -> int:
    return len(Chain("custos-host-0123abcd-w0").seal(record))


def hostile_ctx():
    ctx = make_ctx(1, status=403, denied=True)
    ctx.path = "/v1/" + "p" * 60_000
    ctx.model = "m" * 60_000
    ctx.identity = Identity("\ud800" + "s" * 10_000, tuple("r" * 300 for _ in range(100)), {})
    ctx.decision = Decision(False, "chat:" + ctx.model, "rule for " + ctx.model, "no " + ctx.model)
    ctx.error = ProxyError(403, "denied for model " + ctx.model)
    ctx.usage.prompt_tokens = 2**70  # not a 64-bit integer
    ctx.finish_reasons = ["stop"] * 1000
    return ctx


def test_hostile_fields_are_cut_marked_and_cleaned() -> None:
    record = build_record(hostile_ctx())
    line = Chain("c").seal(record)  # never raises
    assert len(line) <= 16 * 1024
    truncated = set(record["custos"]["truncated"])
    assert {
        "url.path",
        "llm.request.model",
        "user.id",
        "user.roles",
        "event.reason",
        "error.message",
        "llm.authz.rule",
        "llm.authz.permission",
        "llm.response.finish_reasons",
        "llm.usage.input_tokens",
    } <= truncated
    assert record["url"]["path"].endswith(f"{MARK}{60_004 - FIELD_LIMITS['url.path']} chars]")
    assert record["user"]["id"].startswith("\ufffd")  # the lone surrogate, replaced
    assert len(record["user"]["roles"]) == 33 and record["user"]["roles"][-1] == f"{MARK}68 items]"
    assert record["llm"]["usage"]["input_tokens"] is None
    doc = orjson.loads(line)
    assert doc["url"]["path"] == record["url"]["path"]


def test_normal_records_are_unchanged() -> None:
    record = build_record(make_ctx(3))
    assert "custos" not in record and record["url"]["path"] == "/v1/chat/completions"


def test_whole_record_cap_includes_stored_text() -> None:
    text = ("é" * 50_000, "x" * 40_000)
    for cap in (4096, 16 * 1024, 64 * 1024):
        record = build_record(make_ctx(1), text=text, max_bytes=cap)
        assert sealed_size(record) <= cap
        assert {"llm.prompt.text", "llm.output.text"} <= set(record["custos"]["truncated"])
        assert MARK in record["llm"]["prompt"]["text"] and MARK in record["llm"]["output"]["text"]
    # Both texts keep a fair share rather than one eating the whole budget.
    record = build_record(make_ctx(1), text=text, max_bytes=16 * 1024)
    assert len(record["llm"]["prompt"]["text"]) > 1000 and len(record["llm"]["output"]["text"]) > 1000


def test_fallback_record_is_small_and_clean() -> None:
    ctx = hostile_ctx()
    record = fallback_record(ctx)
    assert sealed_size(record) <= 16 * 1024 and record["custos"]["record_error"]
    assert "url.path" in record["custos"]["truncated"]


async def test_unclean_records_appended_directly_are_cleaned(tmp_path: Path) -> None:
    trail = AuditTrail(AuditConfig(), tmp_path)
    await trail.open()
    trail.append({"event": {"id": "raw"}, "user": {"id": "a\udc80b"}, "n": 2**80, "x": {1, 2}})
    await trail.close()
    (rec,) = spool_records(tmp_path / "audit" / "spool")
    assert rec["user"]["id"] == "a\ufffdb" and rec["n"] is None


async def test_spool_cap_holds_without_the_gate(tmp_path: Path) -> None:
    """Records appended past the gate (as a flood of in-flight requests would) never take the spool
    over ``max_bytes``: the ones that do not fit are lost, counted, noted and reported."""
    cap = 64 * 1024
    cfg = AuditConfig(
        max_bytes=cap,
        when_full="block",
        checkpoint_every=10_000,
        retention={"enabled": False},  # the cap as a fuse (the default prunes instead)
        compression="none",
    )
    trail = AuditTrail(cfg, tmp_path)
    await trail.open()
    for i in range(200):  # ~1.2 KB each: about 240 KB offered
        trail.append(build_record(make_ctx(i)))
    await trail.close()
    spool = tmp_path / "audit" / "spool"
    size = sum(p.stat().st_size for p in spool.glob("*/seg-*.jsonl"))
    assert size <= cap
    everything = spool_records(spool)
    records = [r for r in everything if r["event"]["action"] == "chat"]
    # Lost: the requests' records that did not fit, and the loss record too when it did not fit.
    assert trail.writer is not None and trail.writer.lost >= 200 - len(records) > 0
    notes = [json.loads(x) for f in spool.glob("*/dropped.jsonl") for x in f.read_bytes().splitlines()]
    assert notes and notes[0]["reason"].startswith("spool full")
    assert notes[0]["from"] == len(records) + 1 and max(n["to"] for n in notes) >= 200
    # One note per batch the writer could not take (how the 200 appends fall into batches depends on
    # the writer thread's pace): together they cover every lost seq once, in order.
    ranges = [(n["from"], n["to"]) for n in notes]
    assert all(later[0] == earlier[1] + 1 for earlier, later in itertools.pairwise(ranges)), ranges
    # The loss is also a record in the chain when it fits (it ships like any other): each one names
    # a noted range. (A loss record queued behind records that did not fit is lost with them, and the
    # next note covers it.)
    for loss in [r for r in everything if r["event"]["action"] == "audit_loss"]:
        noted = (loss["custos"]["loss"]["from"], loss["custos"]["loss"]["to"])
        assert noted in ranges and loss["audit"]["seq"] > 200, (noted, ranges)
    public = load_public_key(tmp_path / "audit" / "signing.pub")
    report = Report()
    report = verify(load_path(spool, report), public, report)
    assert not report.ok
    first = report.problems[0]
    assert first.kind == "missing" and first.seq == len(records) + 1 and "spool full" in first.detail
    assert report.chains[0].lost >= 200 - len(records)


def test_verify_reports_a_noted_tail_without_checkpoint(tmp_path: Path) -> None:
    """A disk that filled up: the records and the checkpoint never made it, only the loss note (the
    reserve file gives it room). The verifier reports the tail as missing."""
    import asyncio

    asyncio.run(_write(tmp_path, 5))
    spool = tmp_path / "audit" / "spool"
    (chain,) = [p for p in spool.iterdir() if p.is_dir()]
    (chain / "checkpoints.jsonl").write_bytes(b"")
    note = {"from": 6, "to": 9, "at": 0, "reason": "write error"}
    (chain / "dropped.jsonl").write_bytes(orjson.dumps(note) + b"\n")
    public = load_public_key(tmp_path / "audit" / "signing.pub")
    report = Report()
    report = verify(load_path(spool, report), public, report)
    assert [(p.kind, p.seq) for p in report.problems] == [("missing", 6)]
    assert "6-9" in report.problems[0].detail and "write error" in report.problems[0].detail


async def _write(state: Path, n: int) -> None:
    trail = AuditTrail(AuditConfig(), state)
    await trail.open()
    for i in range(n):
        trail.append(build_record(make_ctx(i)))
    await trail.close()
