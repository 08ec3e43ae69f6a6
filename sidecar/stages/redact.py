"""Redact stage: PII never reaches the model, and answers are redacted (and de-pseudonymized).

Requests: by construction, every string and every object key of any JSON body under ``/v1/`` is
redacted (``sidecar.redaction.walk``): only a closed set of identifier fields (``model``, ``role``,
part/tool ``type``, mode enums, ``logit_bias`` token ids) is exempt, and those are validated so that
they cannot carry text. Known fields of the chat / completions / embeddings schemas are type-checked;
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

For metrics and audit: ``ctx.redactions`` (type -> count, request and answer together),
``ctx.extras["redact.restored"]`` (placeholders put back), and ``ctx.extras["redact.for_log"]``, a
function that turns any text of this request (e.g. the answer as the client got it, with restored
values) back into its redacted form for audit records and logs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson

from ..config import Config
from ..context import RequestContext
from ..errors import bad_request
from ..redaction.engine import Redactor
from ..redaction.operators import Session, load_hash_key
from ..redaction.policy import load_policy
from ..redaction.streaming import StreamRedactor
from ..redaction.walk import AnswerWalker, Walker, walk_request
from ..sse import SSEBuffer, event_data
from ..stage import ResponseFilter, Stage

log = logging.getLogger("custos.redact")

# Bodies above this many bytes are redacted in a worker thread so one huge request does not stall
# every other stream on the event loop for tens of milliseconds.
_THREAD_CHARS = 256 * 1024

# Streamed text fields of a delta, each with its own holdback.
_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")
_NO_SKIP: frozenset[str] = frozenset()
_SKIP_ARGS = frozenset({"arguments"})
_SKIP_FUNCTION = frozenset({"function"})
_SKIP_LOGPROBS = frozenset({"logprobs"})
_SKIP_TEXT = frozenset({"logprobs", "text"})
_SKIP_DELTA = frozenset({"delta", "logprobs"})
_SKIP_DELTA_TEXT = frozenset({"delta", "logprobs", "text"})


class _State:
    __slots__ = ("restore", "session")

    def __init__(self, session: Session, restore: frozenset[str] | bool) -> None:
        self.session = session
        self.restore = restore


class RedactStage(Stage):
    name = "redact"

    def __init__(self, config: Config) -> None:
        rc = config.redaction
        self.config = rc
        policy = load_policy(rc.policy_file)
        key_file = rc.hash_key_file or (config.state.dir / "redaction.key")
        key = load_hash_key(rc.hash_key.get_secret_value() if rc.hash_key else None, key_file)
        self.policy = policy
        self.redactor = Redactor(policy, key)
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
        if not ctx.path.startswith("/v1/"):
            return
        if self.config.request:
            self._check_url(ctx)
        # Every body under /v1/ (known routes or not): what cannot be inspected is not forwarded.
        if not ctx.body:
            return
        session = Session()
        ctx.redactions = session.counts  # live: answer-side counts land here too
        roles = ctx.identity.roles if ctx.identity is not None else None
        restore = self.policy.restore_types(roles) if self.config.restore else False
        state = _State(session, restore)
        ctx.extras["redact"] = state
        ctx.extras["redact.for_log"] = self._for_log(session)
        if not self.config.request:
            return
        body = ctx.json  # 400 when the body is not JSON
        if body is None:
            return
        if len(ctx.body) > _THREAD_CHARS:
            new = await asyncio.to_thread(self.redact_body, ctx.path, body, session)
        else:
            new = self.redact_body(ctx.path, body, session)
        if new is not None:
            ctx.set_json(new)

    def _check_url(self, ctx: RequestContext) -> None:
        """The path and query string are forwarded as they are: personal data there is refused."""
        for name, raw in (("path", ctx.path), ("query", ctx.query.decode("latin-1"))):
            if not raw:
                continue
            text = unquote_plus(raw) if name == "query" else unquote(raw)
            if self.redactor.redact(text) != text:
                raise bad_request(f"The request {name} must not carry personal data.", param=name)

    def _for_log(self, session: Session) -> Callable[[str], str]:
        redactor = self.redactor

        def for_log(text: str) -> str:
            # Same session: restored values map back to the very placeholders the model saw.
            return redactor.redact(text, session)

        return for_log

    def redact_body(self, path: str, body: Any, session: Session) -> Any:
        """The redacted body (changed in place where possible), or None when nothing changed.
        Raises ``ProxyError`` (400/413) for a body that cannot be fully inspected."""
        redact = self.redactor.redact
        cfg = self.config
        walker = Walker(
            lambda text: redact(text, session),
            max_chars=cfg.max_request_chars,
            max_strings=cfg.max_strings,
            max_depth=cfg.max_depth,
        )
        out = walk_request(path, body, walker)
        return out if walker.changed else None

    # -- responses --------------------------------------------------------------------------------
    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None:
        state: _State | None = ctx.extras.get("redact")
        if state is None or ctx.upstream_status is None or not 200 <= ctx.upstream_status < 300:
            return None
        if not self.config.response and state.restore is False:
            return None
        if ctx.response_kind == "json":
            return _JSONFilter(self, state)
        if ctx.response_kind == "sse":
            return _SSEFilter(self, state)
        return None

    def text_out(self, text: str, state: _State) -> str:
        """A complete answer text: PII the model wrote is redacted, our placeholders restored."""
        if self.config.response:
            return self.redactor.redact(text, state.session, response=True, restore=state.restore)
        return self._restore_only(text, state)

    def answer_walker(self, state: _State) -> AnswerWalker:
        """Redacts every string of an answer document as ``text_out`` does."""
        return AnswerWalker(lambda text: self.text_out(text, state))

    def _restore_only(self, text: str, state: _State) -> str:
        r = self.redactor
        ents = [e for e in r.find(text, response=True) if e.type == "__placeholder__"]
        return r.render(text, ents, state.session, response=True, restore=state.restore) if ents else text

    async def on_complete(self, ctx: RequestContext) -> None:
        state: _State | None = ctx.extras.get("redact")
        if state is not None:
            ctx.extras["redact.restored"] = state.session.restored


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


class _JSONFilter(ResponseFilter):
    __slots__ = ("stage", "state")

    def __init__(self, stage: RedactStage, state: _State) -> None:
        self.stage = stage
        self.state = state

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        try:
            return self._walk(chunk, orjson.loads(chunk))
        except (orjson.JSONDecodeError, RecursionError):
            # Not JSON after all (or nested too deep to walk): not passed on unread, redacted as text.
            text = chunk.decode("utf-8", "replace")
            new = self.stage.text_out(text, self.state)
            return chunk if new == text else new.encode()

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


class _SSEFilter(ResponseFilter):
    """Per choice index and text field, a ``StreamRedactor``; every other string of an event is
    redacted per event. Events are rewritten only when something changed, so untouched events pass
    byte for byte."""

    __slots__ = ("logprobs", "sse", "stage", "state", "streams", "template", "walker")

    def __init__(self, stage: RedactStage, state: _State) -> None:
        self.stage = stage
        self.state = state
        self.sse = SSEBuffer()
        self.streams: dict[tuple[int, str], StreamRedactor] = {}
        self.template: dict[str, Any] | None = None
        # Per choice index: logprobs delayed while that choice's text is held back.
        self.logprobs: dict[int, _Pending] = {}
        self.walker = stage.answer_walker(state)

    def _stream(self, index: int, key: str) -> StreamRedactor:
        sr = self.streams.get((index, key))
        if sr is None:
            cfg = self.stage.config
            sr = self.streams[(index, key)] = StreamRedactor(
                self.stage.redactor,
                self.state.session,
                restore=self.state.restore,
                limit=cfg.max_holdback_chars,
                redact=cfg.response,
            )
        return sr

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        return b"".join(self._event(e) for e in self.sse.feed(chunk))

    def flush(self) -> bytes:
        # The stream ended without [DONE] (or was cut): release what is held, then any partial event.
        rest = self.sse.rest()
        if rest:
            rest = self._event(rest)
        return self._flush_all() + rest

    def _event(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is None:
            return event
        if data == b"[DONE]":
            return self._flush_all() + event
        try:
            return self._json_event(event, orjson.loads(data))
        except (orjson.JSONDecodeError, RecursionError):
            # Not JSON (or nested too deep to walk): not passed on unread, redacted as text.
            text = data.decode("utf-8", "replace")
            new = self.stage.text_out(text, self.state)
            if new == text:
                return event
            return _rewrite(event, b"\ndata: ".join(new.encode().split(b"\n")))

    def _json_event(self, event: bytes, doc: Any) -> bytes:
        w = self.walker
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if not isinstance(choices, list):
            w.changed = False
            doc = w.any(doc)
            return _rewrite(event, orjson.dumps(doc)) if w.changed else event
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
        return _rewrite(event, orjson.dumps(doc))

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

    def _flush_all(self) -> bytes:
        # A stream cut while text was held: its delayed logprobs are not sent.
        self.logprobs.clear()
        out = []
        for (index, key), sr in self.streams.items():
            if not sr.held:
                continue
            tail = sr.flush()
            if not tail:
                continue
            doc = {
                k: v for k, v in (self.template or {}).items() if k in ("id", "object", "created", "model")
            }
            choice: dict[str, Any] = {"index": index, "finish_reason": None}
            if doc.get("object") != "text_completion" and key != "text":
                choice["delta"] = {}
            _place(choice, key, tail)
            doc["choices"] = [choice]
            out.append(b"data: " + orjson.dumps(doc) + b"\n\n")
        return b"".join(out)


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


def _rewrite(event: bytes, data: bytes) -> bytes:
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


def build(config: Config) -> Stage | None:
    if not config.redaction.enabled:
        return None
    return RedactStage(config)
