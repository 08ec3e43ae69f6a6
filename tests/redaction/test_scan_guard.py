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
