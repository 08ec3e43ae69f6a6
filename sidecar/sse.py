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


class SSEEvents:
    """The parse of one response's event stream, shared by its filters. ``parsed`` counts the events
    split and parsed (once each when every filter shares)."""

    __slots__ = ("_chunk", "_events", "parsed")

    def __init__(self) -> None:
        self._chunk: bytes | None = None
        self._events: list[SSEEvent] = []
        self.parsed = 0

    def publish(self, events: list[SSEEvent]) -> bytes:
        """The bytes of ``events`` (what the filter sends on), registered with their parse."""
        if not events:
            return b""
        chunk = events[0].raw if len(events) == 1 else b"".join([e.raw for e in events])
        self._chunk = chunk
        self._events = events
        return chunk

    def take(self, chunk: bytes) -> list[SSEEvent] | None:
        """The published events when ``chunk`` is exactly the published bytes, else None."""
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
    shared parse when the chunk is what the previous filter published, else split and parsed here."""

    __slots__ = ("_buf", "shared")

    def __init__(self, shared: SSEEvents | None = None) -> None:
        self.shared = shared if shared is not None else SSEEvents()
        self._buf = SSEBuffer()

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf
        shared = self.shared
        if not buf._buf:
            known = shared._chunk
            if known is not None and (chunk is known or chunk == known):
                return shared._events
            # The usual read at many connections: one whole event, one data line. Parsed here
            # without the general split (same result as ``SSEBuffer.feed`` + ``parse_event``).
            if chunk.startswith(b"data:") and chunk.find(b"\n") == len(chunk) - 2 and chunk[-2:] == b"\n\n":
                shared.parsed += 1
                return [_one_line_event(chunk)]
        events = buf.feed(chunk)
        shared.parsed += len(events)
        # ``parse_event`` inlined for the usual shape (one data line): this runs once per token.
        return [
            _one_line_event(raw)
            if raw.startswith(b"data:") and raw.find(b"\n") == len(raw) - 2
            else parse_event(raw)
            for raw in events
        ]

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
