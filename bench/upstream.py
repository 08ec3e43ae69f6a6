"""A recording upstream: a real HTTP server (aiohttp, in its own thread) that records every request and
answers as its caller (a test or a benchmark) tells it to. What it received is the evidence of what a
sidecar forwarded."""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bench.procs import free_port
from sidecar.context import proxied

MODEL = "custos-tiny"


@dataclass
class Recorded:
    method: str
    path: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


def chat_answer(content: str = "Hello there.", **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }


@dataclass
class Reply:
    """What the upstream answers: a JSON document, or SSE events (dicts are JSON-encoded; the
    stream ends with ``[DONE]``), with a status and extra headers."""

    json: Any = None
    sse: list[Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    delay_s: float = 0.0  # SSE: pause before each event (a slow generation)


class RecordingUpstream:
    """A real HTTP server (aiohttp, its own thread and loop) that records every request and answers
    with ``reply`` (by default: a plain chat completion, or a model list for ``GET /v1/models``)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.ssl_context = ssl_context
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self.requests: list[Recorded] = []
        self.reply: Reply | None = None
        self.models = [{"id": MODEL, "object": "model", "owned_by": "custos", "root": MODEL}]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="recording-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("recording upstream did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # What a sidecar forwards: /v1/ paths, vLLM's root inference routes (/tokenize, ...), /metrics.
        if not (proxied(request.path) or request.path == "/metrics"):
            # Not something a sidecar sends upstream: a stray client of an earlier test that still
            # targets this (reused) port, e.g. an alert engine's Prometheus queries or an audit
            # shipper's Elasticsearch calls. Not evidence of anything: answered 404, not recorded.
            return web.Response(status=404)
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                raw_path=request.raw_path,
                query=request.query_string,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        reply = self.reply
        if reply is None:
            if request.path.startswith("/v1/models/"):
                wanted = request.path.removeprefix("/v1/models/")
                card = next((m for m in self.models if m.get("id") == wanted), None)
                if card is None:
                    return web.json_response({"error": {"message": "not found"}}, status=404)
                return web.json_response(card)
            if request.path == "/v1/models":
                return web.json_response({"object": "list", "data": self.models})
            if request.path == "/metrics":
                return web.Response(text="# upstream metrics\nup 1\n", content_type="text/plain")
            return web.json_response(chat_answer())
        if reply.raw is not None:
            return web.Response(body=reply.raw, status=reply.status, headers=reply.headers)
        if reply.sse is not None:
            resp = web.StreamResponse(
                status=reply.status, headers={"Content-Type": "text/event-stream", **reply.headers}
            )
            await resp.prepare(request)
            for event in reply.sse:
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                data = event if isinstance(event, (str, bytes)) else orjson.dumps(event)
                data = data.encode() if isinstance(data, str) else data
                await resp.write(b"data: " + data + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        return web.Response(
            body=orjson.dumps(reply.json),
            status=reply.status,
            headers={"Content-Type": "application/json", **reply.headers},
        )

    # -- evidence ---------------------------------------------------------------------------------
    def clear(self) -> None:
        self.requests.clear()

    def forwarded(self) -> bytes:
        """Everything the upstream received (paths, headers and bodies), for 'never forwarded' checks."""
        parts = []
        for r in self.requests:
            parts.append(r.raw_path.encode())
            parts.extend(f"{k}: {v}".encode() for k, v in r.headers.items())
            parts.append(r.body)
        return b"\n".join(parts)

    def inference_requests(self) -> list[Recorded]:
        return [r for r in self.requests if proxied(r.path) and r.method == "POST"]

    def close(self) -> None:
        """Stop serving (idempotent: a test may stop it early to play an upstream that went down)."""
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
