"""vLLM's other endpoints through a real sidecar, governed like chat: /v1/responses, /tokenize,
/detokenize, /v1/score, /v1/rerank, /pooling and /v1/audio/transcriptions.

The evidence is what the recording upstream received and the audit records the sidecar wrote: text
fields arrive redacted and identifiers intact, wrong types and unreadable uploads are refused with
the field named and nothing forwarded, a caller without ``model:invoke:<model>`` gets 403, a
switched-off endpoint 404, and every request leaves exactly one record with its operation name.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench.stack import Sidecar, mint_token
from sidecar.config import load_config
from sidecar.multipart import parse_form
from tests.audit.helpers import spool_records, wait_record
from tests.redaction.test_walk import EMAIL, PHONE
from tests.security.conftest import MODEL, RecordingUpstream, Reply
from tests.security.test_pii_fields import assert_not_forwarded, assert_openai_error

TEXT = f"call {PHONE} or mail {EMAIL}"
ALL_ON = {"endpoints": {"pooling": True, "transcriptions": True}}
TRANSCRIPTIONS = "/v1/audio/transcriptions"
# Not a valid WAV, but every byte value and the sequences a multipart parser cares about.
AUDIO = b"RIFF\x00\x00WAVE" + bytes(range(256)) + b"\r\n--\r\n\r\n--x\n\r" + b"\xff" * 64 + PHONE.encode()
_ids = itertools.count()


def spool(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit" / "spool"


def send(sc: Sidecar, path: str, body: Any, *, headers: dict[str, str] | None = None) -> httpx.Response:
    hdrs = {**sc.headers, "x-request-id": f"api-{next(_ids)}", **(headers or {})}
    return httpx.post(sc.url + path, content=orjson.dumps(body), headers=hdrs, timeout=30)


def send_form(
    sc: Sidecar,
    fields: dict[str, str | list[str]],
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A transcription upload as the OpenAI SDK sends it (httpx builds the multipart body)."""
    rid = f"api-{next(_ids)}"
    files = [("file", ("memo 2024.wav", AUDIO, "audio/wav"))] if files is None else files
    hdrs = {**sc.headers, "x-request-id": rid, **(headers or {})}
    request = httpx.Request("POST", sc.url + TRANSCRIPTIONS, data=fields, files=files, headers=hdrs)
    request.read()  # the body in one piece, so a test can hash what was sent
    with httpx.Client(timeout=30) as client:
        return client.send(request)


def one_record(tmp_path: Path, resp: httpx.Response) -> dict[str, Any]:
    """The request's audit record, and proof that there is exactly one."""
    rid = resp.headers["x-request-id"]
    rec = wait_record(spool(tmp_path), rid)
    assert [r["event"]["id"] for r in spool_records(spool(tmp_path))].count(rid) == 1
    return rec


