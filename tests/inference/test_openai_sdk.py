"""The official `openai` SDK against the real CPU engine: the API is what the SDK expects."""

from __future__ import annotations

import openai
import pytest

from bench.stack import TINY_MODEL_NAME, Engine


@pytest.fixture(scope="module")
def sdk(engine: Engine) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models(sdk: openai.OpenAI) -> None:
    models = sdk.models.list()
    assert [m.id for m in models.data] == [TINY_MODEL_NAME]
    assert sdk.models.retrieve(TINY_MODEL_NAME).id == TINY_MODEL_NAME
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_chat(sdk: openai.OpenAI) -> None:
    res = sdk.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "Hello, 你好"}],
        max_tokens=8,
        extra_body={"ignore_eos": True},
    )
    assert res.object == "chat.completion"
    assert res.choices[0].message.role == "assistant"
    assert isinstance(res.choices[0].message.content, str)
    assert res.choices[0].finish_reason == "length"
    assert res.usage is not None and res.usage.completion_tokens == 8


def test_completions(sdk: openai.OpenAI) -> None:
    res = sdk.completions.create(
        model=TINY_MODEL_NAME,
        prompt="The invoice",
        max_tokens=5,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert res.object == "text_completion"
    assert res.choices[0].text
    assert res.usage is not None and res.usage.completion_tokens == 5


def test_chat_streaming(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "Write a poem"}],
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20


def test_completion_streaming_matches_non_streaming(sdk: openai.OpenAI) -> None:
    kwargs = {
        "model": TINY_MODEL_NAME,
        "prompt": "Summarise the report",
        "max_tokens": 15,
        "temperature": 0,
        "extra_body": {"ignore_eos": True},
    }
    whole = sdk.completions.create(**kwargs).choices[0].text
    streamed = "".join(c.choices[0].text for c in sdk.completions.create(stream=True, **kwargs) if c.choices)
    assert streamed == whole


def test_sdk_raises_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(model=TINY_MODEL_NAME, prompt="x", temperature=5)
    assert "temperature" in str(info.value)
    with pytest.raises(openai.NotFoundError):
        sdk.completions.create(model="no-such-model", prompt="x")


def test_chat_logprobs(sdk: openai.OpenAI) -> None:
    res = sdk.chat.completions.create(
        model=TINY_MODEL_NAME,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
        extra_body={"ignore_eos": True},
    )
    content = res.choices[0].logprobs.content
    assert len(content) == 4
    assert all(len(t.top_logprobs) == 2 for t in content)
