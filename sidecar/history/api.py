"""``GET /v1/history``: a caller's own past requests, from the audit trail (FastAPI, OpenAPI document).

Mounted at ``/v1/history`` by the audit stage's startup (:func:`mount_history`): it runs after the stage
pipeline, so the caller is authenticated, RBAC granted ``history:list`` (built-in route table) and the
request leaves an audit record like every other; it is answered here, never forwarded upstream.

- ``GET /v1/history``: the caller's records, newest first. Filters ``since``/``until`` (RFC 3339, or a
  duration back from now such as ``1h``), ``model``, ``status`` (``200``, ``401,403``, ``4xx``),
  ``operation``; ``limit`` (1-100, default 20) and an opaque ``cursor`` (``next_cursor`` of the previous
  page, valid with the same filters only).
- ``GET /v1/history/{request_id}``: one record.
- ``GET /v1/history/openapi.json``: the OpenAPI document.

Who sees what: a caller sees only records whose ``user.id`` is their own subject. A caller whose roles
grant ``audit:read`` (evaluated with the policy of the authorize stage) may pass ``?user=`` to read
another subject, and looks up any request id. Another user's record is 404, like one that does not
exist, so request ids cannot be probed. Texts: the prompt and the answer exactly as the record stores
them (after PII redaction: the record never holds raw text), and only while
``audit.store_redacted_text`` is on.

Source: Elasticsearch when the trail ships there (``audit.elasticsearch.hosts``; records appear once
shipped, usually within a second or two), else the local spool through :class:`SpoolIndex`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from custos.apiutil import ApiError, ErrorResponse, new_api, scope_identity

from ..audit.config import AuditConfig
from ..audit.query import Filter, QueryError, dig, parse_statuses, parse_time, search_es_page
from .index import SpoolIndex

log = logging.getLogger("custos.history")

PREFIX = "/v1/history"
OPENAPI_PATH = PREFIX + "/openapi.json"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
AUDIT_READ = "audit:read"
KNOWN_PARAMS = frozenset({"limit", "cursor", "since", "until", "model", "status", "operation", "user"})
REQUEST_ID = r"^[A-Za-z0-9._:\-]{1,128}$"


# -- models -----------------------------------------------------------------------------------------
class Usage(BaseModel):
    input_tokens: int | None = Field(None, description="prompt tokens (llm.usage.input_tokens)")
    output_tokens: int | None = Field(None, description="completion tokens (llm.usage.output_tokens)")


class RecordError(BaseModel):
    type: str | None = None
    code: str | None = None
    message: str | None = None


class HistoryEntry(BaseModel):
    object: Literal["history.entry"] = "history.entry"
    id: str = Field(description="the request id (x-request-id; event.id)")
    created_at: str = Field(description="when the request started, RFC 3339 UTC (@timestamp)")
    user: str | None = Field(None, description="the subject (user.id)")
    model: str | None = None
    operation: str | None = Field(None, description="chat, completions, embeddings, models, history, ...")
    method: str | None = None
    path: str | None = None
    status: int | None = Field(None, description="HTTP status the client got")
    outcome: str | None = Field(None, description="success, failure or unknown")
    stream: bool | None = None
    duration_ms: int | None = None
    usage: Usage
    finish_reasons: list[str] = Field(default_factory=list)
    redactions: dict[str, int] = Field(default_factory=dict, description="PII found, per type")
    redactions_total: int = 0
    error: RecordError | None = None
    prompt: str | None = Field(
        None, description="the prompt as stored (redacted); only with audit.store_redacted_text"
    )
    answer: str | None = Field(
        None, description="the answer as stored (redacted); only with audit.store_redacted_text"
    )


class HistoryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[HistoryEntry]
    has_more: bool
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next (older) page")
    source: Literal["elasticsearch", "spool"]


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a bad parameter (error.param names it)"},
    401: {"model": ErrorResponse, "description": "no authenticated caller"},
    403: {"model": ErrorResponse, "description": "?user= of another subject without audit:read"},
}


# -- records -> entries -----------------------------------------------------------------------------
def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def entry(doc: dict[str, Any], with_text: bool) -> HistoryEntry:
    redactions = dig(doc, "llm", "redactions")
    finish = dig(doc, "llm", "response", "finish_reasons")
    err = doc.get("error")
    duration = _int(dig(doc, "event", "duration"))
    return HistoryEntry(
        id=_str(dig(doc, "event", "id")) or "",
        created_at=_str(doc.get("@timestamp")) or "",
        user=_str(dig(doc, "user", "id")),
        model=_str(dig(doc, "llm", "request", "model")),
        operation=_str(dig(doc, "llm", "operation", "name")),
        method=_str(dig(doc, "http", "request", "method")),
        path=_str(dig(doc, "url", "path")),
        status=_int(dig(doc, "http", "response", "status_code")),
        outcome=_str(dig(doc, "event", "outcome")),
        stream=dig(doc, "llm", "request", "stream")
        if isinstance(dig(doc, "llm", "request", "stream"), bool)
        else None,
        duration_ms=None if duration is None else duration // 1_000_000,
        usage=Usage(
            input_tokens=_int(dig(doc, "llm", "usage", "input_tokens")),
            output_tokens=_int(dig(doc, "llm", "usage", "output_tokens")),
        ),
        finish_reasons=[f for f in finish if isinstance(f, str)] if isinstance(finish, list) else [],
        redactions={k: v for k, v in redactions.items() if _int(v) is not None}
        if isinstance(redactions, dict)
        else {},
        redactions_total=_int(dig(doc, "llm", "redactions_total")) or 0,
        error=RecordError(
            type=_str(err.get("type")), code=_str(err.get("code")), message=_str(err.get("message"))
        )
        if isinstance(err, dict)
        else None,
        prompt=_str(dig(doc, "llm", "prompt", "text")) if with_text else None,
        answer=_str(dig(doc, "llm", "output", "text")) if with_text else None,
    )


# -- cursors ----------------------------------------------------------------------------------------
def _query_tag(subject: str | None, flt: Filter) -> str:
    """Binds a cursor to its query: a cursor replayed with other filters or another user is refused."""
    key = orjson.dumps([subject, flt.since, flt.until, flt.model, sorted(flt.statuses or ()), flt.operation])
    return hashlib.sha256(key).hexdigest()[:16]


def encode_cursor(kind: str, tag: str, after: list[Any]) -> str:
    raw = orjson.dumps({"k": kind, "q": tag, "a": after})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, kind: str, tag: str) -> list[Any]:
    bad = ApiError(
        400, "cursor is not a cursor of this query (use next_cursor as given).", "invalid_cursor", "cursor"
    )
    if len(text) > 2048:
        raise bad
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise bad from None
    if not isinstance(doc, dict) or doc.get("k") != kind or doc.get("q") != tag:
        raise bad
    after = doc.get("a")
    if not isinstance(after, list) or not after or len(after) > 8:
        raise bad
    return after


# -- sources ----------------------------------------------------------------------------------------
class SpoolSource:
    kind: Literal["spool"] = "spool"

    def __init__(self, index: SpoolIndex) -> None:
        self.index = index

    def page(
        self, subject: str | None, flt: Filter, limit: int, after: list[Any] | None
    ) -> tuple[list[dict[str, Any]], list[Any] | None, bool]:
        key = None
        if after is not None:
            if not (
                len(after) == 5
                and isinstance(after[0], (int, float))
                and all(isinstance(a, str) for a in after[1:3])
                and all(isinstance(a, int) for a in after[3:5])
            ):
                raise ApiError(400, "cursor is not a cursor of this query.", "invalid_cursor", "cursor")
            key = (float(after[0]), after[1], after[2], after[3], after[4])
        docs, last, more = self.index.page(subject, flt, limit, key)
        return docs, list(last) if last is not None else None, more

    def find(self, request_id: str, subject: str | None) -> dict[str, Any] | None:
        return self.index.find(request_id, subject)


class ElasticsearchSource:
    kind: Literal["elasticsearch"] = "elasticsearch"

    def __init__(self, config: Any) -> None:
        from elasticsearch import Elasticsearch  # the client library loads only when shipping is on

        from ..audit.es import client_options, search_pattern

        self.client = Elasticsearch(**client_options(config))
        self.index = search_pattern(config)

    def page(
        self, subject: str | None, flt: Filter, limit: int, after: list[Any] | None
    ) -> tuple[list[dict[str, Any]], list[Any] | None, bool]:
        if subject is not None:
            flt.user = subject
        if after is not None and len(after) != 4:
            raise ApiError(400, "cursor is not a cursor of this query.", "invalid_cursor", "cursor")
        hits = search_es_page(self.client, self.index, flt, limit + 1, after)
        more = len(hits) > limit
        hits = hits[:limit]
        return [doc for doc, _ in hits], (hits[-1][1] if hits else None), more

    def find(self, request_id: str, subject: str | None) -> dict[str, Any] | None:
        flt = Filter(request_id=request_id, user=subject)
        hits = search_es_page(self.client, self.index, flt, 1)
        return hits[0][0] if hits else None


# -- the app ----------------------------------------------------------------------------------------
Checker = Callable[[dict[str, Any], tuple[str, ...]], bool]


def policy_checker(app: Any) -> Checker:
    """``may_read_audit(scope, roles)``: ``audit:read`` evaluated like alerting.api's authorizer does,
    with the authorize stage's current policy (every caller may, when RBAC is off)."""
    pipeline = getattr(app, "pipeline", None)
    authz = pipeline.stage("authorize") if pipeline is not None and hasattr(pipeline, "stage") else None

    def may(scope: dict[str, Any], roles: tuple[str, ...]) -> bool:
        store = getattr(authz, "store", None)
        if store is None:  # RBAC off: every authenticated caller may do everything (as alerting.api)
            return True
        ip = scope.get("custos.client_ip") or (scope.get("client") or ("", 0))[0]
        return bool(store.policy.evaluate(roles, AUDIT_READ, model=None, client_ip=ip).allowed)

    return may


