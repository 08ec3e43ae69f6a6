"""The engine as a process: batching limits, the default (tiny) model, bad model dirs, clean shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from bench.procs import CACHE, ManagedProcess, custos_cmd, free_port
from inference.tiny import TINY_MODEL_VERSION
from tests.inference.helpers import scrape, value, wait_until


@pytest.fixture(scope="module")
def small_engine(tiny_model_dir: Path) -> Iterator[tuple[str, ManagedProcess]]:
    """An engine with a tight budget (64 tokens, 2 sequences, 3 queued; the last set through the
    environment) and no --model: the cached tiny model."""
    port = free_port()
    proc = ManagedProcess(
        "engine-small",
        custos_cmd(
            "inference",
            "serve",
            "--port",
            str(port),
            "--max-batch-tokens",
            "64",
            "--max-batch-size",
            "2",
        ),
        env={"CUSTOS_CACHE": str(CACHE), "CUSTOS_INFERENCE__MAX_WAITING": "3"},
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(url + "/v1/models", timeout=180)
    yield url, proc
    proc.stop()


def concurrently(url: str, bodies: list[dict]) -> list[dict]:
    results: list[dict] = [{}] * len(bodies)
    gate = threading.Barrier(len(bodies))

    def one(i: int) -> None:
        gate.wait()
        results[i] = httpx.post(url + "/v1/completions", json=bodies[i], timeout=120).json()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def decode_passes(url: str) -> tuple[float, float, float]:
    """(all decode passes, passes with 1 sequence, passes with at most 2)."""
    s = scrape(url)
    return (
        value(s, "custos_engine_batch_size_count", phase="decode"),
        value(s, "custos_engine_batch_size_bucket", phase="decode", le="1.0"),
        value(s, "custos_engine_batch_size_bucket", phase="decode", le="2.0"),
    )


def test_default_model_is_the_tiny_model(small_engine: tuple[str, ManagedProcess]) -> None:
    url, _ = small_engine
    card = httpx.get(url + "/v1/models").json()["data"][0]
    assert card["id"] == "custos-tiny"  # the tiny model's own name, which `custos up` advertises
    # The model card never shows where the weights live on the host (vLLM shows the directory).
    assert card["root"] == "custos-tiny" and f"tiny-{TINY_MODEL_VERSION}" not in str(card)


def test_batch_size_limit(small_engine: tuple[str, ManagedProcess]) -> None:
    url, _ = small_engine
    # On a loaded machine the three requests may each finish before the next one arrives (nothing to
    # batch): up to five rounds, each checked for the limit, until two ran together.
    together = 0.0
    for _ in range(5):
        total0, single0, upto2_0 = decode_passes(url)
        # Three requests, not more: with max_waiting=3, a fourth arriving before the scheduler admits
        # any (a loaded machine) would rightly get 503 from the full queue.
        results = concurrently(
            url, [{"prompt": [5 + i, 6, 7], "max_tokens": 12, "ignore_eos": True} for i in range(3)]
        )
        assert all(r["usage"]["completion_tokens"] == 12 for r in results)
        total, single, upto2 = decode_passes(url)
        assert total - total0 > 0
        assert upto2 - upto2_0 == total - total0  # never more than max_batch_size=2 together
        together = (total - total0) - (single - single0)
        if together > 0:
            break
    assert together > 0  # but two did run together


def test_token_budget_limit(small_engine: tuple[str, ManagedProcess]) -> None:
    url, _ = small_engine
    total0, single0, _ = decode_passes(url)
    # 40-token prompts: two together would exceed the 64-token budget, so each runs alone.
    results = concurrently(
        url, [{"prompt": [9 + i] * 40, "max_tokens": 6, "ignore_eos": True} for i in range(3)]
    )
    assert all(r["usage"]["completion_tokens"] == 6 for r in results)
    total, single, _ = decode_passes(url)
    assert total - total0 > 0
    assert single - single0 == total - total0
    # A prompt larger than the whole budget still runs (alone) instead of starving.
    big = httpx.post(url + "/v1/completions", json={"prompt": [11] * 100, "max_tokens": 3}, timeout=60)
    assert big.status_code == 200 and big.json()["usage"]["prompt_tokens"] == 100


def test_queued_request_dropped_when_its_client_leaves(small_engine: tuple[str, ManagedProcess]) -> None:
    url, _ = small_engine
    body = {"prompt": [7, 8, 9], "max_tokens": 1900, "ignore_eos": True, "stream": True}
    aborts0 = value(scrape(url), "vllm:request_success_total", finished_reason="abort")
    with httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json=body) as a:
            # Once this stream holds more than the 64-token budget, nothing else is admitted ...
            events = (line for line in a.iter_lines() if line.startswith("data: "))
            for _ in range(70):
                next(events)
            # ... so the next request waits in the queue; its client gives up before it ever runs.
            with client.stream("POST", "/v1/completions", json=body) as c:
                assert c.status_code == 200
                wait_until(
                    lambda: value(scrape(url), "vllm:num_requests_waiting") == 1, what="request queued"
                )
            wait_until(
                lambda: value(scrape(url), "vllm:num_requests_waiting") == 0, what="queued request dropped"
            )
            samples = scrape(url)
            assert value(samples, "vllm:num_requests_running") == 1
            assert value(samples, "vllm:request_success_total", finished_reason="abort") == aborts0 + 1
    wait_until(lambda: value(scrape(url), "vllm:num_requests_running") == 0, what="running drops to 0")


def test_full_queue_answers_503(small_engine: tuple[str, ManagedProcess]) -> None:
    url, _ = small_engine
    body = {"prompt": [7, 8, 9], "max_tokens": 1900, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=url, timeout=60) as client, ExitStack() as streams:
        running = streams.enter_context(client.stream("POST", "/v1/completions", json=body))
        events = (line for line in running.iter_lines() if line.startswith("data: "))
        for _ in range(70):  # now it holds more than the whole 64-token budget
            next(events)
        for _ in range(3):
            streams.enter_context(client.stream("POST", "/v1/completions", json=body))
        wait_until(lambda: value(scrape(url), "vllm:num_requests_waiting") == 3, what="queue full")
        r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_full"
    wait_until(lambda: value(scrape(url), "vllm:num_requests_running") == 0, what="running drops to 0")
    assert value(scrape(url), "vllm:num_requests_waiting") == 0


def test_sigterm_with_a_stream_in_flight_exits_cleanly(small_engine: tuple[str, ManagedProcess]) -> None:
    url, proc = small_engine
    body = {"prompt": "x", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["text"] is not None
        proc.signal(signal.SIGTERM)
        try:
            for _ in lines:
                pass
        except httpx.HTTPError:
            pass  # the stream may be cut at shutdown; what matters is the process exits
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped.
    assert proc.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    log = proc.log()
    assert "Finished server process" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_bad_model_directory_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{ not json")
    res = subprocess.run(
        custos_cmd("inference", "serve", "--model", str(tmp_path), "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "cannot load" in res.stderr and str(tmp_path) in res.stderr
    assert "Traceback" not in res.stderr
