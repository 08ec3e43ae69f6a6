"""The answer filters redact every text-bearing field by construction (stage in process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.redaction.test_stage import _prepared, sse

PHONE = "13900001111"
EMAIL = "jlin@example.com"


def choice_answer(**choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", **choice}],
    }


async def test_json_every_text_field(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "json")
    answer = choice_answer(
        message={
            "role": "assistant",
            "content": "ok",
            "reasoning_content": f"think {PHONE}",
            "reasoning": f"think {EMAIL}",
            "refusal": f"no {PHONE}",
            "annotations": [{"type": "url_citation", "url_citation": {"title": EMAIL}}],
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": f"x {EMAIL}", "arguments": "{}"}}
            ],
        },
        stop_reason=f"stop at {PHONE}",
        logprobs={"content": [{"token": PHONE, "logprob": -1, "bytes": [49]}]},
    )
    answer["system_fingerprint"] = f"fp {EMAIL}"
    out = f.feed(orjson.dumps(answer)) + f.flush()
    assert PHONE.encode() not in out and EMAIL.encode() not in out
    doc = orjson.loads(out)
    assert doc["choices"][0]["logprobs"] is None  # the choice had redactions: no raw token text
    msg = doc["choices"][0]["message"]
    assert msg["content"] == "ok" and msg["role"] == "assistant"
    assert msg["tool_calls"][0]["id"] == "call_1" and msg["tool_calls"][0]["function"]["arguments"] == "{}"
    assert doc["id"] == "chatcmpl-1" and doc["object"] == "chat.completion"


async def test_json_logprobs_kept_without_redactions_but_bytes_dropped(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "json")
    answer = choice_answer(
        message={"role": "assistant", "content": "Hello"},
        logprobs={
            "content": [
                {
                    "token": "Hello",
                    "logprob": -0.1,
                    "bytes": [72],
                    "top_logprobs": [{"token": "Hi", "bytes": [1]}],
                }
            ]
        },
    )
    doc = orjson.loads(f.feed(orjson.dumps(answer)))
    entry = doc["choices"][0]["logprobs"]["content"][0]
    assert entry["token"] == "Hello" and entry["bytes"] is None and entry["top_logprobs"][0]["bytes"] is None


async def test_json_completions_logprobs(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "json")
    answer = {
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "text": "fine",
                "logprobs": {
                    "tokens": ["fine", PHONE],
                    "top_logprobs": [{EMAIL: -1.0}],
                    "text_offset": [0, 4],
                },
            }
        ],
    }
    out = f.feed(orjson.dumps(answer))
    assert PHONE.encode() not in out and EMAIL.encode() not in out


async def test_json_unknown_shapes_redacted(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "json")
    for doc in ({"output": [{"content": [{"text": PHONE}]}]}, [PHONE], PHONE, {"choices": 5, "x": EMAIL}):
        out = f.feed(orjson.dumps(doc))
        assert PHONE.encode() not in out and EMAIL.encode() not in out
    assert PHONE.encode() not in f.feed(f"not json {PHONE}".encode())


async def test_json_untouched_answer_byte_for_byte(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "json")
    raw = (
        b'{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],'
        b'"usage":{"total_tokens":3}}'
    )
    assert f.feed(raw) == raw


def delta_event(index: int = 0, finish: str | None = None, logprobs: Any = None, **delta: Any) -> dict:
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}


def lp(token: str) -> dict:
    return {"content": [{"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}]}


async def test_sse_reasoning_refusal_and_logprobs(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")
    stream = sse(
        delta_event(role="assistant", content=""),
        delta_event(reasoning_content="think 139", logprobs=lp("139")),
        delta_event(reasoning_content="00001111 done", logprobs=lp("00001111")),
        delta_event(reasoning="r jlin@exa"),
        delta_event(reasoning="mple.com ok"),
        delta_event(refusal="no 13900001111."),
        delta_event(content="plain", logprobs=lp("plain")),
        delta_event(
            content="x",
            tool_calls=[{"index": 0, "id": "t", "function": {"name": f"a {PHONE}", "arguments": ""}}],
        ),
        {"id": "c1", "choices": [], "usage": {"total_tokens": 5}, "note": EMAIL},
        delta_event(finish="stop"),
        b"[DONE]",
    )
    out = b"".join(f.feed(stream[i : i + 11]) for i in range(0, len(stream), 11)) + f.flush()
    assert PHONE.encode() not in out and EMAIL.encode() not in out
    assert b"00001111" not in out  # the logprob token of the split entity is gone too
    events = [orjson.loads(e[6:]) for e in out.split(b"\n\n") if e.startswith(b"data: {")]
    reasoning = "".join(
        e["choices"][0]["delta"].get("reasoning_content") or "" for e in events if e["choices"]
    )
    assert reasoning == "think 139****1111 done"
    assert out.endswith(b"data: [DONE]\n\n")


def tokens(out: bytes) -> list[dict]:
    found = []
    for event in out.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for c in orjson.loads(event[6:])["choices"]:
                if c.get("logprobs"):
                    found.extend(c["logprobs"]["content"])
    return found


async def test_sse_logprobs_delayed_with_held_text(tmp_path: Path) -> None:
    """A word at the end of a delta is held (it could grow into an e-mail): its logprobs wait with
    it and go out, merged, with the event that releases the text; bytes are dropped."""
    _, _, f = await _prepared(tmp_path, "sse")
    words = [" Hello", " world", "."]
    stream = sse(
        *(delta_event(content=w, logprobs=lp(w)) for w in words), delta_event(finish="stop"), b"[DONE]"
    )
    out = f.feed(stream) + f.flush()
    got = tokens(out)
    assert [t["token"] for t in got] == words
    assert all(t["bytes"] is None for t in got)


async def test_sse_logprobs_of_an_entity_never_sent(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")
    # Lower case: a capitalized word at the end of a delta is held (it may start a name, PERSON).
    parts = ["call ", "139", "0000", "1111", " now. ", "bye. "]
    stream = sse(
        *(delta_event(content=w, logprobs=lp(w)) for w in parts), delta_event(finish="stop"), b"[DONE]"
    )
    out = f.feed(stream) + f.flush()
    got = [t["token"] for t in tokens(out)]
    assert "139" not in got and "0000" not in got and "1111" not in got
    assert "call " in got and "bye. " in got  # before the entity and once nothing is held: kept


async def test_sse_non_json_data_redacted(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")
    out = f.feed(f"data: oops {PHONE}\n\n".encode()) + f.flush()
    assert PHONE.encode() not in out


async def test_sse_completions_text_with_logprobs(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")

    def ev(text: str, tokens: list[str]) -> dict:
        return {
            "object": "text_completion",
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "logprobs": {"tokens": tokens, "top_logprobs": [{t: -1} for t in tokens]},
                }
            ],
        }

    out = f.feed(sse(ev("call 1390", ["call", " 1390"]), ev("0001111", ["0001111"]), b"[DONE]"))
    assert b"1390" not in out.replace(b"139****1111", b"") and b"0001111" not in out


async def test_answer_nested_too_deep_redacted_as_text(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "json")
    deep = b"[" * 1000 + f'"{PHONE}"'.encode() + b"]" * 1000
    out = f.feed(deep)
    assert PHONE.encode() not in out and out.startswith(b"[[[")
    _, _, f = await _prepared(tmp_path, "sse")
    out = f.feed(b"data: " + deep + b"\n\n") + f.flush()
    assert PHONE.encode() not in out
