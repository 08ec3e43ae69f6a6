"""The request walker: every string of a body is redacted, identifiers are validated, and a body that
cannot be fully inspected is refused with the field path."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from custos.errors import ProxyError
from sidecar.redaction.engine import Redactor
from sidecar.redaction.operators import Session
from sidecar.redaction.policy import load_policy
from sidecar.redaction.walk import AnswerWalker, Walker, walk_request

REDACTOR = Redactor(load_policy(None), b"k" * 32)
EMAIL = "jlin@example.com"
PHONE = "13812345678"
CN_ID = "110101199003074258"
CARD = "6222021234567890128"
PII = (EMAIL, PHONE, CN_ID, CARD)
TEXT = f"mail {EMAIL} phone {PHONE} id {CN_ID} card {CARD}"

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"


def make(**limits: int) -> Walker:
    session = Session()
    return Walker(
        lambda text: REDACTOR.redact(text, session),
        max_chars=limits.get("max_chars", 2_000_000),
        max_strings=limits.get("max_strings", 100_000),
        max_depth=limits.get("max_depth", 64),
    )


def walk(path: str, body: Any, **limits: int) -> tuple[Any, Walker]:
    w = make(**limits)
    return walk_request(path, body, w), w


def refused(path: str, body: Any, **limits: int) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        walk(path, body, **limits)
    return info.value


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


# Every field family the attacker's test used; each body carries TEXT somewhere.
FAMILIES: list[tuple[str, str, dict[str, Any]]] = [
    ("content", CHAT, user(TEXT)),
    ("text part", CHAT, user([{"type": "text", "text": TEXT}])),
    ("input_text part", CHAT, user([{"type": "input_text", "text": TEXT}])),
    ("output_text part", CHAT, user([{"type": "output_text", "text": TEXT}])),
    ("part without type", CHAT, user([{"text": TEXT}])),
    ("string part", CHAT, user([TEXT])),
    ("refusal part", CHAT, user([{"type": "refusal", "refusal": TEXT}])),
    ("unknown part", CHAT, user([{"type": "thinking", "thinking": TEXT, "extra": {"deep": [TEXT]}}])),
    ("image url", CHAT, user([{"type": "image_url", "image_url": {"url": f"https://x.example/?q={EMAIL}"}}])),
    ("audio", CHAT, user([{"type": "input_audio", "input_audio": {"data": TEXT, "format": "wav"}}])),
    ("file", CHAT, user([{"type": "file", "file": {"filename": TEXT, "file_data": TEXT}}])),
    ("message name", CHAT, {"messages": [{"role": "user", "content": "hi", "name": TEXT}]}),
    ("reasoning_content", CHAT, {"messages": [{"role": "assistant", "reasoning_content": TEXT}]}),
    ("reasoning", CHAT, {"messages": [{"role": "assistant", "reasoning": TEXT, "content": None}]}),
    ("message refusal", CHAT, {"messages": [{"role": "assistant", "refusal": TEXT}]}),
    ("unknown message field", CHAT, {"messages": [{"role": "user", "content": "x", "note": TEXT}]}),
    (
        "tool call",
        CHAT,
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": TEXT, "type": "function", "function": {"name": TEXT, "arguments": TEXT}}
                    ],
                },
                {"role": "tool", "tool_call_id": TEXT, "content": TEXT},
            ]
        },
    ),
    (
        "tools",
        CHAT,
        user(
            "hi",
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": TEXT,
                        "description": TEXT,
                        "parameters": {
                            "type": "object",
                            "properties": {
                                EMAIL: {"type": "string", "description": TEXT, "enum": [PHONE, CN_ID]},
                                "card": {"type": "string", "default": CARD},
                            },
                        },
                    },
                }
            ],
        ),
    ),
    ("functions", CHAT, user("hi", functions=[{"name": "f", "description": TEXT, "parameters": {}}])),
    ("tool_choice", CHAT, user("hi", tool_choice={"type": "function", "function": {"name": TEXT}})),
    ("user", CHAT, user("hi", user=TEXT)),
    ("metadata", CHAT, user("hi", metadata={EMAIL: TEXT, "nested": {"list": [TEXT]}})),
    (
        "response_format",
        CHAT,
        user(
            "hi",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"properties": {PHONE: {"description": TEXT}}}},
            },
        ),
    ),
    ("stop", CHAT, user("hi", stop=[TEXT])),
    ("stop string", CHAT, user("hi", stop=TEXT)),
    ("chat_template_kwargs", CHAT, user("hi", chat_template_kwargs={EMAIL: TEXT})),
    ("documents", CHAT, user("hi", documents=[{"title": TEXT, "text": TEXT}])),
    ("guided_json", CHAT, user("hi", guided_json={"properties": {EMAIL: {"enum": [TEXT]}}})),
    ("guided_json string", CHAT, user("hi", guided_json=TEXT)),
    ("guided_regex", CHAT, user("hi", guided_regex=TEXT)),
    ("guided_choice", CHAT, user("hi", guided_choice=[TEXT, PHONE])),
    ("guided_grammar", CHAT, user("hi", guided_grammar=TEXT)),
    ("unknown top level", CHAT, user("hi", whatever={"a": [TEXT]}, **{EMAIL: 1})),
    ("prompt", COMPLETIONS, {"model": "m", "prompt": TEXT}),
    ("prompt list", COMPLETIONS, {"model": "m", "prompt": ["ok", TEXT]}),
    ("suffix", COMPLETIONS, {"model": "m", "prompt": "x", "suffix": TEXT}),
    ("input", EMBEDDINGS, {"model": "m", "input": TEXT}),
    ("input list", EMBEDDINGS, {"model": "m", "input": [TEXT, TEXT]}),
    ("embedding messages", EMBEDDINGS, {"model": "m", "messages": [{"role": "user", "content": TEXT}]}),
    ("responses", "/v1/responses", {"model": "m", "input": [{"role": "user", "content": TEXT}]}),
    ("other list body", "/v1/tokenize", [TEXT, {"x": TEXT}]),
    ("other string body", "/v1/tokenize", TEXT),
]


@pytest.mark.parametrize(("path", "body"), [f[1:] for f in FAMILIES], ids=[f[0] for f in FAMILIES])
def test_every_string_is_redacted(path: str, body: dict[str, Any]) -> None:
    out, w = walk(path, copy.deepcopy(body))
    sent = orjson.dumps(out).decode()
    assert w.changed
    for raw in PII:
        assert raw not in sent


def test_identifiers_kept() -> None:
    body = user(
        [{"type": "text", "text": "hi"}],
        tool_choice="auto",
        logit_bias={"50256": -100, "13": 5},
        response_format={"type": "json_object"},
        stream=True,
        n=2,
        temperature=0.5,
    )
    original = copy.deepcopy(body)
    out, w = walk(CHAT, body)
    assert out == original and not w.changed
    out, w = walk(EMBEDDINGS, {"model": "bge-m3", "input": [[1, 2], [3]], "encoding_format": "base64"})
    assert not w.changed


def test_same_value_same_placeholder_across_fields() -> None:
    body = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": PHONE, "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": PHONE, "content": "ok"},
        ]
    }
    out, _ = walk(CHAT, body)
    assert out["messages"][0]["tool_calls"][0]["id"] == out["messages"][1]["tool_call_id"] == "<CN_PHONE_1>"


def test_free_form_keys_redacted_in_order() -> None:
    out, _ = walk(CHAT, user("hi", metadata={"a": 1, EMAIL: 2, "z": 3}))
    assert list(out["metadata"]) == ["a", "<EMAIL_1>", "z"]


@pytest.mark.parametrize(
    ("path", "body", "param", "why"),
    [
        (
            CHAT,
            {"messages": [{"role": "user", "content": "x", "tool_calls": 5}]},
            "messages[0].tool_calls",
            "list",
        ),
        (CHAT, {"messages": [{"role": "user", "tool_calls": [5]}]}, "messages[0].tool_calls[0]", "object"),
        (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string"),
        (CHAT, {"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]", "object"),
        (CHAT, {"messages": {"role": "user"}}, "messages", "list"),
        (CHAT, {"messages": ["hi"]}, "messages[0]", "object"),
        (CHAT, {"messages": [{"role": "boss", "content": "x"}]}, "messages[0].role", "one of"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "Text1"}]}]},
            "messages[0].content[0].type",
            "type",
        ),
        (
            CHAT,
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 5}}]}]},
            "messages[0].tool_calls[0].function.name",
            "string",
        ),
        (CHAT, {"model": f"model-{EMAIL}"}, "model", "model name"),
        (CHAT, {"model": 5}, "model", "string"),
        (CHAT, {"n": "2"}, "n", "integer"),
        (CHAT, {"max_tokens": 1.5}, "max_tokens", "integer"),
        (CHAT, {"temperature": "hot"}, "temperature", "number"),
        (CHAT, {"stream": "yes"}, "stream", "boolean"),
        (CHAT, {"logit_bias": {PHONE: 1}}, "logit_bias", "token ids"),
        (CHAT, {"logit_bias": {"12": "x"}}, "logit_bias.*", "number"),
        (CHAT, {"tool_choice": PHONE}, "tool_choice", "one of"),
        (CHAT, {"tools": [{"type": "function", "function": "f"}]}, "tools[0].function", "object"),
        (CHAT, {"response_format": {"type": EMAIL}}, "response_format.type", "type"),
        (CHAT, {"stop": [1]}, "stop[0]", "string"),
        (CHAT, {"metadata": {"phone": 13812345678}}, "metadata.phone", "number"),
        (CHAT, {"metadata": {EMAIL: 1, "<EMAIL_1>": 2}}, "metadata.*", "collides"),
        (COMPLETIONS, {"prompt": ["a", 1]}, "prompt[1]", "string"),
        (COMPLETIONS, {"prompt": [1, "a"]}, "prompt", "token ids"),
        (COMPLETIONS, {"prompt": [[1], ["a"]]}, "prompt[1]", "token ids"),
        (COMPLETIONS, {"prompt": {"text": "x"}}, "prompt", "string"),
        (EMBEDDINGS, {"input": 5}, "input", "string"),
        (EMBEDDINGS, {"encoding_format": "utf8"}, "encoding_format", "one of"),
        (CHAT, [1], "(body)", "JSON object"),
    ],
)
def test_refusals_name_the_field(path: str, body: Any, param: str, why: str) -> None:
    err = refused(path, body)
    assert err.status == 400
    assert err.param == param
    assert param in err.message and why in err.message
    # Nothing about our internals, and the refused value itself is never echoed.
    for word in ("walk", "redactor", "Traceback", EMAIL, PHONE):
        assert word not in err.message


def test_free_form_key_not_echoed_in_path() -> None:
    err = refused(CHAT, {"metadata": {EMAIL: {"x": 13812345678}}})
    assert err.param == "metadata.*.x" and EMAIL not in err.message


@pytest.mark.parametrize(
    ("limits", "body", "why"),
    [
        ({"max_depth": 8}, user("hi", metadata={"a": [[[[[[[[["deep"]]]]]]]]]}), "nesting"),
        ({"max_strings": 50}, user("hi", stop=["s"] * 100), "strings"),
        ({"max_chars": 1000}, user("x" * 1001), "characters"),
        ({"max_chars": 1000}, {"messages": [{"role": "user", "content": "x" * 600}] * 2}, "characters"),
    ],
)
def test_limits_413(limits: dict[str, int], body: dict[str, Any], why: str) -> None:
    err = refused(CHAT, body, **limits)
    assert err.status == 413 and err.code == "redaction_limit"
    assert why in err.message


def test_depth_limit_on_generic_routes() -> None:
    body: Any = "x"
    for _ in range(100):
        body = [body]
    err = refused("/v1/tokenize", {"input": body})
    assert err.status == 413 and err.param is not None and err.param.startswith("input[0][0]")


def test_answer_walker_logprobs() -> None:
    session = Session()
    w = AnswerWalker(lambda text: REDACTOR.redact(text, session, response=True))
    logprobs = {
        "content": [
            {"token": PHONE, "logprob": -0.1, "bytes": list(PHONE.encode()), "top_logprobs": []},
            {"token": " ok", "logprob": -0.2, "bytes": [32, 111, 107]},
        ],
        # completions style: token strings as keys
        "top_logprobs": [{EMAIL: -0.5, "x": -1.0}],
    }
    out = w.logprobs(logprobs)
    dumped = orjson.dumps(out).decode()
    assert PHONE not in dumped and EMAIL not in dumped
    assert all(t["bytes"] is None for t in out["content"])
    assert w.changed


def test_answer_walker_keeps_embeddings() -> None:
    w = AnswerWalker(lambda text: REDACTOR.redact(text, Session(), response=True))
    vector = "AAAA+13812345678/AAA"  # base64 of 15 bytes... padded to a multiple of 4 characters
    doc = {
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": [0.1, 0.2]},
            {"object": "embedding", "embedding": vector},
            {"object": "pooling", "data": vector},  # /pooling with encoding_format: base64
        ],
        "model": "m",
    }
    before = copy.deepcopy(doc)
    assert w.any(doc) == before and not w.changed


def test_answer_walker_reads_vector_keys_outside_vectors() -> None:
    """Only an embedding or pooling item's encoded vector is left alone: the same keys elsewhere (or a
    value that is not a whole base64 vector) are text."""
    w = AnswerWalker(lambda text: REDACTOR.redact(text, Session(), response=True))
    doc = {
        "data": "13812345678",
        "items": [
            {"object": "note", "embedding": "call+13812345678"},
            {"object": "embedding", "embedding": "13812345678"},
        ],
    }
    out = w.any(doc)
    assert "13812345678" not in str(out) and w.changed


def test_answer_walkers_share_the_schema_not_the_text() -> None:
    """Keys and identifier values that redacted to themselves are remembered across answers (one
    set per stage); text, ids and anything that could carry personal data are not."""
    schema: set[str] = set()
    seen: list[str] = []

    def redact(text: str) -> str:
        seen.append(text)
        return REDACTOR.redact(text, Session(), response=True)

    def answer(content: str) -> dict:
        return {
            "id": "chatcmpl-7f3a",
            "object": "chat.completion",
            "model": "qwen2.5-7b",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
        }

    AnswerWalker(redact, schema).any(answer("call 13812345678"))
    assert {"object", "finish_reason", "chat.completion", "assistant", "stop", "content"} <= schema
    assert "qwen2.5-7b" in schema  # a model name: an identifier of its own shape
    assert not {"chatcmpl-7f3a", "call 13812345678"} & schema
    seen.clear()
    out = AnswerWalker(redact, schema).any(answer("mail bob@example.com"))
    assert "bob@example.com" not in str(out)  # the text is still redacted
    assert not {"object", "finish_reason", "chat.completion", "assistant", "stop", "qwen2.5-7b"} & set(seen)
    assert "mail bob@example.com" in seen and "chatcmpl-7f3a" in seen


def test_only_model_values_of_a_model_name_shape_are_remembered() -> None:
    schema: set[str] = set()
    w = AnswerWalker(lambda text: REDACTOR.redact(text, Session(), response=True), schema)
    w.any({"model": "my model for sales"})  # prose, not an identifier
    w.any({"model": "bob@example.com"})  # redacted: never remembered
    w.any({"model": "deepseek-ai/deepseek-llm-7b-chat"})
    assert "deepseek-ai/deepseek-llm-7b-chat" in schema
    assert not {"my model for sales", "bob@example.com"} & schema
    assert "model" in schema  # the key, as every key of the schema


def test_the_shared_schema_is_bounded() -> None:
    schema: set[str] = set()
    w = AnswerWalker(lambda text: text, schema)
    w.any({f"key_{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}": 1 for i in range(5000)})
    assert 0 < len(schema) <= 2048
