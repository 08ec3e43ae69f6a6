"""The Responses API and vLLM's other endpoints through a real sidecar to the real CPU engine, with the
official ``openai`` SDK: the engine sees redacted text (its token counts prove it), streams arrive as
typed events, and each request leaves one audit record under its own operation name."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from bench.stack import TINY_MODEL_NAME, Engine, Sidecar
from tests.audit.helpers import wait_record

INSTRUCTIONS = "Answer briefly. The caller's phone is 13812345678."
PROMPT = "Write to zhang.wei@example.com about the order."
RAW = ("13812345678", "zhang.wei@example.com")


@pytest.fixture
def stack(engine: Engine, start_sidecar: Any, tmp_path: Any) -> tuple[Sidecar, Any]:
    # Every endpoint family on, the default stages otherwise.
    sc = start_sidecar(engine.url, config={"endpoints": {"pooling": True}})
    return sc, tmp_path / "state" / "audit" / "spool"


def chat_messages() -> list[dict[str, str]]:
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": PROMPT}]


def token_count(url: str, headers: dict[str, str] | None = None) -> int:
    body = {"model": TINY_MODEL_NAME, "messages": chat_messages(), "add_generation_prompt": True}
    r = httpx.post(url + "/tokenize", json=body, headers=headers or {}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["count"]


def test_responses_create_sees_redacted_text(stack: tuple[Sidecar, Any], engine: Engine) -> None:
    sc, spool = stack
    raw_count = token_count(engine.url)  # the engine directly: the text as written
    redacted_count = token_count(sc.url, sc.headers)  # through the sidecar: redacted first
    assert redacted_count != raw_count
    sdk = sc.openai_client(timeout=120)
    res = sdk.responses.create(
        model=TINY_MODEL_NAME,
        instructions=INSTRUCTIONS,
        input=PROMPT,
        max_output_tokens=8,
        extra_headers={"x-request-id": "resp-plain"},
    )
    assert res.object == "response" and res.output_text
    assert res.usage is not None and res.usage.input_tokens == redacted_count
    # The instructions echoed back carry the caller's own values again (placeholders restored or
    # masked values, never something else), and nothing raw from the model's side is invented.
    rec = wait_record(spool, "resp-plain")
    assert rec["event"]["action"] == "responses" and rec["llm"]["operation"]["name"] == "responses"
    assert rec["llm"]["usage"] == {"input_tokens": redacted_count, "output_tokens": res.usage.output_tokens}
    assert rec["llm"]["redactions_total"] >= 2 and rec["llm"]["request"]["model"] == TINY_MODEL_NAME
    assert rec["llm"]["response"]["finish_reasons"] in (["stop"], ["length"])
    assert not any(raw in str(rec) for raw in RAW)


def test_responses_stream_with_the_sdk(stack: tuple[Sidecar, Any]) -> None:
    sc, spool = stack
    sdk = sc.openai_client(timeout=120)
    types: list[str] = []
    deltas: list[str] = []
    final = None
    with sdk.responses.create(
        model=TINY_MODEL_NAME,
        input=[{"role": "user", "content": PROMPT}],
        max_output_tokens=12,
        stream=True,
        extra_headers={"x-request-id": "resp-stream"},
    ) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type in ("response.completed", "response.incomplete"):
                final = event.response
    assert types[0] == "response.created" and types[-1] in ("response.completed", "response.incomplete")
    assert "response.output_text.done" in types and deltas
    assert final is not None and final.output_text == "".join(deltas)
    rec = wait_record(spool, "resp-stream")
    assert rec["llm"]["request"]["stream"] is True and rec["llm"]["operation"]["name"] == "responses"
    assert rec["llm"]["usage"]["output_tokens"] == final.usage.output_tokens
    assert rec["llm"]["usage"]["input_tokens"] == final.usage.input_tokens


def test_stream_output_hash_is_what_the_client_got(stack: tuple[Sidecar, Any]) -> None:
    sc, spool = stack
    body = {"model": TINY_MODEL_NAME, "input": PROMPT, "max_output_tokens": 6, "stream": True}
    with httpx.stream(
        "POST",
        sc.url + "/v1/responses",
        json=body,
        headers={**sc.headers, "x-request-id": "resp-hash"},
        timeout=120,
    ) as r:
        assert r.status_code == 200
        got = b"".join(r.iter_raw())
    assert b"event: response.completed" in got or b"event: response.incomplete" in got
    rec = wait_record(spool, "resp-hash")
    assert rec["llm"]["output"]["sha256"] == hashlib.sha256(got).hexdigest()


def test_other_endpoints_through_the_sidecar(stack: tuple[Sidecar, Any], engine: Engine) -> None:
    sc, spool = stack
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=120) as client:
        tok = client.post("/tokenize", json={"model": TINY_MODEL_NAME, "prompt": "call 13812345678"})
        assert tok.status_code == 200
        back = client.post("/detokenize", json={"model": TINY_MODEL_NAME, "tokens": tok.json()["tokens"]})
        assert back.status_code == 200
        assert "13812345678" not in back.json()["prompt"]  # the engine got the redacted prompt
        direct = httpx.post(
            engine.url + "/tokenize", json={"model": TINY_MODEL_NAME, "prompt": "call 13812345678"}
        )
        assert direct.json()["count"] != tok.json()["count"]

        score = client.post(
            "/v1/score",
            json={
                "model": TINY_MODEL_NAME,
                "text_1": "call 13812345678",
                "text_2": ["call 13812345678", "x"],
            },
            headers={"x-request-id": "score-1"},
        )
        assert score.status_code == 200
        scores = [d["score"] for d in score.json()["data"]]
        assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores[0] > scores[1]

        rerank = client.post(
            "/v1/rerank",
            json={
                "model": TINY_MODEL_NAME,
                "query": "mail bob@example.com",
                "documents": ["weather today", "mail bob@example.com"],
                "top_n": 1,
            },
        )
        assert rerank.status_code == 200
        (best,) = rerank.json()["results"]
        # The engine ranked "mail <EMAIL_1>"; the caller gets its own value back (restore).
        assert best["index"] == 1 and best["document"]["text"] == "mail bob@example.com"

        pooled = client.post("/pooling", json={"model": TINY_MODEL_NAME, "input": ["a", "b"]})
        assert pooled.status_code == 200 and len(pooled.json()["data"]) == 2
    rec = wait_record(spool, "score-1")
    assert rec["llm"]["operation"]["name"] == "score" and rec["llm"]["redactions_total"] >= 1
