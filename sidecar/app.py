"""The sidecar's ASGI application.

A plain ASGI callable rather than a framework router: the proxied path is the hot path and needs
nothing a router offers. Routes:

- ``/health``  liveness: answers at once, never touches the upstream.
- ``/ready``   readiness: the upstream answers ``/v1/models`` with at least one model; 503 otherwise.
- ``/v1/...`` and vLLM's root inference routes (``/tokenize``, ``/detokenize``, ``/pooling``,
  exactly these: ``context.ROOT_ROUTES``): the stage pipeline, then forwarded upstream. Optional
  endpoints switched off in ``endpoints:`` answer 404 before their body is read, audited.
- ``/metrics``, ``/metrics/upstream`` (the upstream's own metrics, relayed), ``/admin/...`` (sub-apps
  that features mount at startup): the same stage pipeline (identity, authorization, audit), then
  answered here instead of upstream.
- anything else: 404, audited.

Every request but the two probes runs through the pipeline, so it is authenticated, authorized, rate
limited and leaves one audit record. Paths are canonical or refused, so the path that is authorized
is the path that is forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from custos.errors import ProxyError, bad_request

from . import httpproto
from .clientip import parse_networks, resolve_client_ip
from .config import Config, load_config
from .context import RequestContext, proxied
from .endpoints import disabled_paths, not_enabled
from .forward import Receive, Send, UpstreamClient, strip_hop_by_hop
from .gctune import tune_gc
from .pipeline import Pipeline, Terminal, build_stages, send_error
from .stage import Stage

log = logging.getLogger("custos.app")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

_REQUEST_ID_OK = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_JSON = [(b"content-type", b"application/json")]
_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_HEADERS = [*_JSON, (b"content-length", str(len(_HEALTH_BODY)).encode())]
_METRICS_TYPE = CONTENT_TYPE_LATEST.encode()
MAX_PATH_CHARS = 2048
# A canonical path: printable ASCII without spaces or backslashes, no empty, "." or ".." segment.
_PATH_CHARS = re.compile(r"^/[!$&'()*+,\-.0-9:;=@A-Z_a-z~/]*$")
_ENCODED_SLASH = re.compile(rb"%2[fF]|%5[cC]|%2[eE]")


def new_request_id() -> str:
    return os.urandom(16).hex()


def path_problem(path: str, raw_path: bytes | None) -> ProxyError | None:
    """Why ``path`` is not canonical, or None. Non-canonical paths are refused, not normalized: the
    route table, the audit record and the upstream then all see one and the same path."""
    if len(path) > MAX_PATH_CHARS:
        return ProxyError(
            414, f"The request path is longer than {MAX_PATH_CHARS} characters.", code="uri_too_long"
        )
    if raw_path is not None and _ENCODED_SLASH.search(raw_path):
        return bad_request("The request path must not percent-encode '/', '\\' or '.'.", code="invalid_path")
    if not _PATH_CHARS.fullmatch(path):
        return bad_request(
            "The request path contains characters that are not allowed (control characters, spaces, "
            "non-ASCII or '\\').",
            code="invalid_path",
        )
    segments = path[1:].split("/")
    if any(s in (".", "..") for s in segments) or any(not s for s in segments[:-1]):
        return bad_request(
            "The request path must not contain '.', '..' or empty segments.", code="invalid_path"
        )
    return None


class CustosApp:
    def __init__(self, config: Config, stages: list[Stage] | None = None) -> None:
        self.config = config
        server = config.server
        httpproto.configure(
            httpproto.HeadLimits(server.max_header_bytes, server.max_headers, server.header_timeout_s)
        )
        self.upstream = UpstreamClient(config.upstream)
        self.pipeline = Pipeline(build_stages(config) if stages is None else stages, self.upstream)
        self.max_body = server.max_body_bytes
        self.body_timeout_s = server.body_timeout_s
        self.trusted_proxies = parse_networks(config.rbac.trusted_proxies)
        self.disabled = disabled_paths(config.endpoints)
        self.metrics_need_token = config.metrics.require_token
        self.mounts: dict[str, ASGIApp] = {}
        self._operations: dict[str, str] = {}
        self._v1_mounts: list[str] = []
        # Features may replace how /metrics renders (multiprocess collection, extra registries).
        self.render_metrics: Callable[[], bytes] = lambda: generate_latest(REGISTRY)
        self._forward: Terminal = self._upstream_terminal
        self._local: dict[str, tuple[str, Terminal]] = {
            "/metrics": ("metrics", self._metrics_terminal),
            "/metrics/upstream": ("metrics", self._upstream_metrics_terminal),
        }

    def mount(self, prefix: str, app: ASGIApp, *, operation: str = "admin") -> None:
        """Serve ``prefix`` (e.g. ``/admin/alerts``, ``/v1/history``) with another ASGI app; the prefix is
        kept in the path. The app runs after the stages: ``scope["custos.identity"]`` holds the
        authenticated caller. ``operation`` names such requests in metrics, traces and audit records."""
        prefix = prefix.rstrip("/")
        self.mounts[prefix] = app
        self._operations[prefix] = operation
        if prefix.startswith("/v1/"):
            # Served here instead of upstream; the proxied path scans only these (usually one).
            self._v1_mounts = [p for p in self.mounts if p.startswith("/v1/")]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path == "/health":
                await send({"type": "http.response.start", "status": 200, "headers": _HEALTH_HEADERS})
                await send({"type": "http.response.body", "body": _HEALTH_BODY})
            elif path == "/ready":
                await self._ready(send)
            elif not self.metrics_need_token and path in self._local:
                # metrics.require_token: false — served like the probes (no identity, no record).
                await self._open_metrics(path, send)
            else:
                await self._request(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for stage in self.pipeline.stages:
                        await stage.startup(self)
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                tune_gc()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for stage in reversed(self.pipeline.stages):
                    try:
                        await stage.shutdown()
                    except Exception:
                        log.exception("stage %s failed to shut down", stage.name)
                await self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _ready(self, send: Any) -> None:
        # The reason is for a prober, who may be anyone: never the upstream's address or an exception.
        reason = None
        try:
            status, doc = await self.upstream.get_json("/v1/models", self.config.upstream.ready_timeout_s)
            if status != 200:
                reason = f"upstream answered HTTP {status}"
            elif not isinstance(doc, dict) or not doc.get("data"):
                reason = "upstream serves no models"
        except TimeoutError:
            reason = "upstream did not answer in time"
        except Exception as exc:
            log.warning("readiness check: upstream unreachable: %s: %s", type(exc).__name__, exc)
            reason = "upstream unreachable"
        if reason is None:
            await _send_simple(send, 200, b'{"status":"ready"}', b"application/json")
        else:
            body = orjson.dumps({"status": "not ready", "reason": reason})
            await _send_simple(send, 503, body, b"application/json")

    # -- the pipeline's terminals: where an admitted request is answered ------------------------
    async def _upstream_terminal(self, ctx: RequestContext, send: Send, receive: Receive) -> None:
        await self.upstream.forward(ctx, send, receive, self.pipeline.filters_for, self.pipeline.response_end)

    async def _metrics_terminal(self, ctx: RequestContext, send: Send, receive: Receive) -> None:
        status, body, content_type = await self._render_metrics()
        await self._answer_local(ctx, send, status, body, content_type)

    async def _upstream_metrics_terminal(self, ctx: RequestContext, send: Send, receive: Receive) -> None:
        status, body, content_type = await self._read_upstream_metrics()
        await self._answer_local(ctx, send, status, body, content_type)

    async def _open_metrics(self, path: str, send: Send) -> None:
        try:
            if path == "/metrics":
                status, body, content_type = await self._render_metrics()
            else:
                status, body, content_type = await self._read_upstream_metrics()
        except ProxyError as exc:
            await send_error(send, exc)
            return
        await _send_simple(send, status, body, content_type)

    async def _render_metrics(self) -> tuple[int, bytes, bytes]:
        body = await asyncio.to_thread(self.render_metrics)  # multiprocess mode reads files
        return 200, body, _METRICS_TYPE

    async def _read_upstream_metrics(self) -> tuple[int, bytes, bytes]:
        """The upstream's own /metrics, relayed: in a Pod the engine listens on localhost only, so
        Prometheus reaches vLLM's metrics through the sidecar's port."""
        try:
            status, content_type, body = await self.upstream.get(
                "/metrics", self.config.upstream.ready_timeout_s
            )
        except Exception as exc:
            log.warning("reading the upstream's /metrics failed: %s: %s", type(exc).__name__, exc)
            raise ProxyError(
                502,
                "The upstream's metrics could not be read.",
                type="upstream_error",
                code="upstream_unreachable",
            ) from None
        return status, body, (content_type or "text/plain").encode("latin-1")

    async def _answer_local(
        self, ctx: RequestContext, send: Send, status: int, body: bytes, content_type: bytes
    ) -> None:
        ctx.status = status
        ctx.response_bytes = len(body)  # known before the record is written
        if self.pipeline.response_end is not None:
            try:
                await self.pipeline.response_end(ctx)  # the audit record first
            except ProxyError:
                ctx.status = None  # nothing sent yet: the pipeline answers with this error
                ctx.response_bytes = 0
                raise
        ctx.first_byte_at = time.perf_counter()
        await _send_simple(send, status, body, content_type)

    def _mounted_terminal(self, app: ASGIApp, scope: dict[str, Any]) -> Terminal:
        async def terminal(ctx: RequestContext, send: Send, receive: Receive) -> None:
            # The sub-app reads the body the pipeline already read; its answer (small JSON) is held
            # until the response-end hooks ran, so a fail_closed audit record precedes it.
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": ctx.body, "more_body": False}
                return await receive()

            messages: list[dict[str, Any]] = []

            async def hold(message: dict[str, Any]) -> None:
                messages.append(message)

            sub_scope = {**scope, "custos.identity": ctx.identity, "custos.client_ip": ctx.client_ip}
            await app(sub_scope, replay, hold)
            start = next((m for m in messages if m["type"] == "http.response.start"), None)
            if start is None:
                raise ProxyError(
                    500, "Internal error in the Custos sidecar.", type="server_error", code="internal"
                )
            body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
            ctx.status = start["status"]
            ctx.response_bytes = len(body)
            if ctx.status >= 400:
                ctx.error = _sub_app_error(ctx.status, body)
            if self.pipeline.response_end is not None:
                try:
                    await self.pipeline.response_end(ctx)
                except ProxyError:
                    ctx.status = None
                    ctx.response_bytes = 0
                    raise
            ctx.first_byte_at = time.perf_counter()
            await send(
                {
                    **start,
                    "headers": [h for h in start["headers"] if h[0] != b"content-length"]
                    + [(b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})

        return terminal

    def _route(self, scope: dict[str, Any], ctx: RequestContext) -> Terminal | None:
        path = ctx.path
        if proxied(path):
            for prefix in self._v1_mounts:
                if path == prefix or path.startswith(prefix + "/"):
                    return self._mounted(prefix, scope, ctx)
            return self._forward
        local = self._local.get(path)
        if local is not None:
            ctx.route = path
            ctx.operation = local[0]
            return local[1]
        for prefix in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return self._mounted(prefix, scope, ctx)
        return None

    def _mounted(self, prefix: str, scope: dict[str, Any], ctx: RequestContext) -> Terminal:
        ctx.route = prefix
        ctx.operation = self._operations[prefix]
        return self._mounted_terminal(self.mounts[prefix], scope)

    async def refused_head(self, peer: str, url: bytes, status: int, code: str, message: str) -> None:
        """A request the HTTP protocol refused before its head was complete (431, 408): answered
        there already, but audited and counted here like every other request (the guard stage
        charges its source's failure budget too)."""
        path = url.split(b"?", 1)[0][:MAX_PATH_CHARS].decode("latin-1")
        ctx = RequestContext(
            request_id=new_request_id(),
            method="",
            path=path.encode("ascii", "backslashreplace").decode("ascii"),
            query=b"",
            headers=[],
            client_ip=peer,
        )

        async def already_answered(message: dict[str, Any]) -> None:
            return None

        await self.pipeline.reject(ctx, ProxyError(status, message, code=code), already_answered)

    async def _request(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request_id = None
        declared_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _REQUEST_ID_OK.match(value):
                request_id = value.decode()
            elif name == b"content-length":
                declared_length = value
        # x-request-id is ours to send (kept or new); x-custos-* headers are ours to set, and a
        # client sending them is attempting to spoof.
        headers = [
            (name, value)
            for name, value in strip_hop_by_hop(scope["headers"])
            if name != b"x-request-id" and not name.startswith(b"x-custos-")
        ]
        if request_id is None:
            request_id = new_request_id()
        rid = request_id.encode()
        reply_send = _with_request_id(send, rid)
        client = scope.get("client")
        peer = client[0] if client else ""
        path: str = scope["path"]
        problem = path_problem(path, scope.get("raw_path"))
        ctx = RequestContext(
            request_id=request_id,
            method=scope["method"],
            # A refused path is recorded as its printable form only (it is client-controlled).
            path=path if problem is None else path.encode("ascii", "backslashreplace").decode("ascii"),
            query=scope.get("query_string", b""),
            headers=headers,
            # X-Forwarded-For counts only when the peer is one of rbac.trusted_proxies.
            client_ip=resolve_client_ip(peer, scope["headers"], self.trusted_proxies),
        )
        ctx.upstream_headers.append((b"x-request-id", rid))
        terminal = None if problem is not None else self._route(scope, ctx)
        try:
            if problem is not None:
                raise problem
            if terminal is None:
                raise ProxyError(404, f"No route for {ctx.method} {ctx.path}.", code="not_found")
            if terminal is self._forward and ctx.path in self.disabled:
                raise not_enabled(ctx.path)
            if (
                declared_length is not None
                and declared_length.isdigit()
                and int(declared_length) > self.max_body
            ):
                raise _too_large(self.max_body)
            ctx.body = await _read_body(receive, self.max_body, self.body_timeout_s)
        except ProxyError as exc:
            # Rejected before the pipeline ran: still audited and counted.
            await self.pipeline.reject(ctx, exc, reply_send)
            return
        # The forward step is the pipeline's own default terminal (no extra hop on the hot path).
        await self.pipeline.run(ctx, reply_send, receive, None if terminal is self._forward else terminal)


def _sub_app_error(status: int, body: bytes) -> ProxyError:
    """A mounted app's error answer, as the error the audit record and metrics show."""
    message, code = f"HTTP {status}", None
    try:
        err = orjson.loads(body).get("error") or {}
        message, code = str(err.get("message") or message), err.get("code")
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return ProxyError(status, message, code=code)


def _too_large(limit: int) -> ProxyError:
    return ProxyError(
        413,
        f"Request body is larger than the limit of {limit} bytes (server.max_body_bytes).",
        code="request_too_large",
    )


async def _read_body(receive: Any, limit: int, timeout_s: float) -> bytes:
    # What asyncio.timeout does, without its context manager: a bare timer is ~7 us cheaper per
    # request here, and nearly every body is already in when the app asks for it.
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await _read_body_unbounded_in_time(receive, limit)
    except asyncio.CancelledError:
        # Ours only when the timer fired and no other cancellation (shutdown) is pending.
        if expired and task.uncancel() == 0:
            raise ProxyError(
                408,
                f"The request body was not received within {timeout_s:g} s (server.body_timeout_s).",
                code="request_timeout",
            ) from None
        raise
    finally:
        timer.cancel()


async def _read_body_unbounded_in_time(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ProxyError(499, "Client closed the request.", code="client_closed")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _with_request_id(send: Any, rid: bytes) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (b"x-request-id", rid)]
        await send(message)

    return wrapped


async def _send_simple(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(config: Config | None = None) -> CustosApp:
    """Factory for uvicorn (``--factory``): reads the config named by ``CUSTOS_CONFIG``."""
    return CustosApp(config if config is not None else load_config())
