"""PII through every field family, through a real sidecar: never forwarded raw, never answered raw.

The evidence is what the recording upstream received (``upstream.forwarded()``) and what the client
got back. A request either reaches the upstream redacted or is refused with an OpenAI-shaped 400.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench.stack import Sidecar
from tests.redaction.test_walk import CARD, CN_ID, EMAIL, FAMILIES, PHONE, PII
from tests.security.conftest import MODEL, RecordingUpstream, Reply, chat_answer

INFERENCE = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
REQUEST_FAMILIES = [f for f in FAMILIES if f[1] in INFERENCE]


def post(sc: Sidecar, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(sc.url + path, content=orjson.dumps(body), headers=sc.headers, timeout=30, **kw)


def assert_not_forwarded(upstream: RecordingUpstream, *values: str) -> None:
    seen = upstream.forwarded()
    for raw in values or PII:
        assert raw.encode() not in seen, f"{raw} reached the upstream"


def assert_openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize(
    ("path", "body"), [f[1:] for f in REQUEST_FAMILIES], ids=[f[0] for f in REQUEST_FAMILIES]
)
def test_request_field_families(upstream: RecordingUpstream, guarded: Sidecar, path: str, body: Any) -> None:
    body = {**copy.deepcopy(body), "model": MODEL}
    resp = post(guarded, path, body)
    assert_not_forwarded(upstream)
    if resp.status_code == 400:
        assert_openai_error(resp, 400)
        assert not upstream.inference_requests()
    else:
        assert resp.status_code == 200, resp.text
        (sent,) = upstream.inference_requests()
        assert b"<EMAIL_" in sent.body or b"<CN_" in sent.body  # forwarded, redacted


def test_a_key_given_twice_does_not_smuggle_the_first_value(
    upstream: RecordingUpstream, guarded: Sidecar
) -> None:
    """The parser keeps the last of two equal keys; the first one's value (never walked) must not
    reach the upstream in the client's bytes."""
    raw = (
        b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", '
        b'"content": "call '
        + PHONE.encode()
        + b'", "content": "hello"}], "user": "'
        + EMAIL.encode()
        + b'", "user": "u1"}'
    )
    resp = httpx.post(guarded.url + "/v1/chat/completions", content=raw, headers=guarded.headers, timeout=30)
    assert resp.status_code == 200, resp.text
    (sent,) = upstream.inference_requests()
    assert orjson.loads(sent.body)["messages"][0]["content"] == "hello"
    assert_not_forwarded(upstream, PHONE, EMAIL)


