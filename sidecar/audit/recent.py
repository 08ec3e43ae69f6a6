"""``GET /admin/audit/recent``: the newest audit records of this sidecar's spool, reduced to a summary.

For operators (``custos top``'s denials pane) who have no Elasticsearch or Kibana at hand. Mounted
at ``/admin/audit`` by the audit stage's startup (``mount_recent``); it runs after the stage pipeline,
so the caller is authenticated and RBAC granted ``audit:read`` (the built-in route table) before this
app sees the request, and the request itself leaves an audit record like every other.

Query parameters (all optional):

- ``limit``: how many records, newest first (default 50, at most 500);
- ``outcome``: ``success``, ``failure`` or ``unknown`` (``event.outcome``);
- ``status``: comma-separated HTTP status codes, e.g. ``401,403,429``.

Bounded work per request: the newest segment files of every chain under the spool directory (one
chain per worker process) are read backwards, at most ``max_scan_bytes`` in all; so a filter that
matches nothing old reads a bounded amount and says ``"complete": false``. Disk reads run in a thread.
Each record is reduced to: ``timestamp``, ``request_id``, ``user_id``, ``roles``, ``status``,
``method``, ``path``, ``outcome``, ``reason`` (the deny reason, else the error message),
``error_type``, ``source_ip``. No prompt or answer hashes, no text.

The OpenAPI document of this endpoint is ``GET /admin/audit/openapi.json`` (``audit:read`` as well).
Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``; a bad query parameter
is a 400 whose ``param`` names it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from custos.apiutil import (
    ApiError,
    ErrorGuard,
    ErrorResponse,
    error_response,
    json_response,
    new_api,
    request_path,
)

from .compression import is_compressed, open_segment, segment_size
from .query import dig
from .spool import chain_dirs, list_segments

log = logging.getLogger("custos.audit")

PREFIX = "/admin/audit"
LAST_VERIFY = ".last-verify.json"  # written by `custos audit verify` beside the chains
PATH = PREFIX + "/recent"
OPENAPI_PATH = PREFIX + "/openapi.json"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_STATUSES = 20
MAX_SCAN_BYTES = 8 * 1024 * 1024
OUTCOMES = ("success", "failure", "unknown")
_CHUNK = 64 * 1024


class QueryError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def parse_query(query: bytes | str) -> tuple[int, str | None, frozenset[int] | None]:
    """(limit, outcome, statuses) from the query string; ``QueryError`` names the bad parameter."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    limit, outcome, statuses = DEFAULT_LIMIT, None, None
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key == "limit":
            if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
                raise QueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}.", "limit")
            limit = int(value)
        elif key == "outcome":
            if value not in OUTCOMES:
                raise QueryError(f"outcome must be one of {', '.join(OUTCOMES)}.", "outcome")
            outcome = value
        elif key == "status":
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if not parts or len(parts) > MAX_STATUSES:
                raise QueryError(
                    f"status must list 1 to {MAX_STATUSES} HTTP status codes, e.g. 401,403,429.", "status"
                )
            codes = set()
            for p in parts:
                if not p.isdigit() or not 100 <= int(p) <= 599:
                    raise QueryError(f"status: {p[:20]!r} is not an HTTP status code (100-599).", "status")
                codes.add(int(p))
            statuses = frozenset(codes)
        else:
            raise QueryError(
                f"Unknown query parameter {key[:40]!r} (known: limit, outcome, status).", key[:40]
            )
    return limit, outcome, statuses


