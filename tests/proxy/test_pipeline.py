"""The stage contract, in the chain: order of hooks, short-circuiting, filters, always-run completion.

The app runs in-process (so the test can plug in its own stages) in front of the real CPU engine.
"""

from __future__ import annotations

import httpx
import pytest

from bench.stack import TINY_MODEL_NAME
from custos.errors import ProxyError
from sidecar.app import CustosApp
from sidecar.config import load_config
from sidecar.context import RequestContext
from sidecar.stage import ResponseFilter, Stage
from sidecar.stages.observe import ObserveStage
from sidecar.stages.parse import ParseStage

CHAT = {"model": TINY_MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "seed": 1}


class Recorder(Stage):
    def __init__(self, name: str, log: list[str], *, deny: bool = False) -> None:
        self.name = name  # type: ignore[misc]
        self.log = log
        self.deny = deny

    async def on_request(self, ctx: RequestContext) -> None:
        self.log.append(f"{self.name}.request")
        if self.deny:
            raise ProxyError(403, "denied by test", code="denied_by_test")

    def response_filter(self, ctx: RequestContext) -> ResponseFilter:
        log, name = self.log, self.name

        class Upper(ResponseFilter):
            def feed(self, chunk: bytes) -> bytes:
                log.append(f"{name}.feed")
                return chunk.replace(b"chat.completion", b"chat.completion")

            def flush(self) -> bytes:
                log.append(f"{name}.flush")
                return b""

        return Upper()

    async def on_complete(self, ctx: RequestContext) -> None:
        self.log.append(f"{self.name}.complete:{ctx.status}")


class Boom(Stage):
    name = "boom"

    async def on_complete(self, ctx: RequestContext) -> None:
        raise RuntimeError("a broken stage must not break the others")


def client_for(app: CustosApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://custos")


def make_app(engine_url: str, stages: list[Stage]) -> CustosApp:
    config = load_config(environ={"CUSTOS_UPSTREAM__URL": engine_url})
    return CustosApp(config, stages=stages)


async def test_hooks_run_in_order_and_complete_unwinds(engine) -> None:
    log: list[str] = []
    app = make_app(engine.url, [Recorder("a", log), ParseStage(), Recorder("b", log), Boom()])
    async with client_for(app) as client:
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert log == [
        "a.request",
        "b.request",
        "a.feed",
        "a.flush",
        "b.feed",
        "b.flush",
        "b.complete:200",
        "a.complete:200",
    ]
    await app.upstream.close()


async def test_a_rejecting_stage_stops_the_chain_but_completion_runs(engine) -> None:
    log: list[str] = []
    app = make_app(engine.url, [Recorder("a", log), Recorder("gate", log, deny=True), Recorder("c", log)])
    async with client_for(app) as client:
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "denied_by_test"
    assert log == ["a.request", "gate.request", "c.complete:403", "gate.complete:403", "a.complete:403"]
    await app.upstream.close()


async def test_observe_hashes_exact_output_and_reads_usage(engine) -> None:
    import hashlib

    seen: dict[str, object] = {}

    class Capture(Stage):
        name = "capture"

        async def on_complete(self, ctx: RequestContext) -> None:
            seen.update(
                out=ctx.output_sha256,
                prompt=ctx.prompt_sha256,
                usage=ctx.usage,
                finish=list(ctx.finish_reasons),
                model=ctx.model,
            )

    app = make_app(engine.url, [Capture(), ParseStage(), ObserveStage()])
    async with client_for(app) as client:
        body = httpx.Request("POST", "http://x", json=CHAT).content
        r = await client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert r.status_code == 200
    assert seen["out"] == hashlib.sha256(r.content).hexdigest()
    assert seen["prompt"] == hashlib.sha256(body).hexdigest()
    assert seen["usage"].completion_tokens == r.json()["usage"]["completion_tokens"]
    assert seen["finish"] == [r.json()["choices"][0]["finish_reason"]]
    assert seen["model"] == TINY_MODEL_NAME
    await app.upstream.close()


@pytest.mark.parametrize("stream", [True, False])
async def test_observe_counts_streamed_tokens(engine, stream: bool) -> None:
    seen: dict[str, object] = {}

    class Capture(Stage):
        name = "capture"

        async def on_complete(self, ctx: RequestContext) -> None:
            seen.update(tokens=ctx.usage.completion_tokens, out=ctx.output_sha256, stream=ctx.stream)

    app = make_app(engine.url, [Capture(), ParseStage(), ObserveStage()])
    async with client_for(app) as client:
        r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 6, "stream": stream})
    assert r.status_code == 200
    assert seen["stream"] is stream
    assert isinstance(seen["tokens"], int) and 1 <= seen["tokens"] <= 6
    import hashlib

    assert seen["out"] == hashlib.sha256(r.content).hexdigest()
    await app.upstream.close()


class Veto(Stage):
    """Refuses every response at its end, as the audit stage does when a record cannot be written."""

    name = "veto"

    def __init__(self) -> None:
        self.seen_status: list[int | None] = []

    async def on_response_end(self, ctx: RequestContext) -> None:
        self.seen_status.append(ctx.status)
        raise ProxyError(503, "vetoed at the end", type="server_error", code="vetoed")


async def test_response_end_can_replace_a_json_answer(engine) -> None:
    veto = Veto()
    app = make_app(engine.url, [ParseStage(), veto])
    async with client_for(app) as client:
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "vetoed"
    assert veto.seen_status == [200]  # the hook saw the upstream's answer before it was replaced
    await app.upstream.close()


async def test_response_end_runs_before_error_answers(engine) -> None:
    veto = Veto()
    app = make_app(engine.url, [Recorder("gate", [], deny=True), veto])
    async with client_for(app) as client:
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503 and r.json()["error"]["code"] == "vetoed"
    assert veto.seen_status == [403]
    await app.upstream.close()


async def test_response_end_holds_done_marker_of_streams(engine) -> None:
    app = make_app(engine.url, [ParseStage(), Veto()])
    async with client_for(app) as client:
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 200  # headers were long sent
    events = [line for line in r.text.split("\n") if line.startswith("data: ")]
    assert "data: [DONE]" not in events
    assert '"vetoed"' in events[-1]
    assert len(events) >= 2  # the content before the end still arrived
    await app.upstream.close()


async def test_startup_tunes_the_collector() -> None:
    """Once startup built the stages, the collector leaves what startup made alone (frozen) and runs
    on the raised thresholds (``sidecar.gctune.GC_THRESHOLDS``); the process is put back afterwards."""
    import gc

    from sidecar.gctune import GC_THRESHOLDS

    app = CustosApp(load_config(environ={}), stages=[ObserveStage()])
    before = gc.get_threshold()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    try:
        await app({"type": "lifespan"}, receive, send)
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
