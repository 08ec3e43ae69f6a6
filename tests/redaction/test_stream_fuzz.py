"""Random texts, split at random, char by char and word by word: a stream redacts them exactly as the
whole text. The texts mix what the stream's shortcuts reason about: short numbers in prose, longer
numbers, dashes (bullets, asides, separators), colons (labels, IPv6 and MAC groups), extension and cue
words, upper-case groups, assignments (``=``, ``:``, ``密码是``) and every PII piece of the streaming
tests.

Longer runs: ``python -m tests.redaction.test_stream_fuzz SEED SECONDS``.
"""

from __future__ import annotations

import random
import sys
import time

from tests.redaction.test_stream_fast import DEFAULT, FAST, batch, stream
from tests.redaction.test_streaming import PII

REDACTORS = [r for r in (FAST, DEFAULT) if r is not None]
WORDS = [
    *("the", "days", "about", "and", "ext", "x", "call", "tel", "phone", "QQ", "qq", "ssn", "WEST", "NWBK"),
    *("GB29", "DE89", "In", "password", "api", "key", "is", "at", "am", "pm", "to", "mostly", "Then", "E"),
    *("sk", "xoxb", "a", "ab"),
    # Labels before a colon, keywords that make it an assignment, hex words of IPv6 and MAC addresses.
    *("**Backend**", "then", "Note", "**", "passwd", "secret", "pwd", "dead", "beef", "fe80", "cafe", "SSN"),
    *("was", "hunter", "P@ss"),
]
SEPARATORS = [" ", "  ", ", ", ". ", ":", "=", ": ", "-", "/", ".", "(", ")", "+", "\n", "\n1. ", "，", "。"]
SEPARATORS += ["\n- ", " - ", "- ", "\n-"]
SEPARATORS += [":\n", ": ", "::", " :", '": ', ":\t", '"', "**: "]
SEPARATORS += ["电话", "密码是", "密 码 是", "口令 ：", "转"]


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(3, 25)):
        roll = rng.random()
        if roll < 0.35:
            parts.append(rng.choice(WORDS))
        elif roll < 0.6:
            digits = rng.choice([1, 1, 2, 2, 3, 4, 4, 5, 7, 8, 10, 11])
            parts.append("".join(rng.choice("0123456789") for _ in range(digits)))
        elif roll < 0.9:
            parts.append(rng.choice(SEPARATORS))
        else:
            parts.append(rng.choice(PII))
        if rng.random() < 0.6:
            parts.append(" ")
    return "".join(parts)


def random_cuts(rng: random.Random, text: str) -> list[int]:
    roll = rng.random()
    if roll < 0.3:
        return list(range(len(text)))  # char by char
    if roll < 0.6:
        return [i for i, ch in enumerate(text) if ch == " "]  # word by word, as a tokenizer emits
    return sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 8))))


def mismatches(rng: random.Random, texts: int) -> list[tuple[str, list[int], str, str]]:
    bad = []
    for _ in range(texts):
        text = random_text(rng)
        for redactor in REDACTORS:
            cuts = random_cuts(rng, text)
            whole = batch(text, redactor)
            got = stream(text, cuts, redactor)
            if got != whole:
                bad.append((text, cuts, got, whole))
    return bad


def test_random_texts_split_anywhere_equal_whole() -> None:
    bad = mismatches(random.Random(20261201), 1500)
    assert not bad, bad[:3]


if __name__ == "__main__":
    seed, seconds = int(sys.argv[1]), float(sys.argv[2])
    rng, deadline, checked, found = random.Random(seed), time.monotonic() + seconds, 0, []
    while time.monotonic() < deadline:
        found += mismatches(rng, 50)
        checked += 50 * len(REDACTORS)
    for text, cuts, got, whole in found[:5]:
        print(f"{text!r} cut at {cuts}\n  stream {got!r}\n  whole  {whole!r}")
    print(f"{checked} checks, {len(found)} differences")
    sys.exit(1 if found else 0)
