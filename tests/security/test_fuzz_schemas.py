"""Fuzzing the request schemas through a real sidecar: random shapes and types, PII planted anywhere.

Whatever the body, the sidecar never answers 5xx, and no planted raw value reaches the upstream: the
request is either forwarded redacted or refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.stack import Sidecar
from tests.security.conftest import MODEL, RecordingUpstream

# Values the detectors certainly catch (valid checksums), whole or separated by spaces.
PLANTED = (
    "jlin@example.com",
    "13812345678",
    "110101199003074258",
    "6222021234567890128",
    "4111 1111 1111 1111",
    "276-52-1423",
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no example database written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

FIELDS = (
    "messages",
    "role",
    "content",
    "type",
    "text",
    "name",
    "tool_calls",
    "function",
    "arguments",
    "tools",
    "parameters",
    "properties",
    "description",
    "enum",
    "image_url",
    "url",
    "input_audio",
    "data",
    "refusal",
    "reasoning_content",
    "metadata",
    "user",
    "stop",
    "logit_bias",
    "response_format",
    "prompt",
    "input",
    "suffix",
    "n",
    "max_tokens",
    "guided_json",
    "guided_choice",
    "chat_template_kwargs",
    "documents",
)

pii = st.sampled_from(PLANTED)
filler = st.text(alphabet="abc xyz中文,.", max_size=6)
planted_text = st.builds(lambda a, p, b: f"{a} {p} {b}", filler, pii, filler)
strings = st.one_of(
    st.text(max_size=8), pii, planted_text, st.sampled_from(["text", "user", "function", "auto"])
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=6), pii)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), strings)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=24,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-typed shape, sometimes anything at all."""
    return st.one_of(strategy, strategy, values)


part = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "type": maybe(
                st.sampled_from(["text", "input_text", "output_text", "refusal", "image_url", "file"])
            ),
            "text": maybe(strings),
            "refusal": maybe(strings),
            "image_url": maybe(st.fixed_dictionaries({"url": strings})),
            "extra": values,
        },
    ),
    strings,
)
tool_call = st.fixed_dictionaries(
    {},
    optional={
        "id": maybe(strings),
        "type": maybe(st.just("function")),
        "function": maybe(
            st.fixed_dictionaries({}, optional={"name": maybe(strings), "arguments": maybe(strings)})
        ),
    },
)
message = st.fixed_dictionaries(
    {"role": maybe(st.sampled_from(["system", "user", "assistant", "tool"]))},
    optional={
        "content": maybe(st.one_of(st.none(), strings, st.lists(part, max_size=3))),
        "name": maybe(strings),
        "tool_calls": maybe(st.lists(tool_call, max_size=2)),
        "tool_call_id": maybe(strings),
        "reasoning_content": maybe(strings),
        "refusal": maybe(strings),
        "x-extra": values,
    },
)
common = {
    "user": maybe(strings),
    "metadata": maybe(st.dictionaries(keys, values, max_size=3)),
    "stop": maybe(st.one_of(strings, st.lists(strings, max_size=3))),
    "logit_bias": maybe(
        st.dictionaries(st.sampled_from(["1", "50256", "13812345678"]), st.integers(-100, 100))
    ),
    "n": maybe(st.integers(1, 2)),
    "max_tokens": maybe(st.integers(1, 16)),
    "temperature": maybe(st.floats(0, 2)),
    "extra_field": values,
}
prompt = st.one_of(strings, st.lists(strings, max_size=3), st.lists(st.integers(0, 1000), max_size=3))
chat_body = st.fixed_dictionaries(
    {"model": st.just(MODEL), "messages": maybe(st.lists(message, min_size=1, max_size=3))},
    optional={
        **common,
        "tools": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"type": maybe(st.just("function"))},
                    optional={
                        "function": maybe(
                            st.fixed_dictionaries(
                                {"name": maybe(strings)},
                                optional={"description": maybe(strings), "parameters": values},
                            )
                        )
                    },
                ),
                max_size=2,
            )
        ),
        "tool_choice": maybe(st.sampled_from(["auto", "none", "required"])),
        "response_format": maybe(st.fixed_dictionaries({"type": st.sampled_from(["json_object", "text"])})),
        "guided_choice": maybe(st.lists(strings, max_size=3)),
        "chat_template_kwargs": maybe(st.dictionaries(keys, values, max_size=3)),
    },
)
completions_body = st.fixed_dictionaries(
    {"model": st.just(MODEL), "prompt": maybe(prompt)}, optional={**common, "suffix": maybe(strings)}
)
embeddings_body = st.fixed_dictionaries(
    {"model": st.just(MODEL), "input": maybe(prompt)},
    optional={
        "user": maybe(strings),
        "encoding_format": maybe(st.sampled_from(["float", "base64"])),
        "x": values,
    },
)
requests = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), chat_body),
    st.tuples(st.just("/v1/completions"), completions_body),
    st.tuples(st.just("/v1/embeddings"), embeddings_body),
)


def test_fuzz_request_schemas(upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]) -> None:
    # One sidecar for the whole run. Most fuzzed bodies are refused, and refusals count against the
    # source address (stage `guard`): that limit is switched off here, or most examples would only
    # see 429 and test nothing.
    sc = start_sidecar(upstream.url, config={"rbac": {"failure_limit_enabled": False}})
    client = httpx.Client(base_url=sc.url, headers=sc.headers, timeout=30)
    seen: dict[int, int] = {}

    @FUZZ
    @given(requests)
    def one(request: tuple[str, dict[str, Any]]) -> None:
        path, body = request
        upstream.clear()
        # The standard library writes what orjson refuses (huge integers, NaN): the sidecar must
        # refuse those bodies too, not fail on them.
        resp = client.post(path, content=json.dumps(body).encode())
        seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, resp.text
        if resp.status_code >= 400:
            assert "error" in resp.json()
        forwarded = upstream.forwarded()
        for raw in PLANTED:
            assert raw.encode() not in forwarded, (raw, path, body)

    try:
        one()
    finally:
        client.close()
    # The run exercised both sides: bodies that were forwarded (redacted) and bodies refused.
    assert seen.get(200, 0) > 20, seen
    assert seen.get(400, 0) > 20, seen
    assert set(seen) <= {200, 400, 413}, seen
