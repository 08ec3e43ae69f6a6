"""``custos bench stream``: the upstream's answer is a well-formed vLLM-shaped stream; bad input is
one line and exit 2 (the benchmark itself needs nginx and wrk and runs by hand: docs/BENCHMARKS.md)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from bench.stream import MARKDOWN, stream_body, tokens


def test_stream_body_is_vllm_shaped() -> None:
    body = stream_body(200)
    events = body.split(b"\n\n")
    assert events.pop() == b"" and events.pop() == b"data: [DONE]"
    docs = [orjson.loads(e.removeprefix(b"data: ")) for e in events]
    assert len(docs) == 200
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert docs[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(d["choices"][0]["delta"]["content"] for d in docs[1:-1]) == "".join(tokens(198))
    assert all(d["object"] == "chat.completion.chunk" for d in docs)


def test_markdown_answer_is_the_markdown_text_in_tokens() -> None:
    """``--answer markdown``: the tokens join to the markdown text (repeated), line breaks escaped in
    the events' JSON, each token a line break, a word or punctuation."""
    body = stream_body(200, "markdown")
    docs = [orjson.loads(e.removeprefix(b"data: ")) for e in body.split(b"\n\n")[1:-3]]
    text = "".join(d["choices"][0]["delta"]["content"] for d in docs)
    assert text == "".join(tokens(198, "markdown")) and MARKDOWN.startswith(text[: len(MARKDOWN)])
    assert len(text) > len(MARKDOWN) and b"\\n" in body and b"- **Backend**:" not in body
    assert all(t.strip("\n") == "" or "\n" not in t for t in tokens(198, "markdown"))


def test_bad_arguments_are_one_line() -> None:
    for args in (["--connections", "0"], ["--events", "2"], ["--answer", "poem"]):
        proc = subprocess.run(
            [sys.executable, "-m", "sidecar.cli", "bench", "stream", *args], capture_output=True, text=True
        )
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
