"""Built-in detectors and the scanner that runs all of them in one pass.

Every detector is one branch of a single compiled alternation (``...(?P<d0>)|...(?P<d1>)|...``: an
empty group at the end of each branch names it), so the text is scanned once. A branch may carry a
validator (check digit, birth date, issuer prefix); a candidate that fails it is not an entity, and
the branches after it are tried at the same position before the scan moves on. Digit entities are
fenced by lookarounds so that digits inside a longer run (a millisecond timestamp, an order number)
never match, while Chinese text directly around an entity (``手机13812345678联系``) still does: the
fences exclude only ASCII letters, digits and ``_``.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import regex

from . import validators as v

# Fences. Digit entities: no ASCII alnum/underscore and no decimal point on either side.
NUM_L = r"(?<![0-9A-Za-z_])(?<![0-9][.,])"
NUM_R = r"(?![0-9A-Za-z_])(?![.,][0-9])"
# Code-like entities (keys, IBAN, USCC, passports): no ASCII alnum on either side.
ALNUM_L = r"(?<![0-9A-Za-z_])"
ALNUM_R = r"(?![0-9A-Za-z_])"
# Password values: printable ASCII without space, quotes, comma, semicolon, backtick and <> (so our
# own placeholders such as <PASSWORD_1> are never taken for a value).
_PW_VALUE = r"[!#-&(-+\--:=?-_a-~]{3,200}+"
_EXT = r"(?:[ ]?(?:x|ext\.?|#)[ ]?[0-9]{1,6})?"

Check = Callable[[str], "str | None"]


class Entity(NamedTuple):
    type: str
    start: int
    end: int


@dataclass(frozen=True)
class Detector:
    """One branch. ``check`` returns the entity type for a valid candidate, or None to reject it."""

    name: str
    type: str
    pattern: str
    check: Check | None = None
    context: tuple[str, ...] = ()
    context_window: int = 40
    # The pattern has a group named ``value``: only that part is the entity (e.g. after ``password=``).
    has_value: bool = False
    builtin: bool = True
    description: str = ""


def _typed(type_: str, validator: v.Validator) -> Check:
    def check(value: str) -> str | None:
        return type_ if validator(value) else None

    return check


def _card(value: str) -> str | None:
    if v.cn_bank_card(value):
        return "CN_BANK_CARD"
    if v.credit_card(value):
        return "CREDIT_CARD"
    return None


def _e164(value: str) -> str | None:
    main = re.split(r"[ ]?(?:x|ext\.?|#)", value, maxsplit=1)[0]
    return "PHONE" if v.e164(main) else None


_HEX = "[0-9A-Fa-f]"
_USCC = "[0-9A-HJ-NPQRTUWXY]"
_ALN = "[0-9A-Za-z_]"


def _lead(first: str, fence: str, rest: str, *, num: bool = False) -> str:
    """``first`` char class, then the left fence checked one character back, then the rest.

    Every branch starts with a plain character class so the regex engine can reject it at a position
    with a single table lookup; the fence (a lookbehind) runs only where the first character fits.
    """
    out = f"{first}(?<!{fence}.)"
    if num:
        out += r"(?<![0-9][.,].)"
    return out + rest


_AREA_INTL = r"(?:\(0?[1-9][0-9]{1,2}\)|0?[1-9][0-9]{1,2})"
_NANP_AREA = r"(?:\([0-9]{3}\)[ ]?|[0-9]{3}[.-])"

BUILTIN: tuple[Detector, ...] = (
    Detector(
        "private_key",
        "PRIVATE_KEY",
        # An unterminated block (a truncated answer) still takes its base64 body.
        r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]{1,20} ){0,3}"
        r"PRIVATE KEY-----|(?:\s*+(?:[A-Za-z0-9+/=]{8,}+|Proc-Type:[^\n]*+|DEK-Info:[^\n]*+))*+)",
        description="PEM private-key block",
    ),
    Detector(
        "jwt",
        "JWT",
        _lead("e", "[A-Za-z0-9_-]", r"yJ[A-Za-z0-9_-]{4,}+\.eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"),
        description="JSON Web Token (header and payload start with eyJ)",
    ),
    Detector(
        "aws_key",
        "AWS_ACCESS_KEY",
        _lead("A", _ALN, r"(?:KIA|SIA|BIA|CCA|IDA|ROA|GPA|NPA|NVA|IPA|PKA)[A-Z0-9]{16}") + ALNUM_R,
        description="AWS access key id",
    ),
    Detector(
        "github_token",
        "GITHUB_TOKEN",
        _lead("g", _ALN, r"(?:h[pousr]_[A-Za-z0-9]{36,255}+|ithub_pat_[A-Za-z0-9_]{22,255}+)") + ALNUM_R,
        description="GitHub token (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
    ),
    Detector(
        "slack_token",
        "SLACK_TOKEN",
        _lead("x", _ALN, r"ox[abposre]-[A-Za-z0-9-]{10,250}+"),
        description="Slack token (xoxb-, xoxp-, ...)",
    ),
    Detector(
        "openai_key",
        "OPENAI_KEY",
        _lead("s", "[A-Za-z0-9_-]", r"k-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,250}+"),
        description="OpenAI-style secret key (sk-...)",
    ),
    Detector(
        "password",
        "PASSWORD",
        _lead(
            "[PpSsCcAa]",
            "[A-Za-z0-9]",  # DB_PASSWORD= and AWS_SECRET_ACCESS_KEY= count too
            r"(?i:(?<=p)(?:assword|asswd|assphrase|asscode|wd|rivate[_-]?key)"
            r"|(?<=s)ecret(?:[_-]?(?:access[_-]?)?key)?|(?<=c)lient[_-]?secret"
            r"|(?<=a)(?:pi[_-]?key|ccess[_-]?token|uth[_-]?token|ws_secret_access_key))"
            r"""["']?[ \t]*+(?:[:=：]|=>)[ \t]*+["']?(?P<value>""" + _PW_VALUE + ")",
        ),
        has_value=True,
        description="value of a password=/secret:/api_key= style assignment",
    ),
    Detector(
        "password_zh",
        "PASSWORD",
        r"[密口](?:(?<=密)码|(?<=口)令)(?:是|为|[:=：])[ \t]*+(?P<value>" + _PW_VALUE + ")",
        has_value=True,
        description="value after 密码是/密码：",
    ),
    Detector(
        "email",
        "EMAIL",
        _lead(
            "[A-Za-z0-9]",
            "[A-Za-z0-9._%+-]",
            r"[A-Za-z0-9._%+-]{0,63}+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
            r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])",
        ),
        description="e-mail address",
    ),
    Detector(
        "iban",
        "IBAN",
        _lead("[A-Z]", _ALN, r"[A-Z][0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}+(?:[ ]?[A-Z0-9]{1,3})?") + ALNUM_R,
        _typed("IBAN", v.iban),
        description="IBAN (mod-97 check)",
    ),
    Detector(
        "cn_id",
        "CN_ID",
        _lead(
            "[1-9]",
            _ALN,
            r"[0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]",
            num=True,
        )
        + NUM_R,
        _typed("CN_ID", v.cn_resident_id),
        description="PRC resident identity number (GB 11643: birth date and check digit)",
    ),
    Detector(
        "cn_uscc",
        "CN_USCC",
        _lead(_USCC, _ALN, _USCC + "[0-9]{6}" + _USCC + "{10}") + ALNUM_R,
        _typed("CN_USCC", v.cn_uscc),
        description="Unified Social Credit Code (GB 32100 check character)",
    ),
    Detector(
        "card",
        "CREDIT_CARD",
        _lead(
            "[0-9]",
            _ALN,
            r"(?:[0-9]{12,18}|[0-9]{3}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{1,4}(?:\1[0-9]{1,3})?"
            r"|[0-9]{3}([ -])[0-9]{6}\2[0-9]{4,5})",
            num=True,
        )
        + NUM_R,
        _card,
        description="payment card: UnionPay 62... (CN_BANK_CARD) or international (issuer prefix + Luhn)",
    ),
    Detector(
        "mac",
        "MAC",
        _lead(
            _HEX,
            "[0-9A-Za-z:-]",
            "(?:"
            + _HEX
            + r"([:-])"
            + _HEX
            + r"{2}(?:\1"
            + _HEX
            + "{2}){4}|"
            + _HEX
            + r"{3}\."
            + _HEX
            + r"{4}\."
            + _HEX
            + "{4})",
        )
        + "(?![0-9A-Za-z:-])",
        description="MAC address",
    ),
    Detector(
        "ipv6",
        "IPV6",
        _lead(
            "[0-9A-Fa-f:]",
            "[0-9A-Za-z:.]",
            "(?:(?<=:)|" + _HEX + "{0,3}:)" + _HEX + r"{0,4}:[0-9A-Fa-f:]*+(?:\.[0-9]{1,3}){0,3}",
        )
        + "(?![0-9A-Za-z:])",
        _typed("IPV6", v.ipv6),
        description="IPv6 address",
    ),
    Detector(
        "ipv4",
        "IPV4",
        _lead("[0-9]", "[0-9A-Za-z_.]", r"[0-9]{0,2}(?:\.[0-9]{1,3}){3}") + r"(?![0-9A-Za-z_]|\.[0-9])",
        _typed("IPV4", v.ipv4),
        description="IPv4 address",
    ),
    Detector(
        "cn_phone",
        "CN_PHONE",
        _lead(
            "[+0(1]",
            _ALN,
            r"(?:(?<=\+)86[ -]?1|(?<=0)086[ -]?1|(?<=\()\+?86\)[ -]?1|(?<=1))[3-9][0-9](?:[ -]?[0-9]{4}){2}",
            num=True,
        )
        + NUM_R,
        description="PRC mobile number (1[3-9]x, optional +86, spaces or dashes)",
    ),
    Detector(
        "cn_landline",
        "CN_LANDLINE",
        # Area codes: 010 and 02x (3 digits, local numbers of 8) may be written without a separator;
        # 4-digit codes (0[3-9]xx) need a separator or parentheses, or any 12-digit number starting
        # with 0 would be a landline.
        _lead(
            "[+0(]",
            _ALN,
            r"(?:(?<=\+)86[ -]?" + _AREA_INTL + r"[ -]?|(?<=0)086[ -]?" + _AREA_INTL + r"[ -]?"
            r"|(?<=\()0[1-9][0-9]{1,2}\)[ -]?|(?<=0)(?:10|2[0-9])[ -]?|(?<=0)[3-9][0-9]{2}[ -])"
            r"[2-9][0-9]{6,7}(?:[ ]?(?:-|转|ext\.?)[ ]?[0-9]{1,5})?",
            num=True,
        )
        + NUM_R,
        description="PRC landline with area code",
    ),
    Detector(
        "phone_intl",
        "PHONE",
        _lead(r"\+", "[0-9A-Za-z_+]", r"[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,5}+\)?){2,6}" + _EXT) + NUM_R,
        _e164,
        description="international number in E.164 form (+country code, up to 15 digits)",
    ),
    Detector(
        "phone_nanp",
        "PHONE",
        _lead(
            "[+0-9(]",
            _ALN,
            r"(?:(?<=\+)1[ .-]?"
            + _NANP_AREA
            + r"|(?<=1)[ .-]?"
            + _NANP_AREA
            + r"|(?<=0)01[ .-]?"
            + _NANP_AREA
            + r"|(?<=\()[0-9]{3}\)[ ]?|(?<=[0-9])[0-9]{2}[.-])[0-9]{3}[.-][0-9]{4}"
            + _EXT,
            num=True,
        )
        + NUM_R,
        description="North American number ((555) 123-4567, 555-123-4567, +1 ...)",
    ),
    Detector(
        "phone_nanp_bare",
        "PHONE",
        # Ten digits with no separator: a valid NANP area code and exchange (N11 excluded). Unix
        # times in seconds start with 1 and are never taken.
        _lead("[2-9]", _ALN, r"(?!11)[0-9]{2}[2-9](?!11)[0-9]{6}", num=True) + NUM_R,
        description="North American number written as ten digits (area code and exchange 2-9)",
    ),
    Detector(
        "us_ssn",
        "US_SSN",
        _lead("[0-9]", _ALN, r"[0-9]{2}([- ])[0-9]{2}\1[0-9]{4}", num=True) + NUM_R,
        _typed("US_SSN", v.us_ssn),
        description="US social security number (area, group and serial rules)",
    ),
    Detector(
        "cn_passport",
        "CN_PASSPORT",
        _lead("[EGDSP]", _ALN, r"(?:(?<=[EG])[0-9]{8}|(?<=E)[A-HJ-NP-Z][0-9]{7}|(?<=[DSP])E[0-9]{7})")
        + ALNUM_R,
        description="PRC passport number (E/G + 8 digits, EA1234567, DE/SE/PE + 7 digits)",
    ),
)