def _lines_backwards(path: Path, budget: list[int]) -> Iterator[bytes]:
    """Complete lines of a file, last first, reading at most ``budget[0]`` bytes (decremented).
    A torn last line (no newline: being written, or left by a killed writer) is skipped."""
    if is_compressed(path) or not path.exists():
        # A sealed segment (compressed, maybe just now): complete lines only, read whole.
        try:
            with open_segment(path) as g:
                budget[0] -= segment_size(path)
                data = g.read()
        except (FileNotFoundError, OSError, EOFError):  # pruned while we listed it, or damaged
            return
        yield from (line for line in reversed(data.split(b"\n")) if line)
        return
    try:
        f = open(path, "rb")
    except FileNotFoundError:  # pruned after shipping while we listed it
        return
    try:
        pos = os.fstat(f.fileno()).st_size
        carry = b""  # the start of the file up to ``pos`` may still extend this line
        torn = True  # the piece after the last newline is torn (or empty): never returned
        while pos > 0 and budget[0] > 0:
            step = min(_CHUNK, pos, budget[0])
            pos -= step
            budget[0] -= step
            f.seek(pos)
            parts = (f.read(step) + carry).split(b"\n")
            carry = parts[0]
            rest = parts[1:]
            if torn and rest:
                rest.pop()
                torn = False
            for line in reversed(rest):
                if line:
                    yield line
        if pos == 0 and carry and not torn:
            yield carry
    finally:
        f.close()


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """One record reduced to what an operator scans for: who, what, when, why."""
    status = dig(doc, "http", "response", "status_code")
    reason = dig(doc, "event", "reason") or dig(doc, "llm", "authz", "reason") or dig(doc, "error", "message")
    roles = dig(doc, "user", "roles")
    return {
        "timestamp": doc.get("@timestamp"),
        "request_id": dig(doc, "event", "id"),
        "user_id": dig(doc, "user", "id"),
        "roles": roles if isinstance(roles, list) else [],
        "status": status if isinstance(status, int) else None,
        "method": dig(doc, "http", "request", "method"),
        "path": dig(doc, "url", "path"),
        "outcome": dig(doc, "event", "outcome"),
        "reason": reason,
        "error_type": dig(doc, "error", "type"),
        "source_ip": dig(doc, "source", "ip"),
    }


def read_recent(
    spool_dir: Path,
    limit: int = DEFAULT_LIMIT,
    outcome: str | None = None,
    statuses: frozenset[int] | None = None,
    max_scan_bytes: int = MAX_SCAN_BYTES,
) -> dict[str, Any]:
    """The newest ``limit`` matching records over every chain of the spool, newest first."""
    budget = [max_scan_bytes]
    found: list[dict[str, Any]] = []
    chains = chain_dirs(Path(spool_dir))
    complete = True
    for chain in chains:
        per_chain: list[dict[str, Any]] = []
        for _first, seg in reversed(list_segments(chain)):
            for line in _lines_backwards(seg, budget):
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(doc, dict):
                    continue
                if outcome is not None and dig(doc, "event", "outcome") != outcome:
                    continue
                if statuses is not None and dig(doc, "http", "response", "status_code") not in statuses:
                    continue
                per_chain.append(summarize(doc))
                if len(per_chain) >= limit:
                    break
            if len(per_chain) >= limit or budget[0] <= 0:
                break
        if budget[0] <= 0 and len(per_chain) < limit:
            complete = False
        found.extend(per_chain)
    # Timestamps are fixed-width UTC ISO strings: they sort as text.
    newest = heapq.nlargest(limit, found, key=lambda r: str(r.get("timestamp") or ""))
    return {
        "records": newest,
        "chains": len(chains),
        "complete": complete,
        "last_verification": last_verification(Path(spool_dir)),
    }


