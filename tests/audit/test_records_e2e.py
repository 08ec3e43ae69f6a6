"""One record per request through a real sidecar in front of the real CPU engine: success, denial,
upstream error, streamed and cancelled requests; then the CLI verifies the spool they left."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from bench.procs import free_port
from bench.stack import mint_token

from .helpers import run_verify, spool_records, wait_record

CHAT = "/v1/chat/completions"


def chat_body(stream: bool = False, max_tokens: int = 8) -> dict[str, Any]:
    return {
        "model": "custos-tiny",
        "messages": [{"role": "user", "content": "Say hi to bob@example.com"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


@pytest.fixture
def audited(engine, start_sidecar, tmp_path):
    sc = start_sidecar(engine.url, config={"audit": {"checkpoint_every": 5, "fsync": "always"}})
    return sc, tmp_path / "state" / "audit" / "spool"


def test_success_and_streamed_records(audited) -> None:
    sc, spool = audited
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=60) as client:
        r = client.post(CHAT, json=chat_body(), headers={"x-request-id": "rec-success"})
        assert r.status_code == 200
        rec = wait_record(spool, "rec-success")
        import hashlib

        assert rec["event"]["outcome"] == "success" and rec["http"]["response"]["status_code"] == 200
        assert rec["llm"]["output"]["sha256"] == hashlib.sha256(r.content).hexdigest()
        sent = r.request.content
        assert rec["llm"]["prompt"]["sha256"] == hashlib.sha256(sent).hexdigest()
        assert rec["user"]["id"] == "test-user" and rec["user"]["roles"] == ["tester"]
        assert rec["llm"]["request"]["model"] == "custos-tiny" and rec["llm"]["request"]["stream"] is False
        assert rec["llm"]["request"]["input_chars"] == len("Say hi to bob@example.com")
        assert rec["llm"]["usage"]["output_tokens"] == r.json()["usage"]["completion_tokens"]
        assert rec["llm"]["response"]["finish_reasons"] == [r.json()["choices"][0]["finish_reason"]]
        assert rec["llm"]["authz"]["decision"] == "allow"
        assert rec["event"]["duration"] > 0 and rec["source"]["ip"] == "127.0.0.1"
        assert rec["url"]["path"] == CHAT and rec["http"]["request"]["method"] == "POST"
        assert "text" not in rec["llm"]["prompt"] and "bob@example.com" not in str(rec)

        with client.stream(
            "POST", CHAT, json=chat_body(stream=True), headers={"x-request-id": "rec-stream"}
        ) as s:
            assert s.status_code == 200
            body = b"".join(s.iter_raw())
        rec = wait_record(spool, "rec-stream")
        assert rec["llm"]["request"]["stream"] is True and rec["event"]["outcome"] == "success"
        assert rec["llm"]["output"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert rec["llm"]["usage"]["output_tokens"] and rec["llm"]["cancelled"] is False


def test_denied_records(audited) -> None:
    sc, spool = audited
    with httpx.Client(base_url=sc.url, timeout=60) as client:
        r = client.post(CHAT, json=chat_body(), headers={"x-request-id": "rec-noauth"})
        assert r.status_code == 401
        viewer = {"Authorization": f"Bearer {mint_token('bob', ['viewer'])}", "x-request-id": "rec-denied"}
        r2 = client.post(CHAT, json=chat_body(), headers=viewer)
        assert r2.status_code == 403
    rec = wait_record(spool, "rec-noauth")
    assert rec["event"]["outcome"] == "failure" and rec["http"]["response"]["status_code"] == 401
    assert "denied" in rec["event"]["type"] and rec["user"] is None
    rec = wait_record(spool, "rec-denied")
    assert rec["user"]["id"] == "bob" and rec["llm"]["authz"]["decision"] == "deny"
    assert rec["llm"]["authz"]["rule"] and rec["error"]["code"] == "403"


def test_upstream_error_record(start_sidecar, tmp_path) -> None:
    sc = start_sidecar(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    spool = tmp_path / "state" / "audit" / "spool"
    r = httpx.post(
        sc.url + CHAT, json=chat_body(), headers={**sc.headers, "x-request-id": "rec-502"}, timeout=30
    )
    assert r.status_code == 502
    rec = wait_record(spool, "rec-502")
    assert rec["event"]["outcome"] == "failure" and rec["error"]["type"] == "upstream_unreachable"
    assert rec["http"]["response"]["status_code"] == 502 and "error" in rec["event"]["type"]


def test_cancelled_stream_record_and_verify(audited, tmp_path) -> None:
    sc, spool = audited
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=60) as client:
        with client.stream(
            "POST", CHAT, json=chat_body(stream=True, max_tokens=1500), headers={"x-request-id": "rec-cancel"}
        ) as s:
            assert s.status_code == 200
            next(s.iter_raw())  # the first chunk arrives, then the client goes away
    rec = wait_record(spool, "rec-cancel")
    assert rec["llm"]["cancelled"] is True and rec["event"]["outcome"] == "unknown"
    # Six records later (a checkpoint every 5), the CLI verifies the whole spool.
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=60) as client:
        for i in range(6):
            assert (
                client.post(CHAT, json=chat_body(), headers={"x-request-id": f"rec-more-{i}"}).status_code
                == 200
            )
    wait_record(spool, "rec-more-5")
    sc.stop()  # graceful stop writes a last checkpoint
    state = tmp_path / "state"
    proc = run_verify(env={**os.environ, "CUSTOS_STATE_DIR": str(state)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "7 record(s)" in proc.stdout
    ids = [r["event"]["id"] for r in spool_records(spool)]
    assert len(ids) == len(set(ids)) == 7


def test_store_redacted_text(engine, start_sidecar, tmp_path) -> None:
    sc = start_sidecar(engine.url, config={"audit": {"store_redacted_text": True}})
    spool = tmp_path / "state" / "audit" / "spool"
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=60) as client:
        r = client.post(CHAT, json=chat_body(), headers={"x-request-id": "rec-text"})
        assert r.status_code == 200
        with client.stream(
            "POST", CHAT, json=chat_body(stream=True), headers={"x-request-id": "rec-text-s"}
        ) as s:
            raw = b"".join(s.iter_raw())
    rec = wait_record(spool, "rec-text")
    prompt = rec["llm"]["prompt"]["text"]
    assert "Say hi to" in prompt and "bob@example.com" not in prompt  # stored, but redacted
    assert rec["llm"]["redactions"].get("EMAIL", 0) >= 1
    answer = r.json()["choices"][0]["message"]["content"]
    if answer and "@" not in answer:
        assert rec["llm"]["output"]["text"] == answer
    rec = wait_record(spool, "rec-text-s")
    assert rec["llm"]["request"]["stream"] is True and "bob@example.com" not in str(rec)
    streamed = ""
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                streamed += (choice.get("delta") or {}).get("content") or ""
    assert streamed
    if "@" not in streamed:
        assert rec["llm"]["output"]["text"] == streamed
