"""One audit record per request, from what the stages put into the request context.

Field names follow the Elastic Common Schema (``@timestamp``, ``event.*``, ``user.*``, ``source.ip``,
``http.*``, ``url.path``, ``trace.id``, ``error.*``) so Kibana and SIEM rules work as they are; the
``llm.*`` group uses OpenTelemetry GenAI attribute names where they exist (``operation.name``,
``request.model``, ``usage.input_tokens``, ``usage.output_tokens``, ``response.finish_reasons``).
Numbers are integers only (the canonical form has no floats). By default no prompt or answer text is
stored, only their SHA-256; ``store_redacted_text`` adds the text as it was forwarded and returned
(that is, after PII redaction when the redact stage is on).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import orjson

from ..context import INFERENCE_ROUTES, RequestContext
from ..sse import SSEBuffer, event_data
from ..stage import ResponseFilter
from .canonical import utc_iso

INPUT_CHARS = "audit.input_chars"  # ctx.extras: prompt size before redaction rewrote it
_ECS_STATIC = {"kind": "event", "category": ["web"], "dataset": "custos.audit", "module": "custos"}


def _ip(value: str) -> str | None:
    if not value:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return None  # unix socket peer or test client name: not an IP, keep the mapping valid
    return value


def input_chars(body: Any) -> int | None:
    """Characters of the prompt text: chat message contents, completion prompts, embedding inputs."""
    if not isinstance(body, dict):
        return None
    total = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        total += len(part["text"])
        return total
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            return len(value)
        if isinstance(value, list):
            return sum(len(v) for v in value if isinstance(v, str))
    return None


def _request_json(ctx: RequestContext) -> Any:
    if ctx.method != "POST" or ctx.path not in INFERENCE_ROUTES or not ctx.body:
        return None
    try:
        return ctx.json
    except Exception:  # malformed body: the parse stage already answered 400
        return None


def build_record(ctx: RequestContext, *, text: tuple[str | None, str | None] | None = None) -> dict[str, Any]:
    end_wall = ctx.started_wall + ctx.elapsed
    duration_ns = int(ctx.elapsed * 1e9)
    status = ctx.status
    decision = ctx.decision
    identity = ctx.identity
    error = ctx.error
    denied = decision is not None and not decision.allowed
    outcome = ctx.outcome
    if denied or (status in (401, 403)):
        types = ["access", "denied"]
    elif outcome == "failure":
        types = ["access", "error"]
    else:
        types = ["access", "allowed"]
    body = _request_json(ctx)
    redactions = ctx.redactions
    llm: dict[str, Any] = {
        "operation": {"name": ctx.operation},
        "request": {
            "model": ctx.model,
            "stream": ctx.stream,
            "input_chars": ctx.extras[INPUT_CHARS] if INPUT_CHARS in ctx.extras else input_chars(body),
        },
        "usage": {"input_tokens": ctx.usage.prompt_tokens, "output_tokens": ctx.usage.completion_tokens},
        "response": {"finish_reasons": list(ctx.finish_reasons)},
        "redactions": dict(redactions),
        "redactions_total": sum(redactions.values()),
        "authz": None
        if decision is None
        else {
            "decision": "allow" if decision.allowed else "deny",
            "rule": decision.rule,
            "permission": decision.permission,
            "reason": decision.reason or None,
        },
        "prompt": {"sha256": ctx.prompt_sha256},
        "output": {"sha256": ctx.output_sha256},
        "cancelled": ctx.cancelled,
    }
    if text is not None:
        llm["prompt"]["text"] = text[0]
        llm["output"]["text"] = text[1]
    return {
        "@timestamp": utc_iso(ctx.started_wall),
        "event": {
            **_ECS_STATIC,
            "id": ctx.request_id,
            "action": ctx.operation,
            "type": types,
            "outcome": outcome,
            "duration": duration_ns,
            "start": utc_iso(ctx.started_wall),
            "end": utc_iso(end_wall),
            "reason": (decision.reason or None) if denied else None,
        },
        "user": {"id": identity.subject, "roles": list(identity.roles)} if identity else None,
        "source": {"ip": _ip(ctx.client_ip)},
        "http": {
            "request": {"method": ctx.method, "body": {"bytes": len(ctx.body)}},
            "response": {"status_code": status, "body": {"bytes": ctx.response_bytes}},
        },
        "url": {"path": ctx.path},
        "trace": {"id": ctx.trace_id} if ctx.trace_id else None,
        "error": None
        if error is None
        else {"type": error.kind, "code": str(error.status), "message": error.message},
        "llm": llm,
    }


# -- optional text capture (store_redacted_text) ---------------------------------------------------
class TextCapture(ResponseFilter):
    """Keeps the answer text as the client receives it (bounded), for ``store_redacted_text``.
    It only reads: the bytes pass unchanged, so the observe stage's output hash still holds."""

    __slots__ = ("json_body", "limit", "parts", "size", "sse")

    def __init__(self, kind: str, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.sse = SSEBuffer() if kind == "sse" else None
        self.json_body = bytearray() if kind == "json" else None

    def feed(self, chunk: bytes) -> bytes:
        if chunk and self.size < self.limit:
            if self.sse is not None:
                for event in self.sse.feed(chunk):
                    data = event_data(event)
                    if data and data != b"[DONE]":
                        self._take(data, stream=True)
            elif self.json_body is not None:
                self.json_body += chunk
        return chunk

    def _take(self, data: bytes, stream: bool) -> None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        for choice in doc.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            holder = choice.get("delta" if stream else "message")
            piece = holder.get("content") if isinstance(holder, dict) else choice.get("text")
            if isinstance(piece, str) and piece:
                self.parts.append(piece)
                self.size += len(piece)

    def text(self) -> str | None:
        if self.json_body:
            self._take(bytes(self.json_body), stream=False)
            self.json_body = None
        if not self.parts:
            return None
        return "".join(self.parts)[: self.limit]


def prompt_text(ctx: RequestContext, limit: int) -> str | None:
    body = _request_json(ctx)
    if not isinstance(body, dict):
        return None
    for key in ("messages", "prompt", "input"):
        if key in body:
            value = body[key]
            return (value if isinstance(value, str) else orjson.dumps(value).decode())[:limit]
    return None
