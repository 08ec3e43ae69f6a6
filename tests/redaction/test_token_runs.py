"""Token runs: consecutive token events of one shape, recognized by their bytes and never parsed
(``sse.TokenRun``). What the reader hands out must be exactly the events of the stream, and the
redact filter's run path must keep every guarantee of the per-event path: the split-point property,
byte-for-byte relay of what nothing changes, the observe counts and the output hash."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.audit.record import TextCapture
from sidecar.context import RequestContext
from sidecar.sse import SSEBuffer, SSEEvents, SSEReader, TokenRun, parse_event
from sidecar.stages import redact as redact_module
from sidecar.stages.observe import ObserveFilter
from tests.redaction.test_sse_fast import run_pieces
from tests.redaction.test_stage import ctx_for, make_stage


def event(
    text: str | None = None,
    key: str = "content",
    index: int = 0,
    finish: str | None = None,
    logprobs: bool = False,
    ident: str = "chatcmpl-7f3a",
    **extra: Any,
) -> bytes:
    delta: dict[str, Any] = {} if text is None else {key: text}
    delta.update(extra)
    lp = {"content": [{"token": text, "logprob": -1.0, "bytes": None}]} if logprobs else None
    doc = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": 1732780800,
        "model": "deepseek-chat",
        "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def stream(tokens: list[tuple[int, str, str]], ident: str = "chatcmpl-7f3a") -> bytes:
    """(index, key, text) per token event (``lp`` before the key: with logprobs), with the role
    event first and the finish events last; ``ident`` is every event's id."""
    out = [event("", role="assistant", ident=ident)]
    for index, key, text in tokens:
        logprobs = key.startswith("lp ")
        out.append(event(text, key.removeprefix("lp "), index, logprobs=logprobs, ident=ident))
    out += [
        event(finish="stop", ident=ident),
        event(finish="stop", index=1, ident=ident),
        b"data: [DONE]\n\n",
    ]
    return b"".join(out)


def reads(body: bytes, plan: list[int]) -> list[bytes]:
    """``body`` cut into reads: a positive entry takes that many whole events, a negative one that
    many bytes (a read that ends inside an event)."""
    events = [e + b"\n\n" for e in body.split(b"\n\n")[:-1]]
    out: list[bytes] = []
    rest = b""
    i = 0
    for step in plan:
        if step > 0:
            piece = rest + b"".join(events[i : i + step])
            i += step
            rest = b""
        else:
            whole = rest + b"".join(events[i:])
            piece, rest, i = whole[:-step], whole[-step:], len(events)
        if piece:
            out.append(piece)
    tail = rest + b"".join(events[i:])
    if tail:
        out.append(tail)
    return out


def expanded(items: list[Any]) -> list[Any]:
    return [e for item in items for e in (item.events() if isinstance(item, TokenRun) else [item])]


