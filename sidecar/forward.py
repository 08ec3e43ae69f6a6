"""The forward step: one pooled keep-alive client to the upstream, streaming both ways.

The upstream's status, headers and body come back unchanged except hop-by-hop headers (and
Content-Length, recomputed when a response filter changed the body). SSE and other non-JSON bodies
are relayed chunk by chunk as they arrive, never buffered whole. A client that goes away cancels the
upstream request: the connection to the upstream is closed, so vLLM aborts the generation.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from custos.errors import ProxyError

from .config import UpstreamConfig
from .context import RequestContext
from .stage import ResponseFilter

ResponseEnd = Callable[[RequestContext], Awaitable[None]]

log = logging.getLogger("custos.forward")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

# RFC 9110 section 7.6.1 hop-by-hop headers, plus those the client library sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)


# Response headers the sidecar sets itself (one Date from our server; no Server banner at all).
_OWN_RESPONSE_HEADERS = frozenset({b"date", b"server"})
# The sidecar must read every answer in plain bytes to redact it: it asks for no content coding.
_IDENTITY = ("accept-encoding", "identity")


def strip_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers, including any named in the Connection header."""
    extra: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            extra.update(v.strip().lower() for v in value.split(b","))
    return [(n, v) for n, v in headers if (low := n.lower()) not in HOP_BY_HOP and low not in extra]


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.base_url = str(config.url).rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout_s, sock_read=config.read_timeout_s
        )
        # Built once: what every upstream request carries besides the caller's own headers.
        self._own_headers: list[tuple[str, str]] = [_IDENTITY, *config.headers.items()]
        key = config.bearer()
        if key:
            self._own_headers.append(("authorization", f"Bearer {key}"))
        self._own_names = frozenset(name.lower().encode("latin-1") for name, _ in self._own_headers)
        self._ssl = _ssl_context(config) if self.base_url.startswith("https:") else None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl if self._ssl is not None else True,
                limit=self.config.max_connections,
                keepalive_timeout=self.config.keepalive_timeout_s,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Bodies pass through byte for byte: no decompression, no cookie handling.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str, timeout_s: float) -> tuple[int, str, bytes]:
        """A plain GET to the upstream (readiness, metrics): status, content type, body."""
        async with self.session.get(
            self.base_url + path, headers=self._own_headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()

    async def get_json(self, path: str, timeout_s: float) -> tuple[int, Any]:
        status, _, body = await self.get(path, timeout_s)
        try:
            return status, orjson.loads(body)
        except ValueError:
            return status, None

    async def forward(
        self,
        ctx: RequestContext,
        send: Send,
        receive: Receive,
        filters_for: Callable[[RequestContext], list[ResponseFilter]],
        response_end: ResponseEnd | None = None,
    ) -> None:
        """Forward ``ctx`` and relay the answer. A client that goes away at any point — while the
        upstream still computes a non-streamed answer, or mid-stream — cancels the exchange: the
        upstream connection is closed, which makes vLLM (and our CPU engine) abort the generation."""
        # The exchange runs in the request's own task (no hop to another task, so the stages'
        # on_complete follows the last byte sent without a gap); a watcher cancels it on disconnect.
        task = asyncio.current_task()
        assert task is not None
        # The watcher starts only once the exchange has taken WATCH_AFTER_S: starting a task,
        # parking it in receive() and cancelling it costs ~60 us, a third of a fast upstream's
        # round trip, while cancelling an exchange that ends within milliseconds saves nothing.
        # A disconnect before then is not missed: receive() reports it to the late watcher.
        watcher: asyncio.Future[None] | None = None

        def watch() -> None:
            nonlocal watcher
            watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, task, ctx))

        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch)
        try:
            await self._exchange(ctx, send, filters_for, response_end)
        except asyncio.CancelledError:
            if not ctx.cancelled:
                raise  # cancelled for another reason (server shutdown): not ours to swallow
            task.uncancel()
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()

    async def _exchange(
        self,
        ctx: RequestContext,
        send: Send,
        filters_for: Callable[[RequestContext], list[ResponseFilter]],
        response_end: ResponseEnd | None,
    ) -> None:
        url = self.base_url + ctx.path
        if ctx.query:
            url += "?" + ctx.query.decode("latin-1")
        own = self._own_names
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ctx.headers if k not in own]
        headers.extend(self._own_headers)
        headers.extend((k.decode("latin-1"), v.decode("latin-1")) for k, v in ctx.upstream_headers)
        body = ctx.outgoing_body()
        try:
            resp = await self.session.request(
                ctx.method,
                url,
                data=body or None,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except TimeoutError:
            raise _upstream_timeout() from None
        except aiohttp.ClientConnectorError as exc:
            # The client learns that the model server is down, not where it lives or why.
            log.warning("upstream %s unreachable: %s", self.base_url, exc)
            raise upstream_unreachable("The upstream model server is unreachable.") from None
        except aiohttp.ClientError as exc:
            raise _upstream_failed(exc) from None
        try:
            await self._relay(ctx, resp, send, filters_for, response_end)
        finally:
            if ctx.error is None and not ctx.cancelled:
                resp.release()  # back to the keep-alive pool
            else:
                resp.close()

    async def _relay(
        self,
        ctx: RequestContext,
        resp: aiohttp.ClientResponse,
        send: Send,
        filters_for: Callable[[RequestContext], list[ResponseFilter]],
        response_end: ResponseEnd | None,
    ) -> None:
        ctx.upstream_status = resp.status
        raw = list(resp.raw_headers)
        if resp.status in (204, 304) or resp.content_length == 0:
            ctx.response_kind = "empty"
        else:
            ctx.response_kind = response_kind(resp.headers.get("Content-Type", ""))
        ctx.response_headers = [h for h in strip_hop_by_hop(raw) if h[0].lower() not in _OWN_RESPONSE_HEADERS]
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            # What cannot be inspected is not forwarded: a compressed answer would pass the
            # redaction filters unread.
            log.warning("upstream answered request %s with Content-Encoding %r", ctx.request_id, encoding)
            ctx.error = ProxyError(
                502,
                "The upstream model server answered in an encoding the sidecar cannot inspect.",
                type="upstream_error",
                code="upstream_encoding",
            )
            raise ctx.error  # the connection is closed, not pooled, with its body unread
        filters = filters_for(ctx)
        if ctx.response_kind in _BUFFERED:
            try:
                data = await resp.read()
            except TimeoutError:
                raise _upstream_timeout() from None
            except aiohttp.ClientError as exc:
                raise _upstream_failed(exc) from None
            for f in filters:
                data = f.feed(data) + f.flush()
            ctx.status = resp.status
            if response_end is not None:
                try:
                    await response_end(ctx)
                except ProxyError:
                    ctx.status = None  # nothing sent yet: the pipeline answers with this error
                    raise
            out_headers = [*ctx.response_headers, (b"content-length", str(len(data)).encode())]
            await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
            ctx.first_byte_at = ctx.first_byte_at or _now()
            ctx.response_bytes = len(data)
            await send({"type": "http.response.body", "body": data})
            return
        ctx.status = resp.status
        await send({"type": "http.response.start", "status": resp.status, "headers": ctx.response_headers})
        await self._stream_body(ctx, resp, send, filters, response_end)

    async def _stream_body(
        self,
        ctx: RequestContext,
        resp: aiohttp.ClientResponse,
        send: Send,
        filters: list[ResponseFilter],
        response_end: ResponseEnd | None,
    ) -> None:
        # With response-end hooks, the stream's completion marker waits for them: a client must not
        # see "[DONE]" for an answer that the hooks then refuse (e.g. its audit record failed).
        hold_done = response_end is not None and ctx.response_kind == "sse"
        done = b""
        err: ProxyError | None = None
        try:
            async for chunk in resp.content.iter_any():
                for f in filters:
                    chunk = f.feed(chunk)
                if hold_done and chunk.endswith(_DONE):
                    chunk, done = chunk[: -len(_DONE)], _DONE
                if chunk:
                    if ctx.first_byte_at is None:
                        ctx.first_byte_at = _now()
                    ctx.response_bytes += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError) as exc:
            err = _upstream_timeout() if isinstance(exc, TimeoutError) else _upstream_failed(exc)
            log.warning("upstream stream broke for request %s: %s", ctx.request_id, err.message)
        tail = b""
        for f in filters:
            tail = f.feed(tail) + f.flush()
        if err is None and response_end is not None:
            try:
                await response_end(ctx)
            except ProxyError as refused:
                err = refused
        if err is None:
            tail += done
        else:
            # Headers are already sent: the stream ends with an error event instead of "[DONE]".
            ctx.error = err
            if ctx.response_kind == "sse":
                tail += b"data: " + err.body() + b"\n\n"
        ctx.response_bytes += len(tail)
        await send({"type": "http.response.body", "body": tail, "more_body": False})


