"""Identity in front of the real CPU engine, through the default test sidecar and the OpenAI SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from bench.stack import TINY_MODEL_NAME, mint_token


def client(sidecar, token: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=sidecar.url + "/v1", api_key=token or "none", max_retries=0)


def test_default_headers_work_for_every_test(sidecar) -> None:
    # What every other area's end-to-end test relies on: sidecar.headers is accepted and allowed.
    r = httpx.post(
        sidecar.url + "/v1/chat/completions",
        headers=sidecar.headers,
        timeout=120,
        json={"model": TINY_MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    models = sidecar.openai_client().models.list()
    assert [m.id for m in models.data] == [TINY_MODEL_NAME]


def test_openai_sdk_sees_the_right_error_classes(sidecar) -> None:
    body = {"model": TINY_MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with pytest.raises(openai.AuthenticationError):
        client(sidecar, "not-a-token").chat.completions.create(**body)
    with pytest.raises(openai.PermissionDeniedError):
        client(sidecar, mint_token("v", ["viewer"])).chat.completions.create(**body)
    assert client(sidecar, mint_token("v", ["viewer"])).models.list().data == []
    # Streaming with an analyst token: the whole answer arrives through the identity stages.
    stream = client(sidecar, mint_token("a", ["analyst"])).chat.completions.create(**body, stream=True)
    chunks = list(stream)
    assert chunks and chunks[-1].choices[0].finish_reason is not None
