"""Per-event cost of answer redaction for the two stream shapes, side by side in one process: chat chunks
(``/v1/chat/completions``) and the Responses API's typed events (``/v1/responses``), the same 200 tokens
of prose with a few numbers (chat chunks also with the numbers written as words, and as numbers the
detectors must look at, ``2024/25`` and ``3.5``: the gaps are what numbers cost; and a numbered list
after a colon, with line breaks; and ``custos bench stream --answer markdown``'s answer: headings,
bullets, bold labels, code), through the redact stage's filter and the observe filter as the
pipeline chains them (shared parse), fed as one read and as one read per event.

Reproduce: ``python -m bench.typed_stream --answers 300``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.stream import tokens as stream_tokens
from sidecar.config import Config
from sidecar.context import RequestContext
from sidecar.stages.observe import ObserveFilter
from sidecar.stages.redact import RedactStage

PROSE = (
    "Sure. Here is a short overview of the plan for the week. The team moved the launch to Thursday, "
    "so the review has to happen before then. In 2024 the same review took about 3 days, mostly "
    "because the notes were spread over several documents. This time, please keep everything in one "
    "place and answer the open questions first."
).split(" ")


# The same prose with its two numbers written as words: no delta needs the detectors. The gap
# between the two is what the numbers of an answer cost the redactor.
PROSE_WORDS = [{"2024": "last", "3": "three"}.get(word, word) for word in PROSE]
# ...and with numbers the stream redactor's inert-number rule does not take (``2024/25``, ``3.5``):
# each goes through the detectors.
PROSE_SEPARATED = [{"2024": "2024/25", "3": "3.5"}.get(word, word) for word in PROSE]
# An answer as models write them: a colon, then a numbered list, line breaks.
MARKDOWN = (
    (
        "Here is the plan:\n1. Install the package with pip.\n2. Run the tests, then read the report.\n"
        "3. Fix what failed and run them again.\n4. Ship it once everything passes.\n"
    )
    .replace("\n", " \n")
    .split(" ")
)


def tokens(n: int, prose: list[str] = PROSE) -> list[str]:
    return [" " + prose[i % len(prose)] for i in range(n)]


def chat_stream(parts: list[str]) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    first = chunk({"role": "assistant", "content": ""})
    return [first, *(chunk({"content": t}) for t in parts), chunk({}, "stop"), b"data: [DONE]\n\n"]


def responses_stream(parts: list[str]) -> list[bytes]:
    seq = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        doc = {"type": kind, "sequence_number": next(seq), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"

    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    text = "".join(parts)
    return [
        event("response.created", response={"id": "resp_1", "status": "in_progress", "output": []}),
        *(event("response.output_text.delta", **where, delta=t, logprobs=[]) for t in parts),
        event("response.output_text.done", **where, text=text, logprobs=[]),
        event("response.completed", response={"id": "resp_1", "status": "completed", "output": []}),
    ]


async def per_event_us(
    stage: RedactStage, path: str, events: list[bytes], answers: int, split: bool
) -> float:
    body = b"".join(events)
    reads = events if split else [body]
    samples = []
    for _ in range(answers):
        ctx = RequestContext(
            request_id="r",
            method="POST",
            path=path,
            query=b"",
            headers=[],
            client_ip="127.0.0.1",
            body=orjson.dumps({"model": "m", "input": "hello"}),
        )
        await stage.on_request(ctx)
        ctx.upstream_status = 200
        ctx.response_kind = "sse"
        filters = [stage.response_filter(ctx), ObserveFilter(ctx)]
        t = time.perf_counter()
        for piece in reads:
            for f in filters:
                piece = f.feed(piece)
        for f in filters:
            f.flush()
        samples.append((time.perf_counter() - t) / len(events) * 1e6)
    return statistics.median(samples)


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        config = Config.model_validate({"state": {"dir": tmp}})
        stage = RedactStage(config.redaction, Path(tmp))
        parts = tokens(198)
        markdown = chat_stream(stream_tokens(198, "markdown"))
        print(f"{'stream':<36} {'reads':<10} {'µs/event':>9}")
        for name, path, events in (
            ("chat chunks", "/v1/chat/completions", chat_stream(parts)),
            ("chat chunks, numbers as words", "/v1/chat/completions", chat_stream(tokens(198, PROSE_WORDS))),
            ("chat chunks, 2024/25, 3.5", "/v1/chat/completions", chat_stream(tokens(198, PROSE_SEPARATED))),
            ("chat chunks, a list after a colon", "/v1/chat/completions", chat_stream(tokens(198, MARKDOWN))),
            ("chat chunks, markdown answer", "/v1/chat/completions", markdown),
            ("Responses typed events", "/v1/responses", responses_stream(parts)),
        ):
            for split in (False, True):
                us = asyncio.run(per_event_us(stage, path, events, args.answers, split))
                print(f"{name:<36} {'per event' if split else 'one read':<10} {us:9.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=300)
    sys.exit(main(parser.parse_args()))