ENTITY_TYPES: tuple[str, ...] = tuple(
    dict.fromkeys([d.type for d in BUILTIN if d.name != "card"] + ["CN_BANK_CARD", "CREDIT_CARD"])
)

# Prefilter for the built-ins: a trigger character and the cluster of entity characters around it
# (spaces only where a digit group, an upper-case group or an assignment value follows).
_TRIGGER = re.compile(r"[0-9@:=：_\-密口<](?:[!-~码令是为]++|[ \t]++(?=[0-9A-Z(+\"'])|(?<=[:=：])[ \t]++)*+")
# How far before its first trigger character an entity may begin (keywords, key prefixes, IBAN letters).
_BACK = {":": 40, "=": 40, "：": 40, "密": 0, "口": 0, "<": 0}
_TOKSTART = re.compile(r"[!-~]*+\Z")

# Response side only: our own placeholders, so they can be put back in one pass with the detection.
PLACEHOLDER_TYPE = "__placeholder__"


_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def scoped_flags(pattern: str) -> str:
    """``(?i)abc`` -> ``(?i:abc)``: global flags are only allowed at the start of the whole alternation."""
    m = _GLOBAL_FLAGS.match(pattern)
    return f"(?{m.group(1)}:{pattern[m.end() :]})" if m else pattern


