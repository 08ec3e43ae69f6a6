"""vLLM's other OpenAI-compatible routes on the real CPU engine (tiny model): the Responses API (JSON,
typed SSE events, the openai SDK's helpers), /tokenize and /detokenize, and the pooling routes
(/pooling, /v1/embeddings, /v1/score, /v1/rerank)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.stack import TINY_MODEL_NAME, Engine, start_engine
from tests.inference.helpers import scrape, value, wait_until
from tests.inference.lora_support import ANSWER, SYSTEM, TOPICS, train_adapter, write_dataset

# Greedy and never stopping at EOS: the answer's length is exactly max_output_tokens.
FIXED = {"temperature": 0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def client(engine: Engine):
    with httpx.Client(base_url=engine.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def sdk(engine: Engine) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def hidden_size(tiny_model_dir: Path) -> int:
    return json.loads((tiny_model_dir / "config.json").read_text())["hidden_size"]


def post(client: httpx.Client, path: str, **body: Any) -> dict[str, Any]:
    r = client.post(path, json={"model": TINY_MODEL_NAME, **body})
    assert r.status_code == 200, r.text
    return r.json()


def chat_prompt_tokens(client: httpx.Client, messages: list[dict[str, Any]]) -> int:
    return post(client, "/tokenize", messages=messages)["count"]


def sse(lines) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) per event of a typed SSE stream; fails on a data line without its event line."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            assert name is not None, f"data without an event line: {line}"
            events.append((name, json.loads(line[len("data: ") :])))
            name = None
    return events


def stream_response(client: httpx.Client, **body: Any) -> list[tuple[str, dict[str, Any]]]:
    with client.stream("POST", "/v1/responses", json={"model": TINY_MODEL_NAME, "stream": True, **body}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    assert not any("[DONE]" in line for line in lines)  # the Responses API has no [DONE]
    return sse(lines)


def completing_stop(text: str) -> str:
    """A stop string that cuts ``text`` after at least one character (its first new character)."""
    return next(ch for i, ch in enumerate(text) if i > 0 and text.index(ch) == i and ch != "\ufffd")


# ---- /v1/responses: JSON --------------------------------------------------------------------------
def test_responses_create_answers_a_response_object(sdk: openai.OpenAI, client: httpx.Client) -> None:
    res = sdk.responses.create(
        model=TINY_MODEL_NAME,
        input="Summarise the invoice",
        instructions="Answer in one line.",
        max_output_tokens=8,
        metadata={"ticket": "T-1"},
        user="alice",
        store=True,
        **FIXED,
    )
    assert res.object == "response" and res.id.startswith("resp_")
    assert res.model == TINY_MODEL_NAME
    (message,) = res.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert res.output_text and res.output_text == message.content[0].text
    # Cut by max_output_tokens: incomplete, as OpenAI and vLLM say it.
    assert res.status == "incomplete" and res.incomplete_details.reason == "max_output_tokens"
    prompt = [
        {"role": "system", "content": "Answer in one line."},
        {"role": "user", "content": "Summarise the invoice"},
    ]
    assert res.usage.input_tokens == chat_prompt_tokens(client, prompt)
    assert res.usage.output_tokens == 8
    assert res.usage.total_tokens == res.usage.input_tokens + 8
    assert res.usage.input_tokens_details.cached_tokens == 0
    assert res.usage.output_tokens_details.reasoning_tokens == 0
    # The echo fields.
    assert res.instructions == "Answer in one line."
    assert res.max_output_tokens == 8 and res.temperature == 0 and res.top_p == 1.0
    assert res.metadata == {"ticket": "T-1"} and res.user == "alice"
    assert res.tools == [] and res.tool_choice == "auto" and res.parallel_tool_calls is True
    assert res.error is None and res.previous_response_id is None
    assert res.text.format.type == "text" and res.truncation == "disabled"
    assert res.store is False  # nothing is stored, whatever was asked


def test_responses_greedy_answer_equals_chat(client: httpx.Client) -> None:
    """Same prompt, same engine: the Responses route generates what the chat route does."""
    messages = [{"role": "user", "content": "Write a haiku"}]
    chat = post(
        client, "/v1/chat/completions", messages=messages, max_tokens=6, temperature=0, ignore_eos=True
    )
    res = post(
        client, "/v1/responses", input="Write a haiku", max_output_tokens=6, temperature=0, ignore_eos=True
    )
    assert res["output"][0]["content"][0]["text"] == chat["choices"][0]["message"]["content"]
    assert res["usage"]["input_tokens"] == chat["usage"]["prompt_tokens"]


def test_responses_completed_when_the_answer_ends(client: httpx.Client) -> None:
    full = post(client, "/v1/responses", input="Count", max_output_tokens=10, temperature=0, ignore_eos=True)
    text = full["output"][0]["content"][0]["text"]
    stop = completing_stop(text)
    res = post(
        client,
        "/v1/responses",
        input="Count",
        max_output_tokens=10,
        temperature=0,
        ignore_eos=True,
        stop=[stop],
    )
    assert res["status"] == "completed" and res["incomplete_details"] is None
    assert res["output"][0]["content"][0]["text"] == text[: text.index(stop)]
    assert res["usage"]["output_tokens"] < 10


def test_responses_one_token(sdk: openai.OpenAI) -> None:
    res = sdk.responses.create(model=TINY_MODEL_NAME, input="Hi", max_output_tokens=1, **FIXED)
    assert res.status == "incomplete" and res.incomplete_details.reason == "max_output_tokens"
    assert res.usage.output_tokens == 1


def test_input_forms_make_the_chat_prompt(client: httpx.Client) -> None:
    """A string, easy messages, typed message items and instructions: the prompt chat would make."""

    def input_tokens(**body: Any) -> int:
        return post(client, "/v1/responses", max_output_tokens=1, **body)["usage"]["input_tokens"]

    user_only = chat_prompt_tokens(client, [{"role": "user", "content": "Hi there"}])
    assert input_tokens(input="Hi there") == user_only
    assert input_tokens(input=[{"role": "user", "content": "Hi there"}]) == user_only
    typed = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi there"}]}]
    assert input_tokens(input=typed) == user_only
    with_system = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi there"}]
    assert input_tokens(input="Hi there", instructions="Be terse.") == chat_prompt_tokens(client, with_system)
    assert chat_prompt_tokens(client, with_system) > user_only
    # A multi-turn conversation, the assistant's earlier answer given as an output item.
    turns = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
        },
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "How are"}, {"type": "input_text", "text": "you"}],
        },
    ]
    as_chat = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are\nyou"},
    ]
    assert input_tokens(input=turns) == chat_prompt_tokens(client, as_chat)


def test_truncation_auto_drops_the_oldest_turns(client: httpx.Client) -> None:
    long_turn = {"role": "user", "content": "lorem ipsum " * 140}  # 1120 tokens: two do not fit in 2048
    body = {"input": [long_turn, {"role": "assistant", "content": "ok"}, long_turn], "max_output_tokens": 4}
    r = client.post("/v1/responses", json={"model": TINY_MODEL_NAME, **body})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    res = post(client, "/v1/responses", truncation="auto", instructions="Be terse.", **body)
    # The oldest turn went; the rest fits (the instructions always stay).
    kept = [{"role": "system", "content": "Be terse."}, {"role": "assistant", "content": "ok"}, long_turn]
    assert res["usage"]["input_tokens"] == chat_prompt_tokens(client, kept)
    assert res["truncation"] == "auto"


# ---- /v1/responses: streamed --------------------------------------------------------------------
STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
STREAM_END = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def test_stream_events_in_order(client: httpx.Client) -> None:
    events = stream_response(
        client, input="Tell me a story", max_output_tokens=12, temperature=0, ignore_eos=True
    )
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = [data for name, data in events if name == "response.output_text.delta"]
    assert names == STREAM_ORDER + ["response.output_text.delta"] * len(deltas) + STREAM_END + [
        "response.incomplete"
    ]
    assert len(deltas) >= 4  # about one per token (a token inside a UTF-8 character waits for the next)
    created, in_progress = events[0][1]["response"], events[1][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert in_progress["id"] == created["id"]
    item = events[2][1]["item"]
    assert events[2][1]["output_index"] == 0
    assert item["status"] == "in_progress" and item["content"] == [] and item["role"] == "assistant"
    part_added = events[3][1]
    assert part_added["item_id"] == item["id"] and part_added["part"]["text"] == ""
    for delta in deltas:
        assert (delta["item_id"], delta["output_index"], delta["content_index"]) == (item["id"], 0, 0)
        assert delta["logprobs"] == []
    text = "".join(d["delta"] for d in deltas)
    done = dict(events[-4:])
    assert done["response.output_text.done"]["text"] == text
    assert done["response.content_part.done"]["part"]["text"] == text
    assert done["response.output_item.done"]["item"]["content"][0]["text"] == text
    final = done["response.incomplete"]["response"]
    assert final["id"] == created["id"] and final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["content"][0]["text"] == text
    assert final["usage"]["output_tokens"] == 12
    # The stream generated what the JSON answer does.
    whole = post(
        client, "/v1/responses", input="Tell me a story", max_output_tokens=12, temperature=0, ignore_eos=True
    )
    assert whole["output"][0]["content"][0]["text"] == text
    assert whole["usage"] == final["usage"]


def test_stream_completed_and_logprobs(client: httpx.Client) -> None:
    full = post(client, "/v1/responses", input="Go on", max_output_tokens=10, temperature=0, ignore_eos=True)
    text = full["output"][0]["content"][0]["text"]
    stop = completing_stop(text)
    events = stream_response(
        client,
        input="Go on",
        max_output_tokens=10,
        temperature=0,
        ignore_eos=True,
        stop=[stop],
        include=["message.output_text.logprobs"],
        top_logprobs=2,
    )
    name, data = events[-1]
    assert name == "response.completed" and data["response"]["status"] == "completed"
    assert data["response"]["output"][0]["content"][0]["text"] == text[: text.index(stop)]
    logprobs = data["response"]["output"][0]["content"][0]["logprobs"]
    assert logprobs and all(len(entry["top_logprobs"]) == 2 for entry in logprobs)
    assert data["response"]["top_logprobs"] == 2


def test_sdk_iterates_the_stream(sdk: openai.OpenAI) -> None:
    events = list(
        sdk.responses.create(model=TINY_MODEL_NAME, input="Hello", max_output_tokens=5, stream=True, **FIXED)
    )
    types = [e.type for e in events]
    assert types[:4] == STREAM_ORDER and types[-4:] == [*STREAM_END, "response.incomplete"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].response.output_text == text
    assert events[-1].response.usage.output_tokens == 5


def test_sdk_stream_helper_final_response(sdk: openai.OpenAI) -> None:
    whole = sdk.responses.create(model=TINY_MODEL_NAME, input="Hello", max_output_tokens=8, **FIXED)
    stop = completing_stop(whole.output_text)
    extra = {**FIXED["extra_body"], "stop": [stop]}
    with sdk.responses.stream(
        model=TINY_MODEL_NAME, input="Hello", max_output_tokens=8, temperature=0, extra_body=extra
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas) == whole.output_text[: whole.output_text.index(stop)]
    assert final.usage.output_tokens >= 1


def test_stream_aborted_when_the_client_leaves(client: httpx.Client, engine: Engine) -> None:
    before = scrape(engine.url)
    body = {
        "model": TINY_MODEL_NAME,
        "input": "Go",
        "max_output_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
    }
    with client.stream("POST", "/v1/responses", json=body) as r:
        deltas = 0
        for line in r.iter_lines():
            deltas += line == "event: response.output_text.delta"
            if deltas == 3:
                break
    wait_until(lambda: value(scrape(engine.url), "vllm:num_requests_running") == 0, what="running drops to 0")
    after = scrape(engine.url)
    aborted = value(after, "vllm:request_success_total", finished_reason="abort") - value(
        before, "vllm:request_success_total", finished_reason="abort"
    )
    assert aborted == 1


# ---- bad input: 400 naming the field ------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/responses", {}, "input"),
        ("/v1/responses", {"input": []}, "input"),
        ("/v1/responses", {"input": 5}, "input"),
        (
            "/v1/responses",
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "http://x/i.png"}]}
                ]
            },
            "input[0].content",
        ),
        (
            "/v1/responses",
            {
                "input": [
                    {"role": "user", "content": "x"},
                    {"type": "function_call_output", "call_id": "c", "output": "o"},
                ]
            },
            "input[1].type",
        ),
        ("/v1/responses", {"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ("/v1/responses", {"input": [{"role": "user", "content": 7}]}, "input[0].content"),
        ("/v1/responses", {"input": "x", "previous_response_id": "resp_123"}, "previous_response_id"),
        ("/v1/responses", {"input": "x", "tools": [{"type": "function", "name": "f"}]}, "tools"),
        ("/v1/responses", {"input": "x", "tool_choice": "required"}, "tool_choice"),
        ("/v1/responses", {"input": "x", "text": {"format": {"type": "json_object"}}}, "text.format"),
        ("/v1/responses", {"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ("/v1/responses", {"input": "x", "max_output_tokens": 5000}, "max_output_tokens"),
        ("/v1/responses", {"input": "x", "temperature": 3}, "temperature"),
        ("/v1/responses", {"input": "x", "truncation": "sometimes"}, "truncation"),
        ("/v1/responses", {"input": "x", "include": ["everything"]}, "include[0]"),
        ("/v1/responses", {"input": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ("/v1/responses", {"input": "x", "background": True}, "background"),
        ("/tokenize", {}, "prompt"),
        ("/tokenize", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ("/detokenize", {"tokens": [1, -1]}, "tokens"),
        ("/detokenize", {"tokens": [5, 10**9]}, "tokens"),
        ("/detokenize", {"tokens": "abc"}, "tokens"),
        ("/pooling", {"input": []}, "input"),
        ("/pooling", {"input": [[1, 99999]]}, "input"),
        ("/v1/embeddings", {"input": "x", "dimensions": 8}, "dimensions"),
        ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ("/v1/embeddings", {"input": "x " * 1100}, "input"),
        ("/v1/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, "text_1"),
        ("/v1/score", {"text_1": "a"}, "text_2"),
        ("/v1/rerank", {"query": "q", "documents": []}, "documents"),
        ("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": -1}, "top_n"),
    ],
)
def test_bad_input_is_400_naming_the_field(client: httpx.Client, path: str, body: dict, param: str) -> None:
    r = client.post(path, json={"model": TINY_MODEL_NAME, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert (
        error["message"].startswith(param.split(".")[0].split("[")[0]) or "context length" in error["message"]
    )
    assert error["type"] == "invalid_request_error"


def test_prompt_over_the_context_length(client: httpx.Client) -> None:
    r = client.post("/v1/responses", json={"model": TINY_MODEL_NAME, "input": "lorem ipsum " * 300})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_unknown_model_and_unknown_fields(client: httpx.Client, sdk: openai.OpenAI) -> None:
    for path, body in [
        ("/v1/responses", {"input": "x"}),
        ("/tokenize", {"prompt": "x"}),
        ("/v1/embeddings", {"input": "x"}),
        ("/v1/rerank", {"query": "q", "documents": ["d"]}),
    ]:
        r = client.post(path, json={"model": "gpt-17", **body})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", path
    # Unknown fields are ignored, as on the chat route.
    res = post(client, "/v1/responses", input="x", max_output_tokens=1, some_future_field={"a": 1})
    assert res["status"] == "incomplete"
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model=TINY_MODEL_NAME, input="x", previous_response_id="resp_1")
    assert raised.value.body["param"] == "previous_response_id"


# ---- /tokenize, /detokenize ---------------------------------------------------------------------
def test_tokenize_detokenize_round_trip(client: httpx.Client, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    text = "Invoice 2024-0042: 你好, café"
    doc = post(client, "/tokenize", prompt=text, return_token_strs=True)
    assert doc["tokens"] == tokenizer(text)["input_ids"]
    assert doc["count"] == len(doc["tokens"]) and doc["max_model_len"] == 2048
    assert doc["token_strs"] == tokenizer.convert_ids_to_tokens(doc["tokens"])
    assert post(client, "/tokenize", prompt=text)["token_strs"] is None
    assert post(client, "/detokenize", tokens=doc["tokens"]) == {"prompt": text}
    # The chat form: the template's prompt, with and without the assistant's header.
    messages = [{"role": "user", "content": "hi"}]
    chat = post(client, "/tokenize", messages=messages)
    template = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat["tokens"] == tokenizer(template, add_special_tokens=False)["input_ids"]
    assert post(client, "/tokenize", messages=messages, add_generation_prompt=False)["count"] < chat["count"]


# ---- pooling routes -----------------------------------------------------------------------------
def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_pooling_and_embeddings(client: httpx.Client, sdk: openai.OpenAI, hidden_size: int) -> None:
    texts = ["The invoice is overdue.", "Bonjour"]
    pooled = post(client, "/pooling", input=texts)
    assert (
        pooled["id"].startswith("pool-") and pooled["object"] == "list" and pooled["model"] == TINY_MODEL_NAME
    )
    assert [(d["index"], d["object"]) for d in pooled["data"]] == [(0, "pooling"), (1, "pooling")]
    assert all(len(d["data"]) == hidden_size for d in pooled["data"])
    counts = [post(client, "/tokenize", prompt=t)["count"] for t in texts]
    assert pooled["usage"]["prompt_tokens"] == pooled["usage"]["total_tokens"] == sum(counts)

    embedded = post(client, "/v1/embeddings", input=list(reversed(texts)))
    assert embedded["id"].startswith("embd-") and embedded["data"][0]["object"] == "embedding"
    for vector in (d["embedding"] for d in embedded["data"]):
        assert len(vector) == hidden_size and norm(vector) == pytest.approx(1.0, abs=1e-5)
    # Same text, same vector: whatever else is in the request, in which order, and as token ids.
    first = pooled["data"][0]["data"]
    assert embedded["data"][1]["embedding"] == pytest.approx([x / norm(first) for x in first], abs=1e-5)
    ids = post(client, "/tokenize", prompt=texts[0])["tokens"]
    alone = post(client, "/v1/embeddings", input=ids)["data"][0]["embedding"]
    assert alone == pytest.approx(embedded["data"][1]["embedding"], abs=1e-6)
    assert embedded["data"][0]["embedding"] != pytest.approx(embedded["data"][1]["embedding"], abs=1e-3)
    # The openai SDK asks for base64 and decodes it.
    via_sdk = sdk.embeddings.create(model=TINY_MODEL_NAME, input=texts[0])
    assert via_sdk.data[0].embedding == pytest.approx(alone, abs=1e-6)
    assert via_sdk.usage.prompt_tokens == counts[0]


def test_score_pairs_and_cosine(client: httpx.Client) -> None:
    text = "The quarterly report is due on Friday."
    one_to_many = post(client, "/v1/score", text_1=text, text_2=[text, "小猫在睡觉 zzz 42"])
    assert one_to_many["id"].startswith("score-") and one_to_many["object"] == "list"
    same, other = (d["score"] for d in one_to_many["data"])
    assert [d["object"] for d in one_to_many["data"]] == ["score", "score"]
    assert same == pytest.approx(1.0, abs=1e-6)
    assert other < same - 1e-3
    pairwise = post(client, "/v1/score", text_1=["a b", text], text_2=["a b", "小猫在睡觉 zzz 42"])
    assert [d["index"] for d in pairwise["data"]] == [0, 1]
    assert pairwise["data"][0]["score"] == pytest.approx(1.0, abs=1e-6)
    assert pairwise["data"][1]["score"] == pytest.approx(other, abs=1e-6)
    assert post(client, "/v1/score", text_1=text, text_2=text)["data"][0]["score"] == pytest.approx(
        1.0, abs=1e-6
    )


def test_rerank_sorted_and_top_n(client: httpx.Client) -> None:
    query = "Where is my refund?"
    documents = ["42 42 42", "Where is my refund?", "小猫", "refund"]
    doc = post(client, "/v1/rerank", query=query, documents=documents)
    assert doc["id"].startswith("rerank-") and doc["model"] == TINY_MODEL_NAME
    results = doc["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0]["index"] == 1 and results[0]["relevance_score"] == pytest.approx(1.0, abs=1e-6)
    assert all(r["document"]["text"] == documents[r["index"]] for r in results)
    assert doc["usage"]["total_tokens"] > 0
    top = post(client, "/v1/rerank", query=query, documents=documents, top_n=2, return_documents=False)
    assert [r["index"] for r in top["results"]] == [r["index"] for r in results[:2]]
    assert all("document" not in r for r in top["results"])
    # The score route agrees with the rerank route.
    scored = post(client, "/v1/score", text_1=query, text_2=documents)["data"]
    assert {r["index"]: r["relevance_score"] for r in results} == pytest.approx(
        {d["index"]: d["score"] for d in scored}, abs=1e-6
    )


# ---- LoRA adapters: selected by ``model`` on the new routes too ---------------------------------
ADAPTER = "api-coverage-lora"


@pytest.fixture(scope="module")
def lora_client(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """An engine of its own serving an adapter trained to answer ANSWER (the shared engine stays as
    the other tests expect it: no adapter ever loaded)."""
    pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("lora")
    train_adapter(tiny_model_dir, write_dataset(root / "train.jsonl", emails=0), root / "adapter", epochs=8)
    engine = start_engine(tiny_model_dir, "--lora", f"{ADAPTER}={root / 'adapter'}")
    try:
        with httpx.Client(base_url=engine.url, timeout=120) as c:
            yield c
    finally:
        engine.process.stop()


def test_adapter_selected_by_model(lora_client: httpx.Client) -> None:
    body = {"instructions": SYSTEM, "input": TOPICS[1], "max_output_tokens": 12, "temperature": 0}
    tuned = post(lora_client, "/v1/responses", **body, model=ADAPTER)
    assert tuned["model"] == ADAPTER
    assert tuned["output"][0]["content"][0]["text"].startswith(ANSWER[:20])
    base = post(lora_client, "/v1/responses", **body)
    assert not base["output"][0]["content"][0]["text"].startswith(ANSWER[:20])
    tuned_vector = post(lora_client, "/v1/embeddings", input=TOPICS[1], model=ADAPTER)
    base_vector = post(lora_client, "/v1/embeddings", input=TOPICS[1])
    assert tuned_vector["model"] == ADAPTER
    assert tuned_vector["data"][0]["embedding"] != pytest.approx(
        base_vector["data"][0]["embedding"], abs=1e-4
    )
