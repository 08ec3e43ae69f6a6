"""The audit trail under attack: it can neither be exhausted nor made to lie.

Every attack goes through a real ``custos serve`` in front of the recording upstream; the evidence is
the spool on disk (records are bounded, truncation is marked, the cap holds), the answers (503, never an
answer without its record, never a 500) and ``custos audit verify`` (a lost or cut tail is reported).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bench import stack
from bench.stack import TEST_KEY_ID, TEST_ROLE, mint_token
from tests.audit.helpers import run_verify, spool_records, wait_until

MAX_RECORD = 16 * 1024  # audit.max_record_bytes default
MARK = re.compile(r"…\[truncated \d+ (chars|items)\]$")


def spool_of(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit" / "spool"


def segment_lines(spool: Path) -> list[bytes]:
    return [x for seg in sorted(spool.glob("*/seg-*.jsonl")) for x in seg.read_bytes().splitlines()]


def spool_bytes(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.glob("*/seg-*.jsonl"))


def metric(sc, name: str) -> float:
    # From another loopback address: the flooding one is rate limited by now.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as client:
        resp = client.get(sc.url + "/metrics", headers=sc.headers)
    assert resp.status_code == 200, resp.text
    text = resp.text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def by_id(spool: Path) -> dict[str, dict]:
    return {r["event"]["id"]: r for r in spool_records(spool)}


def verify_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CUSTOS_STATE_DIR": str(tmp_path / "state")}


def hand_made_token(claims: dict) -> str:
    """A correctly signed EdDSA JWT whose payload JSON is written by ``json.dumps`` (which escapes a
    lone surrogate as ``\\ud800``, something a JWT library refuses to produce)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": TEST_KEY_ID}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = stack.signing_key()[0].sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64(signature)}"