def _numbered_groups_to_named(pattern: str, prefix: str) -> str:
    """Give every group a unique name so many detectors can share one alternation.

    Numbered groups and ``\\1`` references become named ones (numbers would shift when the branches
    are concatenated), and named groups get the branch prefix (``value`` -> ``d3_value``).
    """
    out: list[str] = []
    index = 0
    i = 0
    n = len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if not in_class and nxt.isdigit() and nxt != "0":
                out.append(f"(?P={prefix}_{nxt})")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
            if i + 1 < n and pattern[i + 1] == "^":
                out.append("^")
                i += 1
            if i + 1 < n and pattern[i + 1] == "]":
                out.append("]")
                i += 1
        elif ch == "(" and not pattern.startswith("(?", i):
            index += 1
            out.append(f"(?P<{prefix}_{index}>")
        elif pattern.startswith("(?P<", i) or pattern.startswith("(?P=", i):
            # Named groups get the branch prefix too: two custom detectors may both use (?P<value>).
            kind = pattern[i + 3]
            out.append(f"(?P{kind}{prefix}_")
            i += 4
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


@dataclass
class Scanner:
    """All detectors compiled into one alternation; ``scan`` returns validated, non-overlapping entities."""

    detectors: Sequence[Detector]
    placeholder_pattern: str | None = None
    # Only for detectors that all hold a trigger character (the built-ins); custom ones scan in full.
    windowed: bool = False
    _branches: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.detectors = list(self.detectors)
        self._branches = []
        for i, det in enumerate(self.detectors):
            # The empty group at the end names the branch: it closes last, so it is ``lastgroup``.
            self._branches.append(f"{_numbered_groups_to_named(det.pattern, f'd{i}')}(?P<d{i}>)")
        if self.placeholder_pattern is not None:
            self._branches.insert(0, f"{self.placeholder_pattern}(?P<ph>)")
        source = "|".join(self._branches) or "(?!)"
        self.source = source
        self._re = re.compile(source)
        # The same alternation for streaming: the ``regex`` module reports partial matches at the end
        # of the text, which tells exactly how short a tail must be held back.
        self._partial = regex.compile(source, flags=regex.V0)
        values = [
            b
            for d, b in zip(
                self.detectors, self._branches[-len(self.detectors) :] if self.detectors else [], strict=True
            )
            if d.has_value
        ]
        self._values_partial = regex.compile("|".join(values)) if values else None
        self._single: dict[str, re.Pattern[str]] = {}
        self._index = {f"d{i}": i for i in range(len(self.detectors))}
        self._order = [b.rsplit("(?P<", 1)[1][:-2] for b in self._branches]
        self._lower_context = [tuple(w.lower() for w in d.context) for d in self.detectors]

    # -- one pass ------------------------------------------------------------------------------
    def scan(self, text: str, pos: int = 0) -> list[Entity]:
        """All entities in ``text`` that start at ``pos`` or later, left to right, non-overlapping.
        Text before ``pos`` is still seen by the lookbehind fences."""
        if not self.windowed:
            found: list[Entity] = []
            self._scan_range(text, pos, len(text), found)
            return found
        return self._scan_windows(text, pos)

    def scan_started_before(self, text: str, lo: int, hi: int) -> list[Entity]:
        """Entities of matches that start in ``[lo, hi)`` (they may end anywhere)."""
        found: list[Entity] = []
        search = self._re.search
        pos = lo
        while pos < hi:
            m = search(text, pos)
            if m is None or m.start() >= hi:
                break
            accepted = self._accept(m.lastgroup, m, text)
            if accepted is None:
                pos = m.start() + 1
                continue
            found.append(accepted[0])
            pos = max(accepted[1], accepted[0].start + 1)
        return found

    def _scan_windows(self, text: str, pos: int) -> list[Entity]:
        # Prefilter: every built-in entity holds a trigger character (a digit, @, :, =, -, _, 密, 口
        # or <) or starts with a literal anchor (eyJ for JWTs, AKIA/ASIA for AWS keys that happen
        # to hold no digit). A C-speed scan finds the clusters around them, and the full alternation
        # runs only on a short window around each; prose between them is never tried branch by branch.
        found: list[Entity] = []
        n = len(text)
        done = pos  # end of the last entity: nothing before it can start a new one
        lo = hi = -1
        windows: Iterable[tuple[int, int]] = self._trigger_windows(text, pos)
        if "eyJ" in text or "AKIA" in text or "ASIA" in text:
            windows = heapq.merge(windows, _anchor_windows(text, pos))
        for start, stop in windows:
            if start <= hi + 16:  # close windows are scanned as one: fewer calls, same result
                hi = max(hi, stop)
                continue
            if hi > done:
                # Windows may overlap: a candidate cut short by a window's end is tried again.
                self._scan_range(text, max(done, lo), min(n, hi), found)
                if found:
                    done = found[-1].end
            lo, hi = start, stop
        if hi > done:
            self._scan_range(text, max(done, lo), min(n, hi), found)
        return found

    @staticmethod
    def _trigger_windows(text: str, pos: int) -> Iterator[tuple[int, int]]:
        back_of = _BACK.get
        tokstart = _TOKSTART.search
        for t in _TRIGGER.finditer(text, pos):
            start, stop = t.span()
            back = back_of(text[start])
            if back is not None:
                ws = start - back
            elif start > pos and "!" <= text[start - 1] <= "~":
                # Digits, @, - and _: the entity starts within the same run of ASCII characters
                # (IBAN letters, key prefixes, the local part of an e-mail address).
                ws = tokstart(text, max(pos, start - 64), start).start()
            else:
                ws = start
            yield max(pos, ws), stop + 2

    def _scan_range(self, text: str, pos: int, end: int, found: list[Entity]) -> None:
        """Add the entities that start in ``[pos, end)``; a candidate may run past ``end``."""
        n = len(text)
        search = self._re.search
        match = self._re.match
        while pos < end:
            m = search(text, pos, end)
            if m is None:
                return
            start = m.start()
            if end < n and m.end() >= end - 2:
                # The window's end may have cut this candidate short: look again without the limit.
                m = match(text, start)
                if m is None:
                    pos = start + 1
                    continue
            accepted = self._accept(m.lastgroup, m, text)
            if accepted is None:
                accepted = self._fallback(m.lastgroup, text, start, n)
            if accepted is None:
                pos = start + 1
                continue
            found.append(accepted[0])
            pos = max(accepted[1], accepted[0].start + 1)

    def _accept(self, group: str | None, m: re.Match[str], text: str) -> tuple[Entity, int] | None:
        """The entity for one match and where the scan goes on, or None when the candidate is invalid."""
        if group == "ph":
            return Entity(PLACEHOLDER_TYPE, m.start(), m.end()), m.end()
        i = self._index[group]  # type: ignore[index]
        det = self.detectors[i]
        start, stop = m.start(), m.end()
        if det.has_value:
            start, stop = m.span(f"{group}_value")
        value = text[start:stop]
        type_ = det.type
        if det.check is not None:
            type_ = det.check(value)
            if type_ is None:
                return None
        if det.context and not self._has_context(i, text, m.start()):
            return None
        return Entity(type_, start, stop), m.end()

    def _has_context(self, i: int, text: str, start: int) -> bool:
        window = text[max(0, start - self.detectors[i].context_window) : start].lower()
        return any(w in window for w in self._lower_context[i])

    def _fallback(self, group: str | None, text: str, start: int, end: int) -> tuple[Entity, int] | None:
        """The first branch's candidate failed validation: try the later branches at the same spot."""
        try:
            after = self._order.index(group) + 1  # type: ignore[arg-type]
        except ValueError:
            return None
        for name in self._order[after:]:
            pat = self._single.get(name)
            if pat is None:
                pat = self._single[name] = re.compile(self._branches[self._order.index(name)])
            m = pat.match(text, start, end)
            if m is not None:
                ent = self._accept(name, m, text)
                if ent is not None:
                    return ent
        return None

    # -- streaming ------------------------------------------------------------------------------
    def hold_from(self, text: str, floor: int) -> int:
        """Where the tail that could still grow into an entity begins (``len(text)`` when none).

        A position is held when a branch matches there partially up to the end of the text, when a
        candidate from there reaches the end or is followed only by separators (``DE89 3704 0044``
        + `` 0532``), when a longer candidate could still grow from there (``+2024-11`` complete,
        ``+2024-11-2`` the start of a longer number), or for a private-key block without its END
        line. The result is never below ``floor`` (text before it was already sent).

        Positions are tried one by one with ``match``: the regex module's ``search`` prefers a
        complete match anywhere over an earlier partial one, which would let a growing entity out.
        """
        n = len(text)
        match = self._partial.match
        fullmatch = self._partial.fullmatch
        # A keyword already sent (``password=``) whose value is still arriving.
        if floor and self._values_partial is not None and _ASSIGN.search(text, max(0, floor - 48), floor):
            vmatch = self._values_partial.match
            for p in range(max(0, floor - 48), floor):
                if text[p] in _KEYWORD_FIRST:
                    m = vmatch(text, p, partial=True)
                    if m is not None and (m.partial or m.end() >= n or _SEPARATORS.fullmatch(text, m.end())):
                        return floor
        # Nothing but a private-key block grows longer than this.
        lo = max(floor, n - _MAX_GROWING)
        begin = text.rfind("-----BEGIN", floor)
        if begin >= 0 and not _PEM_END.search(text, begin):
            return begin
        first = _FIRST_CHARS if self.windowed else None  # custom patterns may start with anything
        for p in range(lo, n):
            if first is not None and text[p] not in first:
                continue
            m = match(text, p, partial=True)
            if m is None:
                continue
            end = m.end()
            if m.partial or end >= n or _SEPARATORS.fullmatch(text, end):
                return p
            if text.startswith("-----BEGIN", p) and not _PEM_END.search(m.group()):
                return p
            if fullmatch(text, p, partial=True) is not None:
                return p
        return n


_ANCHORS = ("eyJ", "AKIA", "ASIA")
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]*+")


def _anchor_windows(text: str, pos: int) -> Iterator[tuple[int, int]]:
    starts = []
    for anchor in _ANCHORS:
        i = text.find(anchor, pos)
        while i >= 0:
            starts.append(i)
            i = text.find(anchor, i + 1)
    starts.sort()
    token_end = -1
    for i in starts:
        if i >= token_end:  # anchors inside one long token share its end (no quadratic rescans)
            token_end = _TOKEN.match(text, i).end()
        yield i, token_end + 2


_MAX_GROWING = 2048
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----")
# Characters a match can start with (built-ins, placeholders); custom detectors add theirs.
_FIRST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+(-:<密口")
_KEYWORD_FIRST = frozenset("PpSsCcAa密口")
_ASSIGN = re.compile(r"[:=：是为]")
# Only separators after a candidate: more text may still extend it (``+2024-11`` + ``-28``).
_SEPARATORS = re.compile(r"[\s\-.()+:/=_@%#：'\"]*")