# Each endpoint with a body carrying TEXT in every text field, and the identifiers that must
# arrive as they were sent: (path, operation name, body, {dotted path: value kept}).
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "/v1/responses",
        "responses",
        {
            "model": MODEL,
            "instructions": TEXT,
            "input": [
                {"role": "user", "content": TEXT},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": TEXT}]},
                {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": TEXT},
                {"type": "function_call_output", "call_id": "call_1", "output": TEXT},
                {"type": "item_reference", "id": "msg_1"},
                {"type": "future_item", "note": TEXT},
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "lookup",
                    "description": TEXT,
                    "parameters": {"type": "object", "properties": {"q": {"description": TEXT}}},
                }
            ],
            "tool_choice": "auto",
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"description": TEXT}}},
            "reasoning": {"effort": "low", "summary": "auto"},
            "include": ["message.output_text.logprobs", "reasoning.encrypted_content"],
            "truncation": "disabled",
            "metadata": {"note": TEXT},
            "user": TEXT,
            "prompt": {"id": "pmpt_1", "variables": {"name": TEXT}},
            "max_output_tokens": 16,
            "temperature": 0.5,
            "store": False,
        },
        {
            "model": MODEL,
            "input.1.content.0.type": "input_text",
            "input.2.call_id": "call_1",
            "input.4.id": "msg_1",
            "tools.0.type": "function",
            "text.format.type": "json_schema",
            "include": ["message.output_text.logprobs", "reasoning.encrypted_content"],
            "reasoning.effort": "low",
            "truncation": "disabled",
            "max_output_tokens": 16,
        },
    ),
    (
        "/tokenize",
        "tokenize",
        {"model": MODEL, "prompt": TEXT, "add_special_tokens": True, "return_token_strs": True},
        {"model": MODEL, "add_special_tokens": True},
    ),
    (
        "/tokenize",
        "tokenize",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": TEXT}],
            "add_generation_prompt": True,
            "chat_template_kwargs": {"note": TEXT},
        },
        {"model": MODEL, "messages.0.role": "user"},
    ),
    ("/detokenize", "detokenize", {"model": MODEL, "tokens": [1, 2, 13812]}, {"tokens": [1, 2, 13812]}),
    (
        "/v1/score",
        "score",
        {"model": MODEL, "text_1": TEXT, "text_2": ["plain", TEXT], "truncate_prompt_tokens": 8},
        {"model": MODEL, "text_2.0": "plain", "truncate_prompt_tokens": 8},
    ),
    (
        "/v1/rerank",
        "rerank",
        {"model": MODEL, "query": TEXT, "documents": [TEXT, {"text": TEXT}], "top_n": 1},
        {"model": MODEL, "top_n": 1},
    ),
    (
        "/pooling",
        "pooling",
        {"model": MODEL, "input": [TEXT, "plain"], "encoding_format": "float", "dimensions": 8},
        {"model": MODEL, "input.1": "plain", "encoding_format": "float", "dimensions": 8},
    ),
    (
        "/pooling",
        "pooling",
        {"model": MODEL, "messages": [{"role": "user", "content": TEXT}]},
        {"messages.0.role": "user"},
    ),
]


def pick(doc: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


@pytest.fixture
def open_sc(upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]) -> Sidecar:
    """Every endpoint switched on."""
    return start_sidecar(upstream.url, ALL_ON)


def test_text_fields_arrive_redacted(upstream: RecordingUpstream, open_sc: Sidecar, tmp_path: Path) -> None:
    for path, operation, body, kept in CASES:
        upstream.clear()
        resp = send(open_sc, path, body)
        assert resp.status_code == 200, (path, resp.text)
        (sent,) = upstream.inference_requests()
        assert sent.path == path  # forwarded at the same path (root paths stay at the root)
        assert_not_forwarded(upstream, PHONE, EMAIL)
        if TEXT in orjson.dumps(body).decode():
            assert b"<CN_PHONE_" in sent.body and b"<EMAIL_" in sent.body, path
        for dotted, value in kept.items():
            assert pick(sent.json, dotted) == value, (path, dotted)
        rec = one_record(tmp_path, resp)
        assert rec["event"]["action"] == operation and rec["llm"]["operation"]["name"] == operation
        assert rec["url"]["path"] == path and rec["llm"]["request"]["model"] == MODEL
        assert rec["llm"]["authz"]["decision"] == "allow"
        assert rec["llm"]["authz"]["permission"] == f"model:invoke:{MODEL}"
        if path != "/detokenize":
            assert rec["llm"]["redactions_total"] >= 2, path
        assert PHONE not in orjson.dumps(rec).decode()