def _filter(
    since: str | None, until: str | None, model: str | None, status: str | None, operation: str | None
) -> Filter:
    def when(value: str | None, name: str) -> float | None:
        if value is None:
            return None
        try:
            return parse_time(value)
        except QueryError as exc:
            raise ApiError(400, f"{name}: {exc}", "invalid_parameter", name) from None

    lo, hi = when(since, "since"), when(until, "until")
    statuses = None
    if status is not None:
        try:
            statuses = parse_statuses(status)
        except QueryError as exc:
            raise ApiError(400, f"status: {exc}", "invalid_parameter", "status") from None
    try:
        return Filter(since=lo, until=hi, model=model, statuses=statuses, operation=operation)
    except QueryError:
        raise ApiError(400, "until must be later than since.", "invalid_parameter", "until") from None


def create_app(source: Any, *, with_text: bool, may_read_audit: Checker) -> FastAPI:
    api = new_api(
        "Custos History API",
        __doc__,
        openapi_url=OPENAPI_PATH,
        internal_message="Internal error reading the audit trail.",
        log=log,
        what="history",
    )

    def caller(request: Request) -> tuple[str, tuple[str, ...]]:
        identity = scope_identity(request)
        if identity is None or not getattr(identity, "subject", None):
            raise ApiError(401, "The History API needs an authenticated caller.", "auth_required")
        return identity.subject, tuple(identity.roles)

    def subject_for(request: Request, user: str | None) -> str | None:
        """The subject to read; None: every subject (audit:read, no ?user=, single-record lookups)."""
        me, roles = caller(request)
        if user is None or user == me:
            return me
        if not may_read_audit(request.scope, roles):
            raise ApiError(
                403, f"Reading another user's history needs {AUDIT_READ}.", "permission_denied", "user"
            )
        return user

    @api.get(
        PREFIX,
        response_model=HistoryList,
        responses=_ERRORS,
        summary="List past requests, newest first",
        operation_id="listHistory",
    )
    async def list_history(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="records per page")] = DEFAULT_LIMIT,
        cursor: Annotated[
            str | None, Query(max_length=2048, description="next_cursor of the previous page")
        ] = None,
        since: Annotated[str | None, Query(max_length=64, description="RFC 3339, inclusive")] = None,
        until: Annotated[str | None, Query(max_length=64, description="RFC 3339, exclusive")] = None,
        model: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
        status: Annotated[str | None, Query(max_length=200, description="200, 401,403 or 4xx")] = None,
        operation: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        user: Annotated[
            str | None, Query(min_length=1, max_length=256, description="needs audit:read")
        ] = None,
    ) -> HistoryList:
        unknown = sorted(set(request.query_params) - KNOWN_PARAMS)
        if unknown:
            name = unknown[0][:40]
            raise ApiError(
                400, f"Unknown query parameter {name!r} (known: {', '.join(sorted(KNOWN_PARAMS))}).",
                "unknown_parameter", name,
            )  # fmt: skip
        subject = subject_for(request, user)
        flt = _filter(since, until, model, status, operation)
        tag = _query_tag(subject, flt)
        after = decode_cursor(cursor, source.kind, tag) if cursor is not None else None
        docs, last, more = await asyncio.to_thread(source.page, subject, flt, limit, after)
        return HistoryList(
            data=[entry(d, with_text) for d in docs],
            has_more=more,
            next_cursor=encode_cursor(source.kind, tag, last) if more and last is not None else None,
            source=source.kind,
        )

    @api.get(
        PREFIX + "/{request_id}",
        response_model=HistoryEntry,
        responses={**_ERRORS, 404: {"model": ErrorResponse, "description": "no such record of yours"}},
        summary="One past request",
        operation_id="getHistoryEntry",
    )
    async def get_history(
        request: Request,
        request_id: Annotated[str, PathParam(pattern=REQUEST_ID, description="the request id")],
    ) -> HistoryEntry:
        me, roles = caller(request)
        subject = None if may_read_audit(request.scope, roles) else me
        doc = await asyncio.to_thread(source.find, request_id, subject)
        if doc is None:
            # Someone else's record reads exactly like a missing one: ids cannot be probed.
            raise ApiError(404, f"No request {request_id!r} in your history.", "not_found", "request_id")
        return entry(doc, with_text)

    return api


def mount_history(app: Any, config: AuditConfig, spool_dir: Path | str) -> FastAPI:
    """Serve the History API at ``/v1/history`` on the sidecar app (``CustosApp.mount``, operation
    ``history``): from Elasticsearch when the trail ships there, else from ``spool_dir`` (its index is
    built in the background from now on)."""
    es = config.elasticsearch
    if es.hosts:
        source: Any = ElasticsearchSource(es)
    else:
        index = SpoolIndex(spool_dir)
        source = SpoolSource(index)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # called outside the server: the index is built on first use
        if loop is not None:
            task = loop.create_task(asyncio.to_thread(index.refresh), name="history-index")
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
    api = create_app(source, with_text=config.store_redacted_text, may_read_audit=policy_checker(app))
    api.state.source = source
    app.mount(PREFIX, api, operation="history")
    return api


_BACKGROUND: set[asyncio.Task[Any]] = set()
