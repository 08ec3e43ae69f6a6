"""Unpaced load for the audit tests and benchmarks: an instant OpenAI-compatible upstream (run as its
own process, ``python -m bench.audit_load --port N``) and a load generator that records which request
ids the clients got an answer for.

The upstream answers ``/v1/models`` and every POST with a fixed chat completion at once, so the
sidecar (and its audit trail) is the bottleneck, not the model.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from dataclasses import dataclass, field

MODEL = "custos-tiny"
ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"custos-tiny","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)
MODELS = b'{"object":"list","data":[{"id":"custos-tiny","object":"model","owned_by":"custos"}]}'


def serve(port: int) -> None:
    from aiohttp import web

    async def models(_request: web.Request) -> web.Response:
        return web.Response(body=MODELS, content_type="application/json")

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@dataclass
class UnpacedLoad:
    """``concurrency`` clients (one event loop in a thread) sending chat requests back to back, each
    with its own request id ``<tag>-<n>``; ``results`` holds (id, status, finished at) with status -1
    for a request that got no answer (connection refused or cut)."""

    url: str
    headers: dict[str, str]
    tag: str
    concurrency: int = 16
    results: list[tuple[str, int, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> UnpacedLoad:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    async def _main(self) -> None:
        import aiohttp

        counter = iter(range(10**9))
        timeout = aiohttp.ClientTimeout(total=30)
        conn = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:

            async def worker() -> None:
                body = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
                while not self._stop.is_set():
                    rid = f"{self.tag}-{next(counter)}"
                    try:
                        async with session.post(
                            self.url + "/v1/chat/completions",
                            json=body,
                            headers={**self.headers, "x-request-id": rid},
                        ) as resp:
                            await resp.read()
                            self.results.append((rid, resp.status, time.time()))
                    except (TimeoutError, aiohttp.ClientError, OSError):
                        self.results.append((rid, -1, time.time()))
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def ok_ids(self) -> set[str]:
        return {rid for rid, status, _at in self.results if status == 200}

    def answered_ids(self) -> set[str]:
        """Every request that got a complete HTTP answer, whatever its status."""
        return {rid for rid, status, _at in self.results if status > 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    serve(p.parse_args(argv).port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