def last_verification(spool_dir: Path) -> dict[str, Any] | None:
    """The outcome of the last ``custos audit verify`` run on this host (None: never verified)."""
    try:
        doc = orjson.loads((spool_dir / LAST_VERIFY).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


# -- the HTTP API (FastAPI) -------------------------------------------------------------------------
class RecentRecord(BaseModel):
    """One audit record, reduced (values as the record holds them; null when it has none)."""

    timestamp: str | None = Field(None, description="@timestamp, RFC 3339 UTC")
    request_id: str | None = Field(None, description="event.id (x-request-id)")
    user_id: str | None = Field(None, description="user.id: the subject, null before authentication")
    roles: list[str] = Field(default_factory=list, description="user.roles")
    status: int | None = Field(None, description="http.response.status_code")
    method: str | None = None
    path: str | None = Field(None, description="url.path")
    outcome: str | None = Field(None, description="event.outcome: success, failure or unknown")
    reason: str | None = Field(None, description="the deny reason, else the error message")
    error_type: str | None = Field(None, description="error.type")
    source_ip: str | None = Field(None, description="source.ip")


class RecentAnswer(BaseModel):
    records: list[RecentRecord] = Field(description="newest first")
    chains: int = Field(description="spool chains read (one per worker process)")
    complete: bool = Field(description="false: the scan budget ran out before enough records matched")
    last_verification: dict[str, Any] | None = Field(
        None, description="the outcome of the last `custos audit verify` on this host (null: never)"
    )


_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "how many records, newest first",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "outcome",
        "in": "query",
        "required": False,
        "description": "event.outcome",
        "schema": {"type": "string", "enum": list(OUTCOMES)},
    },
    {
        "name": "status",
        "in": "query",
        "required": False,
        "description": f"comma-separated HTTP status codes (1 to {MAX_STATUSES}), e.g. 401,403,429",
        "schema": {"type": "string", "pattern": r"^\s*[0-9]{3}\s*(,\s*[0-9]{3}\s*)*,?$"},
    },
]


def create_app(spool_dir: Path, max_scan_bytes: int = MAX_SCAN_BYTES) -> FastAPI:
    api = new_api(
        "Custos audit: recent records",
        __doc__,
        openapi_url=OPENAPI_PATH,
        internal_message="Internal error reading the audit spool.",
        log=log,
        what="audit",
        redirect_slashes=False,
    )

    @api.exception_handler(StarletteHTTPException)
    async def _unrouted(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        method = request.method
        if exc.status_code == 405 and request.scope["path"] == PATH:
            return error_response(405, f"{method} is not allowed on {PATH}; use GET.", "method_not_allowed")
        if exc.status_code in (404, 405):
            return error_response(404, f"No route for {method} {request_path(request)}.", "not_found")
        return error_response(exc.status_code, str(exc.detail), "http_error")

    @api.get(
        PATH,
        response_model=RecentAnswer,
        responses={400: {"model": ErrorResponse, "description": "a bad query parameter (error.param)"}},
        summary="The newest audit records of this sidecar's spool",
        operation_id="listRecentAuditRecords",
        openapi_extra={"parameters": _PARAMETERS},
    )
    async def recent(request: Request) -> Response:
        # The query string is parsed here, not by FastAPI: the same answers (and messages) as before.
        try:
            limit, outcome, statuses = parse_query(request.scope.get("query_string", b""))
        except QueryError as exc:
            raise ApiError(400, str(exc), "invalid_request", exc.param) from None
        result = await asyncio.to_thread(read_recent, spool_dir, limit, outcome, statuses, max_scan_bytes)
        return json_response(result)

    return api


class RecentRecords:
    """ASGI app for ``GET /admin/audit/recent`` (and its OpenAPI document) over one spool directory."""

    def __init__(self, spool_dir: Path | str, max_scan_bytes: int = MAX_SCAN_BYTES) -> None:
        self.spool_dir = Path(spool_dir)
        self.max_scan_bytes = max_scan_bytes
        self.api = create_app(self.spool_dir, max_scan_bytes)
        self._app = ErrorGuard(
            self.api,
            internal_message="Internal error reading the audit spool.",
            log=log,
            what="audit: /admin/audit/recent",
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def mount_recent(app: Any, spool_dir: Path | str) -> RecentRecords:
    """Serve ``GET /admin/audit/recent`` from ``spool_dir`` on the sidecar app (``CustosApp.mount``)."""
    recent = RecentRecords(spool_dir)
    app.mount(PREFIX, recent)
    return recent