WRONG_TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/responses", {"input": 5}, "input"),
    ("/v1/responses", {"input": [{"role": "robot", "content": TEXT}]}, "input[0].role"),
    ("/v1/responses", {"input": [TEXT]}, "input[0]"),
    ("/v1/responses", {"input": "hi", "max_output_tokens": "many"}, "max_output_tokens"),
    ("/v1/responses", {"input": "hi", "include": [f"x.{PHONE}"]}, "include[0]"),
    ("/v1/responses", {"input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ("/v1/responses", {"input": "hi", "tools": [{"type": EMAIL}]}, "tools[0].type"),
    ("/v1/responses", {"input": "hi", "stream": "yes"}, "stream"),
    ("/tokenize", {"prompt": [TEXT]}, "prompt"),
    ("/tokenize", {"prompt": "hi", "add_special_tokens": "yes"}, "add_special_tokens"),
    ("/detokenize", {"tokens": [1, TEXT]}, "tokens"),
    ("/detokenize", {"tokens": [int(PHONE)]}, "tokens"),
    ("/v1/score", {"text_1": 5, "text_2": TEXT}, "text_1"),
    ("/v1/rerank", {"query": TEXT, "documents": [5]}, "documents[0]"),
    ("/v1/rerank", {"query": TEXT, "documents": [TEXT], "top_n": "3"}, "top_n"),
    ("/pooling", {"input": {"text": TEXT}}, "input"),
    ("/pooling", {"input": TEXT, "encoding_format": "hex"}, "encoding_format"),
]


def test_wrong_types_refused_naming_the_field(
    upstream: RecordingUpstream, open_sc: Sidecar, tmp_path: Path
) -> None:
    for path, body, param in WRONG_TYPES:
        resp = send(open_sc, path, {"model": MODEL, **body})
        err = assert_openai_error(resp, 400)
        assert err["param"] == param and param in err["message"], (path, err)
        assert PHONE not in resp.text and EMAIL not in resp.text
        assert one_record(tmp_path, resp)["http"]["response"]["status_code"] == 400
    for fields, param in [
        ({"model": MODEL, "language": "english please"}, "language"),
        ({"model": MODEL, "response_format": "mp3"}, "response_format"),
        ({"model": MODEL, "temperature": "hot"}, "temperature"),
        ({"model": MODEL, "seed": PHONE}, "seed"),
        ({"model": MODEL, "stream": "maybe"}, "stream"),
        ({"model": MODEL, "timestamp_granularities[]": "sentence"}, "timestamp_granularities"),
    ]:
        resp = send_form(open_sc, fields)
        err = assert_openai_error(resp, 400)
        assert err["param"] == param, (fields, err)
        assert one_record(tmp_path, resp)["event"]["action"] == "transcription"
    assert not upstream.inference_requests()


def test_transcription_file_byte_for_byte_text_redacted(
    upstream: RecordingUpstream, open_sc: Sidecar, tmp_path: Path
) -> None:
    upstream.reply = Reply(json={"text": "hello"})
    fields: dict[str, str | list[str]] = {
        "model": MODEL,
        "prompt": TEXT,
        "language": "zh",
        "response_format": "verbose_json",
        "temperature": "0.2",
        "timestamp_granularities[]": ["word", "segment"],
        "stream": "false",
        "speaker_note": TEXT,
    }
    files = [("file", (f"call {PHONE}.wav", AUDIO, "audio/wav"))]
    resp = send_form(open_sc, fields, files)
    assert resp.status_code == 200, resp.text
    (sent,) = upstream.inference_requests()
    assert sent.path == TRANSCRIPTIONS
    assert_not_forwarded(upstream, EMAIL)  # the phone number is in the audio bytes, on purpose
    ctype = sent.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary=custos-")  # rebuilt, fresh boundary
    assert int(sent.headers["content-length"]) == len(sent.body)
    form = parse_form(ctype.encode(), sent.body, file_field="file")
    upload = form.parts[-1]
    assert upload.value == AUDIO and upload.content_type == "audio/wav"
    assert PHONE not in (upload.filename or "") and "<CN_PHONE_" in (upload.filename or "")
    texts = [(p.name, p.value) for p in form.parts if not p.is_file]
    sent_fields = [(k, v) for k, vs in fields.items() for v in (vs if isinstance(vs, list) else [vs])]
    assert [name for name, _ in texts] == [name for name, _ in sent_fields]  # in order, names intact
    for (name, value), (_, sent_value) in zip(sent_fields, texts, strict=True):
        if name in ("prompt", "speaker_note"):  # text: redacted
            assert PHONE not in sent_value and "<CN_PHONE_" in sent_value and "<EMAIL_" in sent_value
        else:  # identifiers, enums and numbers: as sent
            assert sent_value == value, name
    rec = one_record(tmp_path, resp)
    assert rec["event"]["action"] == "transcription" and rec["llm"]["request"]["model"] == MODEL
    # The prompt hash covers the body as the client sent it, as on every route.
    assert rec["llm"]["prompt"]["sha256"] == hashlib.sha256(resp.request.content).hexdigest()
    # A media type is no place for a phone number: the file goes up as octet-stream.
    upstream.clear()
    files = [("file", ("a.wav", AUDIO, f"audio/x{PHONE}"))]
    assert send_form(open_sc, {"model": MODEL}, files).status_code == 200
    (sent,) = upstream.inference_requests()
    upload = parse_form(sent.headers["content-type"].encode(), sent.body, file_field="file").parts[-1]
    assert upload.content_type == "application/octet-stream" and upload.value == AUDIO


def _raw_form(boundary: bytes, *parts: tuple[bytes, bytes]) -> bytes:
    out = b""
    for head, value in parts:
        out += b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + value + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


_MODEL_PART = (b'Content-Disposition: form-data; name="model"', MODEL.encode())
_FILE_PART = (b'Content-Disposition: form-data; name="file"; filename="a.wav"', AUDIO)
_GOOD = _raw_form(b"B0", _MODEL_PART, _FILE_PART)

MALFORMED: list[tuple[str, bytes, bytes]] = [
    ("no boundary", b"multipart/form-data", _GOOD),
    ("other boundary", b"multipart/form-data; boundary=B1", _GOOD),
    ("boundary too long", b"multipart/form-data; boundary=" + b"b" * 71, _GOOD),
    ("cut short", b"multipart/form-data; boundary=B0", _GOOD[:-10]),
    ("preamble", b"multipart/form-data; boundary=B0", b"hello\r\n" + _GOOD),
    ("not multipart", b"application/json", orjson.dumps({"model": MODEL, "prompt": TEXT})),
    ("no file", b"multipart/form-data; boundary=B0", _raw_form(b"B0", _MODEL_PART)),
    (
        "two files",
        b"multipart/form-data; boundary=B0",
        _raw_form(b"B0", _MODEL_PART, _FILE_PART, _FILE_PART),
    ),
    (
        "file in another field",
        b"multipart/form-data; boundary=B0",
        _raw_form(b"B0", _MODEL_PART, (_FILE_PART[0].replace(b'"file"', b'"audio"'), AUDIO)),
    ),
    (
        "non-UTF-8 text",
        b"multipart/form-data; boundary=B0",
        _raw_form(
            b"B0", _MODEL_PART, (b'Content-Disposition: form-data; name="prompt"', b"\xff\xfe"), _FILE_PART
        ),
    ),
    (
        "model twice",
        b"multipart/form-data; boundary=B0",
        _raw_form(
            b"B0", _MODEL_PART, (b'Content-Disposition: form-data; name="model"', b"other"), _FILE_PART
        ),
    ),
    (
        "part without a name",
        b"multipart/form-data; boundary=B0",
        _raw_form(b"B0", _MODEL_PART, (b"Content-Disposition: form-data", TEXT.encode()), _FILE_PART),
    ),
    ("latin-1 charset", b"multipart/form-data; boundary=B0; charset=latin-1", _GOOD),
]


def test_unreadable_upload_refused(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    config = {
        **ALL_ON,
        "server": {"max_body_bytes": 64 * 1024},
        "redaction": {"max_request_chars": 8000},
    }
    sc = start_sidecar(upstream.url, config)
    for name, ctype, body in MALFORMED:
        resp = httpx.post(
            sc.url + TRANSCRIPTIONS,
            content=body,
            headers={**sc.headers, "content-type": ctype.decode(), "x-request-id": f"bad-{next(_ids)}"},
            timeout=30,
        )
        err = assert_openai_error(resp, 400)
        assert err["code"] == "invalid_multipart", (name, err)
        rec = one_record(tmp_path, resp)
        assert rec["event"]["action"] == "transcription" and rec["event"]["outcome"] == "failure"
    # Over the redaction limits, and over the body limit: refused as on every route.
    resp = send_form(sc, {"model": MODEL, "prompt": "x" * 9000})
    assert assert_openai_error(resp, 413)["code"] == "redaction_limit"
    one_record(tmp_path, resp)
    resp = send_form(sc, {"model": MODEL}, [("file", ("a.wav", b"\0" * (65 * 1024), "audio/wav"))])
    assert assert_openai_error(resp, 413)["code"] == "request_too_large"
    one_record(tmp_path, resp)
    assert not upstream.inference_requests()
    assert_not_forwarded(upstream, PHONE, EMAIL)


def test_switched_off_endpoints_404(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    # Defaults (pooling and transcriptions off) plus an environment override switching responses off.
    sc = start_sidecar(upstream.url, env={"CUSTOS_ENDPOINTS__RESPONSES": "false"})
    for path, operation in [("/pooling", "pooling"), ("/v1/responses", "responses")]:
        resp = send(sc, path, {"model": MODEL, "input": TEXT})
        err = assert_openai_error(resp, 404)
        assert err["code"] == "endpoint_not_enabled" and "not enabled on this server" in err["message"]
        rec = one_record(tmp_path, resp)
        assert rec["event"]["action"] == operation and rec["http"]["response"]["status_code"] == 404
    resp = send_form(sc, {"model": MODEL, "prompt": TEXT})
    assert assert_openai_error(resp, 404)["code"] == "endpoint_not_enabled"
    assert one_record(tmp_path, resp)["event"]["action"] == "transcription"
    # The families left on by default still work.
    for path in ("/tokenize", "/v1/score"):
        assert (
            send(sc, path, {"model": MODEL, "prompt": "hi", "text_1": "a", "text_2": "b"}).status_code == 200
        )
    assert [r.path for r in upstream.inference_requests()] == ["/tokenize", "/v1/score"]
    assert_not_forwarded(upstream, PHONE, EMAIL)


def test_only_the_listed_root_paths_are_proxied(upstream: RecordingUpstream, open_sc: Sidecar) -> None:
    for path in ("/score", "/rerank", "/tokenize/x", "/pooling2", "/v2/rerank", "/invocations"):
        resp = send(open_sc, path, {"model": MODEL, "prompt": "hi"})
        assert assert_openai_error(resp, 404)["code"] == "not_found", path
    assert send(open_sc, "/tokenize", {"model": MODEL, "prompt": "hi"}).status_code == 200
    assert [r.path for r in upstream.inference_requests()] == ["/tokenize"]


def test_permission_per_model(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    policy = tmp_path / "rbac.yaml"
    policy.write_text(
        "version: 1\nroles:\n"
        "  - name: tester\n    permissions: ['*']\n"
        "  - name: other-models\n    permissions: ['model:invoke:other-*', model:list]\n"
        "  - name: reader\n    permissions: [model:read]\n"
    )
    sc = start_sidecar(upstream.url, {**ALL_ON, "rbac": {"policy_file": str(policy)}})
    denied = {"Authorization": f"Bearer {mint_token('mallory', ['other-models'])}"}
    allowed = {"Authorization": f"Bearer {mint_token('rita', ['reader'])}"}
    for path, operation, body, _ in CASES:
        resp = send(sc, path, body, headers=denied)
        err = assert_openai_error(resp, 403)
        assert err["code"] == "permission_denied" and MODEL in err["message"]
        rec = one_record(tmp_path, resp)
        assert rec["llm"]["authz"]["decision"] == "deny" and rec["event"]["action"] == operation
    resp = send_form(sc, {"model": MODEL, "prompt": "hi"}, headers=denied)
    assert assert_openai_error(resp, 403)["code"] == "permission_denied"
    assert one_record(tmp_path, resp)["llm"]["authz"]["decision"] == "deny"
    assert not upstream.inference_requests()
    # A role with model:invoke (here through model:read) uses every one of them.
    for path, _, body, _ in CASES:
        assert send(sc, path, body, headers=allowed).status_code == 200, path
    assert send_form(sc, {"model": MODEL, "prompt": "hi"}, headers=allowed).status_code == 200
    assert len(upstream.inference_requests()) == len(CASES) + 1


def test_max_output_tokens_capped(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    policy = tmp_path / "rbac.yaml"
    policy.write_text(
        "version: 1\nroles:\n"
        "  - name: capped\n    permissions: [model:invoke]\n    constraints: {max_tokens: 100}\n"
    )
    sc = start_sidecar(upstream.url, {"rbac": {"policy_file": str(policy)}})
    capped = {"Authorization": f"Bearer {mint_token('carl', ['capped'])}"}
    resp = send(
        sc, "/v1/responses", {"model": MODEL, "input": "hi", "max_output_tokens": 500}, headers=capped
    )
    err = assert_openai_error(resp, 403)
    assert err["code"] == "max_tokens_exceeded" and "max_output_tokens 500" in err["message"]
    rec = one_record(tmp_path, resp)
    assert rec["llm"]["authz"]["rule"].endswith("constraint:max_tokens")
    bad = send(sc, "/v1/responses", {"model": MODEL, "input": "hi", "max_output_tokens": 0}, headers=capped)
    assert assert_openai_error(bad, 400)["param"] == "max_output_tokens"
    assert not upstream.inference_requests()
    assert send(sc, "/v1/responses", {"model": MODEL, "input": "hi"}, headers=capped).status_code == 200
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 40}
    assert send(sc, "/v1/responses", body, headers=capped).status_code == 200
    first, second = upstream.inference_requests()
    assert first.json["max_output_tokens"] == 100 and "max_tokens" not in first.json  # set to the cap
    assert second.json["max_output_tokens"] == 40


# -- without a sidecar: the config section and the rebuilt form ------------------------------------------
def test_endpoints_config_defaults_and_env() -> None:
    cfg = load_config(environ={}).endpoints
    assert (cfg.responses, cfg.tokenize, cfg.score, cfg.pooling, cfg.transcriptions) == (
        True,
        True,
        True,
        False,
        False,
    )
    env = {"CUSTOS_ENDPOINTS__POOLING": "true", "CUSTOS_ENDPOINTS__SCORE": "false"}
    cfg = load_config(environ=env).endpoints
    assert cfg.pooling is True and cfg.score is False
    from custos.errors import ConfigError

    with pytest.raises(ConfigError, match=r"endpoints\.rerank: unknown option"):
        load_config(environ={"CUSTOS_ENDPOINTS__RERANK": "true"})


async def test_rebuilt_form_reads_the_same_to_starlette() -> None:
    """The upstream (vLLM's FastAPI) parses forms with Starlette: it reads the rebuilt body as the
    sidecar read the original."""
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartParser

    body = _raw_form(
        b"B0",
        _MODEL_PART,
        (
            b'Content-Disposition: form-data; name="prompt"; note="'
            + PHONE.encode()
            + b'"\r\nX-Note: '
            + PHONE.encode(),
            "中文 prompt".encode(),
        ),
        (b'Content-Disposition: form-data; name="timestamp_granularities[]"', b"word"),
        (_FILE_PART[0].replace(b"a.wav", "声.wav".encode()) + b"\r\nContent-Type: audio/wav", AUDIO),
    )
    form = parse_form(b"multipart/form-data; boundary=B0", body, file_field="file")
    new, ctype = form.encode()
    assert PHONE.encode() not in new.replace(AUDIO, b"")  # only the parts' names and values are rebuilt

    async def stream() -> Any:
        yield new

    parsed = await MultiPartParser(Headers({"content-type": ctype.decode()}), stream()).parse()
    assert parsed["model"] == MODEL and parsed["prompt"] == "中文 prompt"
    assert parsed.getlist("timestamp_granularities[]") == ["word"]
    upload = parsed["file"]
    assert upload.filename == "声.wav" and upload.headers["content-type"] == "audio/wav"
    assert await upload.read() == AUDIO
