"""Normalization before detection: fold look-alike characters, skip invisible ones, map spans back.

Real text and evasive users write PII with characters the detectors' ASCII patterns do not know:
fullwidth digits and letters (``１３８１２３４５６７８``, ``bob＠example.com``), small and fullwidth
hyphens (``010﹣85570230``), no-break and ideographic spaces, and zero-width or bidi control characters
inside a value (``138\\u200b1234\\u200b5678``). ``fold`` returns the text the detectors scan (those
folded to ASCII, the invisible ones removed) and a ``Folded`` map from its offsets back to the
original, so the redactor replaces exactly the original characters of each entity, invisible ones
inside it included.

Traditional Chinese characters fold to their simplified form (``電話`` -> ``电话``, ``陳`` -> ``陈``,
``號`` -> ``号``: OpenCC's character table, written into ``zh_t2s.txt`` by
``deploy/tools/build_zh_t2s.py``), so that the Chinese cue words, surnames and address units find
text written in Taiwan or Hong Kong too.

The fold is NFKC restricted to what matters for the detectors (NFKC itself would also rewrite ``ｶ``,
``①``, ``ﬁ`` and change the length of the text): every fold is one character to one character, so
without invisible characters the offsets are the same and no map is built. ASCII text costs nothing;
other text without any of these characters (nearly all of it) costs one C-speed regex search for a
character folded one by one or a run of Chinese numerals.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from pathlib import Path

# Invisible: zero-width space/non-joiner/joiner, word joiner, BOM/ZWNBSP, soft hyphen, Mongolian vowel
# separator, LRM/RLM/ALM, bidi embeddings/overrides/isolates, invisible math operators.
SKIP = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)

_TABLE: dict[int, int | None] = {ord(ch): None for ch in SKIP}
# Fullwidth digits, letters and the punctuation found inside entities; not the fullwidth comma, colon,
# semicolon, ! or ? (prose punctuation: ``共3，13812345678`` must stay two numbers).
for _ch in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz@+-._()":
    _TABLE[ord(_ch) + 0xFEE0] = ord(_ch)
# Hyphens and minus signs (not the em dash: Chinese prose uses ``——``).
for _cp in (0x2010, 0x2011, 0x2012, 0x2013, 0x2212, 0xFE63, 0xFE58, 0x2043):
    _TABLE[_cp] = ord("-")
# Spaces that separate digit groups: no-break, en/em/thin/figure/narrow no-break, ideographic.
for _cp in (0x00A0, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2009, 0x200A, 0x202F, 0x3000):
    _TABLE[_cp] = ord(" ")
_TABLE[0xFE6B] = ord("@")  # small commercial at
_TABLE[0xFF61] = ord(".")  # halfwidth ideographic full stop, a dot in e-mail evasions

# Chinese numerals read digit by digit, as phone and ID numbers are written to get past filters
# (``一三八一二三四五六七八``, ``壹叁捌壹贰叁肆伍陆柒捌``): a run of seven or more of them and ASCII digits
# folds to ASCII digits; a shorter run stays (``一二三``, ``二〇二四年``). ``参``: traditional ``參`` folds
# to it.
_NUMERAL_DIGITS = {
    "〇": "0", "零": "0", "一": "1", "幺": "1", "壹": "1", "二": "2", "贰": "2", "三": "3", "叁": "3",
    "参": "3", "四": "4", "肆": "4", "五": "5", "伍": "5", "六": "6", "陆": "6", "七": "7", "柒": "7",
    "八": "8", "捌": "8", "九": "9", "玖": "9",
}  # fmt: skip
ZH_NUMERALS = "".join(_NUMERAL_DIGITS)
_NUMERALS = {ord(c): ord(d) for c, d in _NUMERAL_DIGITS.items()}
# A run of seven or more that holds a numeral (a run of ASCII digits alone folds to itself, and most
# runs in text are that), tried only where a run starts (a lookbehind after its first character).
_RUN_START = f"(?<![0-9{ZH_NUMERALS}].)(?:(?<=[{ZH_NUMERALS}])|(?=[0-9]*+[{ZH_NUMERALS}]))"
_NUMERAL_RUN = re.compile(f"[0-9{ZH_NUMERALS}]{_RUN_START}[0-9{ZH_NUMERALS}]{{6,}}+")
# A run's characters: what a stream holds back at the end of a text until the run is over.
NUMERAL_RUN_CHARS = "0123456789" + ZH_NUMERALS

# Characters that fold to, or are skipped inside, an ASCII entity: the stream redactor counts them as
# part of a run of entity characters.
FOLDABLE = frozenset(chr(c) for c in _TABLE)

ZH_T2S_PATH = Path(__file__).with_name("zh_t2s.txt")


def _t2s() -> dict[int, int]:
    """Traditional -> simplified, one character to one (``zh_t2s.txt``: ``電 电`` a line)."""
    lines = ZH_T2S_PATH.read_text(encoding="utf-8").splitlines()
    return {ord(line[0]): ord(line[2]) for line in lines if not line.startswith("#")}


_TABLE.update(_t2s())
_SPECIAL_CHARS = re.escape("".join(chr(c) for c in _TABLE))
_SPECIAL = re.compile(f"[{_SPECIAL_CHARS}]")
# Whether a text may need folding: one search (one class first, so ``re`` skips to candidates at C
# speed) for a character folded one by one or a numeral next to a digit or another numeral (every run of
# ``_NUMERAL_RUN`` holds one; ASCII digits are no candidates, a regex attempt at each costs more than
# the search).
_FOLD_AT = re.compile(
    f"[{_SPECIAL_CHARS}{ZH_NUMERALS}]"
    f"(?:(?<=[{_SPECIAL_CHARS}])|(?=[0-9{ZH_NUMERALS}])|(?<=[0-9{ZH_NUMERALS}].))"
)
_SKIPPED = re.compile("[" + re.escape(SKIP) + "]")


class Folded:
    """Offsets of the folded text -> offsets of the original; only built when characters were removed."""

    __slots__ = ("_orig", "removed")

    def __init__(self, text: str) -> None:
        self.removed = [m.start() for m in _SKIPPED.finditer(text)]
        orig: list[int] = []
        last = 0
        for r in self.removed:
            orig.extend(range(last, r))
            last = r + 1
        orig.extend(range(last, len(text)))
        orig.append(len(text))
        self._orig = orig  # folded offset -> original offset (one past the end: len(text))

    def start(self, i: int) -> int:
        """Original offset of the folded character at ``i``."""
        return self._orig[i]

    def end(self, i: int) -> int:
        """Original end of a span of the folded text ending at ``i`` (invisible characters after the
        last character of the span are not part of it)."""
        return self._orig[i - 1] + 1 if i > 0 else 0

    def to_folded(self, o: int) -> int:
        """Folded offset of original offset ``o`` (the removed characters before it do not count)."""
        return o - bisect_left(self.removed, o)


def fold(text: str) -> tuple[str, Folded | None]:
    """The text the detectors scan, and the offset map back (None: same offsets)."""
    if text.isascii() or _FOLD_AT.search(text) is None:  # isascii: a flag of the str, O(1)
        return text, None
    folded = text if _SPECIAL.search(text) is None else text.translate(_TABLE)
    if _NUMERAL_RUN.search(folded) is not None:
        folded = _NUMERAL_RUN.sub(_digits, folded)
    if len(folded) == len(text):
        return folded, None
    return folded, Folded(text)


def _digits(run: re.Match[str]) -> str:
    return run.group().translate(_NUMERALS)


def numeral_tail(folded: str) -> tuple[str, int]:
    """For a stream: ``folded`` with the run of Chinese numerals (digits among them) that ends it
    written as the digits it folds to once it is long enough, and where that run starts
    (``len(folded)`` when there is none). The stream holds the run, and whatever a number there would
    make the detectors hold before it (``阳石隘，壹叁捌`` may become a name before a number)."""
    start = len(folded.rstrip(NUMERAL_RUN_CHARS))
    tail = folded[start:]
    if not tail or tail.isascii():
        return folded, len(folded)
    return folded[:start] + tail.translate(_NUMERALS), start