PLAIN = [" the", " Hello", " world", ",", ".", " and", " 中文", "字", " café", " 😀", " ok", "!", " a", " I"]
ODD = ['"quoted"', "back\\slash", "\n", "\t", "a\u2028b", " \u00e9t\u00e9"]
PII = [" 139", "0000", "1111", " jlin", "@example", ".com", " 2024", " pass", "word=", "hunter22"]
PII += [" <EMA", "IL_1>", " xoxb-", "1234"]
TOKEN = st.one_of(
    st.tuples(st.just(0), st.just("content"), st.sampled_from(PLAIN + PLAIN + ODD + PII)),
    st.tuples(st.just(0), st.just("reasoning_content"), st.sampled_from(PLAIN)),
    st.tuples(st.just(1), st.just("content"), st.sampled_from(PLAIN + PII)),
    st.tuples(st.just(0), st.just("lp content"), st.sampled_from(PLAIN + PII)),
)
# An id the redactor must change in every event (then no token event walks clean: no runs).
IDENT = st.sampled_from(["chatcmpl-7f3a", "chatcmpl-7f3a", "call 13900001111"])
READS = st.lists(st.one_of(st.integers(1, 40), st.integers(-300, -1)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(tokens=st.lists(TOKEN, max_size=60), plan=READS)
def test_reader_items_are_the_stream_events(tokens: list[tuple[int, str, str]], plan: list[int]) -> None:
    """Runs or not, the reader hands out each event once, in order, with the parse a plain split
    gives; a run's texts are its events' texts and everything else is its shape's event."""
    body = stream(tokens)
    reader = SSEReader(SSEEvents())
    got: list[Any] = []
    for piece in reads(body, plan):
        items = reader.items(piece)
        for item in items:
            if isinstance(item, TokenRun):
                shape = item.shape
                for text, one in zip(item.texts, item.events(), strict=True):
                    assert one.doc["choices"][0]["delta"] == {shape.key: text}
                    blank = orjson.loads(one.data)
                    blank["choices"][0]["delta"][shape.key] = ""
                    learned = orjson.loads(orjson.dumps(shape.doc))
                    learned["choices"][0]["delta"][shape.key] = ""
                    assert blank == learned
        got += expanded(items)
    rest = reader.rest()
    if rest is not None:
        got.append(rest)
    plain = [parse_event(raw) for raw in SSEBuffer().feed(body)]
    assert [e.raw for e in got] == [e.raw for e in plain]
    assert [e.doc for e in got] == [e.doc for e in plain]
    assert reader.shared.parsed + reader.shared.recognized == len(plain)


def test_runs_are_found_and_taken_whole() -> None:
    tokens = [(0, "content", t) for t in PLAIN * 5]
    body = stream(tokens)
    reader = SSEReader(SSEEvents())
    items = reader.items(body)
    runs = [i for i in items if isinstance(i, TokenRun)]
    # The first events teach the shape; the rest of the tokens are one run, never parsed.
    assert len(runs) == 1 and runs[0].count >= len(tokens) - 4
    assert reader.shared.recognized == runs[0].count
    assert runs[0].text() == "".join(t for _, _, t in tokens)[-len(runs[0].text()) :]
    # The next read of the same shape is a run from its first byte.
    again = reader.items(event(" more") + event(" words"))
    assert len(again) == 1 and isinstance(again[0], TokenRun) and again[0].texts == [" more", " words"]


def test_a_run_starts_only_at_an_event() -> None:
    """Bytes that look like a token event inside another event's line are not a run."""
    reader = SSEReader(SSEEvents())
    reader.items(event(" a") + event(" b") + event(" c") + event(" d") + event(" e"))
    assert reader.shape is not None
    lead = reader.shape.lead
    # A comment line carrying the lead's bytes, then a real token event.
    trick = b": x" + lead + b"fake" + reader.shape.tail + event(" real")
    items = reader.items(trick)
    assert [type(i).__name__ for i in items] == ["SSEEvent", "TokenRun"]
    assert items[0].data is None and items[1].texts == [" real"]


def test_a_line_full_of_event_starts_costs_one_scan() -> None:
    """A hostile answer (a line with ``data: `` repeated) is scanned once, not once per copy: the
    quadratic scan took ~10 s for 20 000 copies, this is 300 000 (~1 s at most when linear)."""
    reader = SSEReader(SSEEvents())
    reader.items(event(" a") + event(" b") + event(" c") + event(" d") + event(" e"))
    hostile = b'data: {"x":"' + b"data: " * 300_000 + b'"}\n\n' + event(" z")
    started = time.perf_counter()
    items = reader.items(hostile)
    assert time.perf_counter() - started < 20
    assert len(expanded(items)) == 2


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> redact_module.RedactStage:
    """One stage for every example, as one sidecar serves every request."""
    return make_stage(tmp_path_factory.mktemp("runs"))


def prepared(stage: redact_module.RedactStage) -> tuple[RequestContext, Any]:
    ctx = ctx_for("/v1/chat/completions", {"messages": [{"role": "user", "content": "mail a@b.com"}]})
    asyncio.run(stage.on_request(ctx))
    ctx.upstream_status = 200
    ctx.response_kind = "sse"
    return ctx, stage.response_filter(ctx)


def observe_only() -> tuple[RequestContext, list[Any]]:
    ctx = RequestContext(
        request_id="r",
        method="POST",
        path="/v1/chat/completions",
        query=b"",
        headers=[],
        client_ip="127.0.0.1",
    )
    ctx.response_kind = "sse"
    return ctx, [ObserveFilter(ctx), TextCapture("sse", 1 << 20, ctx)]


def client_texts(body: bytes) -> tuple[dict[tuple[int, str], str], int]:
    """Each (index, key) text as the client assembles it, and the events with content."""
    texts: dict[tuple[int, str], str] = {}
    with_content = 0
    for e in SSEBuffer().feed(body):
        doc = parse_event(e).doc
        if not isinstance(doc, dict):
            continue
        for choice in doc["choices"]:
            for key, value in (choice.get("delta") or {}).items():
                if key in ("content", "reasoning_content") and value:
                    texts[(choice["index"], key)] = texts.get((choice["index"], key), "") + value
            if (choice.get("delta") or {}).get("content"):
                with_content += 1
    return texts, with_content


def logprob_tokens(body: bytes) -> dict[int, list[str]]:
    tokens: dict[int, list[str]] = {}
    for e in SSEBuffer().feed(body):
        doc = parse_event(e).doc
        if isinstance(doc, dict):
            for c in doc["choices"]:
                for item in (c.get("logprobs") or {}).get("content") or ():
                    tokens.setdefault(c["index"], []).append(item["token"])
    return tokens


def content_in_order(body: bytes) -> str:
    """Every content delta, in the order the client gets them (what the audit capture keeps)."""
    parts = []
    for e in SSEBuffer().feed(body):
        doc = parse_event(e).doc
        if isinstance(doc, dict):
            parts += [(c.get("delta") or {}).get("content") or "" for c in doc["choices"]]
    return "".join(parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=st.lists(TOKEN, max_size=60), plan=READS, ident=IDENT)
def test_run_path_keeps_every_guarantee(
    stage: redact_module.RedactStage, tokens: list[tuple[int, str, str]], plan: list[int], ident: str
) -> None:
    """Through redact, observe and the audit capture, reads of whole events (runs) or cut inside
    events: each stream's text is the whole text redacted (split-point guarantee), no split value
    leaks, nothing is sent before the redactor released it, observe counts what the client got, the
    hash is of the bytes sent, and a stream that nothing changes goes out byte for byte."""
    ctx, f = prepared(stage)
    filters = [f, ObserveFilter(ctx), TextCapture("sse", 1 << 20, ctx)]
    body = stream(tokens, ident)
    state = redact_module._State(ctx.redaction.session, True, stage.redactor)
    whole: dict[tuple[int, str], str] = {}
    for index, key, text in tokens:
        skey = (index, key.removeprefix("lp "))
        whole[skey] = whole.get(skey, "") + text
    expected = {k: stage.text_out(v, state) for k, v in whole.items()}
    # Logprobs are rewritten (token bytes dropped), an id with a phone number redacted.
    clean = (
        expected == whole
        and ident.startswith("chatcmpl")
        and not any(k.startswith("lp ") for _, k, _ in tokens)
    )
    sent = received = b""
    for piece in reads(body, plan):
        received += piece
        for flt in filters:
            piece = flt.feed(piece)
        sent += piece
        if clean:
            # Nothing out before its time: the client has a prefix of the text that came in so
            # far, without the tail its redactor still holds, stream by stream.
            so_far, _ = client_texts(sent)
            came, _ = client_texts(received)
            for skey, sr in f.streams.items():
                text = came.get(skey, "")
                assert text.endswith(sr.held)
                assert text[: len(text) - len(sr.held)].startswith(so_far.get(skey, ""))
    tail = b""
    for flt in filters:
        tail = flt.feed(tail) + flt.flush()
    out = sent + tail
    got, with_content = client_texts(out)
    assert got == {k: v for k, v in expected.items() if v}
    for value in ("13900001111", "jlin@example", "hunter22"):
        if not any(value in v for v in expected.values()):
            assert value.encode() not in out
    assert ctx.output_sha256 == hashlib.sha256(out).hexdigest()
    assert ctx.usage.completion_tokens == (with_content or None)
    assert filters[2].text() == (content_in_order(out) or None)
    if clean:  # nothing to redact: the upstream's bytes, unchanged
        assert out == body
    if expected == whole:
        # Logprobs held with their text come out with it (merged), none lost or reordered.
        assert logprob_tokens(out) == logprob_tokens(body)


@settings(max_examples=60, deadline=None)
@given(tokens=st.lists(TOKEN, max_size=60), plan=READS)
def test_observe_first_counts_runs(tokens: list[tuple[int, str, str]], plan: list[int]) -> None:
    """Without redaction observe reads first (and learns the runs itself): the same counts."""
    ctx, filters = observe_only()
    body = stream(tokens)
    out = run_pieces(filters, reads(body, plan))
    assert out == body
    _, with_content = client_texts(body)
    assert ctx.usage.completion_tokens == (with_content or None)
    assert ctx.finish_reasons == ["stop", "stop"]
    assert filters[1].text() == (content_in_order(body) or None)


def test_a_run_never_sends_a_held_character(stage: redact_module.RedactStage) -> None:
    """A run ending in a one-letter word: the space before it goes to the redactor's credit, the
    event waits for its letter (which could still start an e-mail address)."""
    _, f = prepared(stage)
    toks = [(0, "content", t) for t in [" the", " world", " and", " ok", " the", " a"]]
    first, rest = reads(stream(toks), [7, 3])
    out = f.feed(first)
    assert f.streams[(0, "content")].held == "a"
    assert client_texts(out)[0] == {(0, "content"): " the world and ok the"}
    assert len(f.queue) == 1
    out += f.feed(rest) + f.flush()
    assert out == stream(toks)


def test_logprobs_held_with_text_come_out_when_a_run_releases_it(stage: redact_module.RedactStage) -> None:
    """Logprobs wait while their choice holds text and go out with the event after which it holds
    none, as per event, also when that event comes in a run of token events."""
    _, f = prepared(stage)
    toks = [(0, "content", t) for t in [" the", " world", " and", " ok", " the"]]
    toks += [(0, "lp content", " jlin")]
    toks += [(0, "content", t) for t in [" and", " ok ", " more"]]
    first, second, _ = reads(stream(toks), [7, 2, 4])
    out = f.feed(first)
    assert logprob_tokens(out) == {}  # " jlin" is held: so are its logprobs
    out = f.feed(second)
    assert client_texts(out)[0] == {(0, "content"): "jlin and ok "}
    assert logprob_tokens(out) == {0: [" jlin"]}


def test_text_that_is_not_utf8_is_not_a_run(stage: redact_module.RedactStage) -> None:
    """An event whose text bytes are not UTF-8 looks like a token event but is no JSON: it is parsed
    (and refused as JSON) like any event, in a run or read alone, and the stream goes on."""
    broken = event(" ok").replace(b" ok", b" \xff\xfe")
    body = stream([(0, "content", t) for t in [" the", " world", " and"]])
    head, rest = body[: body.index(b"data: ", 300)], body[body.index(b"data: ", 300) :]
    reader = SSEReader(SSEEvents())
    reader.items(head)
    assert reader.shape is not None
    for chunk in (event(" a") + broken + event(" b"), broken):
        got = expanded(reader.items(chunk))
        assert [e.raw for e in got] == SSEBuffer().feed(chunk)
        assert [e.doc for e in got] == [parse_event(raw).doc for raw in SSEBuffer().feed(chunk)]
    _, f = prepared(stage)
    out = run_pieces([f], [head, event(" a") + broken + event(" b"), broken, rest])
    assert client_texts(out)[0][(0, "content")].startswith(" the")
    assert out.endswith(b"data: [DONE]\n\n")


def test_escaped_texts_are_runs_decoded_as_json() -> None:
    """Line breaks, tabs, quotes and backslashes stand escaped in a token's JSON (``\\n``): such events
    are runs too (a markdown answer is full of them), their texts decoded as the parse decodes them,
    their bytes unchanged."""
    reader = SSEReader(SSEEvents())
    reader.items(stream([(0, "content", t) for t in PLAIN])[:-200].rsplit(b"\n\n", 2)[0] + b"\n\n")
    assert reader.shape is not None
    texts = ["\n", "1.", " Install", "\n\n", 'say "hi"', "C:\\dir\\", "\\", "\t|", "a/b", " end"]
    chunk = b"".join(event(t) for t in texts)
    assert b"\\n" in chunk and b'\\"' in chunk and b"\\\\" in chunk and b"\\t" in chunk
    items = reader.items(chunk)
    assert len(items) == 1 and isinstance(items[0], TokenRun)
    run = items[0]
    assert run.escaped and run.texts == texts and run.text() == "".join(texts)
    assert run.raw == chunk
    assert [e.doc for e in run.events()] == [parse_event(event(t)).doc for t in texts]
    assert [p.texts for p in (run.part(0, 3), run.part(3, 10))] == [texts[:3], texts[3:]]
    assert run.part(3, 10).text() == "".join(texts[3:])
    # One event alone (the usual read at many connections) is a run too.
    (one,) = reader.items(event("line\n"))
    assert isinstance(one, TokenRun) and one.texts == ["line\n"]


def test_escapes_the_run_does_not_take_are_parsed() -> None:
    """``\\u`` escapes (a lone surrogate is no JSON), other control characters and a lone backslash
    are no run: those events are parsed (and refused as JSON where they are not), as any event."""
    reader = SSEReader(SSEEvents())
    reader.items(stream([(0, "content", t) for t in PLAIN])[:-200].rsplit(b"\n\n", 2)[0] + b"\n\n")
    assert reader.shape is not None
    bell = event("\x07ring")
    assert b"\\u0007" in bell
    surrogate = event(" ab").replace(b" ab", b"\\ud800")
    lone = event(" ab").replace(b" ab", b"a\\")
    unknown = event(" ab").replace(b" ab", b"\\x41")
    for odd in (bell, surrogate, lone, unknown):
        chunk = event(" a") + odd + event("\n")
        items = reader.items(chunk)
        got = expanded(items)
        assert [e.raw for e in got] == SSEBuffer().feed(chunk)
        assert [e.doc for e in got] == [parse_event(raw).doc for raw in SSEBuffer().feed(chunk)]
        runs = [i for i in items if isinstance(i, TokenRun)]
        assert all(odd not in r.raw for r in runs) and sum(r.count for r in runs) == 2
    assert parse_event(bell).doc["choices"][0]["delta"]["content"] == "\x07ring"
