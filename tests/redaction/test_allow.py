"""The policy's allow list: values never redacted, whatever type finds them (issue 15: the Chinese
name rules take some brands and places for people)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidecar.redaction.engine import Redactor
from sidecar.redaction.operators import Session
from sidecar.redaction.policy import Policy
from sidecar.redaction.streaming import StreamRedactor

ALLOW = ["周黑鸭", "support@example.com"]
TEXT = "周黑鸭的客服周晓梅写信给 support@example.com 和 bob@example.com"


def spans(redactor: Redactor, text: str, **kw: bool) -> list[tuple[str, str]]:
    return [(e.type, text[e.start : e.end]) for e in redactor.find(text, **kw)]


def test_allowed_values_are_not_found_others_are() -> None:
    plain = Redactor(Policy(), b"k")
    allowing = Redactor(Policy(allow=ALLOW), b"k")
    assert spans(plain, TEXT) == [
        ("PERSON", "周黑鸭"),
        ("PERSON", "周晓梅"),
        ("EMAIL", "support@example.com"),
        ("EMAIL", "bob@example.com"),
    ]
    assert spans(allowing, TEXT) == [("PERSON", "周晓梅"), ("EMAIL", "bob@example.com")]
    out = allowing.redact(TEXT, Session())
    assert "周黑鸭" in out and "support@example.com" in out and "周晓梅" not in out and "bob@" not in out


def test_compared_whole_and_folded() -> None:
    allowing = Redactor(Policy(allow=ALLOW), b"k")
    # A look-alike of an allowed value is the same value; a longer entity that holds one is not.
    assert spans(allowing, "写信给 support＠example.com 吧") == []
    assert spans(allowing, "写信给 sup\u200bport@example.com 吧") == []
    assert spans(allowing, "mail x.support@example.com") == [("EMAIL", "x.support@example.com")]


def test_batched_and_answers_alike() -> None:
    allowing = Redactor(Policy(allow=ALLOW), b"k")
    texts = [TEXT, "bob@example.com", "support＠example.com", "没有"]
    assert allowing.find_many(texts) == [allowing.find(t) for t in texts]
    assert allowing.find_many(texts, response=True) == [allowing.find(t, response=True) for t in texts]
    assert spans(allowing, TEXT, response=True) == [("EMAIL", "bob@example.com")]


def test_streams_split_anywhere_equal_the_whole_text() -> None:
    policy = Policy(allow=ALLOW)
    policy.entities["PERSON"] = policy.rule("PERSON").model_copy(update={"response": "mask"})
    allowing = Redactor(policy, b"k")
    whole = allowing.redact(TEXT, Session(), response=True, restore=False)
    assert "周黑鸭" in whole and "support@example.com" in whole and "周晓梅" not in whole
    for i in range(len(TEXT) + 1):
        for j in range(i, len(TEXT) + 1, 3):
            sr = StreamRedactor(allowing, Session(), restore=False)
            out = [sr.feed(part) for part in (TEXT[:i], TEXT[i:j], TEXT[j:])]
            out.append(sr.flush())
            assert "".join(out) == whole, (i, j)


def test_the_list_is_bounded() -> None:
    with pytest.raises(ValidationError, match="at most 100000 items"):
        Policy(allow=["周黑鸭"] * 100_001)
