"""The SSE fast path in process: one parse per event shared by redact, observe and the audit text
capture; events that nothing changes go out byte for byte; split entities still never leak."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.audit.record import TextCapture
from sidecar.sse import SSEReader
from sidecar.stages import redact as redact_module
from sidecar.stages.observe import ObserveFilter
from tests.redaction.test_stage import _prepared, sse

WORDS = " The quick brown fox jumps over the lazy dog , and then it runs away into the forest .".split(" ")


def chunk_event(content: str | None = None, finish: str | None = None, index: int = 0, **delta: Any) -> dict:
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def vllm_stream(tokens: list[str]) -> bytes:
    return sse(
        chunk_event("", role="assistant"),
        *(chunk_event(t) for t in tokens),
        chunk_event(finish="stop"),
        b"[DONE]",
    )


def tokens(n: int) -> list[str]:
    words = [" " + w for w in WORDS if w]
    return [words[i % len(words)] for i in range(n)]


async def chain(tmp_path: Path, **cfg: Any):
    """redact -> observe -> audit text capture, sharing one context, as the pipeline builds them."""
    _, ctx, f = await _prepared(tmp_path, "sse", **cfg)
    return ctx, [f, ObserveFilter(ctx), TextCapture("sse", 1 << 20, ctx)]


def run(filters: list, body: bytes, step: int | None = None) -> bytes:
    """``step``: None, the body as one read; 0, one read per event (many connections); else reads
    of that many bytes."""
    if step == 0:
        pieces = [event + b"\n\n" for event in body.split(b"\n\n")[:-1]]
    else:
        pieces = [body] if step is None else [body[i : i + step] for i in range(0, len(body), step)]
    return run_pieces(filters, pieces)


def run_pieces(filters: list, pieces: list[bytes]) -> bytes:
    """Each read through the filters in order, then their flush: what the client gets."""
    out = []
    for piece in pieces:
        for f in filters:
            piece = f.feed(piece)
        out.append(piece)
    tail = b""
    for f in filters:
        tail = f.feed(tail) + f.flush()
    return b"".join(out) + tail


def contents(body: bytes) -> str:
    text = ""
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for c in orjson.loads(event[6:])["choices"]:
                text += (c.get("delta") or {}).get("content") or ""
    return text


@pytest.mark.parametrize("step", [None, 0, 1, 7, 100, 4096])
async def test_untouched_stream_is_byte_identical(tmp_path: Path, step: int | None) -> None:
    ctx, filters = await chain(tmp_path)
    body = vllm_stream(tokens(200))
    out = run(filters, body, step)
    assert out == body
    assert ctx.output_sha256 == hashlib.sha256(body).hexdigest()
    assert ctx.finish_reasons == ["stop"]


@pytest.mark.parametrize("step", [None, 0, 13, 4096])
async def test_each_event_is_parsed_once(tmp_path: Path, step: int | None) -> None:
    """Three stream filters, one parse per upstream event (``SSEEvents.parsed``), or none for the
    token events taken in runs by their bytes (``SSEEvents.recognized``)."""
    ctx, filters = await chain(tmp_path)
    toks = tokens(200)
    body = vllm_stream(toks)
    run(filters, body, step)
    assert ctx.sse_events is not None
    # role, tokens, finish, [DONE]: each event split once, parsed or recognized
    assert ctx.sse_events.parsed + ctx.sse_events.recognized == len(toks) + 3
    # The shape is learned from the first token event; the few events with a digit or held back
    # at the end of a read are parsed (the per-event path), the rest never are.
    assert ctx.sse_events.recognized > len(toks) * 0.8
    assert ctx.usage.completion_tokens == len(toks)  # observe read the shared events
    assert filters[2].text() == "".join(toks)  # so did the audit text capture


async def test_rewritten_events_carry_their_parse(tmp_path: Path) -> None:
    """A redacted event is published with its new parse: observe and capture read the client's
    text, not the upstream's, and nobody parses it again."""
    ctx, filters = await chain(tmp_path)
    toks = [" call", " 139", "0000", "1111", " now", "."]
    out = run(filters, vllm_stream(toks), 9)
    assert contents(out) == " call 139****1111 now."
    assert b"13900001111" not in out
    assert filters[2].text() == " call 139****1111 now."
    assert ctx.sse_events.parsed + ctx.sse_events.recognized == len(toks) + 3
    assert ctx.output_sha256 == hashlib.sha256(out).hexdigest()


