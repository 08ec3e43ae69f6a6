"""The engine behind a real `custos serve` sidecar: what clients of the whole stack see."""

from __future__ import annotations

import time

import httpx

from bench.stack import TINY_MODEL_NAME, Engine, Sidecar
from tests.inference.helpers import scrape, value, wait_until


def test_sdk_chat_through_the_sidecar(sidecar: Sidecar) -> None:
    sdk = sidecar.openai_client(timeout=120)
    res = sdk.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        extra_body={"ignore_eos": True},
    )
    assert res.choices[0].finish_reason == "length"
    assert res.usage is not None and res.usage.completion_tokens == 6


def test_stream_through_the_sidecar_is_incremental(sidecar: Sidecar, engine: Engine) -> None:
    body = {
        "model": TINY_MODEL_NAME,
        "prompt": "Hello",
        "max_tokens": 300,
        "ignore_eos": True,
        "stream": True,
    }
    arrivals: list[float] = []
    running_after_first = None
    start = time.monotonic()
    with httpx.stream(
        "POST", sidecar.url + "/v1/completions", json=body, headers=sidecar.headers, timeout=120
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - start)
                if len(arrivals) == 1:
                    running_after_first = value(scrape(engine.url), "vllm:num_requests_running")
    assert running_after_first is not None and running_after_first >= 1
    assert len(arrivals) >= 150
    assert arrivals[0] < arrivals[-1] / 2


def test_disconnect_through_the_sidecar_frees_the_engine(sidecar: Sidecar, engine: Engine) -> None:
    before = scrape(engine.url)
    body = {
        "model": TINY_MODEL_NAME,
        "prompt": "Hello",
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream(
        "POST", sidecar.url + "/v1/completions", json=body, headers=sidecar.headers, timeout=120
    ) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen == 3:
                    break
    wait_until(
        lambda: value(scrape(engine.url), "vllm:num_requests_running") == 0, what="engine running -> 0"
    )
    after = scrape(engine.url)
    aborted = value(after, "vllm:request_success_total", finished_reason="abort") - value(
        before, "vllm:request_success_total", finished_reason="abort"
    )
    assert aborted == 1
