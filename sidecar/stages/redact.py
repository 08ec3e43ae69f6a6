"""Redact stage: PII never reaches the model, and answers are redacted (and de-pseudonymized).

Requests: only string content is touched (chat message content and text parts, tool-call
arguments, completions ``prompt``, embeddings ``input``), never keys or other fields. With the
default policy values become placeholders (``<EMAIL_1>``) and the mapping stays in memory for this
request; the answer gets the originals back when the caller's roles allow it. Responses: JSON bodies
and SSE streams (per choice, holding back only a tail that could still grow into an entity).

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

import orjson

from ..config import Config
from ..context import INFERENCE_ROUTES, RequestContext
from ..redaction.engine import Redactor
from ..redaction.operators import Session, load_hash_key
from ..redaction.policy import load_policy
from ..redaction.streaming import StreamRedactor
from ..sse import SSEBuffer, event_data
from ..stage import ResponseFilter, Stage

log = logging.getLogger("custos.redact")

# Prompts above this many characters are redacted in a worker thread so one huge request does not
# stall every other stream on the event loop for tens of milliseconds.
_THREAD_CHARS = 256 * 1024

_TEXT_KEYS = ("content", "reasoning_content")


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
        if ctx.method != "POST" or ctx.path not in INFERENCE_ROUTES:
            return
        body = ctx.json
        if not isinstance(body, dict):
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
        if _text_size(body) > _THREAD_CHARS:
            changed = await asyncio.to_thread(self._redact_body, body, session)
        else:
            changed = self._redact_body(body, session)
        if changed:
            ctx.set_json(body)

    def _for_log(self, session: Session) -> Callable[[str], str]:
        redactor = self.redactor

        def for_log(text: str) -> str:
            # Same session: restored values map back to the very placeholders the model saw.
            return redactor.redact(text, session)

        return for_log

    def _redact_body(self, body: dict[str, Any], session: Session) -> bool:
        redact = self.redactor.redact
        changed = False

        def fix(holder: Any, key: Any) -> None:
            nonlocal changed
            value = holder[key]
            if isinstance(value, str) and value:
                new = redact(value, session)
                if new is not value and new != value:
                    holder[key] = new
                    changed = True

        messages = body.get("messages")
        if isinstance(messages, list):
            for msg in messages:
                if not isinstance(msg, dict):
                    continue
                content = msg.get("content")
                if isinstance(content, str):
                    fix(msg, "content")
                elif isinstance(content, list):
                    for part in content:
                        # Multimodal messages: only text parts (images and audio pass untouched).
                        if isinstance(part, dict) and part.get("type") == "text" and "text" in part:
                            fix(part, "text")
                for call in msg.get("tool_calls") or ():
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict) and "arguments" in fn:
                        fix(fn, "arguments")
        for key in ("prompt", "input"):
            value = body.get(key)
            if isinstance(value, str):
                fix(body, key)
            elif isinstance(value, list):
                # A list of strings (a batch); lists of token ids stay as they are.
                for i, item in enumerate(value):
                    if isinstance(item, str):
                        fix(value, i)
        return changed

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

    def _restore_only(self, text: str, state: _State) -> str:
        r = self.redactor
        ents = [e for e in r.find(text, response=True) if e.type == "__placeholder__"]
        return r.render(text, ents, state.session, response=True, restore=state.restore) if ents else text

    async def on_complete(self, ctx: RequestContext) -> None:
        state: _State | None = ctx.extras.get("redact")
        if state is not None:
            ctx.extras["redact.restored"] = state.session.restored


def _text_size(body: dict[str, Any]) -> int:
    size = 0
    for key in ("messages", "prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    size += len(item)
                elif isinstance(item, dict):
                    c = item.get("content")
                    size += len(c) if isinstance(c, str) else 0
    return size


class _JSONFilter(ResponseFilter):
    __slots__ = ("stage", "state")

    def __init__(self, stage: RedactStage, state: _State) -> None:
        self.stage = stage
        self.state = state

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        try:
            doc = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            return chunk
        if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
            return chunk
        changed = False
        for choice in doc["choices"]:
            if not isinstance(choice, dict):
                continue
            holders: list[tuple[dict, str]] = []
            message = choice.get("message")
            if isinstance(message, dict):
                holders.extend((message, k) for k in _TEXT_KEYS)
                for call in message.get("tool_calls") or ():
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        holders.append((fn, "arguments"))
            holders.append((choice, "text"))
            for holder, key in holders:
                value = holder.get(key)
                if isinstance(value, str) and value:
                    new = self.stage.text_out(value, self.state)
                    if new != value:
                        holder[key] = new
                        changed = True
        return orjson.dumps(doc) if changed else chunk


class _SSEFilter(ResponseFilter):
    """Per choice index and text field, a ``StreamRedactor``; events are rewritten only when their
    text changes, so untouched events pass byte for byte."""

    __slots__ = ("sse", "stage", "state", "streams", "template")

    def __init__(self, stage: RedactStage, state: _State) -> None:
        self.stage = stage
        self.state = state
        self.sse = SSEBuffer()
        self.streams: dict[tuple[int, str], StreamRedactor] = {}
        self.template: dict[str, Any] | None = None

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
        return self._flush_all() + self.sse.rest()

    def _event(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is None:
            return event
        if data == b"[DONE]":
            return self._flush_all() + event
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
            return event
        self.template = doc
        changed = False
        for choice in doc["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            delta = choice.get("delta")
            if isinstance(delta, dict):
                holder, keys = delta, _TEXT_KEYS
            else:
                holder, keys = choice, ("text",)
            for key in keys:
                value = holder.get(key)
                if isinstance(value, str) and value:
                    new = self._stream(index, key).feed(value)
                    if new != value:
                        holder[key] = new
                        changed = True
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                # Tool-call arguments stream as JSON text: placeholders in them are put back too,
                # so the caller's function gets the real value.
                for call in delta["tool_calls"]:
                    fn = call.get("function") if isinstance(call, dict) else None
                    value = fn.get("arguments") if isinstance(fn, dict) else None
                    tc_index = call.get("index", 0)
                    if isinstance(value, str) and value and isinstance(tc_index, int):
                        new = self._stream(index, f"tool_calls.{tc_index}").feed(value)
                        if new != value:
                            fn["arguments"] = new
                            changed = True
            if choice.get("finish_reason") is not None:
                # End of this choice: its held tails go out with the finishing event.
                for (i, key), sr in self.streams.items():
                    if i == index and sr.held:
                        _place(choice, key, sr.flush())
                        changed = True
        if not changed:
            return event
        return _rewrite(event, orjson.dumps(doc))

    def _flush_all(self) -> bytes:
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