def test_all_families_in_one_request(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    """Every chat family at once: one request, one forward, nothing raw."""
    body: dict[str, Any] = {"model": MODEL, "messages": []}
    for _, path, family in REQUEST_FAMILIES:
        if path != "/v1/chat/completions":
            continue
        for key, value in copy.deepcopy(family).items():
            if key == "messages":
                body["messages"].extend(value)
            elif key != "model":
                body[key] = value
    resp = post(guarded, "/v1/chat/completions", body)
    assert resp.status_code == 200, resp.text
    assert len(upstream.inference_requests()) == 1
    assert_not_forwarded(upstream)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi", "tool_calls": 5}]}, "messages[0].tool_calls"),
        ({"messages": [{"role": "user", "content": {"text": PHONE}}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {PHONE: 5}}, "logit_bias"),
        ({"messages": [{"role": PHONE, "content": "hi"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "metadata": {"id": int(PHONE)}},
            "metadata.id",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": EMAIL}, "tool_choice"),
    ],
)
def test_refused_with_field_path(
    upstream: RecordingUpstream, guarded: Sidecar, body: dict, param: str
) -> None:
    resp = post(guarded, "/v1/chat/completions", {"model": MODEL, **body})
    err = assert_openai_error(resp, 400)
    assert err["param"] == param and param in err["message"]
    assert not upstream.inference_requests()
    assert_not_forwarded(upstream)
    for raw in PII:
        assert raw not in resp.text


def test_tool_calls_not_a_list_is_400_not_500(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    body = {"model": MODEL, "messages": [{"role": "assistant", "content": "x", "tool_calls": 5}]}
    err = assert_openai_error(post(guarded, "/v1/chat/completions", body), 400)
    assert err["param"] == "messages[0].tool_calls"


def test_pii_in_the_url_refused(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    for params in ({"user": EMAIL}, {"x": PHONE}):
        resp = post(guarded, "/v1/chat/completions", body, params=params)
        assert assert_openai_error(resp, 400)["param"] == "query"
    assert (
        post(guarded, "/v1/chat/completions", body, params={"api-version": "2024-10-21"}).status_code == 200
    )
    assert_not_forwarded(upstream)


def test_work_limit_413(upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]) -> None:
    sc = start_sidecar(upstream.url, config={"redaction": {"max_strings": 100, "max_request_chars": 5000}})
    too_many = {"model": MODEL, "prompt": ["a"] * 200}
    err = assert_openai_error(post(sc, "/v1/completions", too_many), 413)
    assert err["code"] == "redaction_limit"
    too_long = {"model": MODEL, "prompt": f"{PHONE} " + "x" * 6000}
    assert assert_openai_error(post(sc, "/v1/completions", too_long), 413)["code"] == "redaction_limit"
    assert not upstream.inference_requests()


def test_big_request_redacted_in_thread(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    content = ("lorem ipsum " * 30000) + f" {EMAIL} " + ("dolor " * 10000)
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "user": PHONE}
    assert post(guarded, "/v1/chat/completions", body).status_code == 200
    assert_not_forwarded(upstream, EMAIL, PHONE)


def test_other_v1_routes_walked_generically(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    policy = tmp_path / "rbac.yaml"
    policy.write_text(
        "version: 1\n"
        "routes:\n"
        "  - {method: POST, path: /v1/responses, permission: 'model:invoke'}\n"
        "  - {method: POST, path: /v1/tokenize, permission: 'model:invoke'}\n"
        "roles:\n  - name: tester\n    permissions: ['*']\n"
    )
    sc = start_sidecar(upstream.url, config={"rbac": {"policy_file": str(policy)}})
    body = {
        "model": MODEL,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": f"mail {EMAIL}"}]}],
        "instructions": f"call {PHONE}",
        "metadata": {CN_ID: CARD},
    }
    assert post(sc, "/v1/responses", body).status_code == 200
    assert post(sc, "/v1/tokenize", {"model": MODEL, "prompt": f"card {CARD}"}).status_code == 200
    assert len(upstream.inference_requests()) == 2
    # Not JSON: not inspected, so not forwarded.
    resp = httpx.post(sc.url + "/v1/tokenize", content=f"plain {PHONE}", headers=sc.headers, timeout=30)
    assert_openai_error(resp, 400)
    assert len(upstream.inference_requests()) == 2
    assert_not_forwarded(upstream)


# -- answers ---------------------------------------------------------------------------------------
A_PHONE = "13900001111"
A_EMAIL = "leak@example.org"
A_ID = "11010519491231002X"
A_CARD = "4111 1111 1111 1111"
ANSWER_PII = (A_PHONE, A_EMAIL, A_ID, A_CARD)
A_TEXT = f"call {A_PHONE} mail {A_EMAIL} id {A_ID} card {A_CARD}"


def token_logprobs(*tokens: str) -> dict:
    return {
        "content": [
            {
                "token": t,
                "logprob": -0.5,
                "bytes": list(t.encode()),
                "top_logprobs": [{"token": t, "logprob": -0.5, "bytes": list(t.encode())}],
            }
            for t in tokens
        ]
    }


def assert_client_clean(text: str) -> None:
    for raw in ANSWER_PII:
        assert raw not in text, f"{raw} reached the client"
    # The digits of a raw value spelled as bytes (logprobs' byte arrays) are gone as well.
    assert str(list(A_PHONE.encode()))[1:-1] not in text


def chat(sc: Sidecar, **extra: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}
    return post(sc, "/v1/chat/completions", body)


def test_json_answer_every_field(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    answer = chat_answer(
        A_TEXT,
        reasoning_content=A_TEXT,
        reasoning=A_TEXT,
        refusal=A_TEXT,
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": A_TEXT, "arguments": A_TEXT}}],
        custom_field={"deep": [A_TEXT]},
    )
    answer["choices"][0]["logprobs"] = token_logprobs("call ", A_PHONE[:3], A_PHONE[3:], A_EMAIL)
    answer["choices"][0]["stop_reason"] = A_TEXT
    answer["unknown"] = A_TEXT
    upstream.reply = Reply(json=answer)
    resp = chat(guarded, logprobs=True)
    assert resp.status_code == 200
    assert_client_clean(resp.text)
    assert resp.json()["choices"][0]["logprobs"] is None


def test_json_answer_logprobs_only(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    """Clean text but PII in the token lists (and bytes): tokens redacted, bytes dropped."""
    answer = chat_answer("Fine.")
    answer["choices"][0]["logprobs"] = token_logprobs(A_PHONE, A_EMAIL)
    upstream.reply = Reply(json=answer)
    resp = chat(guarded, logprobs=True)
    assert_client_clean(resp.text)


def test_completions_answer(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    upstream.reply = Reply(
        json={
            "id": "cmpl-1",
            "object": "text_completion",
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "text": A_TEXT,
                    "logprobs": {"tokens": [A_PHONE], "top_logprobs": [{A_EMAIL: -1.0}], "text_offset": [0]},
                    "finish_reason": "stop",
                }
            ],
        }
    )
    resp = post(guarded, "/v1/completions", {"model": MODEL, "prompt": "hi", "logprobs": 1})
    assert resp.status_code == 200
    assert_client_clean(resp.text)


def test_unwalkable_json_answer(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    upstream.reply = Reply(json=[{"weird": A_TEXT}, A_TEXT])
    resp = chat(guarded)
    assert_client_clean(resp.text)


def stream_chunk(index: int = 0, finish: str | None = None, logprobs: Any = None, **delta: Any) -> dict:
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [choice],
    }


def split(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_sse_answer_every_field(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    events: list[Any] = [stream_chunk(role="assistant", content="")]
    for key in ("content", "reasoning_content", "reasoning", "refusal"):
        events += [stream_chunk(logprobs=token_logprobs(piece), **{key: piece}) for piece in split(A_TEXT)]
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": f"x {A_EMAIL}", "arguments": ""},
    }
    events.append(stream_chunk(tool_calls=[call]))
    events += [stream_chunk(tool_calls=[{"index": 0, "function": {"arguments": p}}]) for p in split(A_TEXT)]
    events.append(stream_chunk(index=1, content=A_TEXT, extra_field=A_TEXT))
    events.append(stream_chunk(finish="stop"))
    events.append(stream_chunk(index=1, finish="stop"))
    events.append({"id": "chatcmpl-1", "choices": [], "usage": {"total_tokens": 1}, "note": A_TEXT})
    events.append(f"not json {A_TEXT}")
    upstream.reply = Reply(sse=events)
    with httpx.stream(
        "POST",
        guarded.url + "/v1/chat/completions",
        content=orjson.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        ),
        headers=guarded.headers,
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        text = resp.read().decode()
    assert_client_clean(text)
    assert text.rstrip().endswith("data: [DONE]")


def test_sse_completions_answer(upstream: RecordingUpstream, guarded: Sidecar) -> None:
    events = [
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "text": p,
                    "logprobs": {"tokens": [p], "top_logprobs": [{p: -1.0}]},
                    "finish_reason": None,
                }
            ],
        }
        for p in split(A_TEXT, 3)
    ]
    events.append(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "choices": [{"index": 0, "text": "", "finish_reason": "stop"}],
        }
    )
    upstream.reply = Reply(sse=events)
    resp = post(guarded, "/v1/completions", {"model": MODEL, "prompt": "hi", "stream": True, "logprobs": 1})
    assert resp.status_code == 200
    assert_client_clean(resp.text)
