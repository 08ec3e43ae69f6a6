"""The stream hold-back tries fewer positions and holds exactly what it held before.

Two shortcuts are checked here. The positions tried, and at each a cheap ``re`` test
(``detectors._could_hold_pattern``: could some branch take the rest of the text, or match and leave
only separators or what a final lookahead may be part-way through?) before the partial match.

``Scanner.hold_from`` runs a partial match of the whole alternation at each position of the tail
(~3 µs each). It now tries only the positions that ``Scanner._hold_start_pattern`` finds at C speed:
for the built-ins, the guard of the scan (``tests/redaction/test_scan_guard.py``), which refuses a
position by the character there and the one before, so no continuation of the text can make a match
start there; for the second tier, the characters its detectors' patterns start with. Here every
result is compared with the plain first-character test it replaces, for the policies that build
different scanners, at every prefix of random texts (a stream's tail) and from floors near its end.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
import regex

from sidecar.redaction import detectors as d
from sidecar.redaction.engine import Redactor
from sidecar.redaction.operators import Session
from sidecar.redaction.policy import Policy
from sidecar.redaction.streaming import StreamRedactor
from tests.redaction.test_evasions import EVASION_PIECES, FILLER
from tests.redaction.test_scan_guard import _PIECES

_NAMES_TOO = {t: {"response": "mask"} for t in ("PERSON", "ADDRESS", "WECHAT")}
POLICIES = {
    "default": {},
    "names in answers": {"entities": _NAMES_TOO},
    "bracket placeholders": {"placeholder_format": "[{type}_{n}]", "entities": _NAMES_TOO},
    "custom detector": {"custom": [{"name": "CODENAME", "pattern": r"blue[a-z]*-[0-9]+"}]},
}
# A name, a card number split by spaces, a growing phone number, an address, a key: text a stream
# holds back from somewhere in the middle.
_MORE = [
    " the ",
    " about ",
    "In ",
    "Tom Hanks",
    "4111 1111 ",
    "+1 415-555-",
    "0123",
    "bob.smith@",
    "example.com",
    "password: ",
    "<PHONE_1>",
    "<EMAIL_",
    "[PHONE_2]",
    "bluebird-7",
    "Mr. Li ",
    "北京市朝阳区",
]
_ALL = [*_PIECES, *EVASION_PIECES, *FILLER, *_MORE]


def _reference(redactor: Redactor) -> Redactor:
    """The same redactor with the hold-back's former position test: every position whose character
    a match may start with (``first_chars``, the built-ins' ``_FIRST_CHARS``, or any), and where
    the policy's placeholder starts (the former test missed ``[``, see below), each tried with the
    partial match (no ``_could_hold_pattern`` first)."""
    ref = Redactor(redactor.policy, b"test-key")
    placeholder = redactor.policy.placeholder_format[0]
    for s in ref._response:
        s.prepare_hold()
        s._hold_could = None  # and a partial match at each of them (no ``_could_hold_pattern``)
        first = s.first_chars or (d._FIRST_CHARS if s.windowed else None)
        if first is None or s._user:
            s._hold_starts = None
        else:
            s._hold_starts = re.compile(d._char_class(first | {placeholder} if s.windowed else first))
    return ref


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_ALL) for _ in range(rng.randint(1, 8))) for _ in range(n)]


@pytest.mark.parametrize("name", list(POLICIES))
def test_hold_from_equals_every_first_character_tried(name: str) -> None:
    redactor = Redactor(Policy.model_validate(POLICIES[name]), b"test-key")
    ref = _reference(redactor)
    rng = random.Random(name)
    for text in _texts(300, 7):
        for n in range(1, len(text) + 1):
            prefix = text[:n]
            floor = 0 if rng.random() < 0.1 else max(0, n - rng.randint(1, 24))
            assert redactor.hold_from(prefix, floor) == ref.hold_from(prefix, floor), (name, prefix, floor)
            # Each scanner alone too: the redactor's answer is the earliest, which hides the others.
            for scanner, plain in zip(redactor._response, ref._response, strict=True):
                assert scanner.hold_from(prefix, floor) == plain.hold_from(prefix, floor), (
                    name,
                    prefix,
                    floor,
                )


@pytest.mark.parametrize("fmt", ["[{type}_{n}]", "[{type}-{n}]", "({type} {n})", "<{type}_{n}>"])
def test_a_placeholder_split_after_its_bracket_is_restored(fmt: str) -> None:
    # The first-character test once let ``[`` out alone, and ``CN_PHONE_1]`` was not restored.
    redactor = Redactor(Policy.model_validate({"placeholder_format": fmt}), b"test-key")
    session = Session()
    placeholder = redactor.redact("call 13812345678", session).split(" ", 1)[1]
    text = f"x {placeholder} y"
    whole = redactor.redact(text, session, response=True, restore=True)
    assert whole == "x 13812345678 y"
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            sr = StreamRedactor(redactor, session, restore=True)
            out = sr.feed(text[:i]) + sr.feed(text[i:j]) + sr.feed(text[j:]) + sr.flush()
            assert out == whole, (fmt, i, j, out)


def test_second_tier_tries_only_where_its_detectors_start() -> None:
    # By default answers are searched for cue-word numbers only: no letter is tried, nor a digit
    # inside a number.
    names = Redactor(Policy(), b"test-key")._response[-1]
    names.prepare_hold()
    assert names.finder is not None and names._hold_starts is not None
    tried = [m.start() for m in names._hold_starts.finditer("call (010) 8888 1234 or 13812345678 now")]
    assert tried == [5, 6, 11, 16, 24]


@pytest.mark.parametrize("name", ["default", "names in answers", "bracket placeholders"])
def test_each_branch_starts_only_where_leading_says(name: str) -> None:
    # ``_leading`` reads the patterns; here the regex engine itself agrees, branch by branch (a branch
    # that rarely decides the hold-back would otherwise go unchecked by the comparison above).
    redactor = Redactor(Policy.model_validate(POLICIES[name]), b"test-key")
    texts = _texts(300, 11)
    for s in redactor._response:
        for branch in s._branches:
            start = d._leading(branch)
            if start is None:
                continue
            first, refused = start
            pattern = regex.compile(branch, flags=regex.V0)
            hits = 0
            # Each piece alone after the random texts, for a branch they happen to miss.
            for text in texts:
                hits += _check_starts(pattern, text, first, refused, branch)
            for text in _ALL if not hits else ():
                hits += _check_starts(pattern, text, first, refused, branch)
            assert hits, branch[:60]  # the texts exercise every branch


def _check_starts(
    pattern: Any, text: str, first: frozenset[str], refused: frozenset[str], branch: str
) -> int:
    hits = 0
    for n in (len(text), len(text) // 2):  # complete and partial matches
        for p in range(n):
            if pattern.match(text[:n], p, partial=True) is not None:
                hits += 1
                assert text[p] in first, (branch[:60], text[:n], p)
                assert p == 0 or text[p - 1] not in refused, (branch[:60], text[:n], p)
    return hits


@pytest.mark.parametrize(
    ("pattern", "start"),
    [
        ("[0-9](?<![A-Z_].)(?<![0-9][.,].)x", ("0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ_")),
        ("(?<![a-z])[+]x", ("+", "")),
        ("[0-9]x(?<![a-z].)", ("0123456789", "")),  # not right after the first item
        ("[\\n0](?<![a-z].)", ("\n0", "")),  # ``.`` takes no newline
        ("(?s)[\\n0](?<![a-z].)", ("\n0", "abcdefghijklmnopqrstuvwxyz")),
        ("\\<[A-Z]", ("<", "")),
        ("(?<![a-z])\\+?x", None),  # an optional first item
        ("ab|cd", None),
        ("(a|b)c", None),
        ("(?i)abc", None),
        ("[^0-9]", None),
        ("\\dx", None),
        ("(?=x)x", None),  # a lookahead first
        ("[", None),
    ],
)
def test_leading(pattern: str, start: tuple[str, str] | None) -> None:
    expected = None if start is None else (frozenset(start[0]), frozenset(start[1]))
    assert d._leading(pattern) == expected


@pytest.mark.parametrize("name", list(POLICIES))
def test_hold_from_on_labelled_values_cut_anywhere(name: str) -> None:
    """Every prefix of the labelled sets' lines (each value cut at every character, with prose, cue
    words and near-misses around it) and of prose with numbers: the same hold as the plain partial
    match at every candidate position, and the shortcut does skip partial matches."""
    from bench import redaction_data, redaction_evasions
    from bench.stream import PROSE

    redactor = Redactor(Policy.model_validate(POLICIES[name]), b"test-key")
    ref = _reference(redactor)
    texts = [r["text"] for r in redaction_data.build(12, 21)]
    texts += [r["text"] for r in redaction_evasions.build(6, 21)] + [PROSE]
    rng = random.Random(f"labelled-{name}")
    skipped = 0
    for text in texts:
        for n in range(1, len(text) + 1):
            prefix = text[:n]
            floor = 0 if rng.random() < 0.1 else max(0, n - rng.randint(1, 40))
            for scanner, plain in zip(redactor._response, ref._response, strict=True):
                assert scanner.hold_from(prefix, floor) == plain.hold_from(prefix, floor), (
                    name,
                    prefix,
                    floor,
                )
                could = scanner._hold_could
                if could is not None and scanner._hold_starts is not None:
                    skipped += sum(
                        could.match(prefix, m.start()) is None
                        for m in scanner._hold_starts.finditer(prefix, floor)
                    )
    if name != "custom detector":  # RE2 patterns: no shortcut
        assert skipped > 1000


@pytest.mark.parametrize(
    "branch",
    [
        "ab(?=cd)",  # a final positive lookahead the end of the text may cut
        "a(?!xy)b+",  # a lookahead inside the branch, reading what the branch does not take
        "[ab](?<![x].)b{1,3}(?![x ]{1,2}y)",  # a final negative lookahead longer than one character
        "(?:ab|ba)[ ]?c(?=d)",  # a one-character final lookahead
        "a(?P<s>[ -])b(?P=s)c",  # a backreference
    ],
)
def test_could_hold_never_refuses_a_held_position(branch: str) -> None:
    """``_could_hold_pattern`` is a necessary condition: on every text of up to six characters over
    the branch's alphabet and a few others, wherever the partial match (or a complete match then
    separators, or a longer match that could grow) holds, it matches; and it does refuse some."""
    import itertools

    partial = regex.compile(branch)
    could = d._could_hold_pattern([branch])
    assert could is not None
    refused = 0
    for size in range(1, 7):
        for chars in itertools.product("abcdxy -", repeat=size):
            text = "".join(chars)
            m = partial.match(text, 0, partial=True)
            held = m is not None and (
                m.partial
                or m.end() >= len(text)
                or d._SEPARATORS.fullmatch(text, m.end()) is not None
                or partial.fullmatch(text, 0, partial=True) is not None
            )
            allowed = could.match(text, 0) is not None
            assert allowed or not held, (branch, text)
            refused += not allowed
    assert refused > 1000
