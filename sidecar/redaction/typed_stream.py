"""Split-safe redaction of typed event streams: the Responses API (``/v1/responses``, ``stream: true``).

A Responses stream is a sequence of typed events (``event: response.output_text.delta`` with
``{"type": ..., "item_id", "output_index", "content_index", "delta"}``), not chat chunks. Every event
that carries a string ``delta`` (output text, refusals, reasoning and its summaries, function-call
arguments, audio transcripts...) belongs to one text stream, keyed by its type and position; each
stream has its own ``StreamRedactor``, so a value split across deltas is caught as in chat streams,
and placeholders are restored where the caller's roles allow it (tool-call arguments too, so the
caller's function gets the real value). The matching ``.done`` event first releases what that
stream still holds (into the queued deltas, or as one more delta event of the same shape); its full
text is then redacted whole, which gives the same text as the deltas (any split equals the whole).
Every other event (``response.created``, ``response.completed`` with the whole response...) has all
of its strings and keys redacted, as a JSON answer has.

Events wait in one queue, in order, until their text is released: a delta whose text went out
unchanged goes on byte for byte; when a redaction or restore changes released text, the queued
events are sent at once, each carrying exactly what was released for it, and the stream is then
handled per event until its held tail is empty (``misaligned``). A delta event's ``logprobs`` go on
(token strings redacted) only with an event sent as it came; a rewritten event's are dropped, so
the tokens of an entity never get out another way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from ..sse import NOT_JSON, SSEEvent, SSEEvents, SSEReader, reserialized, with_data
from .streaming import StreamRedactor
from .walk import AnswerWalker

# A text stream: (event type without ".delta", item id, output index, content index, summary index).
StreamKey = tuple[str, Any, Any, Any, Any]

# Events waiting for their held text, at most (then they go out rewritten).
QUEUE_MAX = 256
_SKIP_DELTA = frozenset({"delta", "logprobs"})


def stream_key(kind: str, doc: dict[str, Any]) -> StreamKey:
    return (
        kind,
        _scalar(doc.get("item_id")),
        _scalar(doc.get("output_index")),
        _scalar(doc.get("content_index")),
        _scalar(doc.get("summary_index")),
    )


def _scalar(value: Any) -> Any:
    # Positions and ids are scalars in every known event; anything else must not be a dict key.
    return value if isinstance(value, (str, int)) else None


class _Waiting:
    """A queued event. ``key``/``text``: the delta it carries (None for an event that is ready);
    ``modified``: something else in it was redacted, so it is re-serialized."""

    __slots__ = ("doc", "event", "key", "modified", "text")

    def __init__(self, event: SSEEvent, doc: Any, key: StreamKey | None, text: str, modified: bool) -> None:
        self.event = event
        self.doc = doc
        self.key = key
        self.text = text
        self.modified = modified


class TypedStreamRedactor:
    """Redacts one typed SSE stream (see the module docstring). ``new_stream`` makes the
    ``StreamRedactor`` of one text stream, ``walker`` redacts the other strings of an event and
    ``text_out`` a whole text (both with restore as the caller may see)."""

    __slots__ = (
        "credit",
        "events",
        "last_delta",
        "misaligned",
        "new_stream",
        "queue",
        "reader",
        "streams",
        "text_out",
        "walker",
    )

    def __init__(
        self,
        events: SSEEvents,
        new_stream: Callable[[], StreamRedactor],
        walker: AnswerWalker,
        text_out: Callable[[str], str],
    ) -> None:
        self.events = events
        self.reader = SSEReader(events)
        self.new_stream = new_stream
        self.walker = walker
        self.text_out = text_out
        self.streams: dict[StreamKey, StreamRedactor] = {}
        self.queue: deque[_Waiting] = deque()
        # Per stream: characters released unchanged that belong to queued events.
        self.credit: dict[StreamKey, int] = {}
        self.misaligned: set[StreamKey] = set()
        # Per stream: the last delta event's document, the shape of a tail sent on its own.
        self.last_delta: dict[StreamKey, dict[str, Any]] = {}

    # -- the filter -------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        out: list[SSEEvent] = []
        for event in self.reader.feed(chunk):
            self._event(event, out)
        return self.events.publish(out)

    def flush(self) -> bytes:
        # The stream ended (or was cut): a partial event, then everything still held.
        out: list[SSEEvent] = []
        rest = self.reader.rest()
        if rest is not None:
            self._event(rest, out)
        for key in list(self.streams):
            self._release(key, out)
        self._send_all(out)
        return self.events.publish(out)

    # -- one event --------------------------------------------------------------------------------
    def _event(self, event: SSEEvent, out: list[SSEEvent]) -> None:
        doc = event.doc
        if doc is NOT_JSON:
            if event.data is not None and not event.done:
                event = self._text_event(event)
            self._ready(event, out)
            return
        try:
            kind = doc.get("type") if type(doc) is dict else None
            if type(kind) is str:
                if kind.endswith(".delta") and type(doc.get("delta")) is str:
                    self._delta(event, doc, stream_key(kind[:-6], doc), out)
                    return
                if kind.endswith(".done"):
                    key = stream_key(kind[:-5], doc)
                    if key in self.streams:
                        self._release(key, out)
            self._ready(self._walked(event, doc), out)
        except RecursionError:
            # Nested too deep to walk: not passed on unread, redacted as text.
            self._ready(self._text_event(event), out)

    def _text_event(self, event: SSEEvent) -> SSEEvent:
        """Data that is not JSON: redacted as text."""
        text = (event.data or b"").decode("utf-8", "replace")
        new = self.text_out(text)
        if new == text:
            return event
        return self.events.parse(with_data(event.raw, b"\ndata: ".join(new.encode().split(b"\n"))))

    def _walked(self, event: SSEEvent, doc: Any) -> SSEEvent:
        w = self.walker
        w.changed = False
        doc = w.any(doc)
        return reserialized(event, doc) if w.changed else event

    def _delta(self, event: SSEEvent, doc: dict[str, Any], key: StreamKey, out: list[SSEEvent]) -> None:
        w = self.walker
        w.changed = False
        doc = w.obj(doc, _SKIP_DELTA)  # ids and the type: cached after the first event
        modified = w.changed
        self.last_delta[key] = doc
        text: str = doc["delta"]
        sr = self.streams.get(key)
        if sr is None:
            sr = self.streams[key] = self.new_stream()
        got = sr.feed(text)
        if key in self.misaligned:
            # Held text belongs to events already sent: this event carries what is released now.
            self._send_all(out)
            doc["delta"] = got
            if not sr.held:
                self.misaligned.discard(key)
            out.append(self._rewritten(event, doc))
            return
        self.queue.append(_Waiting(event, doc, key, text, modified))
        if not sr.clean:
            self._send_all(out, key, got)
            return
        if got:
            self.credit[key] = self.credit.get(key, 0) + len(got)
        if len(self.queue) > QUEUE_MAX:
            self._send_all(out)
        else:
            self._send_ready(out)

    def _release(self, key: StreamKey, out: list[SSEEvent]) -> None:
        """The end of one text stream: what it still holds goes out before the event that ends it."""
        sr = self.streams.pop(key)
        tail = sr.flush()
        if key in self.misaligned or not sr.clean:
            self.misaligned.discard(key)
            self._send_all(out, key, tail)
        elif tail:
            self.credit[key] = self.credit.get(key, 0) + len(tail)
            self._send_ready(out)

    # -- the queue --------------------------------------------------------------------------------
    def _ready(self, event: SSEEvent, out: list[SSEEvent]) -> None:
        if self.queue:
            self.queue.append(_Waiting(event, event.doc, None, "", False))
            self._send_ready(out)
        else:
            out.append(event)

    def _send_ready(self, out: list[SSEEvent]) -> None:
        """Send the queued events, in order, up to the first whose text is not released yet."""
        queue = self.queue
        credit = self.credit
        while queue:
            item = queue[0]
            if item.key is not None:
                have = credit.get(item.key, 0)
                size = len(item.text)
                if have < size:
                    return
                credit[item.key] = have - size
                queue.popleft()
                out.append(self._as_sent(item))
                continue
            queue.popleft()
            out.append(item.event)

    def _send_all(self, out: list[SSEEvent], key: StreamKey | None = None, fresh: str = "") -> None:
        """Send every queued event now, each with the part of its text released so far, and
        ``fresh`` (released text that differs from what came in) with the last event of ``key``
        (or, when none is queued, in an event of its own shaped like that stream's last delta).
        Text still held then belongs to events already sent: those streams are misaligned."""
        credit = self.credit
        last = None
        if key is not None and fresh:
            for item in reversed(self.queue):
                if item.key == key:
                    last = item
                    break
        for item in self.queue:
            if item.key is None:
                out.append(item.event)
                continue
            have = credit.get(item.key, 0)
            size = len(item.text)
            released = min(have, size)
            credit[item.key] = have - released
            doc = item.doc
            rewritten = released < size or item is last
            if rewritten:
                doc["delta"] = item.text[:released] + (fresh if item is last else "")
                out.append(self._rewritten(item.event, doc))
            else:
                out.append(self._as_sent(item))
        self.queue.clear()
        credit.clear()
        if key is not None and fresh and last is None:
            doc = dict(self.last_delta.get(key) or {})
            doc["delta"] = fresh
            if doc.get("logprobs"):
                doc["logprobs"] = []
            kind = str(doc.get("type", "")).encode()
            out.append(self.events.parse(b"event: " + kind + b"\ndata: " + orjson.dumps(doc) + b"\n\n"))
        self.misaligned = {k for k, sr in self.streams.items() if sr.held}

    def _as_sent(self, item: _Waiting) -> SSEEvent:
        """A delta event whose text went out as it came: byte for byte unless something else in it
        was redacted (its logprobs' tokens are walked too)."""
        doc = item.doc
        logprobs = doc.get("logprobs")
        modified = item.modified
        if logprobs:
            w = self.walker
            w.changed = False
            w.logprobs(logprobs)
            modified = modified or w.changed
        return reserialized(item.event, doc) if modified else item.event

    @staticmethod
    def _rewritten(event: SSEEvent, doc: dict[str, Any]) -> SSEEvent:
        # The event's text differs from what the model wrote: its tokens' logprobs must not go out.
        if doc.get("logprobs"):
            doc["logprobs"] = []
        return reserialized(event, doc)
