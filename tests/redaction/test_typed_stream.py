"""Responses API streams (typed SSE events) through the redact stage: a value split across deltas never
leaks, placeholders are restored across splits, untouched streams pass byte for byte, the ``.done``
and ``response.completed`` texts agree with the deltas the client got, and a rewritten delta's
logprobs are dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.redaction.typed_stream import QUEUE_MAX
from tests.redaction.test_stage import ctx_for, make_stage

ITEM = "msg_1"


def event(kind: str, **fields: Any) -> bytes:
    doc = {"type": kind, "sequence_number": 0, **fields}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


def text_delta(delta: str, logprobs: list | None = None, content_index: int = 0) -> bytes:
    return event(
        "response.output_text.delta",
        item_id=ITEM,
        output_index=0,
        content_index=content_index,
        delta=delta,
        logprobs=logprobs or [],
    )


def response(text: str | None, status: str = "completed") -> dict[str, Any]:
    output = []
    if text is not None:
        part = {"type": "output_text", "text": text, "annotations": []}
        output = [{"type": "message", "id": ITEM, "status": status, "role": "assistant", "content": [part]}]
    return {"id": "resp_1", "object": "response", "model": "m", "status": status, "output": output}


def responses_stream(deltas: list[str], *, done: bool = True) -> bytes:
    text = "".join(deltas)
    head = [
        event("response.created", response=response(None, "in_progress")),
        event(
            "response.content_part.added",
            item_id=ITEM,
            output_index=0,
            content_index=0,
            part={"type": "output_text", "text": "", "annotations": []},
        ),
    ]
    body = [text_delta(d) for d in deltas]
    if not done:
        return b"".join(head + body)
    tail = [
        event("response.output_text.done", item_id=ITEM, output_index=0, content_index=0, text=text),
        event("response.completed", response=response(text)),
    ]
    return b"".join(head + body + tail)


_STAGES: dict[Path, Any] = {}


async def prepared(tmp_path: Path, prompt: str = "mail a@b.com", roles: tuple[str, ...] | None = None):
    """A fresh request (its own session) on the stage of this test's directory, built once."""
    stage = _STAGES.get(tmp_path)
    if stage is None:
        stage = _STAGES[tmp_path] = make_stage(tmp_path)
    ctx = ctx_for("/v1/responses", {"model": "m", "input": prompt}, roles)
    await stage.on_request(ctx)
    ctx.upstream_status = 200
    ctx.response_kind = "sse"
    f = stage.response_filter(ctx)
    assert f is not None
    return ctx, f


def run(f: Any, body: bytes, step: int | None = None) -> bytes:
    pieces = [body] if step is None else [body[i : i + step] for i in range(0, len(body), step)]
    return b"".join(f.feed(p) for p in pieces) + f.flush()


def docs(body: bytes) -> list[dict[str, Any]]:
    out = []
    for raw in body.split(b"\n\n"):
        for line in raw.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(orjson.loads(line[6:]))
    return out


def deltas_text(body: bytes) -> str:
    return "".join(d["delta"] for d in docs(body) if d["type"] == "response.output_text.delta")


def done_text(body: bytes) -> str:
    (done,) = [d for d in docs(body) if d["type"] == "response.output_text.done"]
    return done["text"]


def completed_text(body: bytes) -> str:
    (done,) = [d for d in docs(body) if d["type"] == "response.completed"]
    return done["response"]["output"][0]["content"][0]["text"]