async def test_only_events_with_released_text_wait(tmp_path: Path) -> None:
    """The role event goes out at once; a token waits for the next one (its word could still grow
    into an e-mail address) and then goes out unchanged."""
    _, _, f = await _prepared(tmp_path, "sse")
    role = sse(chunk_event("", role="assistant"))
    assert f.feed(role) == role
    first = sse(chunk_event(" Hello"))
    assert f.feed(first) == b""
    second = sse(chunk_event(" world"))
    assert f.feed(second) == first
    assert f.feed(sse(chunk_event(finish="stop"))) == second + sse(chunk_event(finish="stop"))


async def test_redaction_then_back_to_byte_for_byte(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")
    toks = [" mail", " jlin", "@example", ".com", " now", ",", " then", " more", " words", "."]
    body = vllm_stream(toks)
    out = run([f], body)
    assert contents(out) == " mail j***@example.com now, then more words."
    # After the comma nothing is held: the events after it are the upstream's own bytes.
    tail = sse(*(chunk_event(t) for t in [" then", " more", " words", "."]))
    assert tail in out


async def test_placeholder_restored_across_events(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")
    out = run([f], vllm_stream([" sent", " to", " <EM", "AIL", "_1", ">", " ok"]), 5)
    assert contents(out) == " sent to a@b.com ok"


async def test_queue_stays_bounded(tmp_path: Path) -> None:
    """Events wait behind held text only so long: then they go out with what was released."""
    _, _, f = await _prepared(tmp_path, "sse")
    out = f.feed(sse(chunk_event(" key"), *(chunk_event(None, index=1) for _ in range(1000))))
    assert len(f.queue) <= redact_module._QUEUE_MAX
    assert out.count(b"\n\n") >= 1000 - redact_module._QUEUE_MAX


SPLIT_VALUES = ["13900001111", "jlin@example.com", "110101199003074258", "password=hunter22", "<EMAIL_1>"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.sampled_from(SPLIT_VALUES),
    cut=st.integers(0, 40),
    before=st.sampled_from(["", " ", " call", " Mail", ",", "\n"]),
    step=st.sampled_from([None, 0, 1, 17]),
)
def test_value_split_across_two_events_never_leaks(
    tmp_path_factory: pytest.TempPathFactory, value: str, cut: int, before: str, step: int | None
) -> None:
    """The split-point guarantee through the SSE filter with its fast checks: a value cut into two
    events at any point is redacted exactly as the whole text is."""
    import asyncio

    tmp_path = tmp_path_factory.mktemp("split")
    stage, ctx, f = asyncio.run(_prepared(tmp_path, "sse"))
    cut = min(cut, len(value))
    toks = [" Here", " it", " is", before + value[:cut], value[cut:], " and", " more", " text", "."]
    toks = [t for t in toks if t]
    out = run([f], vllm_stream(toks), step)
    expected = stage.text_out(
        "".join(toks), redact_module._State(ctx.redaction.session, True, stage.redactor)
    )
    assert contents(out) == expected
    core = value.split("=")[-1]
    if core not in expected:  # redacted as a whole (glued to a word, a number may not be one)
        assert core.encode() not in out


def test_reader_never_reuses_a_parse_for_other_bytes() -> None:
    from sidecar.sse import SSEEvents

    shared = SSEEvents()
    first = SSEReader(shared)
    events = first.feed(b'data: {"a":1}\n\n')
    chunk = shared.publish(events)
    second = SSEReader(shared)
    assert second.feed(chunk) is events and shared.parsed == 1
    assert [e.doc for e in second.feed(b'data: {"a":2}\n\n')] == [{"a": 2}] and shared.parsed == 2


EVENT_TEXT = [" the", " Hello", ",", ".", " and", "\n", " 139", "0000", "1111", " jlin", "@example", ".com"]
EVENT_TEXT += [" <EMA", "IL_1>", " pass", "word=", "hunter22", " 2024", "-11", " ok", "!"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from(EVENT_TEXT), st.sampled_from(["", "", "", "c", "lp"])),
        min_size=1,
        max_size=40,
    ),
    step=st.sampled_from([None, 0, 1, 29, 300]),
)
def test_interleaved_choices_match_whole_text(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[int, str, str]], step: int | None
) -> None:
    """Two choices interleaved, comments and logprobs events among them, any chunking: each choice's
    text as the client assembles it is the whole text redacted, and the stream parses once."""
    import asyncio

    stage, ctx, f = asyncio.run(_prepared(tmp_path_factory.mktemp("mix"), "sse"))
    docs: list[Any] = [chunk_event("", role="assistant")]
    texts = {0: "", 1: ""}
    for index, text, extra in plan:
        texts[index] += text
        ev = chunk_event(text, index=index)
        if extra == "lp":
            ev["choices"][0]["logprobs"] = {"content": [{"token": text, "logprob": -1.0, "bytes": None}]}
        docs.append(ev)
        if extra == "c":
            docs.append(b": keep-alive")
    docs += [chunk_event(finish="stop", index=0), chunk_event(finish="stop", index=1), b"[DONE]"]
    body = b"".join(
        b"data: " + orjson.dumps(d) + b"\n\n"
        if not isinstance(d, bytes)
        else (d + b"\n\n" if d.startswith(b":") else b"data: " + d + b"\n\n")
        for d in docs
    )
    out = run([f, ObserveFilter(ctx)], body, step)
    got = {0: "", 1: ""}
    for event in out.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for c in orjson.loads(event[6:])["choices"]:
                got[c["index"]] += (c.get("delta") or {}).get("content") or ""
    state = redact_module._State(ctx.redaction.session, True, stage.redactor)
    expected = {index: stage.text_out(texts[index], state) for index in (0, 1)}
    assert got == expected
    for value in ("13900001111", "jlin@", "hunter22"):
        if value not in expected[0] + expected[1]:
            assert value.encode() not in out
    assert ctx.output_sha256 == hashlib.sha256(out).hexdigest()
    assert out.endswith(b"data: [DONE]\n\n")


