"""Redact stage: PII never reaches the model, and answers are redacted (and de-pseudonymized).

Requests: by construction, every string and every object key of any JSON body the sidecar may
forward (under ``/v1/``, and vLLM's root ``/tokenize``, ``/detokenize``, ``/pooling``) is redacted
(``sidecar.redaction.walk``): only a closed set of identifier fields (``model``, ``role``, part/tool
``type``, mode enums, ``logit_bias`` token ids) is exempt, and those are validated so that they
cannot carry text. Uploads (``/v1/audio/transcriptions``) are multipart forms: every text field and
the file's name are redacted, the file passes byte for byte, and the form is always rebuilt
(``sidecar.multipart``). Known fields of every built-in route's schema are type-checked;
a body that cannot be fully inspected (wrong types, too deep, too much text) is refused (400/413)
with the field path, never forwarded. With the default policy values become placeholders
(``<EMAIL_1>``) and the mapping stays in memory for this request; the answer gets the originals back
when the caller's roles allow it.

Answers: every string (and key) of a JSON answer or SSE event is redacted, identifiers included
(cached per value, so the ids that repeat in every event cost a lookup). In streams the text fields
of a choice (``content``, ``reasoning_content``, ``reasoning``, ``refusal``, ``text``, tool-call
arguments) go through a per-choice ``StreamRedactor`` holding back only a tail that could still grow
into an entity; other strings are redacted per event. Logprobs: ``bytes`` arrays dropped, each token
redacted, and a choice whose text was rewritten or is held back gets ``logprobs: null``. Untouched
events pass byte for byte.

For metrics and audit: ``ctx.redactions`` (type -> count, request and answer together) and
``ctx.redaction`` (``context.RedactionState``): ``restored`` (placeholders put back) and ``for_log``,
which turns any text of this request (e.g. the answer as the client got it, with restored values)
back into its redacted form for audit records and logs.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from collections import deque
from itertools import accumulate
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, unquote_plus

import orjson

from custos.errors import ProxyError, bad_request

from ..context import FORM_ROUTES, RequestContext, proxied
from ..multipart import Form
from ..redaction.config import RedactionConfig
from ..redaction.engine import Redactor
from ..redaction.operators import Session, load_hash_key
from ..redaction.policy import load_policy
from ..redaction.streaming import StreamRedactor, next_trigger
from ..redaction.typed_stream import TypedStreamRedactor
from ..redaction.walk import URL_PATH, AnswerWalker, Walker, learn_clean, walk_form, walk_request
from ..sse import (
    DELTA_TEXT_KEYS,
    NOT_JSON,
    SSEEvent,
    SSEEvents,
    SSEReader,
    TokenRun,
    TokenShape,
    equal_with_text,
    reserialized,
    shared_events,
    token_field,
    with_data,
)
from ..stage import ResponseFilter, Stage, StageEnv

log = logging.getLogger("custos.redact")

# Bodies above this many bytes are redacted in a worker thread so one huge request does not stall
# every other stream on the event loop for tens of milliseconds.
_THREAD_CHARS = 256 * 1024

# Streamed text fields of a delta, each with its own holdback.
_TEXT_KEYS = DELTA_TEXT_KEYS
_NO_SKIP: frozenset[str] = frozenset()
_SKIP_ARGS = frozenset({"arguments"})
_SKIP_FUNCTION = frozenset({"function"})
_SKIP_LOGPROBS = frozenset({"logprobs"})
_SKIP_TEXT = frozenset({"logprobs", "text"})
_SKIP_DELTA = frozenset({"delta", "logprobs"})
_SKIP_DELTA_TEXT = frozenset({"delta", "logprobs", "text"})
# Answers streamed as typed events (the Responses API) rather than chat chunks.
_TYPED_STREAMS = frozenset({"/v1/responses"})
# Events waiting for their held text, at most (then they go out rewritten, as without the queue).
_QUEUE_MAX = 256


class _State:
    """One request's redaction: its pseudonym session and the entity types the caller may see
    restored. Other stages see it as ``ctx.redaction`` (``context.RedactionState``)."""

    __slots__ = ("redactor", "restore", "session")

    def __init__(self, session: Session, restore: frozenset[str] | bool, redactor: Redactor) -> None:
        self.session = session
        self.restore = restore
        self.redactor = redactor

    @property
    def restored(self) -> int:
        return self.session.restored

    def for_log(self, text: str) -> str:
        # Same session: restored values map back to the very placeholders the model saw.
        return self.redactor.redact(text, self.session)


class RedactStage(Stage):
    name = "redact"

    def __init__(self, rc: RedactionConfig, state_dir: Path) -> None:
        self.config = rc
        # Answer keys and identifier values seen to redact to themselves (AnswerWalker.schema), and
        # the request paths and model names that did (``walk.learn_clean``): each direction its own,
        # as a policy may redact answers differently.
        self.schema_words: set[str] = set()
        self.known_request: set[str] = set()
        policy = load_policy(rc.policy_file)
        key_file = rc.hash_key_file or (state_dir / "redaction.key")
        key = load_hash_key(rc.hash_key.get_secret_value() if rc.hash_key else None, key_file)
        self.policy = policy
        self.redactor = Redactor(policy, key)
        if rc.response:
            self.redactor.prepare_streaming()
        log.info(
            "PII redaction on: policy %s, %d custom detectors; request=%s response=%s restore=%s",
            rc.policy_file or "built-in",
            len(policy.custom),
            rc.request,
            rc.response,
            rc.restore,
        )

    # -- requests ---------------------------------------------------------------------------------
    async def on_request(self, ctx: RequestContext) -> None:
        if not proxied(ctx.path):
            return
        if self.config.request:
            self._check_url(ctx)
        # Every body that may go upstream (/v1/ routes known or not, vLLM's root routes): what cannot
        # be inspected is not forwarded.
        if not ctx.body:
            return
        session = Session()
        ctx.redactions = session.counts  # live: answer-side counts land here too
        roles = ctx.identity.roles if ctx.identity is not None else None
        restore = self.policy.restore_types(roles) if self.config.restore else False
        ctx.redaction = _State(session, restore, self.redactor)
        if not self.config.request:
            return
        if ctx.path in FORM_ROUTES:
            # An upload: its text fields walked, then always rebuilt, so the upstream reads exactly
            # the parts that were walked (sidecar.multipart).
            form = ctx.form  # 400 when it cannot be read whole
            self.redact_body(ctx.path, form, session)
            ctx.set_body(*form.encode())
            return
        body = ctx.json  # 400 when the body is not JSON
        if body is None:
            return
        if len(ctx.body) > _THREAD_CHARS:
            new = await asyncio.to_thread(self.redact_body, ctx.path, body, session)
        else:
            new = self.redact_body(ctx.path, body, session)
        # Always re-serialized, even when nothing changed: the upstream then reads exactly the
        # document that was walked. The client's bytes may say more than the parse kept (a key given
        # twice: the parser keeps the last value, the bytes carry both).
        ctx.set_json(body if new is None else new)

    def _check_url(self, ctx: RequestContext) -> None:
        """The path and query string are forwarded as they are: personal data there is refused."""
        known = self.known_request
        for name, raw in (("path", ctx.path), ("query", ctx.query.decode("latin-1"))):
            if not raw or raw in known:
                continue
            text = unquote_plus(raw) if name == "query" else unquote(raw)
            if self.redactor.redact(text) != text:
                raise bad_request(f"The request {name} must not carry personal data.", param=name)
            if name == "path":
                learn_clean(known, raw, URL_PATH)  # no '%': the text checked is the path itself

    def redact_body(self, path: str, body: Any, session: Session) -> Any:
        """The redacted body (changed in place where possible; a ``Form`` always in place), or None
        when nothing changed. Raises ``ProxyError`` (400/413) for a body that cannot be fully
        inspected."""
        redact = self.redactor.redact
        cfg = self.config
        walker = Walker(
            lambda text: redact(text, session),
            max_chars=cfg.max_request_chars,
            max_strings=cfg.max_strings,
            max_depth=cfg.max_depth,
            known=self.known_request,
        )
        out = walk_form(path, body, walker) if isinstance(body, Form) else walk_request(path, body, walker)
        return out if walker.changed else None

    # -- responses --------------------------------------------------------------------------------
    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None:
        # Only on_request sets ctx.redaction, always to a _State.
        state = cast("_State | None", ctx.redaction)
        if state is None or ctx.upstream_status is None or not 200 <= ctx.upstream_status < 300:
            return None
        if not self.config.response and state.restore is False:
            return None
        if ctx.response_kind == "json":
            return _JSONFilter(self, state)
        if ctx.response_kind == "text":
            return _TextFilter(self, state)
        if ctx.response_kind == "sse":
            if ctx.path in _TYPED_STREAMS:
                return TypedStreamRedactor(
                    shared_events(ctx),
                    lambda: self.stream_redactor(state),
                    self.answer_walker(state),
                    lambda text: self.text_out(text, state),
                )
            return _SSEFilter(self, state, shared_events(ctx))
        if ctx.response_kind == "empty":
            return None  # no body: nothing to inspect
        # Audio, images, anything binary: what cannot be inspected is not forwarded.
        raise ProxyError(
            502,
            "The upstream model server answered with a content type the sidecar cannot inspect.",
            type="upstream_error",
            code="upstream_content_type",
        )

    def stream_redactor(self, state: _State) -> StreamRedactor:
        """The redactor of one streamed text field: holds back only what could still grow into an
        entity, restores placeholders as the caller may see them."""
        cfg = self.config
        return StreamRedactor(
            self.redactor,
            state.session,
            restore=state.restore,
            limit=cfg.max_holdback_chars,
            redact=cfg.response,
        )

    def text_out(self, text: str, state: _State) -> str:
        """A complete answer text: PII the model wrote is redacted, our placeholders restored."""
        if self.config.response:
            return self.redactor.redact(text, state.session, response=True, restore=state.restore)
        return self._restore_only(text, state)

    def answer_walker(self, state: _State) -> AnswerWalker:
        """Redacts every string of an answer document as ``text_out`` does."""
        return AnswerWalker(lambda text: self.text_out(text, state), self.schema_words)

    def _restore_only(self, text: str, state: _State) -> str:
        r = self.redactor
        ents = [e for e in r.find(text, response=True) if e.type == "__placeholder__"]
        return r.render(text, ents, state.session, response=True, restore=state.restore) if ents else text


def _choice_rest(
    w: AnswerWalker, choice: dict[str, Any], skip: frozenset[str], touched: bool
) -> dict[str, Any]:
    """The rest of a choice, after its text fields: every other string, then the logprobs rule."""
    w.changed = False
    choice = w.obj(choice, skip | {"logprobs"})
    touched = touched or w.changed
    logprobs = choice.get("logprobs")
    if logprobs is not None:
        if touched:
            # Token text of a redacted (or held back) entity must not get out by another way.
            choice["logprobs"] = None
            w.changed = True
        else:
            w.logprobs(logprobs)
    return choice


class _WholeAnswer(ResponseFilter):
    """An answer the forward step reads whole before filtering (JSON, text): ``feed`` gets the body."""

    __slots__ = ("stage", "state")

    def __init__(self, stage: RedactStage, state: _State) -> None:
        self.stage = stage
        self.state = state

    def as_text(self, chunk: bytes, text: str) -> bytes:
        new = self.stage.text_out(text, self.state)
        return chunk if new == text else new.encode()


class _TextFilter(_WholeAnswer):
    """A whole text answer (``text/plain``, SubRip or WebVTT transcriptions, vLLM's LoRA replies),
    redacted as one text."""

    __slots__ = ()

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise ProxyError(
                502,
                "The upstream model server answered with text the sidecar cannot decode as UTF-8.",
                type="upstream_error",
                code="upstream_content_type",
            ) from None
        return self.as_text(chunk, text)


class _JSONFilter(_WholeAnswer):
    __slots__ = ()

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        try:
            return self._walk(chunk, orjson.loads(chunk))
        except (orjson.JSONDecodeError, RecursionError):
            # Not JSON after all (or nested too deep to walk): not passed on unread, redacted as text.
            return self.as_text(chunk, chunk.decode("utf-8", "replace"))

    def _walk(self, chunk: bytes, doc: Any) -> bytes:
        w = self.stage.answer_walker(self.state)
        changed = False
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if isinstance(choices, list):
            for i, choice in enumerate(choices):
                if not isinstance(choice, dict):
                    w.changed = False
                    choices[i] = w.any(choice)
                    changed = changed or w.changed
                    continue
                # Text fields first (message content, reasoning, refusal, tool calls, text): any
                # change there nulls the choice's logprobs.
                w.changed = False
                message = choice.get("message")
                if isinstance(message, dict):
                    choice["message"] = w.obj(message)
                text = choice.get("text")
                if isinstance(text, str) and text:
                    choice["text"] = w.text(text)
                touched = w.changed
                choices[i] = _choice_rest(w, choice, frozenset({"message", "text"}), touched)
                changed = changed or touched or w.changed
            w.changed = False
            out = w.obj(doc, frozenset({"choices"}))
        else:
            w.changed = False
            out = w.any(doc)
        if not (changed or w.changed):
            return chunk
        return orjson.dumps(out)


class _Queued:
    """An event waiting for its text to be released: its doc (None for an event of a token run, not
    parsed unless it must be rewritten), its text fields ``(choice position, key, stream, text)``
    and whether anything else in it was redacted (then it is re-serialized)."""

    __slots__ = ("doc", "event", "modified", "pieces")

    def __init__(self, event: SSEEvent | TokenRun, doc: Any, pieces: list[_Piece], modified: bool) -> None:
        self.event = event
        self.doc = doc
        self.pieces = pieces
        self.modified = modified


# (position in ``choices``, key in the choice or its delta, stream, text)
_Piece = tuple[int, str, tuple[int, str], str]


def _parsed(event: SSEEvent | TokenRun) -> Any:
    """The doc of a queued event: a token run's one event is parsed here, when it must change."""
    return event.doc if type(event) is SSEEvent else event.event(0).doc


class _SSEFilter(ResponseFilter):
    """Per choice index and text field, a ``StreamRedactor``; every other string of an event is
    redacted per event.

    Fast path: an event whose choices carry only text fields (no logprobs, no tool calls) waits in a
    queue until its redactors have released all of its text; when that text went out unchanged (the
    redactor's ``clean``) and nothing else in the event changed, the event goes out as it came, byte
    for byte, parsed once (``RequestContext.sse_events``). ``credit`` counts, per stream, the
    characters released unchanged that belong to queued events. Anything else (text redacted or
    restored, logprobs, tool calls, a stream whose held text belongs to events already sent, i.e. in
    ``misaligned``) sends the queued events out at once, rewritten to carry exactly what was released
    (``_flush_queue``), and the event is handled per event as before (``_json_event``).

    Token events (one choice, one text field, the rest as in the last event that walked clean) come
    from the reader as runs recognized by their bytes (``sse.TokenRun``), never parsed: once the
    run's shape is ``approved`` against the skeleton, the run's text goes through its redactor in
    one feed, and the events whose text was released unchanged go out as the run's bytes
    (``_run``). A chunk of one event feeds its text to the redactor at once instead of batching it
    (``single``): at many connections most reads carry one event."""

    __slots__ = (
        "approved",
        "batch",
        "batch_stream",
        "credit",
        "events",
        "logprobs",
        "misaligned",
        "queue",
        "reader",
        "single",
        "skeleton",
        "stage",
        "state",
        "streams",
        "template",
        "walker",
    )

    def __init__(self, stage: RedactStage, state: _State, events: SSEEvents) -> None:
        self.stage = stage
        self.state = state
        self.events = events
        self.reader = SSEReader(events)
        self.streams: dict[tuple[int, str], StreamRedactor] = {}
        self.template: dict[str, Any] | None = None
        # Per choice index: logprobs delayed while that choice's text is held back.
        self.logprobs: dict[int, _Pending] = {}
        self.walker = stage.answer_walker(state)
        self.queue: deque[_Queued] = deque()
        self.credit: dict[tuple[int, str], int] = {}
        self.misaligned: set[tuple[int, str]] = set()
        # The last fast-path event with its text fields blanked, after its strings walked unchanged.
        self.skeleton: Any = None
        # Prose deltas of one stream, queued and fed as one at the end of the chunk (``_settle``).
        self.batch: list[str] = []
        self.batch_stream: tuple[int, str] = (0, "")
        # The chunk being fed holds one event (then nothing is batched).
        self.single = False
        # The reader's token shape, once its event matched the skeleton (``_approve``).
        self.approved: TokenShape | None = None

    def _stream(self, index: int, key: str) -> StreamRedactor:
        sr = self.streams.get((index, key))
        if sr is None:
            sr = self.streams[(index, key)] = self.stage.stream_redactor(self.state)
        return sr

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        out: list[Any] = []
        items = self.reader.items(chunk)
        self.single = len(items) == 1
        for item in items:
            if type(item) is TokenRun:
                self._run(item, out)
            else:
                self._event(item, out)
        if self.batch:
            self._settle(out)
        return self.events.publish(out)

    def flush(self) -> bytes:
        # The stream ended without [DONE] (or was cut): a partial event, then what is still held.
        out: list[SSEEvent] = []
        if self.batch:
            self._settle(out)
        rest = self.reader.rest()
        if rest is not None:
            self._event(rest, out)
        self._finish(out)
        return self.events.publish(out)

    # -- one event --------------------------------------------------------------------------------
    def _event(self, event: SSEEvent, out: list[SSEEvent]) -> None:
        doc = event.doc
        if doc is NOT_JSON:
            if self.batch:
                self._settle(out)
            if event.data is None:  # a comment, a keep-alive: in its place in the order
                self._enqueue(_Queued(event, doc, [], False), out)
            elif event.done:
                self._finish(out)
                out.append(event)
            else:
                self._text_event(event, out)
            return
        try:
            if type(doc) is dict and self._token_event(event, doc, out):
                return
            if self.batch:
                self._settle(out)
            if self._simple(doc):
                self._fast_event(event, doc, out)
                return
            self._flush_queue(out)
            out.append(self._json_event(event, doc))
            self.misaligned = {key for key, sr in self.streams.items() if sr.held}
        except RecursionError:
            # Nested too deep to walk: not passed on unread, redacted as text.
            self._text_event(event, out)

    def _text_event(self, event: SSEEvent, out: list[SSEEvent]) -> None:
        """Data that is not JSON: redacted as text."""
        data = event.data or b""
        text = data.decode("utf-8", "replace")
        new = self.stage.text_out(text, self.state)
        if new != text:
            event = self.events.parse(with_data(event.raw, b"\ndata: ".join(new.encode().split(b"\n"))))
        self._enqueue(_Queued(event, NOT_JSON, [], False), out)

    def _token_event(self, event: SSEEvent, doc: dict[str, Any], out: list[SSEEvent]) -> bool:
        """The usual event, handled without the general loops: one choice whose delta is one text
        field, not finishing, and the rest of the event as in the last event that walked unchanged.
        False when the event is not that (the general path takes it)."""
        if self.logprobs or self.skeleton is None:
            return False
        field = token_field(doc)
        if field is None:
            return False
        index, key, value = field
        if not equal_with_text(doc, key, "", self.skeleton):
            return False
        self._token(event, doc, index, key, value, out)
        return True

    def _token(
        self,
        event: SSEEvent | TokenRun,
        doc: dict[str, Any] | None,
        index: int,
        key: str,
        value: str,
        out: list[Any],
    ) -> None:
        """One token event: ``doc`` its parse, or None for an event of a run (parsed only if it
        must be rewritten)."""
        skey = (index, key)
        sr = self.streams.get(skey) or self._stream(index, key)
        if doc is not None:
            self.template = doc
        queue = self.queue
        batch = self.batch
        if batch and self.batch_stream != skey:
            self._settle(out)
        misaligned = self.misaligned
        if (
            not self.single
            and sr.quiet(value)
            and (not misaligned or skey not in misaligned)
            and len(queue) < _QUEUE_MAX
        ):
            # Prose: its redactor runs once per chunk, on the joined deltas (any split is the same).
            # Not for a chunk of one event: that would be the same one call, later.
            batch.append(value)
            self.batch_stream = skey
            queue.append(_Queued(event, doc, [(0, key, skey, value)], False))
            return
        if batch:
            self._settle(out)
            misaligned = self.misaligned  # a flush of the queue makes a new set
        got = sr.feed(value)
        if got:
            if not sr.clean or (misaligned and skey in misaligned):
                misaligned.add(skey)
                queue.append(_Queued(event, doc, [(0, key, skey, value)], False))
                self._flush_queue(out, [(0, key, got)])
                return
            credit = self.credit
            have = credit.get(skey, 0) + len(got)
            size = len(value)
            if not queue and have >= size:  # nothing waits and all of this event's text is out
                credit[skey] = have - size
                out.append(event)
                return
            credit[skey] = have
        queue.append(_Queued(event, doc, [(0, key, skey, value)], False))
        if len(queue) > _QUEUE_MAX:
            self._flush_queue(out)
        elif got:
            self._emit_ready(out)

    # -- runs of token events -------------------------------------------------------------------------
    def _approve(self, shape: TokenShape) -> bool:
        """Whether events of ``shape`` are token events of this stream: the shape's event, its text
        blanked, equals the skeleton (the last event whose other strings walked unchanged)."""
        if self.skeleton is None or not equal_with_text(shape.doc, shape.key, "", self.skeleton):
            return False
        self.approved = shape
        return True

    def _run(self, run: TokenRun, out: list[Any]) -> None:
        """A run of token events: its text through the redactor in as few feeds as the detectors
        allow, the events whose text went out unchanged sent on as the run's bytes, the rest queued
        as the per-event path queues them (unparsed)."""
        shape = run.shape
        if self.logprobs or not (shape is self.approved or self._approve(shape)):
            for event in run.events():
                self._event(event, out)
            return
        index, key = shape.index, shape.key
        self.template = shape.doc
        count = run.count
        if count == 1:
            self._token(run, None, index, key, run.texts[0], out)
            return
        if self.batch:
            self._settle(out)
        skey = (index, key)
        sr = self.streams.get(skey) or self._stream(index, key)
        text = run.text()
        ascii_run = len(text) == len(run.raw) - count * shape.fixed
        ends = list(accumulate(map(len, run.middles if ascii_run else run.texts)))
        start = 0
        while start < count:
            begin = ends[start - 1] if start else 0
            if skey in self.misaligned:
                # Held text belongs to events already sent: per event until it is out.
                self._token(run.part(start, start + 1), None, index, key, text[begin : ends[start]], out)
                start += 1
                continue
            stop = sr.quiet_end(text, begin)
            # The events wholly inside the quiet stretch [begin, stop).
            last = count if stop == len(text) else bisect_right(ends, stop, start)
            if last == start:
                # Deltas the detectors must look at (a number, an address...): fed with the one
                # after them in one feed (the number ends there), not one full scan per delta.
                last = start + 1
                while last < count and next_trigger(text, ends[last - 1]) < ends[last]:
                    last += 1
                last = min(last + 1, count)
            self._run_part(run, start, last, text[begin : ends[last - 1]], sr, ends, out)
            start = last

    def _run_part(
        self,
        run: TokenRun,
        start: int,
        stop: int,
        text: str,
        sr: StreamRedactor,
        ends: list[int],
        out: list[Any],
    ) -> None:
        """Events ``start`` to ``stop`` of ``run``, whose joined text is ``text``, in one feed. Released
        unchanged, it is credited to the queue (and these events) as the per-event path credits it;
        changed, every queued event goes out now with its share, the last with what changed
        (``_flush_queue``), as for a batch of the per-event path."""
        skey = (run.shape.index, run.shape.key)
        got = sr.feed(text)
        queue = self.queue
        if got and (not sr.clean or skey in self.misaligned):
            self._queue_run(run, start, stop)
            self.misaligned.add(skey)
            self._flush_queue(out, [(0, skey[1], got)])
            return
        credit = self.credit
        have = credit.get(skey, 0) + len(got)
        credit[skey] = have
        if queue:
            self._emit_ready(out)
            if queue:  # events of earlier reads still wait: these wait behind them
                self._queue_run(run, start, stop)
                return
            have = credit[skey]
        begin = ends[start - 1] if start else 0
        # The events whose text is all out go on as they came; the rest wait for the next feed.
        sent = bisect_right(ends, begin + have, start, stop)
        if sent > start:
            out.append(run.part(start, sent))
            credit[skey] = have - (ends[sent - 1] - begin)
        if sent < stop:
            self._queue_run(run, sent, stop)
            if len(queue) > _QUEUE_MAX:
                self._flush_queue(out)

    def _queue_run(self, run: TokenRun, start: int, stop: int) -> None:
        skey = (run.shape.index, run.shape.key)
        key = skey[1]
        texts = run.texts
        for i in range(start, stop):
            self.queue.append(_Queued(run.part(i, i + 1), None, [(0, key, skey, texts[i])], False))

    def _settle(self, out: list[SSEEvent]) -> None:
        """Feed the batched prose deltas (queued events of one stream) to their redactor at once."""
        skey = self.batch_stream
        text = "".join(self.batch)
        self.batch.clear()
        sr = self.streams[skey]
        got = sr.feed(text)
        if not got:
            return
        if sr.clean and skey not in self.misaligned:
            self.credit[skey] = self.credit.get(skey, 0) + len(got)
            self._emit_ready(out)
        else:  # the last queued event is the batch's last: the released text goes there
            self.misaligned.add(skey)
            self._flush_queue(out, [(0, skey[1], got)])

    def _simple(self, doc: Any) -> bool:
        """Fast-path events: choices with text fields only (no logprobs, no tool calls)."""
        if type(doc) is not dict or self.logprobs:
            return False
        choices = doc.get("choices")
        if type(choices) is not list:
            return False
        for choice in choices:
            if type(choice) is not dict or choice.get("logprobs") is not None:
                return False
            delta = choice.get("delta")
            if delta is not None and (type(delta) is not dict or delta.get("tool_calls") is not None):
                return False
        return True

    def _fast_event(self, event: SSEEvent, doc: dict[str, Any], out: list[SSEEvent]) -> None:
        choices: list[dict[str, Any]] = doc["choices"]
        pieces: list[_Piece] = []
        blanks: list[tuple[int, str, str]] = []
        for pos, choice in enumerate(choices):
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            value = choice.get("text")
            if isinstance(value, str):
                blanks.append((pos, "text", value))
                if value:
                    pieces.append((pos, "text", (index, "text"), value))
            delta = choice.get("delta")
            if delta is not None:
                for key in _TEXT_KEYS:
                    value = delta.get(key)
                    if isinstance(value, str):
                        blanks.append((pos, key, value))
                        if value:
                            pieces.append((pos, key, (index, key), value))
        doc, modified = self._walk_others(doc, blanks)
        self.template = doc
        # The text fields through their redactors: released unchanged, it is credited to the queue.
        fresh: list[tuple[int, str, str]] = []
        credit, misaligned = self.credit, self.misaligned
        for pos, key, skey, value in pieces:
            sr = self._stream(*skey)
            got = sr.feed(value)
            if got:
                if sr.clean and skey not in misaligned:
                    credit[skey] = credit.get(skey, 0) + len(got)
                else:
                    misaligned.add(skey)
                    fresh.append((pos, key, got))
        for pos, choice in enumerate(choices):
            if choice.get("finish_reason") is None:
                continue
            # End of this choice: its held tails go out with the finishing event.
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            for skey, sr in self.streams.items():
                if skey[0] == index and sr.held:
                    tail = sr.flush()
                    if sr.clean and skey not in misaligned:
                        credit[skey] = credit.get(skey, 0) + len(tail)
                    else:
                        misaligned.add(skey)
                        fresh.append((pos, skey[1], tail))
        self.queue.append(_Queued(event, doc, pieces, modified))
        if fresh or len(self.queue) > _QUEUE_MAX:
            self._flush_queue(out, fresh)
        else:
            self._emit_ready(out)

    def _walk_others(self, doc: dict[str, Any], blanks: list[tuple[int, str, str]]) -> tuple[Any, bool]:
        """Every string of the event but its text fields, redacted as per event; skipped when the
        event equals the last one that walked unchanged, text fields aside. Returns (doc, changed)."""
        choices = doc["choices"]
        for pos, key, _ in blanks:
            choice = choices[pos]
            (choice if key == "text" else choice["delta"])[key] = ""
        try:
            if self.skeleton is not None and doc == self.skeleton:
                return doc, False
            w = self.walker
            w.changed = False
            new = w.any(doc)
            changed = w.changed
            if not changed:
                self.skeleton = orjson.loads(orjson.dumps(new))
                self.approved = None  # checked again against the new skeleton
            return new, changed
        finally:
            choices = doc["choices"]
            for pos, key, value in blanks:
                choice = choices[pos]
                (choice if key == "text" else choice["delta"])[key] = value

    # -- the queue --------------------------------------------------------------------------------
    def _enqueue(self, item: _Queued, out: list[SSEEvent]) -> None:
        if not self.queue:
            out.append(item.event)
            return
        self.queue.append(item)
        if len(self.queue) > _QUEUE_MAX:
            self._flush_queue(out)

    def _emit_ready(self, out: list[SSEEvent]) -> None:
        """Send, in order, the queued events whose text has all been released unchanged."""
        queue, credit = self.queue, self.credit
        while queue:
            item = queue[0]
            pieces = item.pieces
            if len(pieces) == 1:
                skey, size = pieces[0][2], len(pieces[0][3])
                if credit.get(skey, 0) < size:
                    return
                credit[skey] -= size
            elif pieces:
                need: dict[tuple[int, str], int] = {}
                for _, _, skey, value in pieces:
                    need[skey] = need.get(skey, 0) + len(value)
                if any(credit.get(skey, 0) < size for skey, size in need.items()):
                    return
                for skey, size in need.items():
                    credit[skey] -= size
            queue.popleft()
            out.append(reserialized(item.event, item.doc) if item.modified else item.event)

    def _flush_queue(self, out: list[SSEEvent], fresh: list[tuple[int, str, str]] | None = None) -> None:
        """Send every queued event now, each with the part of its text released so far (unchanged)
        and the last one also with ``fresh``: released text that differs from what came in. Held
        text then belongs to events already sent: those streams are misaligned until it is out."""
        credit = self.credit
        last = self.queue[-1] if self.queue else None
        for item in self.queue:
            changed = item.modified
            doc = item.doc
            for pos, key, skey, value in item.pieces:
                have = credit.get(skey, 0)
                if have >= len(value):
                    credit[skey] = have - len(value)
                    continue
                credit[skey] = 0
                if doc is None:
                    doc = _parsed(item.event)
                choice = doc["choices"][pos]
                (choice if key == "text" else choice["delta"])[key] = value[:have]
                changed = True
            if item is last and fresh:
                if doc is None:
                    doc = _parsed(item.event)
                for pos, key, text in fresh:
                    _place(doc["choices"][pos], key, text)
                changed = True
            out.append(reserialized(item.event, doc) if changed else item.event)
        self.queue.clear()
        credit.clear()
        self.misaligned = {key for key, sr in self.streams.items() if sr.held}

    def _finish(self, out: list[SSEEvent]) -> None:
        """End of the stream ([DONE], or cut): every held tail is released, into the queued events
        when it is unchanged, else in an event of its own after them."""
        tails: list[tuple[tuple[int, str], str]] = []
        for skey, sr in self.streams.items():
            if not sr.held:
                continue
            tail = sr.flush()
            if sr.clean and skey not in self.misaligned:
                self.credit[skey] = self.credit.get(skey, 0) + len(tail)
            elif tail:
                tails.append((skey, tail))
        self._emit_ready(out)
        if self.queue:
            self._flush_queue(out)
        self.misaligned.clear()
        # A stream cut while text was held: its delayed logprobs are not sent.
        self.logprobs.clear()
        for (index, key), tail in tails:
            doc = {
                k: v for k, v in (self.template or {}).items() if k in ("id", "object", "created", "model")
            }
            choice: dict[str, Any] = {"index": index, "finish_reason": None}
            if doc.get("object") != "text_completion" and key != "text":
                choice["delta"] = {}
            _place(choice, key, tail)
            doc["choices"] = [choice]
            data = orjson.dumps(doc)
            out.append(SSEEvent(b"data: " + data + b"\n\n", data, doc))

    # -- per event (logprobs, tool calls, after a redaction) ------------------------------------------
    def _json_event(self, event: SSEEvent, doc: Any) -> SSEEvent:
        w = self.walker
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if not isinstance(choices, list):
            w.changed = False
            doc = w.any(doc)
            return reserialized(event, doc) if w.changed else event
        self.template = doc
        changed = False
        for i, choice in enumerate(choices):
            if not isinstance(choice, dict):
                w.changed = False
                choices[i] = w.any(choice)
                changed = changed or w.changed
                continue
            new_choice, touched = self._choice(choice)
            choices[i] = new_choice
            changed = changed or touched
        w.changed = False
        doc = w.obj(doc, frozenset({"choices"}))
        if not (changed or w.changed):
            return event
        if self.template is not doc:
            self.template = doc
        return reserialized(event, doc)

    def _choice(self, choice: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """One choice of one event: (the choice, whether anything in it changed)."""
        w = self.walker
        index = choice.get("index", 0)
        index = index if isinstance(index, int) else 0
        counts = self.state.session.counts
        found_before = sum(counts.values())
        touched = False
        delta = choice.get("delta")
        holders: list[tuple[dict[str, Any], tuple[str, ...]]] = [(choice, ("text",))]
        if isinstance(delta, dict):
            holders.append((delta, _TEXT_KEYS))
        for holder, keys in holders:
            for key in keys:
                value = holder.get(key)
                if isinstance(value, str) and value:
                    new = self._stream(index, key).feed(value)
                    if new != value:
                        holder[key] = new
                        touched = True
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        if isinstance(calls, list):
            # Tool-call arguments stream as JSON text: placeholders in them are put back too,
            # so the caller's function gets the real value.
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                value = fn.get("arguments") if isinstance(fn, dict) else None
                tc_index = call.get("index", 0) if isinstance(call, dict) else None
                if isinstance(value, str) and value and type(tc_index) is int:
                    new = self._stream(index, f"tool_calls.{tc_index}").feed(value)
                    if new != value:
                        fn["arguments"] = new
                        touched = True
        if choice.get("finish_reason") is not None:
            # End of this choice: its held tails go out with the finishing event.
            for (i, key), sr in self.streams.items():
                if i == index and sr.held:
                    _place(choice, key, sr.flush())
                    touched = True
        held = False
        for (i, _), sr in self.streams.items():
            if i == index and sr.held:
                held = True
                break
        # Everything else in the choice, per event: the streamed text fields are skipped (they
        # went through their StreamRedactor above), every other string is redacted here.
        w.changed = False
        delta = choice.get("delta")
        if isinstance(delta, dict):
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for j, call in enumerate(calls):
                    if not isinstance(call, dict):
                        calls[j] = w.any(call)
                        continue
                    fn = call.get("function")
                    if isinstance(fn, dict):
                        skip = _SKIP_ARGS if isinstance(fn.get("arguments"), str) else _NO_SKIP
                        call["function"] = w.obj(fn, skip)
                    calls[j] = w.obj(call, _SKIP_FUNCTION if isinstance(fn, dict) else _NO_SKIP)
            skip = {k for k in delta if k in _TEXT_KEYS and isinstance(delta[k], str)}
            if isinstance(calls, list):
                skip.add("tool_calls")
            choice["delta"] = w.obj(delta, skip)
            skip_choice = _SKIP_DELTA_TEXT if isinstance(choice.get("text"), str) else _SKIP_DELTA
        else:
            skip_choice = _SKIP_TEXT if isinstance(choice.get("text"), str) else _SKIP_LOGPROBS
        choice = w.obj(choice, skip_choice)
        touched = touched or w.changed
        return choice, self._logprobs(choice, index, held, found_before) or touched

    def _logprobs(self, choice: dict[str, Any], index: int, held: bool, found_before: int) -> bool:
        """The logprobs rule in streams. Token strings are redacted and ``bytes`` dropped; while the
        choice's text is held back its logprobs are held too, and go out (merged) with the event
        that releases the text, unless an entity was redacted meanwhile: then they are dropped, so
        the tokens of an entity never get out. Returns whether the choice changed."""
        w = self.walker
        logprobs = choice.get("logprobs")
        w.changed = False
        if logprobs is not None:
            w.logprobs(logprobs)
        changed = w.changed
        # Anything found in this choice's text, its other strings or its tokens.
        redacted = sum(self.state.session.counts.values()) != found_before
        pending = self.logprobs.get(index)
        if pending is None and not held and not redacted:
            return changed
        if pending is None:
            pending = self.logprobs[index] = _Pending()
        if redacted:
            pending.dropped = True
        if logprobs is not None:
            pending.items.append(logprobs)
            choice["logprobs"] = None
            changed = True
        if not held:
            del self.logprobs[index]
            if pending.items and not pending.dropped:
                choice["logprobs"] = _merge_logprobs(pending.items)
                changed = True
        return changed


class _Pending:
    __slots__ = ("dropped", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.dropped = False


def _merge_logprobs(items: list[Any]) -> Any:
    """Logprobs of consecutive events as one: lists (``content``, ``tokens``, ``top_logprobs``...)
    concatenated, other values from the last event."""
    if len(items) == 1:
        return items[0]
    if not all(isinstance(item, dict) for item in items):
        return None
    out: dict[str, Any] = {}
    for item in items:
        for key, value in item.items():
            current = out.get(key)
            if isinstance(value, list) and isinstance(current, list):
                out[key] = current + value
            elif isinstance(value, list):
                out[key] = list(value)
            else:
                out[key] = value
    return out


def _place(choice: dict[str, Any], key: str, tail: str) -> None:
    """Append released text to a choice: ``text``, ``delta.<key>`` or a tool call's arguments."""
    if not tail:
        return
    if key == "text" or not isinstance(choice.get("delta"), dict):
        choice["text"] = (choice.get("text") or "") + tail
        return
    delta = choice["delta"]
    if key.startswith("tool_calls."):
        tc_index = int(key.split(".", 1)[1])
        calls = delta.setdefault("tool_calls", [])
        for call in calls:
            if isinstance(call, dict) and call.get("index", 0) == tc_index:
                fn = call.setdefault("function", {})
                fn["arguments"] = (fn.get("arguments") or "") + tail
                return
        calls.append({"index": tc_index, "function": {"arguments": tail}})
        return
    current = delta.get(key)
    delta[key] = (current if isinstance(current, str) else "") + tail


def build(redaction: RedactionConfig, env: StageEnv) -> Stage | None:
    if not redaction.enabled:
        return None
    return RedactStage(redaction, env.state_dir)