PROSE = [" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]


@pytest.mark.parametrize("step", [None, 1, 9, 64])
async def test_untouched_stream_is_byte_identical(tmp_path: Path, step: int | None) -> None:
    _, f = await prepared(tmp_path)
    body = responses_stream(PROSE)
    assert run(f, body, step) == body


async def test_split_phone_never_leaks_at_any_split_point(tmp_path: Path) -> None:
    text = "Call 13812345678 now, or write to zhang.wei@example.com today."
    for cut in range(1, len(text)):
        for cut2 in (cut + 1, cut + 5):
            parts = [text[:cut], text[cut:cut2], text[cut2:]]
            _, f = await prepared(tmp_path)
            out = run(f, responses_stream([p for p in parts if p]))
            assert b"13812345678" not in out and b"zhang.wei@example.com" not in out, (cut, cut2)
            got = deltas_text(out)
            assert got == done_text(out) == completed_text(out), (cut, cut2)
            assert "138****5678" in got


async def test_placeholder_restored_across_deltas(tmp_path: Path) -> None:
    _, f = await prepared(tmp_path, "mail a@b.com")  # the upstream saw <EMAIL_1>
    out = run(f, responses_stream(["Sent to <EM", "AIL", "_1>", " as asked."]))
    assert deltas_text(out) == done_text(out) == completed_text(out) == "Sent to a@b.com as asked."
    assert b"<EMAIL_1>" not in out


async def test_function_call_arguments_restored(tmp_path: Path) -> None:
    _, f = await prepared(tmp_path, "mail a@b.com")
    args = ['{"to": "<EMA', 'IL_1>", "n": 1}']
    body = b"".join(
        [
            *(
                event("response.function_call_arguments.delta", item_id="fc_1", output_index=0, delta=a)
                for a in args
            ),
            event(
                "response.function_call_arguments.done",
                item_id="fc_1",
                output_index=0,
                arguments="".join(args),
            ),
        ]
    )
    out = docs(run(f, body))
    joined = "".join(d["delta"] for d in out if d["type"].endswith(".delta"))
    assert joined == '{"to": "a@b.com", "n": 1}'
    assert out[-1]["arguments"] == joined


async def test_cut_stream_releases_held_tail_as_a_delta(tmp_path: Path) -> None:
    _, f = await prepared(tmp_path)
    out = run(f, responses_stream(["Call 1381234", "5678"], done=False))
    assert b"13812345678" not in out
    assert deltas_text(out) == "Call 138****5678"
    last = docs(out)[-1]
    assert last["type"] == "response.output_text.delta" and last["item_id"] == ITEM


async def test_logprobs_of_rewritten_deltas_are_dropped(tmp_path: Path) -> None:
    _, f = await prepared(tmp_path)
    body = text_delta(" Hi", [{"token": " Hi", "logprob": -0.1}]) + text_delta(
        " 138", [{"token": " 138", "logprob": -0.2}]
    )
    body += text_delta("12345678", [{"token": "12345678", "logprob": -0.3}])
    body += event("response.output_text.done", item_id=ITEM, output_index=0, content_index=0, text="")
    out = run(f, body)
    assert b"12345678" not in out
    kept = [d["logprobs"] for d in docs(out) if d["type"] == "response.output_text.delta"]
    assert kept[0] == [{"token": " Hi", "logprob": -0.1}]  # went out as it came
    assert all(lp == [] for lp in kept[1:])  # the entity's tokens: dropped


async def test_other_events_are_walked_whole(tmp_path: Path) -> None:
    _, f = await prepared(tmp_path)
    body = event("response.created", response={**response(None), "instructions": "call 13900001111"})
    out = run(f, body)
    assert b"13900001111" not in out and b"139****1111" in out


async def test_two_streams_interleaved_stay_in_order(tmp_path: Path) -> None:
    _, f = await prepared(tmp_path)
    body = b"".join(
        [
            text_delta("phone 1390000", content_index=0),
            text_delta("mail me at bo", content_index=1),
            text_delta("1111 ok", content_index=0),
            text_delta("b@example.com ok", content_index=1),
        ]
    )
    out = run(f, body)
    assert b"13900001111" not in out and b"bob@example.com" not in out
    by_part: dict[int, str] = {}
    for d in docs(out):
        by_part[d["content_index"]] = by_part.get(d["content_index"], "") + d["delta"]
    assert by_part[0] == "phone 139****1111 ok"
    assert by_part[1].startswith("mail me at ") and "@" not in by_part[1].split("at ", 1)[1][:3]


async def test_queue_is_bounded(tmp_path: Path) -> None:
    _, f = await prepared(tmp_path)
    # One word that never ends: every delta is held (an e-mail can grow from letters).
    out = f.feed(b"".join(text_delta("a") for _ in range(QUEUE_MAX * 2)))
    assert len(f.queue) <= QUEUE_MAX
    assert out.count(b"\n\n") >= QUEUE_MAX


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_split_equals_the_whole(tmp_path: Path, data: st.DataObject) -> None:
    text = data.draw(
        st.lists(
            st.sampled_from(
                [" hello", " 13812345678", " bob@example.com", " <EMAIL_1>", "，", " id 110101199003074573"]
            ),
            min_size=1,
            max_size=8,
        ).map("".join)
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=6)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if text[a:b]]
    _, f = await prepared(tmp_path)
    out = run(f, responses_stream(parts))
    whole = docs(run((await prepared(tmp_path))[1], responses_stream([text])))
    assert deltas_text(out) == done_text(out) == whole[-2]["text"]
    for raw in ("13812345678", "bob@example.com", "110101199003074573"):
        assert raw.encode() not in out