ODD_TOKENS = [
    (b'"content":" say \\"hi\\""', ' say "hi"'),  # escaped quotes
    (b'"content":"line\\nnext"', "line\nnext"),  # an escape sequence
    (b'"content":"caf\\u00e9 13900001111"', "caf\u00e9 13900001111"),  # a unicode escape, then PII
    (b'"content":" plain"', " plain"),
]


@pytest.mark.parametrize("step", [None, 0])
async def test_token_shape_only_for_the_same_bytes_around_the_text(tmp_path: Path, step: int | None) -> None:
    """Token events are recognized by the bytes around their text (learned from an event that
    walked clean); an event whose text has escapes, or whose other fields differ (model, finish,
    an extra field, a second key), takes the general path: what the client gets is exactly the
    whole text redacted, with the other fields as sent."""
    stage, ctx, f = await _prepared(tmp_path, "sse")
    head = b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    head += b'"choices":[{"index":0,"delta":{'
    tail = b'},"logprobs":null,"finish_reason":null}]}'
    datas = [head + b'"role":"assistant","content":""' + tail]
    texts = []
    for word in [" one", " two", " three"]:
        datas.append(head + b'"content":"' + word.encode() + b'"' + tail)
        texts.append(word)
    for raw, text in ODD_TOKENS:
        datas.append(head + raw + tail)
        texts.append(text)
    other = head.replace(b'"model":"m"', b'"model":"jlin@example.com"')
    datas.append(other + b'"content":" four"' + tail)
    texts.append(" four")
    datas.append(head + b'"content":" five","reasoning":"x"' + tail)
    texts.append(" five")
    datas.append(head + b'"content":" six"' + tail.replace(b"null}", b'null,"extra":"13900001111"}'))
    texts.append(" six")
    datas.append(head + b'"content":" seven"' + tail)
    texts.append(" seven")
    datas.append(head + tail.replace(b'"finish_reason":null', b'"finish_reason":"stop"'))
    body = b"".join(b"data: " + d + b"\n\n" for d in datas) + b"data: [DONE]\n\n"
    out = run([f, ObserveFilter(ctx)], body, step)
    state = redact_module._State(ctx.redaction.session, True, stage.redactor)
    assert contents(out) == stage.text_out("".join(texts), state)
    assert b"13900001111" not in out and b"jlin@example.com" not in out
    assert b'"model":"m"' in out and b'"reasoning":"x"' in out
    assert ctx.output_sha256 == hashlib.sha256(out).hexdigest()
    assert ctx.finish_reasons == ["stop"]
