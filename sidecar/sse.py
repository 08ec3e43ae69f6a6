"""Server-Sent Events: incremental framing, and one parse per event shared by every filter that reads
streams.

The first stream filter splits the upstream bytes into events and parses each event's data once
(``SSEReader``); what it sends on, it publishes (``SSEEvents.publish``) on the request context
(``RequestContext.sse_events``), and the next filter's reader gets those very events back for those
very bytes instead of splitting and parsing them again. A filter that passes bytes through unchanged
publishes nothing (the registration still matches); a filter that changes bytes without publishing
only makes the next one parse for itself, never read a stale parse: a registration is used only for
the exact bytes it was made for.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .context import RequestContext


class SSEBuffer:
    """Splits a byte stream into complete events (each ending with a blank line).

    Incomplete trailing bytes stay buffered until the next ``feed``; ``rest`` returns them at the end.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buf + chunk if self._buf else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        self._buf = events.pop()
        return [event + b"\n\n" for event in events]

    def rest(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    @property
    def empty(self) -> bool:
        return not self._buf


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` payload of one event, or None when it has none."""
    if event.startswith(b"data:") and event.find(b"\n") == len(event) - 2:
        return event[5:-2].lstrip(b" ")  # the usual shape: one data line, nothing else
    parts = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in event.split(b"\n")]
    data = [p for p in parts if p is not None]
    if not data:
        return None
    return b"\n".join(data)


class _NotJSON:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_JSON"


# ``SSEEvent.doc`` of an event without data, of ``[DONE]`` and of data that is not JSON.
NOT_JSON: Any = _NotJSON()


class SSEEvent:
    """One complete event: ``raw``, its bytes exactly as they go on; ``data``, the joined ``data:``
    payload (None when it has none); ``doc``, that payload parsed as JSON (``NOT_JSON`` when there is
    none, for ``[DONE]`` and for data that is not JSON). Readers must not change ``doc``: the filter
    that rewrites an event publishes a new one."""

    __slots__ = ("data", "doc", "raw")

    def __init__(self, raw: bytes, data: bytes | None, doc: Any) -> None:
        self.raw = raw
        self.data = data
        self.doc = doc

    @property
    def done(self) -> bool:
        return self.data == b"[DONE]"


class TokenShape:
    """The bytes of a token event around its text: ``lead`` (``data: `` and the JSON up to the
    opening quote of one delta text field) and ``tail`` (from the closing quote to the blank line).
    Every event ``lead + middle + tail`` whose middle is plain characters and short escapes
    (``_PLAIN``: no quote, control character or lone backslash) parses to ``doc`` with ``middle``,
    decoded as a JSON string, as the text of ``choices[0].delta[key]``: proved once, when the shape
    is learned, by parsing a probe in the middle (the JSON lexer is then inside that very string
    after ``lead``, and such a middle keeps it there)."""

    __slots__ = ("doc", "fixed", "index", "key", "lead", "tail")

    def __init__(self, lead: bytes, tail: bytes, key: str, index: int, doc: dict[str, Any]) -> None:
        self.lead = lead
        self.tail = tail
        self.fixed = len(lead) + len(tail)
        self.key = key
        self.index = index
        self.doc = doc


class TokenRun:
    """Consecutive events of one ``TokenShape``, recognized by their bytes and never parsed:
    ``raw``, their bytes as they go on; ``middles``, each event's text as it stands in the JSON
    (UTF-8, with short escapes such as ``\\n`` when ``escaped``). A filter that sends only some of
    them on publishes a ``part``."""

    __slots__ = ("_ends", "_texts", "escaped", "middles", "raw", "shape")

    def __init__(self, raw: bytes, shape: TokenShape, middles: list[bytes], escaped: bool = False) -> None:
        self.raw = raw
        self.shape = shape
        self.middles = middles
        self.escaped = escaped
        self._texts: list[str] | None = None
        self._ends: list[int] | None = None

    @property
    def count(self) -> int:
        return len(self.middles)

    @property
    def texts(self) -> list[str]:
        texts = self._texts
        if texts is None:
            if self.escaped:
                # Each middle is a JSON string's inside: all of them decoded in one parse.
                texts = orjson.loads(b'["' + b'","'.join(self.middles) + b'"]')
            else:
                texts = [m.decode() for m in self.middles]
            self._texts = texts
        return texts

    def text(self) -> str:
        """All the events' text, joined."""
        if self.escaped:
            return "".join(self.texts)  # decoded once (by the reader), not parsed again
        joined = b"".join(self.middles)
        return joined.decode("ascii") if joined.isascii() else "".join(self.texts)

    def byte_end(self, i: int) -> int:
        """Where event ``i`` ends in ``raw``."""
        ends = self._ends
        if ends is None:
            ends = self._ends = list(accumulate(map(len, self.middles)))
        return ends[i] + (i + 1) * self.shape.fixed

    def part(self, start: int, stop: int) -> TokenRun:
        """Events ``start`` to ``stop`` (exclusive) as a run of their own."""
        if start == 0 and stop == len(self.middles):
            return self
        begin = self.byte_end(start - 1) if start else 0
        part = TokenRun(
            self.raw[begin : self.byte_end(stop - 1)], self.shape, self.middles[start:stop], self.escaped
        )
        if self._texts is not None:
            part._texts = self._texts[start:stop]
        return part

    def event(self, i: int) -> SSEEvent:
        """Event ``i``, parsed (for a filter that must handle it on its own)."""
        begin = self.byte_end(i - 1) if i else 0
        return _one_line_event(self.raw[begin : self.byte_end(i)])

    def events(self) -> list[SSEEvent]:
        return [self.event(i) for i in range(len(self.middles))]


# Streamed text fields of a chat delta (each its own text stream for the redactor).
DELTA_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")
_RUN_KEYS = frozenset(DELTA_TEXT_KEYS)
# A token's text as it stands in the JSON string: characters that stand as they are (no quote,
# backslash or control character) and the short escapes an upstream writes for line breaks, tabs,
# quotes and backslashes (``\n``, ``\"``...), at least one character. This is the JSON string grammar
# but for ``\u`` escapes (a lone surrogate does not parse): the lexer is inside the string after
# ``lead`` and still there after such a middle, so the ``"`` that starts ``tail`` closes it. The
# lookahead lets the first character be a backslash only as part of an escape (the unrolled loop
# then needs it; nothing but ``"`` may follow a middle).
_PLAIN = rb'(?=[^"\x00-\x1f])[^"\\\x00-\x1f]*(?:\\[nrtbf"\\/][^"\\\x00-\x1f]*)*'
_PLAIN_TEXT = re.compile(_PLAIN)
# Runs of token events: the first event's bytes before its text (group 1: ``data: `` and the JSON up
# to the opening quote of a delta text field) and after it (group 2), repeated byte for byte by each
# following event around its own plain text (back-references). A run starts at an event's start:
# the chunk's first byte (``_RUN_FIRST``, anchored) or after a blank line (``_RUN_NEXT``; its
# look-behind follows the literal, so a line full of ``data: `` costs one scan, not one per copy).
_RUN_BODY = (
    rb'[^\n]*?"(?:'
    + "|".join(DELTA_TEXT_KEYS).encode()
    + rb')":")'
    + _PLAIN
    + rb'("[^\n]*\n\n)(?:\1'
    + _PLAIN
    + rb"\2)*"
)
_RUN_FIRST = re.compile(rb"(data: " + _RUN_BODY)
_RUN_NEXT = re.compile(rb"(data: (?<=\n\ndata: )" + _RUN_BODY)

# A stream whose token events keep changing shape stops learning after this many shapes.
_SHAPES_MAX = 8
# Events a stream may show without teaching a shape before the reader stops looking (a chat stream
# teaches it with its first token, after the role event).
_LEARN_TRIES = 32
# Events looked at (from the end of a read) for a shape to learn: a read ends with tokens, or with
# the finishing event and ``[DONE]`` after them.
_LEARN_FROM = 4


def token_field(doc: dict[str, Any]) -> tuple[int, str, str] | None:
    """``(index, key, text)`` when ``doc`` is a plain token event: one choice (an int index, no
    logprobs, not finishing, no ``text``) whose delta is one non-empty text field; else None."""
    choices = doc.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if (
        type(choice) is not dict
        or choice.get("finish_reason") is not None
        or choice.get("logprobs") is not None
        or "text" in choice
    ):
        return None
    delta = choice.get("delta")
    index = choice.get("index", 0)
    if type(delta) is not dict or len(delta) != 1 or type(index) is not int:
        return None
    ((key, value),) = delta.items()
    if key not in _RUN_KEYS or type(value) is not str or not value:
        return None
    return index, key, value


def equal_with_text(doc: dict[str, Any], key: str, text: str, other: Any) -> bool:
    """Whether the token event ``doc`` with ``text`` in place of its text (``choices[0].delta[key]``)
    equals ``other``; ``doc`` is left as it was."""
    delta = doc["choices"][0]["delta"]
    value = delta[key]
    delta[key] = text
    try:
        return doc == other
    finally:
        delta[key] = value


def learn_shape(event: SSEEvent) -> TokenShape | None:
    """The ``TokenShape`` of ``event`` when it is a plain token event (``token_field``) on one data
    line, without usage; None otherwise (or when the upstream's JSON cannot be proved to have that
    shape)."""
    doc = event.doc
    if type(doc) is not dict or doc.get("usage") is not None:
        return None
    field = token_field(doc)
    if field is None:
        return None
    index, key, value = field
    raw = event.raw
    data = event.data
    if data is None or raw != b"data: " + data + b"\n\n":
        return None
    encoded = orjson.dumps(value)  # the upstream may escape differently: then nothing is learned
    pos = data.find(encoded)
    if pos < 0 or data.find(encoded, pos + 1) >= 0:
        return None
    prefix, suffix = data[: pos + 1], data[pos + len(encoded) - 1 :]
    try:
        probe = orjson.loads(prefix + b"probe" + suffix)
    except orjson.JSONDecodeError:
        return None
    if not equal_with_text(doc, key, "probe", probe):
        return None
    return TokenShape(b"data: " + prefix, suffix + b"\n\n", key, index, doc)


class SSEEvents:
    """The parse of one response's event stream, shared by its filters. ``parsed`` counts the events
    split and parsed, ``recognized`` those taken in token runs without a parse (each event is one
    or the other, once, when every filter shares)."""

    __slots__ = ("_chunk", "_events", "parsed", "recognized")

    def __init__(self) -> None:
        self._chunk: bytes | None = None
        self._events: list[Any] = []
        self.parsed = 0
        self.recognized = 0

    def publish(self, events: list[Any]) -> bytes:
        """The bytes of ``events`` (events and token runs: what the filter sends on), registered
        with their parse."""
        if not events:
            return b""
        chunk = events[0].raw if len(events) == 1 else b"".join([e.raw for e in events])
        self._chunk = chunk
        self._events = events
        return chunk

    def take(self, chunk: bytes) -> list[Any] | None:
        """The published items when ``chunk`` is exactly the published bytes, else None."""
        known = self._chunk
        if known is not None and (chunk is known or chunk == known):
            return self._events
        return None

    def parse(self, raw: bytes) -> SSEEvent:
        self.parsed += 1
        return parse_event(raw)


def _one_line_event(raw: bytes) -> SSEEvent:
    """``parse_event`` of an event that is one ``data:`` line."""
    data = raw[5:-2].lstrip(b" ")
    doc = NOT_JSON
    if data != b"[DONE]":
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return SSEEvent(raw, data, doc)


def parse_event(raw: bytes) -> SSEEvent:
    data = event_data(raw)
    doc = NOT_JSON
    if data is not None and data != b"[DONE]":
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return SSEEvent(raw, data, doc)


def shared_events(ctx: RequestContext) -> SSEEvents:
    """This response's shared parse (made by the first filter that asks)."""
    events = ctx.sse_events
    if events is None:
        events = ctx.sse_events = SSEEvents()
    return events


class SSEReader:
    """One filter's view of the stream: the complete events of each chunk it is fed, taken from the
    shared parse when the chunk is what the previous filter published, else split and parsed here.

    ``items`` also gives runs of token events (``TokenRun``) recognized by their bytes once the
    reader has learned their shape from one parsed event (``learn_shape``); ``feed`` gives each
    event parsed, for filters that read every event on its own."""

    __slots__ = ("_buf", "_shapes", "_tries", "shape", "shared")

    def __init__(self, shared: SSEEvents | None = None) -> None:
        self.shared = shared if shared is not None else SSEEvents()
        self._buf = SSEBuffer()
        # The token shape runs are recognized by (learned from this stream's events).
        self.shape: TokenShape | None = None
        self._shapes = 0
        self._tries = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        items = self.items(chunk)
        for item in items:
            if type(item) is TokenRun:
                return [e for item in items for e in (item.events() if type(item) is TokenRun else (item,))]
        return items

    def items(self, chunk: bytes) -> list[Any]:
        """The events of ``chunk`` in order: ``SSEEvent`` each, or ``TokenRun`` for consecutive
        token events of the learned shape."""
        buf = self._buf
        if buf._buf:
            # The start of an event came in the last read: this read starts with it now.
            chunk = buf.rest() + chunk
        else:
            known = self.shared._chunk
            if known is not None and (chunk is known or chunk == known):
                return self.shared._events
        shape = self.shape
        if (shape is None and self._shapes >= _SHAPES_MAX) or b"\r" in chunk:
            return self._parse(chunk)  # a stream without token runs
        if shape is not None:
            # The usual read at many connections: one token event, checked without the run regex.
            lead, tail = shape.lead, shape.tail
            if (
                chunk.startswith(lead)
                and chunk.endswith(tail)
                and len(chunk) > shape.fixed
                and _PLAIN_TEXT.fullmatch(chunk, len(lead), len(chunk) - len(tail)) is not None
            ):
                run = self._run(chunk, shape, [chunk[len(lead) : len(chunk) - len(tail)]])
                return [run] if run is not None else self._parse(chunk)
            return self._with_runs(chunk, shape)
        # The usual read at many connections: one whole event, one data line. Parsed here
        # without the general split (same result as ``SSEBuffer.feed`` + ``parse_event``).
        if chunk.startswith(b"data:") and chunk.find(b"\n") == len(chunk) - 2 and chunk[-2:] == b"\n\n":
            self.shared.parsed += 1
            event = _one_line_event(chunk)
            self._learn((event,))
            return [event]
        # No shape yet: learn it from the first events (one by one: the first token event
        # teaches it), then take the rest of the read as runs.
        head: list[SSEEvent] = []
        if self._shapes < _SHAPES_MAX:
            pos = 0
            for _ in range(_LEARN_FROM):
                end = chunk.find(b"\n\n", pos) + 2
                if end < 2 or end >= len(chunk):
                    break
                head += self._parse(chunk[pos:end])
                pos = end
                self._learn(head[-1:])
                if self.shape is not None:
                    return head + self._with_runs(chunk[pos:], self.shape)
            chunk = chunk[pos:]
        rest = self._parse(chunk)
        self._learn(rest)
        return head + rest if head else rest

    def _parse(self, chunk: bytes) -> list[SSEEvent]:
        events = self._buf.feed(chunk)
        self.shared.parsed += len(events)
        # ``parse_event`` inlined for the usual shape (one data line): this runs once per token.
        return [
            _one_line_event(raw)
            if raw.startswith(b"data:") and raw.find(b"\n") == len(raw) - 2
            else parse_event(raw)
            for raw in events
        ]

    def _with_runs(self, chunk: bytes, shape: TokenShape) -> list[Any]:
        """``chunk`` (starting at an event) as runs of ``shape`` and the parsed events around them."""
        out: list[Any] = []
        pos = 0
        lead, tail = shape.lead, shape.tail
        first = _RUN_FIRST.match(chunk)
        matches = _RUN_NEXT.finditer(chunk, first.end() if first is not None else 0)
        for m in (first, *matches) if first is not None else matches:
            if m.group(1) != lead or m.group(2) != tail:
                continue
            start, end = m.span()
            if start > pos:
                gap = self._parse(chunk[pos:start])  # whole events: the buffer stays empty
                self._learn(gap)
                out += gap
            run = chunk[start:end] if start or end != len(chunk) else chunk
            # Each event is one line (a line break in a text stands escaped): split at the blank
            # lines (a two-byte needle splits several times faster than the ~200 bytes between texts).
            head, cut = len(lead), len(tail) - 2
            token_run = self._run(run, shape, [line[head:-cut] for line in run.split(b"\n\n")[:-1]])
            if token_run is not None:
                out.append(token_run)
            else:
                out += self._parse(run)
            pos = end
        if pos < len(chunk):
            rest = self._parse(chunk[pos:] if pos else chunk)
            self._learn(rest)
            out += rest
        return out

    def _run(self, raw: bytes, shape: TokenShape, middles: list[bytes]) -> TokenRun | None:
        """The run of these events; None when a text is not UTF-8 (then its events are parsed, and
        the parse refuses them as JSON, as for any event)."""
        # A backslash in the bytes between the texts (an escaped id) is not one in a text.
        escaped = b"\\" in raw and any(b"\\" in m for m in middles)
        run = TokenRun(raw, shape, middles, escaped)
        if escaped or not raw.isascii():
            try:
                run.texts  # noqa: B018 (decoded now, once: a text that does not decode is no run)
            except (UnicodeDecodeError, orjson.JSONDecodeError):
                return None
        self.shared.recognized += len(middles)
        return run

    def _learn(self, events: list[SSEEvent] | tuple[SSEEvent, ...]) -> None:
        """Learn the token shape from one of the last events, a plain token event without it. A
        stream that has taught none in its first ``_LEARN_TRIES`` events (typed Responses events,
        tool calls) is not asked again."""
        if self._shapes >= _SHAPES_MAX or not events:
            return
        shape = self.shape
        for event in events[-1 : -_LEARN_FROM - 1 : -1]:
            raw = event.raw
            if shape is not None and raw.startswith(shape.lead) and raw.endswith(shape.tail):
                return  # the shape holds (this event has a quote or escape in its text)
            learned = learn_shape(event) if raw.startswith(b"data: {") else None
            if learned is not None:
                self.shape = learned
                self._shapes += 1
                return
        if shape is None:
            self._tries += len(events)
            if self._tries >= _LEARN_TRIES:
                self._shapes = _SHAPES_MAX

    def rest(self) -> SSEEvent | None:
        """The incomplete event left at the end of the stream, if any."""
        raw = self._buf.rest()
        return self.shared.parse(raw) if raw else None


def reserialized(event: SSEEvent, doc: Any) -> SSEEvent:
    """The event carrying ``doc`` now (other fields such as ``id:`` and ``event:`` kept), with its parse."""
    data = orjson.dumps(doc)
    return SSEEvent(with_data(event.raw, data), data, doc)


def with_data(event: bytes, data: bytes) -> bytes:
    """The event with its data replaced; other fields (id:, event:, comments) are kept."""
    lines = event.rstrip(b"\n").split(b"\n")
    out: list[bytes] = []
    placed = False
    for line in lines:
        if line.startswith(b"data:"):
            if not placed:
                out.append(b"data: " + data)
                placed = True
        else:
            out.append(line)
    return b"\n".join(out) + b"\n\n"
