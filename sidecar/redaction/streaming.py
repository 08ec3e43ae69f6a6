"""Streaming redaction of one text stream (one choice of an SSE answer).

An entity can arrive split across chunks (``138`` ``1234`` ``5678``). Each ``feed`` sends at once
everything that can no longer become part of an entity and holds back only the shortest tail that
could still grow into one (a partial match of any detector or of a placeholder). ``flush`` releases
the rest at the end of the stream, redacted as end of text.
"""

from __future__ import annotations

from .detectors import PLACEHOLDER_TYPE
from .engine import Redactor
from .operators import Session

# Already-sent text kept as left context: lookbehind fences and ``password=`` keywords before a
# held value must still be visible to the detectors.
CONTEXT_CHARS = 64


_RUN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-@:")


def _context_start(text: str, cut: int) -> int:
    """Keep ``CONTEXT_CHARS`` before the cut, extended to the start of the run of entity characters
    it falls in (up to 512), so detectors see the same left context as in the whole text."""
    start = max(0, cut - CONTEXT_CHARS)
    floor = max(0, cut - 512)
    while start > floor and text[start - 1] in _RUN:
        start -= 1
    return start


class StreamRedactor:
    __slots__ = ("_context", "_guard", "_pending", "limit", "redact", "redactor", "restore", "session")

    def __init__(
        self,
        redactor: Redactor,
        session: Session,
        *,
        restore: frozenset[str] | bool = False,
        limit: int = 16384,
        redact: bool = True,
    ) -> None:
        self.redactor = redactor
        # redact=False: only put placeholders back (response redaction switched off).
        self.redact = redact
        self.session = session
        self.restore = restore
        self.limit = limit
        self._context = ""
        self._pending = ""
        self._guard = 0  # end of the last entity sent, as an offset into the context

    @property
    def held(self) -> str:
        return self._pending

    def feed(self, delta: str) -> str:
        if not delta:
            return ""
        text = self._context + delta if not self._pending else self._context + self._pending + delta
        base = len(self._context)
        r = self.redactor
        cut = r.hold_from(text, base)
        if len(text) - cut > self.limit:
            cut = len(text)  # an entity this long is not plausible: stop holding, redact as text
        if cut <= base:
            self._pending = text[base:]
            return ""
        entities = self._find(text, base, self._guard)
        # An entity that runs past the cut is held whole.
        for ent in entities:
            if ent.start < cut < ent.end:
                cut = max(base, ent.start)
                break
        out = r.render(text, entities, self.session, response=True, restore=self.restore, start=base, end=cut)
        ctx_start = _context_start(text, cut)
        sent = [e.end for e in entities if e.end <= cut]
        self._guard = max(0, (sent[-1] if sent else self._guard) - ctx_start)
        self._context = text[ctx_start:cut]
        self._pending = text[cut:]
        return out

    def flush(self) -> str:
        if not self._pending:
            return ""
        text = self._context + self._pending
        base = len(self._context)
        guard = self._guard
        self._context = self._pending = ""
        self._guard = 0
        r = self.redactor
        entities = self._find(text, base, guard)
        return r.render(text, entities, self.session, response=True, restore=self.restore, start=base)

    def _find(self, text: str, base: int, guard: int) -> list:
        entities = self.redactor.find(text, response=True, pos=base, guard=guard)
        if not self.redact:
            entities = [e for e in entities if e.type == PLACEHOLDER_TYPE]
        return entities
