"""End to end through a real sidecar process to the real CPU engine with the tiny model."""

from __future__ import annotations

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.stack import TINY_MODEL_NAME


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of the samples of ``name`` whose labels include ``labels`` in Prometheus text output."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([^\s{]+)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if labels and any(got.get(k) != v for k, v in labels.items()):
            continue
        total += float(m.group(3))
        found = True
    return total if found else None


def chat_body(content: str = "Hello there", **extra) -> dict:
    return {
        "model": TINY_MODEL_NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        **extra,
    }


def test_health_is_local_and_fast(sidecar) -> None:
    r = httpx.get(sidecar.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready_when_upstream_serves_models(sidecar) -> None:
    r = httpx.get(sidecar.url + "/ready")
    assert r.status_code == 200, r.text


def test_chat_completion(sidecar, engine) -> None:
    r = httpx.post(
        sidecar.url + "/v1/chat/completions", json=chat_body(seed=1), headers=sidecar.headers, timeout=60
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["role"] == "assistant"
    assert doc["usage"]["completion_tokens"] >= 1
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


def test_text_completion_matches_direct_call(sidecar, engine) -> None:
    body = {
        "model": TINY_MODEL_NAME,
        "prompt": "Once upon a time",
        "max_tokens": 6,
        "temperature": 0,
        "seed": 7,
    }
    via = httpx.post(sidecar.url + "/v1/completions", json=body, headers=sidecar.headers, timeout=60)
    direct = httpx.post(engine.url + "/v1/completions", json=body, timeout=60)
    assert via.status_code == direct.status_code == 200
    assert via.json()["choices"][0]["text"] == direct.json()["choices"][0]["text"]
    assert via.headers["content-type"] == direct.headers["content-type"]


def test_request_id_kept_and_sent_upstream(sidecar) -> None:
    r = httpx.post(
        sidecar.url + "/v1/chat/completions",
        json=chat_body(),
        headers={**sidecar.headers, "X-Request-ID": "trace-abc.123"},
        timeout=60,
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-abc.123"
    bad = httpx.post(
        sidecar.url + "/v1/chat/completions",
        json=chat_body(),
        headers={**sidecar.headers, "X-Request-ID": "bad id with spaces"},
        timeout=60,
    )
    assert bad.headers["x-request-id"] != "bad id with spaces"
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])


def test_streaming_arrives_incrementally(sidecar) -> None:
    """Events must reach the client as the engine produces them, not in one buffered lump."""
    body = chat_body("Tell me a long story", max_tokens=64, stream=True, temperature=0.8, seed=3)
    arrivals: list[float] = []
    events: list[str] = []
    with httpx.stream(
        "POST", sidecar.url + "/v1/chat/completions", json=body, headers=sidecar.headers, timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.perf_counter())
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(chunks) >= 10
    # Incremental: the stream took a while overall, and the events are spread over that time rather
    # than arriving together at the end.
    span = arrivals[-1] - arrivals[0]
    first_half = sum(1 for t in arrivals if t - arrivals[0] < span / 2)
    assert span > 0
    assert 0 < first_half < len(arrivals)


async def test_client_disconnect_cancels_upstream(sidecar, engine) -> None:
    """Cutting the client's stream stops the generation in the engine (its running count drops)."""
    body = chat_body("Write forever", max_tokens=1900, stream=True, ignore_eos=True)
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream(
            "POST", sidecar.url + "/v1/chat/completions", json=body, headers=sidecar.headers
        ) as r:
            assert r.status_code == 200
            got = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    got += 1
                if got >= 3:
                    break
            running = metric_value(
                (await client.get(engine.url + "/metrics")).text, "vllm:num_requests_running"
            )
            assert running is not None and running >= 1
        # leaving the block closes the connection mid-stream
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = metric_value(
                (await client.get(engine.url + "/metrics")).text, "vllm:num_requests_running"
            )
            if running == 0:
                break
            await asyncio.sleep(0.1)
        assert running == 0


def test_concurrent_requests_are_batched(sidecar, engine) -> None:
    """Concurrent requests through the sidecar share engine batches (batch size > 1)."""

    def one(i: int) -> int:
        body = chat_body(f"Question number {i}", max_tokens=24, seed=i)
        return httpx.post(
            sidecar.url + "/v1/chat/completions", json=body, headers=sidecar.headers, timeout=120
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(8)))
    assert statuses == [200] * 8
    text = httpx.get(engine.url + "/metrics").text
    assert max_batch_size_seen(text) > 1


