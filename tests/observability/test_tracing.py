"""Tracing: spans captured by the SDK's in-memory exporter (in-process app in front of the real
engine) and by real OTLP receivers (HTTP and gRPC) fed by real sidecar processes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bench.procs import free_port
from bench.stack import default_headers, sidecar_base_config
from sidecar.app import CustosApp
from sidecar.config import Config
from sidecar.context import RequestContext
from sidecar.pipeline import build_stages
from sidecar.stages.tracing import TracingStage

from .otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
CHAT_BODY = {
    "model": "custos-tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 5,
    "temperature": 0.5,
}

# proto span kinds
SERVER, CLIENT = 2, 3


class InProcess:
    """The real app (every default stage) with the tracing stage exporting to memory."""

    def __init__(self, upstream: str, state: Path, tracing: dict | None = None) -> None:
        cfg = sidecar_base_config(state, upstream)
        cfg["tracing"] = tracing or {}
        self.config = Config.model_validate(cfg)
        self.headers = default_headers(cfg, state)
        self.exporter = InMemorySpanExporter()
        stages = build_stages(self.config)
        i = next(i for i, s in enumerate(stages) if s.name == "tracing")
        stages[i] = TracingStage(
            self.config.tracing, str(self.config.upstream.url), exporter=self.exporter, batch=False
        )
        self.app = CustosApp(self.config, stages=stages)

    async def __aenter__(self) -> httpx.AsyncClient:
        for stage in self.app.pipeline.stages:
            await stage.startup(self.app)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://sidecar",
            headers=self.headers,
            timeout=60,
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        for stage in reversed(self.app.pipeline.stages):
            await stage.shutdown()
        await self.app.upstream.close()

    def spans(self):
        return list(self.exporter.get_finished_spans())


async def test_request_span_stage_spans_and_genai_attributes(engine, tmp_path):
    sc = InProcess(engine.url, tmp_path / "state")
    async with sc as client:
        resp = await client.post("/v1/chat/completions", json=CHAT_BODY, headers={"traceparent": TRACEPARENT})
        assert resp.status_code == 200, resp.text
        usage = resp.json()["usage"]
    spans = sc.spans()
    root = next(s for s in spans if s.kind == SpanKind.SERVER)
    assert root.name == "POST /v1/chat/completions custos-tiny"
    assert format(root.context.trace_id, "032x") == TRACE, "continues the client's trace"
    assert format(root.parent.span_id, "016x") == PARENT
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "custos-tiny"
    assert a["gen_ai.request.max_tokens"] == 5
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert list(a["gen_ai.response.finish_reasons"]) == [resp.json()["choices"][0]["finish_reason"]]
    assert a["http.response.status_code"] == 200
    assert a["custos.roles"] == ("tester",)
    assert "enduser.id" not in a, "the subject is not recorded unless tracing.record_subject"
    assert all(s.context.trace_id == root.context.trace_id for s in spans)
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id}
    for stage in ("custos.authenticate", "custos.parse", "custos.authorize", "custos.audit"):
        assert stage in children, f"{stage} span missing: {sorted(children)}"
    upstream = children["chat custos-tiny"]
    assert upstream.kind == SpanKind.CLIENT
    assert upstream.attributes["http.response.status_code"] == 200
    assert upstream.attributes["server.address"] == "127.0.0.1"
    assert upstream.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    # nothing of the prompt or the answer on any span
    for s in spans:
        assert "hi" not in [str(v) for v in s.attributes.values()]


async def test_stream_denied_and_failed_requests(engine, tmp_path):
    sc = InProcess(engine.url, tmp_path / "state")
    async with sc as client:
        async with client.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as resp:
            assert resp.status_code == 200
            streamed = [line async for line in resp.aiter_lines() if line.startswith("data: ")]
        assert streamed[-1] == "data: [DONE]"
        denied = await client.post("/v1/chat/completions", json=CHAT_BODY, headers={"authorization": ""})
        assert denied.status_code == 401
    roots = [s for s in sc.spans() if s.kind == SpanKind.SERVER]
    stream_root, denied_root = roots
    assert stream_root.attributes["custos.stream"] is True
    assert stream_root.attributes["gen_ai.usage.output_tokens"] >= 1
    assert denied_root.attributes["http.response.status_code"] == 401
    assert denied_root.attributes["error.type"].startswith("auth")
    assert denied_root.status.status_code == StatusCode.UNSET, "4xx is the client's error, not the server's"
    auth_span = next(
        s
        for s in sc.spans()
        if s.name == "custos.authenticate" and s.parent.span_id == denied_root.context.span_id
    )
    assert auth_span.attributes["error.type"].startswith("auth")
    assert not any(
        s.kind == SpanKind.CLIENT and s.parent.span_id == denied_root.context.span_id for s in sc.spans()
    ), "a denied request never reaches the upstream"

    dead = InProcess(f"http://127.0.0.1:{free_port()}", tmp_path / "state2")
    async with dead as client:
        assert (await client.post("/v1/chat/completions", json=CHAT_BODY)).status_code == 502
    root = next(s for s in dead.spans() if s.kind == SpanKind.SERVER)
    assert root.status.status_code == StatusCode.ERROR
    assert root.attributes["error.type"] == "upstream_unreachable"
    up = next(s for s in dead.spans() if s.kind == SpanKind.CLIENT)
    assert up.status.status_code == StatusCode.ERROR


async def test_sampling_follows_the_clients_flag(engine, tmp_path):
    sc = InProcess(engine.url, tmp_path / "state", {"sampler": "parentbased_ratio", "sample_ratio": 0.0})
    async with sc as client:
        assert (await client.post("/v1/chat/completions", json=CHAT_BODY)).status_code == 200
        assert not sc.spans(), "ratio 0: new traces are not kept"
        resp = await client.post("/v1/chat/completions", json=CHAT_BODY, headers={"traceparent": TRACEPARENT})
        assert resp.status_code == 200
    assert {format(s.context.trace_id, "032x") for s in sc.spans()} == {TRACE}, "a sampled parent is kept"


def _ctx(headers: list[tuple[bytes, bytes]]) -> RequestContext:
    return RequestContext(
        request_id="r1",
        method="POST",
        path="/v1/chat/completions",
        query=b"",
        headers=headers,
        client_ip="127.0.0.1",
    )


async def test_trace_id_without_exporter_and_propagation_when_sampled_out(tmp_path):
    cfg = Config.model_validate(sidecar_base_config(tmp_path, "http://127.0.0.1:9"))
    stage = TracingStage(cfg.tracing, str(cfg.upstream.url))
    assert stage.tracer is None, "no exporter configured: no spans"
    ctx = _ctx([(b"traceparent", TRACEPARENT.encode())])
    await stage.on_request(ctx)
    assert ctx.trace_id == TRACE
    assert ctx.header(b"traceparent") == TRACEPARENT.encode(), "passes upstream untouched"
    for bad in (
        b"00-" + b"0" * 32 + b"-" + PARENT.encode() + b"-01",
        b"garbage",
        b"ff-" + TRACE.encode() + b"-" + PARENT.encode() + b"-01",
    ):
        ctx = _ctx([(b"traceparent", bad)])
        await stage.on_request(ctx)
        assert ctx.trace_id is None

    off = Config.model_validate(
        {**sidecar_base_config(tmp_path, "http://127.0.0.1:9"), "tracing": {"sampler": "always_off"}}
    )
    stage = TracingStage(off.tracing, str(off.upstream.url), exporter=InMemorySpanExporter(), batch=False)
    ctx = _ctx([(b"traceparent", TRACEPARENT.encode()), (b"tracestate", b"vendor=1")])
    await stage.on_request(ctx)
    with stage.stage_span(ctx, "upstream"):
        pass
    sent = dict(ctx.upstream_headers)
    assert ctx.trace_id == TRACE
    _version, trace_id, span_id, flags = sent[b"traceparent"].decode().split("-")
    assert trace_id == TRACE and span_id != PARENT and flags == "00"
    assert sent[b"tracestate"] == b"vendor=1"
    assert ctx.header(b"traceparent") is None, "the client's own traceparent is replaced, not duplicated"


def _audit_text(state_dir: Path) -> str:
    return "".join(
        p.read_text(errors="replace")
        for p in state_dir.rglob("*")
        if p.is_file() and p.suffix in (".jsonl", ".json", ".log", "")
    )


def test_trace_id_reaches_the_audit_record_without_export(engine, start_sidecar, tmp_path):
    sidecar = start_sidecar(engine.url)
    resp = httpx.post(
        sidecar.url + "/v1/chat/completions",
        json=CHAT_BODY,
        headers={**sidecar.headers, "traceparent": TRACEPARENT},
        timeout=60,
    )
    assert resp.status_code == 200
    state = Path(sidecar.config["state"]["dir"])
    deadline = time.monotonic() + 15
    while TRACE not in _audit_text(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert TRACE in _audit_text(state)


def test_otlp_http_through_two_sidecars(engine, start_sidecar, tmp_path):
    rx = OtlpHttpReceiver()
    try:

        def tracing(name: str) -> dict:
            return {
                "state": {"dir": str(tmp_path / name)},
                "tracing": {
                    "exporter": "otlp_http",
                    "endpoint": rx.endpoint,
                    "service_name": name,
                    "schedule_delay_ms": 100,
                },
            }

        # The outer sidecar does not pass the client's token on; the inner one trusts its caller.
        inner = start_sidecar(
            engine.url,
            {**tracing("custos-inner"), "auth": {"enabled": False}, "rbac": {"enabled": False}},
            name="inner",
        )
        outer = start_sidecar(inner.url, tracing("custos-outer"), name="outer")
        resp = httpx.post(
            outer.url + "/v1/chat/completions",
            json=CHAT_BODY,
            headers={**outer.headers, "traceparent": TRACEPARENT},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text

        def complete(spans):
            return {(s.service, s.kind) for s in spans} >= {
                ("custos-outer", SERVER),
                ("custos-outer", CLIENT),
                ("custos-inner", SERVER),
                ("custos-inner", CLIENT),
            }

        spans = rx.wait_for(complete)
        assert complete(spans), [(s.service, s.name) for s in spans]
        assert {s.trace_id for s in spans} == {TRACE}
        by = {(s.service, s.kind): s for s in spans}
        outer_root, outer_up = by["custos-outer", SERVER], by["custos-outer", CLIENT]
        inner_root = by["custos-inner", SERVER]
        assert outer_root.parent_span_id == PARENT
        assert outer_up.parent_span_id == outer_root.span_id
        # the traceparent the outer sidecar sent upstream named its upstream span
        assert inner_root.parent_span_id == outer_up.span_id
        assert inner_root.attributes["gen_ai.operation.name"] == "chat"
        assert (
            inner_root.attributes["gen_ai.usage.output_tokens"] == resp.json()["usage"]["completion_tokens"]
        )
        assert outer_root.name == "POST /v1/chat/completions custos-tiny"
        assert any(s.name == "custos.authenticate" and s.parent_span_id == outer_root.span_id for s in spans)
    finally:
        rx.close()


def test_otlp_grpc_export(engine, start_sidecar):
    rx = OtlpGrpcReceiver()
    try:
        sidecar = start_sidecar(
            engine.url,
            {
                "tracing": {
                    "exporter": "otlp_grpc",
                    "endpoint": rx.endpoint,
                    "schedule_delay_ms": 100,
                    "record_subject": True,
                }
            },
        )
        with (
            httpx.Client(timeout=60) as c,
            c.stream(
                "POST",
                sidecar.url + "/v1/chat/completions",
                json={**CHAT_BODY, "stream": True},
                headers=sidecar.headers,
            ) as resp,
        ):
            assert resp.status_code == 200
            assert list(resp.iter_lines())
        spans = rx.wait_for(lambda ss: any(s.kind == SERVER for s in ss))
        root = next(s for s in spans if s.kind == SERVER)
        assert root.service == "custos-sidecar"
        assert root.attributes["custos.stream"] is True
        assert root.attributes["gen_ai.usage.output_tokens"] >= 1
        assert root.attributes["enduser.id"] == "test-user"
        assert len(root.trace_id) == 32 and root.parent_span_id == ""
    finally:
        rx.close()


@pytest.mark.parametrize("exporter", ["otlp_http", "otlp_grpc"])
def test_unreachable_collector_never_breaks_requests(engine, start_sidecar, exporter):
    sidecar = start_sidecar(
        engine.url,
        {
            "tracing": {
                "exporter": exporter,
                "schedule_delay_ms": 100,
                "timeout_s": 1,
                "endpoint": f"http://127.0.0.1:{free_port()}/v1/traces"
                if exporter == "otlp_http"
                else f"127.0.0.1:{free_port()}",
            }
        },
    )
    for _ in range(3):
        resp = httpx.post(
            sidecar.url + "/v1/chat/completions", json=CHAT_BODY, headers=sidecar.headers, timeout=60
        )
        assert resp.status_code == 200
