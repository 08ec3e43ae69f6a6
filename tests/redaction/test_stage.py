"""The redact stage in process: JSON-aware request redaction and the response filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from custos.errors import ProxyError
from sidecar.config import Config
from sidecar.context import Identity, RequestContext
from sidecar.stage import Stage, StageEnv
from sidecar.stages.redact import RedactStage, build


def _build(tmp_path: Path, redaction: dict[str, Any]) -> Stage | None:
    config = Config.model_validate({"state": {"dir": str(tmp_path)}, "redaction": redaction})
    return build(config.redaction, StageEnv.from_config(config))


def make_stage(tmp_path: Path, **redaction: Any) -> RedactStage:
    stage = _build(tmp_path, redaction)
    assert isinstance(stage, RedactStage)
    return stage


def ctx_for(path: str, body: dict, roles: tuple[str, ...] | None = None) -> RequestContext:
    ctx = RequestContext(
        request_id="r1",
        method="POST",
        path=path,
        query=b"",
        headers=[],
        client_ip="127.0.0.1",
        body=orjson.dumps(body),
    )
    if roles is not None:
        ctx.identity = Identity(subject="u", roles=roles)
    return ctx


async def test_chat_request_every_string(tmp_path: Path) -> None:
    """By construction: every string of the body is redacted, not only message content."""
    stage = make_stage(tmp_path)
    body = {
        "model": "m",
        "user": "13812345678",
        "messages": [
            {"role": "system", "content": "You help."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "我的手机13812345678"},
                    {"type": "image_url", "image_url": {"url": "https://img.example/x.png?owner=a@b.com"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"email": "a@b.com"}'},
                    }
                ],
            },
            {"role": "user", "content": "mail a@b.com, phone 13812345678"},
        ],
    }
    ctx = ctx_for("/v1/chat/completions", body)
    await stage.on_request(ctx)
    sent = orjson.loads(ctx.outgoing_body())
    assert sent["user"] == "<CN_PHONE_1>"
    assert sent["messages"][1]["content"][0]["text"] == "我的手机<CN_PHONE_1>"
    # Image URLs are strings too (data: URLs are scanned like any other text).
    assert (
        sent["messages"][1]["content"][1]["image_url"]["url"] == "https://img.example/x.png?owner=<EMAIL_1>"
    )
    assert sent["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"email": "<EMAIL_1>"}'
    assert sent["messages"][3]["content"] == "mail <EMAIL_1>, phone <CN_PHONE_1>"
    assert sent["model"] == "m" and sent["messages"][2]["tool_calls"][0]["id"] == "c"
    assert ctx.redactions == {"CN_PHONE": 3, "EMAIL": 3}


@pytest.mark.parametrize(
    ("path", "key", "value", "expected"),
    [
        ("/v1/completions", "prompt", "call 13812345678", "call <CN_PHONE_1>"),
        ("/v1/completions", "prompt", ["a@b.com", "x"], ["<EMAIL_1>", "x"]),
        ("/v1/completions", "prompt", [1, 2, 3], [1, 2, 3]),  # token ids stay
        ("/v1/embeddings", "input", "id 110101199003074258", "id <CN_ID_1>"),
        ("/v1/embeddings", "input", ["13812345678", "ok"], ["<CN_PHONE_1>", "ok"]),
    ],
)
async def test_completions_and_embeddings(
    tmp_path: Path, path: str, key: str, value: Any, expected: Any
) -> None:
    stage = make_stage(tmp_path)
    ctx = ctx_for(path, {"model": "m", key: value})
    await stage.on_request(ctx)
    assert orjson.loads(ctx.outgoing_body())[key] == expected


async def test_request_switch_off(tmp_path: Path) -> None:
    stage = make_stage(tmp_path, request=False)
    ctx = ctx_for("/v1/completions", {"prompt": "call 13812345678"})
    await stage.on_request(ctx)
    assert b"13812345678" in ctx.outgoing_body()


async def test_disabled_stage(tmp_path: Path) -> None:
    assert _build(tmp_path, {"enabled": False}) is None


def test_answer_hold_back_is_built_at_start_up(tmp_path: Path) -> None:
    """The stream hold-back's compiled state (~15 ms) is made when the stage is built, not by the first
    streamed answer; with answers not redacted it is not made at all."""
    stage = make_stage(tmp_path / "on")
    assert all(s._hold_ready and s._hold_could is not None for s in stage.redactor._response)
    assert not make_stage(tmp_path / "off", response=False).redactor._response[0]._hold_ready


async def _prepared(tmp_path: Path, kind: str, roles: tuple[str, ...] | None = None, **cfg: Any):
    stage = make_stage(tmp_path, **cfg)
    ctx = ctx_for("/v1/chat/completions", {"messages": [{"role": "user", "content": "mail a@b.com"}]}, roles)
    await stage.on_request(ctx)
    ctx.upstream_status = 200
    ctx.response_kind = kind
    f = stage.response_filter(ctx)
    assert f is not None
    return stage, ctx, f


async def test_json_answer_restored_and_model_pii_masked(tmp_path: Path) -> None:
    _, ctx, f = await _prepared(tmp_path, "json")
    answer = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Sent to <EMAIL_1>; call 13900001111"},
                "finish_reason": "stop",
            }
        ],
    }
    out = orjson.loads(f.feed(orjson.dumps(answer)) + f.flush())
    assert out["choices"][0]["message"]["content"] == "Sent to a@b.com; call 139****1111"
    assert ctx.redactions == {"EMAIL": 1, "CN_PHONE": 1}


async def test_restore_denied_by_role(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("restore:\n  default: true\n  roles:\n    viewer: false\n")
    _, _, f = await _prepared(tmp_path, "json", roles=("viewer",), policy_file=str(policy))
    answer = {"choices": [{"index": 0, "message": {"content": "Sent to <EMAIL_1>"}}]}
    out = orjson.loads(f.feed(orjson.dumps(answer)))
    assert out["choices"][0]["message"]["content"] == "Sent to <EMAIL_1>"


def sse(*docs: Any) -> bytes:
    return b"".join(b"data: " + (d if isinstance(d, bytes) else orjson.dumps(d)) + b"\n\n" for d in docs)


def chunk(text: str | None = None, finish: str | None = None, index: int = 0) -> dict:
    delta = {} if text is None else {"content": text}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def collect(body: bytes) -> dict[int, str]:
    texts: dict[int, str] = {}
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for c in orjson.loads(event[6:])["choices"]:
                texts[c["index"]] = texts.get(c["index"], "") + (c.get("delta", {}).get("content") or "")
    return texts


async def test_sse_split_entities_per_choice(tmp_path: Path) -> None:
    _, ctx, f = await _prepared(tmp_path, "sse")
    stream = sse(
        chunk("call 138"),
        chunk("Sent <EMA", index=1),
        chunk("1234"),
        chunk("IL_1> ok", index=1),
        chunk("5678 now"),
        chunk(None, "stop"),
        chunk(None, "stop", index=1),
        b"[DONE]",
    )
    # The bytes arrive cut at awkward places, too.
    out = b"".join(f.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + f.flush()
    assert collect(out) == {0: "call 138****5678 now", 1: "Sent a@b.com ok"}
    assert b"13812345678" not in out and out.endswith(b"data: [DONE]\n\n")
    assert ctx.redactions["CN_PHONE"] == 1


async def test_sse_cut_stream_flushes_redacted(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")
    out = f.feed(sse(chunk("call 1381234"))) + f.feed(sse(chunk("5678"))) + f.flush()  # no finish, no [DONE]
    assert collect(out) == {0: "call 138****5678"}


async def test_sse_untouched_events_pass_byte_for_byte(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")
    raw = b'id: 7\ndata: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n: keep-alive\n\n'
    assert f.feed(raw) == raw


async def test_for_log_turns_restored_answers_back(tmp_path: Path) -> None:
    """Audit records and logs get redacted text: the restored answer maps back to the same placeholders."""
    _, ctx, f = await _prepared(tmp_path, "json")
    answer = {
        "choices": [
            {"index": 0, "message": {"content": "Sent to <EMAIL_1>; token sk-proj-abcdefghijklmnopqrstuvwx"}}
        ]
    }
    client_text = orjson.loads(f.feed(orjson.dumps(answer)))["choices"][0]["message"]["content"]
    assert "a@b.com" in client_text
    logged = ctx.redaction.for_log(client_text)
    assert logged.startswith("Sent to <EMAIL_1>; token <OPENAI_KEY_")
    assert "a@b.com" not in logged and "sk-proj" not in logged


async def test_sse_tool_call_arguments_restored(tmp_path: Path) -> None:
    _, _, f = await _prepared(tmp_path, "sse")

    def tc(args: str, finish: str | None = None) -> dict:
        call = {"index": 0, "function": {"arguments": args}}
        return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": finish}]}

    out = f.feed(
        sse(
            tc('{"to": "<EM'),
            tc("AIL_1>"),
            tc('"}'),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            b"[DONE]",
        )
    )
    args = ""
    for event in out.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for call in orjson.loads(event[6:])["choices"][0]["delta"].get("tool_calls", []):
                args += call["function"].get("arguments", "")
    assert args == '{"to": "a@b.com"}'


async def test_paths_and_model_names_that_redact_to_themselves_are_remembered(tmp_path: Path) -> None:
    """Each request's path and model name are scanned once per stage, then remembered (identifiers
    only, bounded); one that carries personal data is refused every time and never remembered."""
    stage = make_stage(tmp_path)
    scanned: list[str] = []
    redact = stage.redactor.redact

    def counting(text: str, *args: Any, **kwargs: Any) -> str:
        scanned.append(text)
        return redact(text, *args, **kwargs)

    stage.redactor.redact = counting  # type: ignore[method-assign]
    body = {"model": "deepseek-ai/deepseek-llm-7b-chat", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        await stage.on_request(ctx_for("/v1/chat/completions", body))
    assert scanned.count("/v1/chat/completions") == 1 and scanned.count(body["model"]) == 1
    assert scanned.count("hi") == 3  # prompts are never remembered
    for _ in range(2):
        with pytest.raises(ProxyError) as refused:
            await stage.on_request(ctx_for("/v1/chat/completions", {**body, "model": "bob@example.com"}))
        assert refused.value.status == 400 and refused.value.param == "model"
        with pytest.raises(ProxyError) as refused:
            await stage.on_request(ctx_for("/v1/files/13812345678", {"purpose": "batch"}))
        assert refused.value.status == 400 and refused.value.param == "path"
    assert scanned.count("bob@example.com") == 2 and scanned.count("/v1/files/13812345678") == 2
    assert not {"bob@example.com", "/v1/files/13812345678"} & stage.known_request
    # Prose is not an identifier: scanned each time even when clean.
    for _ in range(2):
        await stage.on_request(ctx_for("/v1/chat/completions", {**body, "model": "my sales model"}))
    assert scanned.count("my sales model") == 2
    # Bounded: a stranger sending new names only stops them being remembered.
    for i in range(3000):
        await stage.on_request(ctx_for(f"/v1/x{i}", {}))
    assert len(stage.known_request) <= 2048