# -- bounded records -----------------------------------------------------------------------------------
def test_client_controlled_fields_are_bounded_and_marked(guarded, tmp_path) -> None:
    big = "a" * 60_000
    attacks: dict[str, tuple[str, str, dict, dict | None]] = {
        # name: (method, path, headers, json body)
        "huge-path-no-token": ("GET", "/v1/" + big, {}, None),
        "huge-path": ("GET", "/v1/models/" + "b" * 60_000, guarded.headers, None),
        "long-path": ("GET", "/v1/models/" + "c" * 2_000, guarded.headers, None),
        "long-path-no-token": ("GET", "/v1/" + "d" * 2_000, {}, None),
        "huge-junk-token": ("POST", "/v1/chat/completions", {"Authorization": "Bearer " + "x" * 30_000}, {}),
        "huge-header": ("GET", "/v1/models", {**guarded.headers, "x-junk": "j" * 8_000}, None),
        "huge-model": (
            "POST",
            "/v1/chat/completions",
            guarded.headers,
            {"model": "m" * 60_000, "messages": [{"role": "user", "content": "hi"}]},
        ),
        "huge-subject-and-roles": (
            "GET",
            "/v1/models",
            {
                "Authorization": "Bearer "
                + mint_token("s" * 3_000, [TEST_ROLE, *("r" * 40 for _ in range(40))])
            },
            None,
        ),
    }
    answers = {}
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        for rid, (method, path, headers, body) in attacks.items():
            try:
                r = client.request(method, path, headers={**headers, "x-request-id": rid}, json=body)
                answers[rid] = r.status_code
            except httpx.HTTPError as exc:  # refused at the HTTP layer (no request, no record)
                answers[rid] = repr(exc)
    print("answers:", answers)
    assert not [c for c in answers.values() if isinstance(c, int) and c >= 500], answers
    spool = spool_of(tmp_path)
    # A request refused at the HTTP layer (431 for a 60 KB request line) has a request id of its own.
    want = [k for k, code in answers.items() if isinstance(code, int) and code != 431]
    head_refused = sum(1 for code in answers.values() if code == 431)

    def all_recorded() -> dict[str, dict] | None:
        records = by_id(spool)
        refused = sum(1 for r in records.values() if r["http"]["response"]["status_code"] == 431)
        return records if all(k in records for k in want) and refused >= head_refused else None

    recorded = wait_until(all_recorded)
    assert recorded, (answers, sorted(by_id(spool)))
    lines = segment_lines(spool)
    assert lines and max(len(x) + 1 for x in lines) <= MAX_RECORD, max(len(x) for x in lines)
    for rid, code in answers.items():
        if rid not in want:
            continue
        rec = recorded[rid]
        assert rec["http"]["response"]["status_code"] == code
        if rid in ("huge-path-no-token", "huge-path", "long-path", "long-path-no-token"):
            assert "url.path" in rec["custos"]["truncated"] and MARK.search(rec["url"]["path"])
            assert len(rec["url"]["path"]) < 1100
        if rid == "huge-model" and code in (400, 403):
            truncated = rec["custos"]["truncated"]
            assert "llm.request.model" in truncated or "error.message" in truncated
            assert all(len(json.dumps(v)) < 3000 for v in (rec["llm"], rec["error"]))
        if rid == "huge-subject-and-roles" and rec.get("user"):
            assert {"user.id", "user.roles"} <= set(rec["custos"]["truncated"])
            assert MARK.search(rec["user"]["id"]) and len(rec["user"]["roles"]) == 33
            assert rec["user"]["roles"][-1] == "…[truncated 9 items]"
    assert metric(guarded, "custos_audit_truncated_fields_total") >= 2
    guarded.stop()
    proc = run_verify(env=verify_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr  # cut fields are hashed as stored


def test_unauthenticated_flood_keeps_the_spool_under_its_cap(upstream, start_sidecar, tmp_path) -> None:
    cap = 256 * 1024
    # Retention off: the cap is the fuse under attack here (with retention the spool never fills).
    audit = {"max_bytes": cap, "when_full": "block", "retention": {"enabled": False}, "compression": "none"}
    sc = start_sidecar(upstream.url, config={"audit": audit})
    path = "/v1/" + "p" * 1_900  # under the path limit, so every one reaches the pipeline

    def attack(i: int) -> int:
        with httpx.Client(base_url=sc.url, timeout=30) as client:
            codes = []
            for j in range(25):
                r = client.get(
                    path, headers={"Authorization": "Bearer " + "z" * 4_000, "x-request-id": f"f{i}-{j}"}
                )
                codes.append(r.status_code)
            return codes

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = [c for batch in pool.map(attack, range(16)) for c in batch]
    elapsed = time.monotonic() - started
    print({c: codes.count(c) for c in set(codes)})
    assert len(codes) == 400 and not [c for c in codes if c >= 500 and c != 503], sorted(set(codes))
    spool = spool_of(tmp_path)
    time.sleep(1)  # the writer thread's last batch
    size = spool_bytes(spool)
    assert size <= cap, f"spool {size} bytes over its cap {cap}"
    assert 503 in codes  # the spool filled up: refused at once (no 30 s wait for an early reject) ...
    assert elapsed < 60
    # ... and every request that was answered with its own status has its record (none lost).
    answered = sum(1 for c in codes if c != 503)
    assert len(spool_records(spool)) >= answered - metric(sc, "custos_audit_records_lost_total")
    assert metric(sc, "custos_audit_records_lost_total") == 0
    assert metric(sc, "custos_audit_refused_total") >= codes.count(503)
    print(
        f"flood: {codes.count(503)} x 503, {answered} answered, spool {size} of {cap} bytes, {elapsed:.1f}s"
    )


# -- records that cannot fail to serialize ---------------------------------------------------------------
def test_lone_surrogate_subject_is_answered_and_recorded(guarded, tmp_path) -> None:
    now = int(time.time())
    token = hand_made_token(
        {"sub": "\ud800x", "roles": [TEST_ROLE], "iss": "custos-test", "iat": now, "exp": now + 600}
    )
    r = httpx.get(
        guarded.url + "/v1/models",
        headers={"Authorization": f"Bearer {token}", "x-request-id": "surrogate-1"},
        timeout=30,
    )
    spool = spool_of(tmp_path)
    rec = wait_until(lambda: by_id(spool).get("surrogate-1"))
    assert rec is not None, "no audit record for the request"
    assert rec["http"]["response"]["status_code"] == r.status_code
    if rec.get("user"):
        assert "\ud800" not in rec["user"]["id"]
    # The auth stage refuses such a subject with 401 (a colleague's fix); the audit part above holds
    # either way. If this fails with 500, the auth fix is not in yet.
    assert r.status_code == 401, (r.status_code, r.text)


# -- a full disk -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tiny_disk(where: Path, size: str = "1m") -> Iterator[Path]:
    where.mkdir(parents=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("fail_closed", [False, True])
def test_full_disk_refuses_instead_of_answering_unrecorded(
    upstream, start_sidecar, tmp_path, fail_closed
) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        spool = disk / "spool"
        sc = start_sidecar(
            upstream.url,
            config={
                "audit": {"spool_dir": str(spool), "when_full": "fail_closed", "fail_closed": fail_closed}
            },
        )
        codes: dict[str, int] = {}
        with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=30) as client:
            for i in range(3000):
                rid = f"disk-{i:05d}"
                r = client.post(
                    "/v1/chat/completions",
                    headers={"x-request-id": rid},
                    json={"model": "custos-tiny", "messages": [{"role": "user", "content": "w" * 200}]},
                )
                codes[rid] = r.status_code
                if list(codes.values()).count(503) >= 5:
                    break
        statuses = list(codes.values())
        assert 503 in statuses, "the disk never filled"
        assert set(statuses) == {200, 503}, sorted(set(statuses))
        refusal = r.json()["error"]
        assert refusal["code"] == "audit_unavailable"
        time.sleep(0.5)
        records = by_id(spool)
        answered = [rid for rid, c in codes.items() if c == 200]
        unrecorded = [rid for rid in answered if rid not in records]
        lost = metric(sc, "custos_audit_records_lost_total")
        if fail_closed:
            assert unrecorded == []  # written before the answer: no answer without its record
        else:
            # Written before the answer, but fail_closed is off: an answer whose record write failed
            # still goes out, and the loss is counted, logged and noted (a few per time the disk
            # fills up again: compressing sealed files frees room in between).
            assert len(unrecorded) <= max(lost, 0), unrecorded
        if unrecorded or lost:
            assert "LOST" in sc.process.log()
            notes = [
                json.loads(x) for f in spool.glob("*/dropped.jsonl") for x in f.read_bytes().splitlines()
            ]
            assert notes and notes[0]["reason"] == "write error"
        print(
            f"full disk (fail_closed={fail_closed}): {len(answered)} answered, {len(unrecorded)} unrecorded"
        )
        sc.stop()
        proc = run_verify(str(spool), "--public-key", str(tmp_path / "state" / "audit" / "signing.pub"))
        if lost:
            assert proc.returncode == 1 and "MISSING" in proc.stdout and "write error" in proc.stdout, (
                proc.stdout
            )


# -- verify reports a cut tail ---------------------------------------------------------------------------
@pytest.mark.parametrize("cut", ["whole-lines", "mid-line"])
def test_truncated_spool_tail_is_reported(guarded, tmp_path, cut) -> None:
    with httpx.Client(base_url=guarded.url, headers=guarded.headers, timeout=30) as client:
        for i in range(12):
            client.get("/v1/models", headers={"x-request-id": f"tail-{i:02d}"})
    spool = spool_of(tmp_path)
    assert wait_until(lambda: len(spool_records(spool)) >= 12)
    guarded.stop()  # the shutdown checkpoint covers every record
    (seg,) = sorted(spool.glob("*/seg-*.jsonl"))
    lines = seg.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])["audit"]["seq"]
    if cut == "whole-lines":
        seg.write_bytes(b"".join(lines[:-3]))
        first_missing = last - 2
    else:
        seg.write_bytes(b"".join(lines[:-3]) + lines[-3][: len(lines[-3]) // 2])
        first_missing = last - 2
    proc = run_verify(env=verify_env(tmp_path))
    assert proc.returncode == 1, proc.stdout
    assert "MISSING" in proc.stdout and f"{first_missing}-{last}" in proc.stdout, proc.stdout
    report = orjson.loads(run_verify("--json", env=verify_env(tmp_path)).stdout)
    assert not report["ok"] and report["problems"][0]["kind"] == "missing"
