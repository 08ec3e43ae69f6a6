"""A token stream through a real sidecar (every default stage): still redacted, split values
included, and the events that nothing changes reach the client as the upstream sent them."""

from __future__ import annotations

import httpx
import orjson

from bench.stack import Sidecar
from bench.upstream import MODEL, RecordingUpstream, Reply
from tests.security.conftest import guarded  # noqa: F401 (fixture)


def chunk(content: str | None = None, finish: str | None = None, **delta: object) -> dict:
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-e2e",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def test_token_stream_through_the_sidecar(upstream: RecordingUpstream, guarded: Sidecar) -> None:  # noqa: F811
    prose = [" The", " answer", " is", " simple", ",", " really", "."]
    split = [" call", " 139", "0000", "11", "11", " or", " mail", " jlin", "@exam", "ple.com", "."]
    after = [" Thanks", " for", " asking", ",", " have", " a", " nice", " day", "!"]
    events = [chunk("", role="assistant"), *(chunk(t) for t in prose + split + after), chunk(finish="stop")]
    upstream.reply = Reply(sse=events)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream(
        "POST", guarded.url + "/v1/chat/completions", content=orjson.dumps(body), headers=guarded.headers
    ) as resp:
        assert resp.status_code == 200
        raw = resp.read()
    text = ""
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: {"):
            text += orjson.loads(event[6:])["choices"][0]["delta"].get("content") or ""
    assert text == "".join(prose) + " call 139****1111 or mail j***@example.com." + "".join(after)
    assert b"13900001111" not in raw and b"jlin" not in raw
    # Untouched events pass byte for byte: the prose before the values, and after them once nothing
    # is held back any more (from the comma on).
    for t in [*prose, *after[4:]]:
        assert b"data: " + orjson.dumps(chunk(t)) + b"\n\n" in raw, t
    assert raw.endswith(b"data: [DONE]\n\n")
