"""The scan's shortcuts find exactly what the plain patterns find.

``Scanner._search_source`` guards the built-in alternation with a lookahead that refuses positions
where no built-in detector can start; ``pair_filtered_regex`` replaces the zh trigger trie. Both are
speed-ups only: a new detector whose left fence lets it start inside a word must fail here, not drop
matches silently.
"""

from __future__ import annotations

import random
import re

from sidecar.redaction import detectors as d

# Characters and pieces the built-in detectors start with, fence on or are made of.
_PIECES = [
    *"abcdefxyzABCDEFXYZ0123456789  .-_:@+()=<>'\"%#/\t\n密码口令是为：，Ａ１",
    "password",
    "DB_PASSWORD=",
    "secret",
    "sk-",
    "ghp_",
    "xoxb-",
    "xapp-",
    "AKIA",
    "ASIA",
    "eyJ",
    ".com",
    "fe80::",
    "::1",
    "DE89",
    "@example.com",
    "_00:1A:2B:3C:4D:5E",
    "-----BEGIN RSA PRIVATE KEY-----",
    "+86 ",
    "0086",
    "(010)",
    "BOB@EXAMPLE.COM",
    "E12345678",
    "DE1234567",
    "13812345678",
    "110101199003074258",
    "4111111111111111",
]


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def test_no_builtin_branch_starts_where_the_guard_refuses() -> None:
    scanner = d.Scanner(d.BUILTIN)
    guard = re.compile(f"(?=[{d._BUILTIN_FIRST}])(?!{d._MID_WORD})")
    branches = [(name, re.compile(b)) for name, b in zip(scanner._order, scanner._branches, strict=True)]
    for text in _texts(3000, 1):
        for p in range(len(text)):
            if guard.match(text, p) is None:
                hits = [name for name, b in branches if b.match(text, p)]
                assert not hits, (text, p, hits)


