"""End to end: a real `custos serve` in front of the real CPU engine.

The engine's ``echo`` (vLLM-compatible) returns the prompt exactly as the model received it, which
shows what the model saw: placeholders, never the values.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import orjson
import pytest

from bench.stack import start_engine

PROMPT = "请联系13812345678或jlin@example.com，卡号4111111111111111"
VALUES = ("13812345678", "jlin@example.com", "4111111111111111")


def complete(sidecar, stream: bool = False, **extra) -> str:
    body = {
        "model": "custos-tiny",
        "prompt": PROMPT,
        "max_tokens": 4,
        "echo": True,
        "stream": stream,
        **extra,
    }
    resp = httpx.post(sidecar.url + "/v1/completions", json=body, headers=sidecar.headers, timeout=120)
    assert resp.status_code == 200, resp.text
    if not stream:
        return resp.json()["choices"][0]["text"]
    text = ""
    for event in resp.text.split("\n\n"):
        if event.startswith("data: {"):
            for choice in orjson.loads(event[6:])["choices"]:
                text += choice.get("text") or ""
    return text


def test_model_sees_placeholders_only(engine, start_sidecar) -> None:
    sidecar = start_sidecar(engine.url, {"redaction": {"restore": False}})
    text = complete(sidecar)
    assert text.startswith("请联系<CN_PHONE_1>或<EMAIL_1>，卡号<CREDIT_CARD_1>")
    assert not any(v in text for v in VALUES)


@pytest.mark.parametrize("stream", [False, True])
def test_caller_gets_originals_back(engine, start_sidecar, stream: bool) -> None:
    sidecar = start_sidecar(engine.url)
    text = complete(sidecar, stream=stream)
    assert text.startswith(PROMPT)
    assert "<CN_PHONE_1>" not in text


def test_restore_per_role(engine, start_sidecar, tmp_path: Path) -> None:
    policy = tmp_path / "redaction.yaml"
    policy.write_text("restore:\n  default: true\n  roles:\n    tester: [EMAIL]\n")  # the suite's token role
    sidecar = start_sidecar(engine.url, {"redaction": {"policy_file": str(policy)}})
    text = complete(sidecar, stream=True)
    assert text.startswith("请联系<CN_PHONE_1>或jlin@example.com，卡号<CREDIT_CARD_1>")


def test_chat_echo_of_assistant_message(engine, start_sidecar) -> None:
    sidecar = start_sidecar(engine.url, {"redaction": {"restore": False}})
    body = {
        "model": "custos-tiny",
        "max_tokens": 2,
        "echo": True,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "邮箱jlin@example.com"}]},
        ],
    }
    resp = httpx.post(sidecar.url + "/v1/chat/completions", json=body, headers=sidecar.headers, timeout=120)
    assert resp.status_code == 200, resp.text
    content = resp.json()["choices"][0]["message"]["content"]
    assert content.startswith("邮箱<EMAIL_1>") and "jlin@example.com" not in content


def test_engine_killed_mid_stream_leaks_nothing(tiny_model_dir, start_sidecar) -> None:
    """Fault injection: kill -9 the upstream while it streams; what was held is still redacted."""
    own = start_engine(tiny_model_dir)
    try:
        sidecar = start_sidecar(own.url, {"redaction": {"restore": False}})
        body = {"model": "custos-tiny", "prompt": PROMPT, "max_tokens": 200, "echo": True, "stream": True}
        chunks: list[bytes] = []
        with httpx.stream(
            "POST", sidecar.url + "/v1/completions", json=body, headers=sidecar.headers, timeout=120
        ) as resp:
            assert resp.status_code == 200, resp.read()
            for i, data in enumerate(resp.iter_bytes()):
                chunks.append(data)
                if i == 1:
                    own.process.signal(signal.SIGKILL)
        out = b"".join(chunks).decode()
        assert "<CN_PHONE_1>" in out
        assert not any(v in out for v in VALUES)
        assert sidecar.process.alive()
        # The sidecar still answers; the upstream is gone, so the proxied call gets a clean 502.
        resp = httpx.post(sidecar.url + "/v1/completions", json=body, headers=sidecar.headers, timeout=30)
        assert resp.status_code == 502 and "13812345678" not in resp.text
    finally:
        own.process.stop()
