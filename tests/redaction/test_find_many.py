"""``Redactor.find_many`` (``custos redact``'s batches: each scanner over every line, then the next)
finds exactly what ``find`` finds line by line, whatever the policy."""

from __future__ import annotations

import random

import pytest

from bench import redaction_data, redaction_evasions
from bench.redaction_throughput import mixed_text
from sidecar.redaction.engine import Redactor
from sidecar.redaction.policy import Policy, parse_policy

POLICIES = {
    "default": Policy(),
    # custom detectors make a third scanner (RE2) that runs first; a disabled type is filtered out of
    # what a detector of two types (bank and credit cards) finds
    "custom": parse_policy(
        "custom:\n  - name: EMP\n    pattern: 'EMP-[0-9]{4}'\n"
        "entities:\n  EMAIL: {enabled: false}\n  CREDIT_CARD: {enabled: false}\n  CN_PHONE: mask\n",
        "p.yaml",
    ),
    "no-names": parse_policy(
        "entities:\n  PERSON: {enabled: false}\n  ADDRESS: {enabled: false}\n  WECHAT: {enabled: false}\n",
        "p.yaml",
    ),
}


def _texts() -> list[str]:
    texts = [r["text"] for r in redaction_data.build(40, 3)]
    texts += [r["text"] for r in redaction_evasions.build(20, 3)]
    texts += mixed_text(0.1).split("\n")
    texts += ["", "EMP-1234 and 13812345678", "a\nb 13812345678\nc@d.com", "138\u200b1234\u200b5678"]
    random.Random(1).shuffle(texts)
    return texts


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("response", [False, True])
def test_find_many_is_find_per_text(name: str, response: bool) -> None:
    redactor = Redactor(POLICIES[name], b"k")
    texts = _texts()
    expected = [redactor.find(t, response=response) for t in texts]
    assert sum(map(bool, expected)) > len(texts) // 10  # there is something to find
    assert redactor.find_many(texts, response=response) == expected
    assert redactor.find_many(texts[:1], response=response) == expected[:1]
    assert redactor.find_many([], response=response) == []