def max_batch_size_seen(metrics_text: str) -> float:
    """Largest batch-size bucket with observations in the engine's batch-size histogram."""
    best = 0.0
    prev = 0.0
    for line in metrics_text.splitlines():
        if 'phase="decode"' not in line:
            continue
        m = re.match(r'^custos_engine_batch_size_bucket\{.*le="([^"]+)".*\}\s+(\S+)', line)
        if m:
            le, count = m.group(1), float(m.group(2))
            if count > prev and le != "+Inf":
                best = float(le)
            prev = count
    return best


def test_hop_by_hop_headers_not_forwarded_and_upstream_headers_returned(sidecar) -> None:
    r = httpx.get(
        sidecar.url + "/v1/models",
        headers={**sidecar.headers, "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1"},
    )
    assert r.status_code == 200
    assert r.json()["data"][0]["id"] == TINY_MODEL_NAME
    assert "transfer-encoding" not in r.headers or r.headers["transfer-encoding"] == "chunked"


def test_metrics_endpoint_counts_requests(sidecar) -> None:
    for _ in range(3):
        httpx.post(
            sidecar.url + "/v1/chat/completions", json=chat_body(), headers=sidecar.headers, timeout=60
        )
    assert httpx.get(sidecar.url + "/metrics").status_code == 401  # needs a token with metrics:read
    text = httpx.get(sidecar.url + "/metrics", headers=sidecar.headers).text
    count = metric_value(text, "custos_requests_total", {"route": "/v1/chat/completions"})
    assert count is not None and count >= 3
    assert metric_value(text, "custos_request_duration_seconds_count", {"route": "/v1/chat/completions"}) >= 3


@pytest.mark.parametrize("path", ["/nope", "/v2/chat"])
def test_unknown_routes_are_openai_shaped_404(sidecar, path: str) -> None:
    r = httpx.get(sidecar.url + path)
    assert r.status_code == 404
    assert set(r.json()["error"]) >= {"message", "type", "code"}


def test_upstream_metrics_are_relayed(sidecar, engine) -> None:
    """In a Pod the engine is reachable on localhost only: its metrics come through the sidecar."""
    assert httpx.get(sidecar.url + "/metrics/upstream", timeout=30).status_code == 401
    r = httpx.get(sidecar.url + "/metrics/upstream", headers=sidecar.headers, timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert metric_value(r.text, "vllm:num_requests_running") is not None
    assert "custos_requests_total" not in r.text  # the engine's metrics, not the sidecar's own


def test_upstream_metrics_when_upstream_is_down(start_sidecar) -> None:
    from bench.procs import free_port

    port = free_port()
    sc = start_sidecar(f"http://127.0.0.1:{port}")
    r = httpx.get(sc.url + "/metrics/upstream", headers=sc.headers, timeout=30)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unreachable"
    # the caller learns that the upstream is down, not where it lives or why
    assert str(port) not in r.text and "Error" not in r.json()["error"]["message"]


def test_client_giving_up_on_a_non_streamed_answer_cancels_upstream(sidecar, engine) -> None:
    """A non-streamed generation is aborted too when its client leaves before the answer exists."""
    aborted = 'vllm:request_success_total{finished_reason="abort",model_name="custos-tiny"}'

    def aborts() -> float:
        text = httpx.get(engine.url + "/metrics").text
        line = next((x for x in text.splitlines() if x.startswith(aborted)), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = aborts()
    body = chat_body("Write forever", max_tokens=1900, ignore_eos=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sidecar.url + "/v1/chat/completions", json=body, headers=sidecar.headers, timeout=1.0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and aborts() <= before:
        time.sleep(0.1)
    assert aborts() == before + 1
    running = metric_value(httpx.get(engine.url + "/metrics").text, "vllm:num_requests_running")
    assert running == 0
