"""One audit record per request, from what the stages put into the request context.

Field names follow the Elastic Common Schema (``@timestamp``, ``event.*``, ``user.*``, ``source.ip``,
``http.*``, ``url.path``, ``trace.id``, ``error.*``) so Kibana and SIEM rules work as they are; the
``llm.*`` group uses OpenTelemetry GenAI attribute names where they exist (``operation.name``,
``request.model``, ``usage.input_tokens``, ``usage.output_tokens``, ``response.finish_reasons``).
Numbers are integers only (the canonical form has no floats). By default no prompt or answer text is
stored, only their SHA-256; ``store_redacted_text`` adds the text as it was forwarded and returned
(that is, after PII redaction when the redact stage is on).

Records are bounded and total: every string that comes from the client (path, subject, roles, model
name, error messages that quote them, ...) is cut to a per-field limit with a visible
``…[truncated N chars]`` marker, the whole record is cut to ``audit.max_record_bytes``, the cut fields
are listed in ``custos.truncated``, and anything the canonical encoding cannot take (lone surrogates,
integers over 64 bits, foreign types) is replaced, so building and sealing a record never fails.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import re
from typing import Any

import orjson

from ..context import INFERENCE_ROUTES, RequestContext
from ..sse import NOT_JSON, SSEReader, TokenRun, shared_events
from ..stage import ResponseFilter
from . import metrics
from .canonical import utc_iso

log = logging.getLogger("custos.audit")

DEFAULT_MAX_RECORD_BYTES = 16 * 1024
# Room left in ``max_record_bytes`` for the chain fields the trail adds when it seals the record.
SEAL_RESERVE = 512

# Per-field limits (characters) for strings the client controls, directly or through a name it picks
# (the authz rule and permission embed the model name and the path). Below 1,024 so that, with the
# marker, they stay under the Elasticsearch keyword ``ignore_above`` and remain searchable.
FIELD_LIMITS: dict[str, int] = {
    "url.path": 960,
    "user.id": 256,
    "user.roles": 128,  # each role; at most MAX_ROLES of them
    "llm.request.model": 256,
    "llm.authz.rule": 512,
    "llm.authz.permission": 512,
    "llm.authz.reason": 960,
    "event.reason": 960,
    "error.message": 2048,
    "error.type": 128,
    "error.code": 64,
    "http.request.method": 32,
    "trace.id": 128,
    "llm.response.finish_reasons": 64,
}
MAX_ROLES = 32
MAX_LIST_ITEMS = 64  # any other list (finish reasons, ...)
MAX_STRING = 4096  # any other string not named above (stored texts are bounded by the record cap)
_TEXT_FIELDS = ("llm.prompt.text", "llm.output.text")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_ECS_STATIC = {"kind": "event", "category": ["web"], "dataset": "custos.audit", "module": "custos"}


def _ip(value: str) -> str | None:
    if not value:
        return None
    return _checked_ip(value)


@functools.lru_cache(maxsize=1024)  # the same few clients send most requests; parsing costs ~2 us
def _checked_ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return None  # unix socket peer or test client name: not an IP, keep the mapping valid
    return value


# Request fields that carry the prompt: chat, completions, embeddings/pooling, the Responses API
# (instructions and input items), score (text_1, text_2) and rerank (query, documents).
_PROMPT_FIELDS = ("instructions", "messages", "prompt", "input", "text_1", "text_2", "query", "documents")


def input_chars(body: Any) -> int | None:
    """Characters of the prompt text (see ``_PROMPT_FIELDS``); None when the body has none."""
    if not isinstance(body, dict):
        return None
    total = None
    for key in _PROMPT_FIELDS:
        if key in body:
            total = (total or 0) + _text_chars(body[key])
    return total


def _text_chars(value: Any) -> int:
    """A string, or a list of strings, messages (``content``) and content parts (``text``)."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list):
        return 0
    total = 0
    for item in value:
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += _text_chars(item["content"] if "content" in item else item.get("text"))
    return total


