"""``llm.request.input_chars``: the prompt's size in characters, for every route that takes text."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.audit.record import input_chars


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "abc"},
                    {"role": "user", "content": [{"type": "text", "text": "de"}]},
                ]
            },
            5,
        ),
        ({"prompt": "abcd"}, 4),
        ({"prompt": [1, 2, 3]}, 0),  # token ids: no characters
        ({"input": ["ab", "c"]}, 3),
        ({"instructions": "be brief", "input": "hi"}, 10),  # the Responses API
        (
            {
                "input": [
                    {"role": "user", "content": "hey"},
                    {"type": "message", "content": [{"type": "input_text", "text": "yo"}]},
                ]
            },
            5,
        ),
        ({"text_1": "a", "text_2": ["bb", "ccc"]}, 6),  # score
        ({"query": "q", "documents": ["ab", {"text": "cd"}]}, 5),  # rerank
        ({"model": "m", "tokens": [1, 2]}, None),  # detokenize: no prompt text
        ("not an object", None),
    ],
)
def test_input_chars(body: Any, expected: int | None) -> None:
    assert input_chars(body) == expected
