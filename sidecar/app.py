"""The sidecar's ASGI application.

A plain ASGI callable rather than a framework router: the proxied path is the hot path and needs
nothing a router offers. Operational endpoints:

- ``/health``  liveness: answers at once, never touches the upstream.
- ``/ready``   readiness: the upstream answers ``/v1/models`` with at least one model; 503 otherwise.
- ``/metrics`` Prometheus text format; ``/metrics/upstream`` relays the upstream's own metrics.
- ``/admin/...`` optional sub-applications that features mount at startup (``mount``).
Everything under ``/v1/`` runs through the stage pipeline and is forwarded upstream.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from .config import Config, load_config
from .context import RequestContext
from .errors import ProxyError
from .forward import UpstreamClient, strip_hop_by_hop, upstream_unreachable
from .pipeline import Pipeline, build_stages, send_error
from .stage import Stage

log = logging.getLogger("custos.app")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

_REQUEST_ID_OK = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_JSON = [(b"content-type", b"application/json")]
_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_HEADERS = [*_JSON, (b"content-length", str(len(_HEALTH_BODY)).encode())]


def new_request_id() -> str:
    return os.urandom(16).hex()


class CustosApp:
    def __init__(self, config: Config, stages: list[Stage] | None = None) -> None:
        self.config = config
        self.upstream = UpstreamClient(config.upstream)
        self.pipeline = Pipeline(build_stages(config) if stages is None else stages, self.upstream)
        self.max_body = config.server.max_body_bytes
        self.mounts: dict[str, ASGIApp] = {}
        # Features may replace how /metrics renders (multiprocess collection, extra registries).
        self.render_metrics: Callable[[], bytes] = lambda: generate_latest(REGISTRY)

    def mount(self, prefix: str, app: ASGIApp) -> None:
        """Serve ``prefix`` (e.g. ``/admin/alerts``) with another ASGI app; the prefix is kept in the path."""
        self.mounts[prefix.rstrip("/")] = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/v1/"):
                await self._proxy(scope, receive, send)
            elif path == "/health":
                await send({"type": "http.response.start", "status": 200, "headers": _HEALTH_HEADERS})
                await send({"type": "http.response.body", "body": _HEALTH_BODY})
            elif path == "/ready":
                await self._ready(send)
            elif path == "/metrics":
                body = self.render_metrics()
                await _send_simple(send, 200, body, CONTENT_TYPE_LATEST.encode())
            elif path == "/metrics/upstream":
                await self._upstream_metrics(send)
            else:
                for prefix, app in self.mounts.items():
                    if path == prefix or path.startswith(prefix + "/"):
                        await app(scope, receive, send)
                        return
                await send_error(
                    send, ProxyError(404, f"No route for {scope['method']} {path}.", code="not_found")
                )
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
        reason = None
        try:
            status, doc = await self.upstream.get_json("/v1/models", self.config.upstream.ready_timeout_s)
            if status != 200:
                reason = f"upstream /v1/models answered HTTP {status}"
            elif not isinstance(doc, dict) or not doc.get("data"):
                reason = "upstream serves no models"
        except TimeoutError:
            reason = "upstream did not answer in time"
        except Exception as exc:
            reason = f"upstream unreachable: {type(exc).__name__}: {exc}"
        if reason is None:
            await _send_simple(send, 200, b'{"status":"ready"}', b"application/json")
        else:
            body = orjson.dumps({"status": "not ready", "reason": reason})
            await _send_simple(send, 503, body, b"application/json")

    async def _upstream_metrics(self, send: Any) -> None:
        """The upstream's own /metrics, relayed: in a Pod the engine listens on localhost only, so
        Prometheus reaches vLLM's metrics through the sidecar's port."""
        try:
            status, content_type, body = await self.upstream.get(
                "/metrics", self.config.upstream.ready_timeout_s
            )
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            await send_error(
                send, upstream_unreachable(f"The upstream's /metrics could not be read: {reason}")
            )
            return
        await _send_simple(send, status, body, (content_type or "text/plain").encode("latin-1"))

    async def _proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
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
        ctx = RequestContext(
            request_id=request_id,
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=headers,
            client_ip=client[0] if client else "",
        )
        ctx.upstream_headers.append((b"x-request-id", rid))
        try:
            if (
                declared_length is not None
                and declared_length.isdigit()
                and int(declared_length) > self.max_body
            ):
                raise _too_large(self.max_body)
            ctx.body = await _read_body(receive, self.max_body)
        except ProxyError as exc:
            # Rejected before the pipeline ran: still audited and counted.
            await self.pipeline.reject(ctx, exc, reply_send)
            return
        await self.pipeline.run(ctx, reply_send, receive)


def _too_large(limit: int) -> ProxyError:
    return ProxyError(
        413,
        f"Request body is larger than the limit of {limit} bytes (server.max_body_bytes).",
        code="request_too_large",
    )


async def _read_body(receive: Any, limit: int) -> bytes:
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
