"""What cannot be inspected is not forwarded, on the answer side too: text answers (plain text, SubRip,
WebVTT, whatever the case of the media type) are redacted as text; binary answers to a redacted request
are refused with 502; a JSON answer labelled ``Application/JSON`` or ``application/*+json`` is still
read as JSON."""

from __future__ import annotations

import httpx
import orjson
import pytest

from bench.stack import Sidecar

from .conftest import MODEL, RecordingUpstream, Reply, chat_answer

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
LEAK = "call 13812345678 or mail bob@example.com"


def post(sc: Sidecar) -> httpx.Response:
    return httpx.post(sc.url + "/v1/chat/completions", json=CHAT, headers=sc.headers, timeout=30)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain; charset=utf-8", "TEXT/PLAIN", "application/x-subrip", "text/vtt", "text/srt"],
)
def test_text_answers_are_redacted_or_refused(
    upstream: RecordingUpstream, guarded: Sidecar, content_type: str
) -> None:
    upstream.reply = Reply(
        raw=("1\n00:00:00,000 --> 00:00:02,000\n" + LEAK + "\n").encode(),
        headers={"Content-Type": content_type},
    )
    r = post(guarded)
    assert "13812345678" not in r.text and "bob@example.com" not in r.text
    if content_type.lower().startswith("text/"):
        assert r.status_code == 200 and "138****5678" in r.text
    else:  # application/x-subrip is not text/*: not inspected, not forwarded
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_content_type"


@pytest.mark.parametrize("content_type", ["application/octet-stream", "audio/wav", None])
def test_binary_answers_are_refused(
    upstream: RecordingUpstream, guarded: Sidecar, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    upstream.reply = Reply(raw=LEAK.encode(), headers=headers)
    r = post(guarded)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_content_type" and "138" not in r.text
    upstream.reply = None
    assert post(guarded).status_code == 200  # the sidecar is fine afterwards


@pytest.mark.parametrize("content_type", ["Application/JSON", "application/problem+json"])
def test_json_under_other_spellings_is_read_as_json(
    upstream: RecordingUpstream, guarded: Sidecar, content_type: str
) -> None:
    upstream.reply = Reply(raw=orjson.dumps(chat_answer(LEAK)), headers={"Content-Type": content_type})
    r = post(guarded)
    assert r.status_code == 200
    content = r.json()["choices"][0]["message"]["content"]
    assert content.startswith("call 138****5678 or mail ") and "bob@" not in content


def test_text_that_is_not_utf8_is_refused(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    upstream.reply = Reply(raw=b"\xff\xfe" + LEAK.encode("utf-16-le"), headers={"Content-Type": "text/plain"})
    r = post(guarded)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_content_type"


def test_an_empty_answer_passes(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    upstream.reply = Reply(raw=b"", status=200, headers={"Content-Type": "application/octet-stream"})
    r = post(guarded)
    assert r.status_code == 200 and r.content == b"", r.text
