"""A delta of prose then a trigger character (`` about 3``) is fed as two deltas.

``StreamRedactor.feed`` sends the prose before the delta's first character of ``_NEEDS_SCAN`` on the
fast path and the rest on the full path, which then mostly holds everything (a number may grow) and
runs no ``find`` over the prose. That is one more split of the stream, and any split must redact
exactly as the whole text does; checked here on token streams shaped like a model's (words with
their leading space, numbers in pieces, addresses, IDs, keywords, placeholders), with what each feed
returns checked against what it released.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from sidecar.redaction import streaming
from sidecar.redaction.engine import Redactor
from sidecar.redaction.operators import Session
from sidecar.redaction.streaming import StreamRedactor
from tests.redaction.test_evasions import EVASION_PIECES
from tests.redaction.test_stream_fast import PII, PROSE, R, needs_fast

WORDS = [
    " the",
    " about",
    " In",
    " took",
    " days",
    ",",
    ".",
    " call",
    " or",
    " mail",
    " today",
    " Dear",
    "\n",
]
NUMBERS = [
    " 2024",
    " 3",
    " 12",
    " +1",
    " 415",
    "-555",
    "-01",
    "23",
    " 138",
    "1234",
    "5678",
    " (010)",
    " 8888",
]
OTHER = [
    " bob",
    ".smith",
    "@",
    "example",
    ".com",
    " password",
    "=",
    " hunter2",
    " <CN_PHONE_1>",
    " <EMAIL_",
    "1>",
]
PIECES = WORDS + NUMBERS + OTHER + PROSE + PII + EVASION_PIECES


def _session() -> Session:
    session = Session()
    session.originals.update({"<CN_PHONE_1>": "13800000000", "<EMAIL_1>": "me@example.org"})
    return session


def _tokens(rng: random.Random) -> list[str]:
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14)))
    # Tokens as a model sends them (words), and cut anywhere (a provider's chunking).
    if rng.random() < 0.5:
        k = rng.randint(0, min(10, len(text) - 1))
        cuts = sorted(rng.sample(range(1, len(text)), k))
        return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return [t for t in text.replace(" ", "\0 ").split("\0") if t]


@pytest.mark.parametrize("restore", [False, True])
def test_token_streams_equal_the_whole_text(restore: bool) -> None:
    rng = random.Random(14 + restore)
    for _ in range(3000):
        tokens = _tokens(rng)
        text = "".join(tokens)
        sr = StreamRedactor(R, _session(), restore=restore)
        sent = ""  # the input text released so far
        out = []
        for token in tokens:
            before = sr.held + token
            got = sr.feed(token)
            held = sr.held
            assert before.endswith(held)
            released = before[: len(before) - len(held)]
            if sr.clean:
                assert got == released, (tokens, token, got, released)
            sent += released
            out.append(got)
        assert sent + sr.held == text
        out.append(sr.flush())
        whole = R.redact(text, _session(), response=True, restore=restore)
        assert "".join(out) == whole, (tokens, out, whole)


@needs_fast
def test_prose_before_a_number_runs_no_find(monkeypatch: pytest.MonkeyPatch) -> None:
    finds = []
    monkeypatch.setattr(R, "find", lambda *a, **k: finds.append(a) or Redactor.find(R, *a, **k))
    quiet = []
    feed = StreamRedactor._quiet_feed

    def counted(self: StreamRedactor, tail: str, exact: bool = True, number_at: int | None = None) -> Any:
        quiet.append(tail)
        return feed(self, tail, exact, number_at)

    monkeypatch.setattr(StreamRedactor, "_quiet_feed", counted)
    sr = StreamRedactor(R, Session())
    assert sr.feed(" took") == " " and sr.held == "took"
    assert sr.feed(" about") == "took " and sr.held == "about"
    # A short number in prose that ends the text: the prose before it goes out on the fast path,
    # ``3`` is held, and nothing asks the detectors.
    assert sr.feed(" 3") == "about " and sr.held == "3" and sr.clean
    assert quiet[-1] == "about 3" and not finds
    # `` days`` after it: a short number in prose, which no entity takes; no find for it either.
    assert sr.feed(" days") == "3 " and sr.held == "days" and not finds
    assert streaming._NEEDS_SCAN.search(sr.held) is None


@needs_fast
def test_prose_then_an_entity_in_one_delta() -> None:
    # The prose goes out as it came; the entity after it is redacted as in the whole text.
    sr = StreamRedactor(R, Session())
    text = "Dear Sir, call 13812345678 today"
    got = sr.feed(text)
    assert got.startswith("Dear Sir, call ") and not sr.clean  # the number went out masked
    got += sr.flush()
    assert got == R.redact(text, Session(), response=True) and "13812345678" not in got


@needs_fast
def test_a_number_that_ends_in_the_delta_takes_one_hold_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """`` 2024/25 the``: the full path releases the number and scans it anyway, so the word before it
    is held whole and scanned with it, not asked for its own exact hold first. (`` 2024 the`` alone
    is a short number in prose, which takes no scan at all.)"""
    holds = []
    monkeypatch.setattr(R, "hold_from", lambda *a: holds.append(a) or Redactor.hold_from(R, *a))
    sr = StreamRedactor(R, Session())
    assert sr.feed(" In") == " " and sr.held == "In"
    assert sr.feed(" 2024/25 the") == "In 2024/25 " and sr.held == "the" and sr.clean
    assert len(holds) == 1
    # A number at the end of the delta, one word after ``2024/25``: the head takes its exact hold,
    # the number is held unscanned.
    holds.clear()
    assert sr.feed(" x 3") == "the x " and sr.held == "3" and len(holds) == 2
    # ``3`` is one word after ``25``, so it is scanned when what follows it comes; ``7`` is two
    # words after ``3``: in prose, no hold is asked for, the number alone is held.
    holds.clear()
    assert sr.feed(" and then about 7") == "3 and then about " and sr.held == "7" and len(holds) == 1
    holds.clear()
    assert sr.feed(" days") == "7 " and sr.held == "days" and not holds
