"""The official `openai` Python SDK pointed at the sidecar must just work."""

from __future__ import annotations

import openai
import pytest

from bench.stack import TINY_MODEL_NAME


def test_models(sidecar) -> None:
    client = sidecar.openai_client()
    ids = [m.id for m in client.models.list()]
    assert TINY_MODEL_NAME in ids


def test_chat(sidecar) -> None:
    client = sidecar.openai_client()
    resp = client.chat.completions.create(
        model=TINY_MODEL_NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, seed=5
    )
    assert resp.choices[0].message.role == "assistant"
    assert resp.usage is not None and resp.usage.completion_tokens >= 1
    assert resp.choices[0].finish_reason in ("stop", "length")


def test_completions(sidecar) -> None:
    client = sidecar.openai_client()
    resp = client.completions.create(model=TINY_MODEL_NAME, prompt="The weather is", max_tokens=5, seed=1)
    assert isinstance(resp.choices[0].text, str)
    assert resp.usage.prompt_tokens >= 1


def test_streaming_chat(sidecar) -> None:
    client = sidecar.openai_client()
    stream = client.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},  # random weights: never an empty answer
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert pieces
    assert usage is not None and usage.completion_tokens >= len(pieces)


def test_sdk_sees_openai_errors(sidecar) -> None:
    client = sidecar.openai_client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=TINY_MODEL_NAME, messages="not a list", max_tokens=2)  # type: ignore[arg-type]
    assert err.value.status_code == 400