# Answers read whole before they are filtered and sent (a text answer is redacted as one text).
_BUFFERED = frozenset({"json", "text"})


def response_kind(content_type: str) -> str:
    """``sse``, ``json`` (``application/json`` and ``application/*+json``), ``text`` (any other
    ``text/*``: plain text, SubRip and WebVTT transcriptions) or ``other``. Media types are
    case-insensitive (RFC 9110), so ``Application/JSON`` is JSON and is redacted as JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/event-stream":
        return "sse"
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    if media.startswith("text/"):
        return "text"
    return "other"


def _ssl_context(config: UpstreamConfig) -> ssl.SSLContext:
    """TLS towards an https upstream: the configured CA (else the system's), an optional client
    certificate for mutual TLS; TLS 1.2 at least."""
    context = ssl.create_default_context(cafile=str(config.ca_bundle) if config.ca_bundle else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.client_cert is not None and config.client_key is not None:
        context.load_cert_chain(str(config.client_cert), str(config.client_key))
    return context


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any], ctx: RequestContext) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ctx.cancelled = True
            task.cancel()
            return


_now = time.perf_counter
# How long an exchange runs before a watcher starts listening for the client's disconnect.
WATCH_AFTER_S = 0.005
_DONE = b"data: [DONE]\n\n"


def upstream_unreachable(message: str) -> ProxyError:
    return ProxyError(502, message, type="upstream_error", code="upstream_unreachable")


def _upstream_timeout() -> ProxyError:
    return ProxyError(
        504,
        "The upstream model server did not answer in time.",
        type="upstream_error",
        code="upstream_timeout",
    )


def _upstream_failed(exc: BaseException) -> ProxyError:
    log.warning("upstream exchange failed: %s: %s", type(exc).__name__, exc)
    return ProxyError(
        502,
        "The upstream model server failed to answer.",
        type="upstream_error",
        code="upstream_error",
    )
