"""The CPU engine's OpenAI API, against the real `custos inference serve` process with the tiny model."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.stack import TINY_MODEL_NAME, Engine
from tests.inference.helpers import scrape, sse_events, value, wait_until


@pytest.fixture(scope="module")
def client(engine: Engine):
    with httpx.Client(base_url=engine.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def complete(client: httpx.Client, **body) -> dict:
    r = client.post("/v1/completions", json={"model": TINY_MODEL_NAME, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_models_lists_the_served_name(client: httpx.Client) -> None:
    doc = client.get("/v1/models").json()
    assert doc["object"] == "list"
    assert [m["id"] for m in doc["data"]] == [TINY_MODEL_NAME]
    assert doc["data"][0]["max_model_len"] == 2048


def test_health_and_version(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    assert "version" in client.get("/version").json()


def test_completion_usage_and_length(client: httpx.Client, tokenizer) -> None:
    prompt = "The invoice number is 2024-0042"
    doc = complete(client, prompt=prompt, max_tokens=7, ignore_eos=True)
    assert doc["object"] == "text_completion"
    assert doc["id"].startswith("cmpl-")
    (choice,) = doc["choices"]
    assert choice["finish_reason"] == "length"
    assert isinstance(choice["text"], str) and choice["text"]
    usage = doc["usage"]
    assert usage["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])
    assert usage["completion_tokens"] == 7
    assert usage["total_tokens"] == usage["prompt_tokens"] + 7


def test_completion_default_max_tokens_is_16(client: httpx.Client) -> None:
    doc = complete(client, prompt="Hello", ignore_eos=True)
    assert doc["usage"]["completion_tokens"] == 16


def test_completion_token_id_prompt_and_batch_of_prompts(client: httpx.Client) -> None:
    doc = complete(client, prompt=[10, 20, 30], max_tokens=3, ignore_eos=True)
    assert doc["usage"]["prompt_tokens"] == 3
    doc = complete(client, prompt=["first", "second prompt"], max_tokens=2, n=2, ignore_eos=True)
    assert sorted(c["index"] for c in doc["choices"]) == [0, 1, 2, 3]
    assert doc["usage"]["completion_tokens"] == 8


def test_chat_applies_the_template(client: httpx.Client, tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好, 42?"}]
    r = client.post(
        "/v1/chat/completions",
        json={"model": TINY_MODEL_NAME, "messages": messages, "max_tokens": 5, "ignore_eos": True},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["role"] == "assistant"
    assert doc["choices"][0]["finish_reason"] == "length"
    templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert doc["usage"]["prompt_tokens"] == len(tokenizer(templated, add_special_tokens=False)["input_ids"])
    # Content parts are flattened to text before templating: same prompt, same token count.
    parts = [messages[0], {"role": "user", "content": [{"type": "text", "text": "你好, 42?"}]}]
    r2 = client.post("/v1/chat/completions", json={"messages": parts, "max_tokens": 1})
    assert r2.json()["usage"]["prompt_tokens"] == doc["usage"]["prompt_tokens"]


def test_greedy_is_deterministic(client: httpx.Client) -> None:
    a = complete(client, prompt="Write a short poem", max_tokens=12, temperature=0, ignore_eos=True)
    b = complete(client, prompt="Write a short poem", max_tokens=12, temperature=0, ignore_eos=True)
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_seed_determinism(client: httpx.Client) -> None:
    body = {"prompt": "Hello! How can I help", "max_tokens": 24, "temperature": 1.0, "ignore_eos": True}
    a = complete(client, **body, seed=1234)["choices"][0]["text"]
    b = complete(client, **body, seed=1234)["choices"][0]["text"]
    c = complete(client, **body, seed=999)["choices"][0]["text"]
    assert a == b
    assert a != c  # 24 tokens sampled from ~1000: a collision would be astronomically unlikely


def test_stop_string_truncates_and_reports_reason(client: httpx.Client) -> None:
    full = complete(client, prompt="The quick brown fox", max_tokens=40, temperature=0, ignore_eos=True)
    text = full["choices"][0]["text"]
    # A stop string taken from the middle of the greedy answer (3 characters, no replacement chars).
    stop = next(
        text[i : i + 3] for i in range(len(text) // 2, len(text) - 2) if "\ufffd" not in text[i : i + 3]
    )
    doc = complete(
        client,
        prompt="The quick brown fox",
        max_tokens=40,
        temperature=0,
        ignore_eos=True,
        stop=["@@never@@", stop],
    )
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] == stop
    expected = full["choices"][0]["text"]
    assert choice["text"] == expected[: expected.find(stop)]
    assert stop not in choice["text"]
    assert doc["usage"]["completion_tokens"] < 40
    # Streaming holds back text that might start a stop string: the client never sees any of it.
    with client.stream(
        "POST",
        "/v1/completions",
        json={
            "prompt": "The quick brown fox",
            "max_tokens": 40,
            "temperature": 0,
            "ignore_eos": True,
            "stop": stop,
            "stream": True,
        },
    ) as r:
        events = sse_events(r.iter_lines())
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_arrives_incrementally(client: httpx.Client, engine: Engine) -> None:
    body = {
        "prompt": "Latency, throughput",
        "max_tokens": 300,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    arrivals: list[float] = []
    events: list[str] = []
    running_after_first: float | None = None
    start = time.monotonic()
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            arrivals.append(time.monotonic() - start)
            events.append(line[6:])
            if len(events) == 1:
                # Proof of streaming without any clock: the first event is here while the engine is
                # still generating the rest.
                running_after_first = value(scrape(engine.url), "vllm:num_requests_running")
    assert running_after_first is not None and running_after_first >= 1
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 300
    text_chunks = chunks[:-1]
    assert len(text_chunks) >= 150  # about one event per token (a few wait for a whole UTF-8 character)
    assert text_chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "text_completion" for c in text_chunks)
    # By arrival time: the first event came well before the last one, not all at once at the end.
    first, last = arrivals[0], arrivals[-1]
    assert first < last / 2


def test_chat_stream_shape(client: httpx.Client) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6,
        "ignore_eos": True,
        "stream": True,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        events = sse_events(r.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
        ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature"),
        ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 5000}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "n": 0}, "n"),
        ("/v1/completions", {"prompt": "x", "stop": [""]}, "stop"),
        ("/v1/completions", {"prompt": "x", "seed": "abc"}, "seed"),
        ("/v1/completions", {"prompt": "x", "logprobs": 50}, "logprobs"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            "top_logprobs",
        ),
        ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
        ("/v1/completions", {"prompt": [5, 99999]}, "prompt"),
        ("/v1/completions", {"max_tokens": 3}, "prompt"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"max_tokens": 3}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function"}],
                "tool_choice": "auto",
            },
            "tools",
        ),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    client: httpx.Client, path: str, body: dict, param: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert param.split(".")[0].split("[")[0] in error["message"]
    assert error["type"] == "invalid_request_error"


def test_malformed_json_and_unknown_model_and_route(client: httpx.Client) -> None:
    r = client.post(
        "/v1/completions", content=b'{"prompt": "x",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = client.post("/v1/completions", json=["not", "an", "object"])
    assert r.status_code == 400
    r = client.post("/v1/completions", json={"model": "gpt-17", "prompt": "x"})
    assert r.status_code == 404 and "gpt-17" in r.json()["error"]["message"]
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/v1/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_stream_cancelled_on_disconnect(client: httpx.Client, engine: Engine) -> None:
    before = scrape(engine.url)
    body = {"prompt": "Translate the following", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        got = 0
        for line in lines:
            if line.startswith("data: "):
                got += 1
                if got == 3:
                    break
        assert value(scrape(engine.url), "vllm:num_requests_running") >= 1
    # Leaving the block closed the connection mid-stream: the engine must drop the request.
    wait_until(lambda: value(scrape(engine.url), "vllm:num_requests_running") == 0, what="running drops to 0")
    after = scrape(engine.url)
    aborted = value(after, "vllm:request_success_total", finished_reason="abort") - value(
        before, "vllm:request_success_total", finished_reason="abort"
    )
    assert aborted == 1
    generated = value(after, "vllm:generation_tokens_total") - value(before, "vllm:generation_tokens_total")
    assert generated < 2000


def test_non_streaming_request_cancelled_on_disconnect(engine: Engine) -> None:
    before = scrape(engine.url)
    body = {"prompt": "Errors happen", "max_tokens": 2000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(engine.url + "/v1/completions", json=body, timeout=httpx.Timeout(10, read=0.3))
    wait_until(lambda: value(scrape(engine.url), "vllm:num_requests_running") == 0, what="running drops to 0")
    after = scrape(engine.url)
    aborted = value(after, "vllm:request_success_total", finished_reason="abort") - value(
        before, "vllm:request_success_total", finished_reason="abort"
    )
    assert aborted == 1


def test_concurrent_requests_are_batched(engine: Engine) -> None:
    before = scrape(engine.url)
    results: list[dict] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(8)

    def one(i: int) -> None:
        try:
            gate.wait()
            r = httpx.post(
                engine.url + "/v1/completions",
                timeout=120,
                json={"prompt": f"Request number {i}", "max_tokens": 64, "ignore_eos": True},
            )
            results.append(r.json())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 8 and all(r["usage"]["completion_tokens"] == 64 for r in results)
    after = scrape(engine.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    passes = delta("custos_engine_batch_size_count", phase="decode")
    single = delta("custos_engine_batch_size_bucket", phase="decode", le="1.0")
    assert passes > 0
    assert passes - single > 0, "no decode pass ran more than one sequence"
    # Fewer forward passes than tokens: sequences shared passes.
    assert passes < 8 * 63


def test_metrics_use_vllm_names(engine: Engine) -> None:
    complete_once = httpx.post(
        engine.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=60
    )
    assert complete_once.status_code == 200
    samples = scrape(engine.url)
    names = {name for name, _ in samples}
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:time_per_output_token_seconds_count",
        "vllm:request_success_total",
    ]:
        assert name in names, name
    labels = {dict(ls).get("model_name") for name, ls in samples if name.startswith("vllm:")}
    assert labels == {TINY_MODEL_NAME}
    assert value(samples, "vllm:prompt_tokens_total") > 0
    assert value(samples, "vllm:e2e_request_latency_seconds_count") > 0


def test_completion_logprobs(client: httpx.Client) -> None:
    doc = complete(
        client, prompt="The model answered", max_tokens=6, temperature=0, ignore_eos=True, logprobs=3
    )
    lp = doc["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 6
    assert "".join(lp["tokens"]).replace("\ufffd", "") == doc["choices"][0]["text"].replace("\ufffd", "")
    for chosen, top in zip(lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert chosen <= 0.0
        assert 1 <= len(top) <= 4
        assert chosen >= max(top.values()) - 1e-4  # greedy picks the most likely token
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    # Off unless asked for.
    assert complete(client, prompt="x", max_tokens=2)["choices"][0]["logprobs"] is None


def test_chat_logprobs_streamed(client: httpx.Client) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "ignore_eos": True,
        "stream": True,
        "logprobs": True,
        "top_logprobs": 2,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        events = sse_events(r.iter_lines())
    chunks = [json.loads(e) for e in events[:-1]]
    entries = [e for c in chunks[1:] for e in (c["choices"][0]["logprobs"] or {}).get("content", [])]
    assert len(entries) == 8
    assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in entries)
    assert all(bytes(e["bytes"]).decode(errors="replace") == e["token"] for e in entries)


def test_sampling_extras_take_effect(client: httpx.Client, tokenizer) -> None:
    base = {"prompt": "Hello world", "max_tokens": 6, "ignore_eos": True}
    greedy = complete(client, **base, temperature=0)["choices"][0]["text"]
    # top_k=1 samples the most likely token: the greedy answer, whatever the temperature.
    assert complete(client, **base, temperature=1.5, top_k=1, seed=3)["choices"][0]["text"] == greedy
    # A +100 bias makes one token win every step.
    token = tokenizer("quick", add_special_tokens=False)["input_ids"][0]
    biased = complete(client, **base, temperature=0, logit_bias={str(token): 100})["choices"][0]["text"]
    assert biased == tokenizer.decode([token] * 6)
    # stop_token_ids: the first greedy token ends the answer at once.
    first = complete(client, **base, temperature=0, logprobs=0)["choices"][0]["logprobs"]["tokens"][0]
    first_id = tokenizer(first, add_special_tokens=False)["input_ids"][0]
    doc = complete(client, **base, temperature=0, stop_token_ids=[first_id])
    assert doc["choices"][0]["finish_reason"] == "stop" and doc["choices"][0]["stop_reason"] == first_id
    assert doc["usage"]["completion_tokens"] == 1
    # echo puts the prompt in front; include_stop_str_in_output keeps the stop string.
    assert complete(client, **base, temperature=0, echo=True)["choices"][0]["text"] == "Hello world" + greedy
    stop = next(greedy[i : i + 2] for i in range(1, len(greedy) - 1) if "\ufffd" not in greedy[i : i + 2])
    kept = complete(client, **base, temperature=0, stop=stop, include_stop_str_in_output=True)["choices"][0]
    assert kept["finish_reason"] == "stop" and kept["text"].endswith(stop)