def test_guarded_scan_equals_the_plain_alternation() -> None:
    placeholder = r"<[A-Z][A-Z0-9_]*?_[0-9]{1,6}>"
    for kwargs in ({}, {"windowed": True}, {"windowed": True, "placeholder_pattern": placeholder}):
        guarded = d.Scanner(d.BUILTIN, **kwargs)
        plain = d.Scanner(d.BUILTIN, **kwargs)
        plain._re = re.compile(plain.source)
        assert guarded._re.pattern != plain._re.pattern
        for text in _texts(2000, 2):
            for pos in (0, len(text) // 2):
                assert guarded.scan(text, pos) == plain.scan(text, pos), (kwargs, text, pos)


def test_pair_filtered_regex_matches_the_trie() -> None:
    words = list(d._ZH_KIND)
    trie = re.compile(d.trie_regex(words))
    assert d._ZH_TRIGGER.pattern == d.pair_filtered_regex(words)
    rng = random.Random(3)
    alphabet = sorted(set("".join(words))) + list("的一是了人在，。 ab1")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    texts += [a + b for a in words for b in words[:20]]
    for text in texts:
        for lo in (0, 1):
            want = [(m.span(), m.group()) for m in trie.finditer(text, lo)]
            assert [(m.span(), m.group()) for m in d._ZH_TRIGGER.finditer(text, lo)] == want, text


def test_pair_pass_without_the_one_character_word_matches_the_trie() -> None:
    """``_zh_trigger_pairs()`` (text without ``_ZH_SINGLE``) finds what the trie of every word finds."""
    words = [w for w in d._ZH_KIND if w != d._ZH_SINGLE]
    trie = re.compile(d.trie_regex(d._ZH_KIND))
    rng = random.Random(4)
    alphabet = sorted(set("".join(words)) - {d._ZH_SINGLE}) + list("的一是了人在，。 ab1")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    texts += [a + b for a in words for b in words[:20] if d._ZH_SINGLE not in a + b]
    for text in texts:
        want = [(m.span(), m.group()) for m in trie.finditer(text)]
        assert [(m.span(), m.group()) for m in d._zh_trigger_pairs().finditer(text)] == want, text


# ASCII pieces: ``_scan_windows`` finds the trigger clusters of ASCII text from ``_TRIGGER_MARKS``.
_ASCII_PIECES = [p for p in _PIECES if p.isascii()] + ["\x00", "\x7f", "\x01", " is ", " was ", "my password"]


def test_trigger_marks_are_the_trigger_class_on_ascii() -> None:
    marks = bytes(range(128)).translate(d._TRIGGER_MARKS)
    for code in range(128):
        char = chr(code)
        assert (marks[code] == 0) == (d._TRIGGER.match(char) is not None), repr(char)
        assert (marks[code] == 1) == (not "!" <= char <= "~"), repr(char)


def test_windows_from_the_marks_equal_windows_from_the_search() -> None:
    rng = random.Random(5)
    windowed, plain = d.Scanner(d.BUILTIN, windowed=True), d.Scanner(d.BUILTIN)
    for _ in range(3000):
        text = "".join(rng.choice(_ASCII_PIECES) for _ in range(rng.randint(1, 30)))
        marks = text.encode("ascii").translate(d._TRIGGER_MARKS)
        pos = rng.randrange(len(text))
        first = d._TRIGGER.search(text, pos)
        if first is not None:
            with_marks = list(d.Scanner._trigger_windows(text, pos, first.start(), marks))
            assert with_marks == list(d.Scanner._trigger_windows(text, pos, first.start(), None)), text
            for start in range(pos, len(text)):
                if d._TRIGGER.match(text, start):
                    got = d._window_start(text, pos, start, marks)
                    assert got == d._window_start(text, pos, start), (text, pos, start)
        assert windowed.scan(text, pos) == plain.scan(text, pos), (text, pos)


def test_english_capitals_pass_finds_what_one_trie_after_every_capital_finds() -> None:
    """``_en_capitals`` (one alternative per capital) against one trie of every gazetteer word's rest
    tried after every capital: the same gazetteer words where a word may start (not after a letter),
    the same capitals after a word, in the same order."""
    rest = d.trie_regex({w[1:] for w in d._EN_GAZETTEER}) + r"(?![A-Za-z])"
    after = r"(?<=[a-z:,][ ][A-Z])"
    plain = {
        (True, True): f"[A-Z](?:{after}(?:{rest}(?P<both>)|(?P<cue>))|{rest}(?P<word>))",
        (True, False): f"[A-Z](?:{rest}(?P<word>))",
        (False, True): f"[A-Z](?:{after}(?P<cue>))",
    }
    rng = random.Random(6)
    pieces = [*sorted(d._EN_GAZETTEER), "X'", "O'", "Mc", "'", "-", " ", ", ", ": ", "the ", "Dear ", "Q"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(20000)]
    texts += ["NatashaEvelynContrerasX'Connor", "xUSNS'Brien", "Met X'Connor Smith", "Dear O'Brien, hi"]

    def seen(
        pattern: re.Pattern[str], text: str, rules: dict[str, str]
    ) -> list[tuple[int, str | None, bool]]:
        out = []
        for m in pattern.finditer(text):
            s, rule = m.start(), rules.get(m.lastgroup, m.lastgroup)  # type: ignore[arg-type]
            word = m.group() if rule != "cue" and m.group() in d._EN_GAZETTEER else None
            if word is not None and s and text[s - 1].isascii() and text[s - 1].isalpha():
                word = None  # inside a word: the finder tries no gazetteer word there
            if word is not None or rule != "word":
                out.append((s, word, rule != "word"))
        return out

    for (words, cues), source in plain.items():
        fast, slow = d._en_capitals(words, cues), re.compile(source)
        assert fast is not None
        for text in texts:
            assert seen(fast, text, d._EN_RULE) == seen(slow, text, {}), (words, cues, text)


def test_name_starts_pass_lets_through_every_start_either_rule_takes() -> None:
    """``_zh_name_starts`` only rules starts out: every start of a well-known name's first two characters
    and every start where ``_zh_bare_name_end`` takes a bare name is a match with a group (the finder
    tries bare names only there), for the three rule combinations."""
    words = d._zh_words()
    pool = sorted(
        {c for n in d._ZH_KNOWN_NAMES for c in n[:3]}
        | words.start_chars
        | {c for w in words.compounds for c in w}
        | set(sorted(words.given)[::4])
        | set("的了是在和有人这中大会见说，。、 a1")
    )
    rng = random.Random(8)
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(6000)]
    texts += ["会见了江泽民、李鹏、乔石等", "欧阳娜娜的建议", "于永波会见全军", "中国大卫·尼尔全斗焕"]
    given = sorted(words.given)
    texts += [
        f"在{c}{rng.choice(given)}{rng.choice(given)}的" for c in sorted(words.compounds) for _ in range(5)
    ]
    for known, bare in ((True, True), (True, False), (False, True)):
        starts = d._zh_name_starts(known, bare, words)
        assert starts is not None
        for text in texts:
            found = {m.start(): m.lastindex is not None for m in starts.finditer(text)}
            for s in range(len(text)):
                pair = known and text[s : s + 2] in d._ZH_KNOWN_PAIRS
                assert not pair or s in found, (known, bare, text, s)
                assert not (bare and d._zh_bare_name_end(text, s, words)) or found.get(s), (text, s)
                assert found.get(s, True) or text[s] in d._ZH_KNOWN_FIRST, (known, bare, text, s)