def _request_json(ctx: RequestContext) -> Any:
    if ctx.method != "POST" or ctx.path not in INFERENCE_ROUTES or not ctx.body:
        return None
    try:
        return ctx.json
    except Exception:  # malformed body: the parse stage already answered 400
        return None


def build_record(
    ctx: RequestContext,
    *,
    text: tuple[str | None, str | None] | None = None,
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> dict[str, Any]:
    """The record of one request, cleaned and bounded (see ``finalize``)."""
    return finalize(_raw_record(ctx, text), max_bytes)


def _raw_record(ctx: RequestContext, text: tuple[str | None, str | None] | None) -> dict[str, Any]:
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
            "input_chars": ctx.input_chars if ctx.input_chars is not None else input_chars(body),
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
    start = utc_iso(ctx.started_wall)
    return {
        "@timestamp": start,
        "event": {
            **_ECS_STATIC,
            "id": ctx.request_id,
            "action": ctx.operation,
            "type": types,
            "outcome": outcome,
            "duration": duration_ns,
            "start": start,
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


# -- bounds and cleaning -----------------------------------------------------------------------------
_SURROGATES = re.compile("[\ud800-\udfff]")


def truncation_marker(removed: int, unit: str = "chars") -> str:
    return f"…[truncated {removed} {unit}]"


def cut(value: str, keep: int) -> str:
    """``value`` cut to ``keep`` characters plus a marker saying how many were removed."""
    if len(value) <= keep:
        return value
    return value[:keep] + truncation_marker(len(value) - keep)


def _fix_str(value: str) -> str:
    """Lone surrogates (not encodable as UTF-8) become U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", value)
    return value


def _clean(value: Any, path: str, truncated: set[str]) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        value = _fix_str(value)
        limit = FIELD_LIMITS.get(path, None if path in _TEXT_FIELDS else MAX_STRING)
        if limit is not None and len(value) > limit:
            truncated.add(path)
            value = cut(value, limit)
        return value
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return int(value)  # plain int (an IntEnum would serialize the same, but be safe)
        truncated.add(path)
        return None  # no such count is real; the canonical form has 64-bit integers only
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and _INT_MIN <= value <= _INT_MAX else None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = cut(_fix_str(key if isinstance(key, str) else str(key)), 128)
            out[name] = _clean(item, f"{path}.{name}" if path else name, truncated)
        return out
    if isinstance(value, (list, tuple)):
        cap = MAX_ROLES if path == "user.roles" else MAX_LIST_ITEMS
        items = [_clean(item, path, truncated) for item in value[:cap]]
        if len(value) > cap:
            truncated.add(path)
            items.append(truncation_marker(len(value) - cap, "items"))
        return items
    return _clean(repr(value)[:MAX_STRING], path, truncated)  # a foreign type: keep what it says


def _metric_field(path: str) -> str:
    return path if path in FIELD_LIMITS or path in _TEXT_FIELDS or path == "record" else "other"


def _size(doc: dict[str, Any]) -> int:
    return len(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))


def _string_leaves(node: Any, path: str, out: list[tuple[int, str, Any, Any]]) -> None:
    if isinstance(node, dict):
        for key, item in node.items():
            if isinstance(item, str):
                out.append((len(item), f"{path}.{key}" if path else key, node, key))
            elif isinstance(item, (dict, list)):
                _string_leaves(item, f"{path}.{key}" if path else key, out)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, str):
                out.append((len(item), path, node, i))
            elif isinstance(item, (dict, list)):
                _string_leaves(item, path, out)


def _shrink(record: dict[str, Any], budget: int, truncated: set[str]) -> bool:
    """Cut the longest strings (stored texts first: they are the longest) until the record fits
    ``budget`` bytes. False if it cannot be made to fit that way."""
    originals: dict[tuple[int, Any], str] = {}
    for _ in range(64):
        excess = _size(record) - budget
        if excess <= 0:
            return True
        leaves: list[tuple[int, str, Any, Any]] = []
        _string_leaves({k: v for k, v in record.items() if k != "custos"}, "", leaves)
        if not leaves:
            return False
        length, path, parent, key = max(leaves, key=lambda leaf: leaf[0])
        if length <= 64:
            return False
        original = originals.setdefault((id(parent), key), parent[key])
        current = parent[key]
        nbytes = len(current.encode())
        # Keep proportionally fewer characters (multi-byte text shrinks by bytes, not characters),
        # with room for the marker; the loop runs again if the estimate was short.
        # At most half per step: several long strings end up sharing the budget.
        target = max(nbytes // 2, nbytes - excess - 48)
        keep = min(len(current) - 1, max(16, len(current) * target // max(nbytes, 1)))
        keep = min(keep, len(original) - 1)
        parent[key] = cut(original, keep)
        truncated.add(path)
        _mark(record, truncated)
    return _size(record) <= budget


_MINIMAL_EVENT = (
    "id",
    "kind",
    "category",
    "dataset",
    "module",
    "action",
    "type",
    "outcome",
    "start",
    "end",
    "duration",
)


def _small(value: Any) -> Any:
    if isinstance(value, str):
        return cut(value, 128)
    if isinstance(value, list):
        return [_small(v) for v in value[:8]]
    return value if value is None or isinstance(value, (bool, int)) else None


def _minimal(record: Any) -> dict[str, Any]:
    """What is left when a record cannot be cut to size field by field: who, what, when, outcome."""
    record = record if isinstance(record, dict) else {}
    event = record.get("event") if isinstance(record.get("event"), dict) else {}
    user = record.get("user") if isinstance(record.get("user"), dict) else None
    http = record.get("http") if isinstance(record.get("http"), dict) else {}
    response = http.get("response") if isinstance(http.get("response"), dict) else {}
    url = record.get("url") if isinstance(record.get("url"), dict) else {}
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    return {
        "@timestamp": _small(record.get("@timestamp")),
        "event": {k: _small(event[k]) for k in _MINIMAL_EVENT if k in event},
        "user": {"id": _small(user.get("id"))} if user else None,
        "source": {"ip": _small(source.get("ip"))},
        "http": {"response": {"status_code": _small(response.get("status_code"))}},
        "url": {"path": _small(url.get("path"))},
    }


def _mark(record: dict[str, Any], truncated: set[str]) -> None:
    if truncated:
        custos = record.get("custos")
        record["custos"] = {**(custos if isinstance(custos, dict) else {}), "truncated": sorted(truncated)}


_FIELD_PATHS = [(tuple(path.split(".")), path, limit) for path, limit in FIELD_LIMITS.items()]


def _fits_as_is(record: dict[str, Any], max_bytes: int) -> bool:
    """True when ``record`` needs no cleaning: it encodes (no lone surrogate, no integer over 64 bits,
    no foreign type), is small enough that no string can pass the generic limit, and every named
    field (the lists of a record are all named) is within its limit. One encoding, a few lookups."""
    try:
        size = len(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
    except (TypeError, ValueError):
        return False
    if size > min(MAX_STRING, max_bytes - SEAL_RESERVE):
        return False
    for parts, path, limit in _FIELD_PATHS:
        value: Any = record
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or value is True or value is False:
            continue
        if isinstance(value, str):
            if len(value) > limit:
                return False
        elif isinstance(value, list):
            if len(value) > (MAX_ROLES if path == "user.roles" else MAX_LIST_ITEMS):
                return False
            for item in value:
                if not isinstance(item, str) or len(item) > limit:
                    return False
        elif not isinstance(value, int):
            return False
    return True


def finalize(record: dict[str, Any], max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> dict[str, Any]:
    """Clean ``record`` (total: never raises for any content) and bound it: per-field limits, then the
    whole record within ``max_bytes`` once sealed. Cut fields are listed in ``custos.truncated`` and
    counted in ``custos_audit_truncated_fields_total``."""
    if _fits_as_is(record, max_bytes):
        return record  # the common case: nothing to cut, nothing to replace
    truncated: set[str] = set()
    try:
        record = _clean(record, "", truncated)
        _mark(record, truncated)
        budget = max(1024, max_bytes - SEAL_RESERVE)
        if not _shrink(record, budget, truncated):
            truncated.add("record")
            record = _clean(_minimal(record), "", truncated)
            _mark(record, truncated)
    except Exception:  # a bug here must not cost the record: keep the bare minimum
        log.exception("audit: cannot bound a record; keeping its minimal form")
        truncated.add("record")
        record = _clean(_minimal(record), "", set())
        _mark(record, truncated)
    for path in truncated:
        metrics.TRUNCATED.labels(_metric_field(path)).inc()
    return record


def sanitize(record: dict[str, Any]) -> dict[str, Any]:
    """Only the cleaning part of ``finalize`` (for records that bypassed it)."""
    return finalize(record, max_bytes=1 << 30)


def fallback_record(ctx: RequestContext, max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> dict[str, Any]:
    """A record from the fields that cannot fail, for when ``build_record`` raised (a bug elsewhere
    must not cost the request its record)."""
    now = ctx.started_wall
    record = {
        "@timestamp": utc_iso(now),
        "event": {
            **_ECS_STATIC,
            "id": ctx.request_id,
            "action": ctx.operation,
            "type": ["access", "error"],
            "outcome": ctx.outcome if ctx.status is not None else "unknown",
            "start": utc_iso(now),
            "end": utc_iso(now + ctx.elapsed),
            "duration": int(ctx.elapsed * 1e9),
        },
        "user": {"id": ctx.identity.subject} if ctx.identity is not None else None,
        "source": {"ip": _ip(ctx.client_ip) if isinstance(ctx.client_ip, str) else None},
        "http": {"request": {"method": ctx.method}, "response": {"status_code": ctx.status}},
        "url": {"path": ctx.path},
        "custos": {"record_error": "the full record could not be built; see the sidecar log"},
    }
    return finalize(record, max_bytes)


# -- optional text capture (store_redacted_text) ---------------------------------------------------
class TextCapture(ResponseFilter):
    """Keeps the answer text as the client receives it (bounded), for ``store_redacted_text``.
    It only reads: the bytes pass unchanged, so the observe stage's output hash still holds. Given
    the request context, a stream is read through its shared parse (``RequestContext.sse_events``)
    instead of being split and parsed once more."""

    __slots__ = ("json_body", "limit", "parts", "size", "sse")

    def __init__(self, kind: str, limit: int, ctx: RequestContext | None = None) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.sse = SSEReader(shared_events(ctx) if ctx is not None else None) if kind == "sse" else None
        self.json_body = bytearray() if kind == "json" else None

    def feed(self, chunk: bytes) -> bytes:
        if chunk and self.size < self.limit:
            if self.sse is not None:
                for item in self.sse.items(chunk):
                    if type(item) is TokenRun:
                        if item.shape.key == "content":
                            self._add(item.text())
                    elif item.doc is not NOT_JSON:
                        self._take(item.doc, stream=True)
            elif self.json_body is not None:
                self.json_body += chunk
        return chunk

    def _take(self, doc: Any, stream: bool) -> None:
        if not isinstance(doc, dict):
            return
        if stream and doc.get("type") == "response.output_text.delta":  # the Responses API
            self._add(doc.get("delta"))
            return
        if not stream and doc.get("object") == "response":
            for item in doc.get("output") or ():
                for part in (item.get("content") if isinstance(item, dict) else None) or ():
                    if isinstance(part, dict) and part.get("type") == "output_text":
                        self._add(part.get("text"))
            return
        for choice in doc.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            holder = choice.get("delta" if stream else "message")
            self._add(holder.get("content") if isinstance(holder, dict) else choice.get("text"))

    def _add(self, piece: Any) -> None:
        if isinstance(piece, str) and piece:
            self.parts.append(piece)
            self.size += len(piece)

    def text(self) -> str | None:
        if self.json_body:
            try:
                self._take(orjson.loads(bytes(self.json_body)), stream=False)
            except orjson.JSONDecodeError:
                pass
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
