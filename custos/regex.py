"""User-supplied regular expressions, compiled with RE2.

Alert rules and matchers travel to Prometheus and Alertmanager, which use Go's regexp (RE2 syntax),
and custom redaction detectors run over every prompt. RE2 gives both what they need: the syntax
Prometheus accepts (a rule that passes here passes there), and matching in time linear in the input,
so no pattern (``(a+)+$``) can stall the event loop. What only a backtracking engine can do is refused
with a message that says so: backreferences, lookarounds, possessive quantifiers, atomic groups.

Only user input comes through here; the patterns Custos writes itself stay on ``re``/``regex``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import re2


class UserRegexError(ValueError):
    """A user-supplied regex that RE2 refuses; the message names where it came from and why."""


class UserRegex:
    """A compiled user regex: RE2 behind the part of ``re.Pattern``'s API callers use, offsets in str
    indexes, groups by number or name. The text searched may be a ``SearchText``, for many searches
    of one text."""

    __slots__ = ("_re", "groupindex")

    def __init__(self, compiled: Any) -> None:
        self._re = compiled
        self.groupindex: dict[str, int] = compiled.groupindex  # google-re2 builds it on every access

    @property
    def pattern(self) -> str:
        return self._re.pattern

    @property
    def groups(self) -> int:
        return self._re.groups

    def search(self, text: str | SearchText, pos: int = 0, endpos: int | None = None) -> UserMatch | None:
        return self._run(self._re.search, text, pos, endpos)

    def match(self, text: str | SearchText, pos: int = 0, endpos: int | None = None) -> UserMatch | None:
        return self._run(self._re.match, text, pos, endpos)

    def fullmatch(self, text: str | SearchText, pos: int = 0, endpos: int | None = None) -> UserMatch | None:
        return self._run(self._re.fullmatch, text, pos, endpos)

    def sub(self, repl: Callable[[Any], str], text: str, count: int = 0) -> str:
        """Every match replaced by ``repl(match)`` (google-re2's match: ``group``, ``re.groupindex``)."""
        return self._re.sub(repl, utf8_safe(text), count)

    def _run(
        self, method: Callable[..., Any], text: str | SearchText, pos: int, endpos: int | None
    ) -> UserMatch | None:
        encoded = text if isinstance(text, SearchText) else SearchText(text)
        n = len(encoded.text)
        start = encoded.byte(min(max(pos, 0), n))
        stop = len(encoded.data) if endpos is None or endpos >= n else encoded.byte(max(endpos, 0))
        m = method(encoded.data, start, stop)
        return None if m is None else UserMatch(self, m, encoded)


class UserMatch:
    """One match of a ``UserRegex``: ``start``/``end``/``span``/``group`` as ``re.Match``'s."""

    __slots__ = ("_encoded", "_m", "_whole", "re")

    def __init__(self, pattern: UserRegex, m: Any, encoded: SearchText) -> None:
        self.re = pattern
        self._m = m
        self._encoded = encoded
        start, end = m.span()  # asked for most often: converted once
        self._whole = (encoded.char(start), encoded.char(end))

    def span(self, group: int | str = 0) -> tuple[int, int]:
        if group == 0:
            return self._whole
        start, end = self._m.span(group if isinstance(group, int) else self.re.groupindex[group])
        if start < 0:  # the group did not take part
            return start, end
        return self._encoded.char(start), self._encoded.char(end)

    def start(self, group: int | str = 0) -> int:
        return self.span(group)[0]

    def end(self, group: int | str = 0) -> int:
        return self.span(group)[1]

    def group(self, group: int | str = 0) -> str | None:
        start, end = self.span(group)
        return None if start < 0 else self._encoded.text[start:end]


class SearchText:
    """A text prepared once for many searches (``UserRegex.search(SearchText(text), pos)``): google-re2
    encodes a str to UTF-8 on every call, which would make a scan loop over a long text quadratic.
    Offsets convert from the last conversion, so a scan moving forward converts in linear time."""

    __slots__ = ("_anchor", "_ascii", "_safe", "data", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._safe = utf8_safe(text)
        self.data = self._safe.encode("utf-8")
        self._ascii = len(self.data) == len(text)
        self._anchor = (0, 0)  # (str index, byte offset) of the same position; replaced whole

    def byte(self, index: int) -> int:
        if self._ascii:
            return index
        char, byte = self._anchor
        if index >= char:
            byte += len(self._safe[char:index].encode("utf-8"))
        else:
            byte -= len(self._safe[index:char].encode("utf-8"))
        self._anchor = (index, byte)
        return byte

    def char(self, offset: int) -> int:
        if self._ascii:
            return offset
        char, byte = self._anchor
        if offset >= byte:
            char += len(self.data[byte:offset].decode("utf-8"))
        else:
            char -= len(self.data[offset:byte].decode("utf-8"))
        self._anchor = (char, offset)
        return char


# RE2's own message (``invalid perl operator: (?=``) -> what a user can act on.
_EXPLANATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), explanation)
    for pattern, explanation in (
        (r"invalid escape sequence: \\[1-9]", "backreferences (\\1) are not supported"),
        (
            r"invalid perl operator: \(\?P$",
            "named backreferences (?P=name) and recursion (?P>name) are not supported",
        ),
        (r"invalid perl operator: \(\?[=!]", "lookahead (?=...) and (?!...) is not supported"),
        (r"invalid perl operator: \(\?<[=!]", "lookbehind (?<=...) and (?<!...) is not supported"),
        (r"invalid perl operator: \(\?>", "atomic groups (?>...) are not supported"),
        (r"invalid perl operator: \(\?#", "comments (?#...) are not supported"),
        (r"invalid perl operator: \(\?[a-zA-Z]", "unknown flag: RE2 knows the flags i, m, s and U"),
        (r"bad repetition operator: [*+?}]\+", "possessive quantifiers (a++, a*+) are not supported"),
        (r"invalid escape sequence: \\Z", "\\Z is not supported: use $ (or \\z) for the end of the text"),
        (r"invalid repetition size", "a repetition count is above 1000 or {min,max} has min > max"),
        (r"pattern too large", "the pattern is too large (RE2's memory limit for one regex)"),
    )
)


def compile_user_regex(
    pattern: str, *, what: str, anchored: bool = False, dot_all: bool = False
) -> UserRegex:
    """``pattern`` compiled with RE2; ``UserRegexError`` naming ``what`` (e.g. ``matcher job=~"a("``)
    and the reason when RE2 refuses it.

    ``anchored``: the whole value must match, as Prometheus and Alertmanager anchor label matchers
    (``^(?:pattern)$``). ``dot_all``: ``.`` also matches a newline (PromQL does, Alertmanager does not).
    """
    if utf8_safe(pattern) != pattern:
        raise UserRegexError(_refusal(pattern, what, "not valid UTF-8 (a lone surrogate)"))
    _refuse_unsupported_escapes(pattern, what, anchored)
    options = re2.Options()
    options.log_errors = False  # RE2 would also print every refused pattern to stderr
    options.dot_nl = dot_all
    compiled = _compile(pattern, pattern, what, options)
    if not anchored:
        return compiled
    # The bare pattern compiled, so it cannot close the group early (``a)|(b``) and unanchor itself.
    return _compile(f"^(?:{pattern})$", pattern, what, options)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """``text`` as RE2 can take it: a lone surrogate (``surrogateescape`` decoding makes them; no UTF-8
    encoder takes one) becomes U+FFFD. One character for one, so offsets into the result are offsets
    into ``text``."""
    if text.isascii() or not _LONE_SURROGATE.search(text):
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


_REFERENCE = re.compile(r"\$(?:\$|(\w+)|\{(\w+)\})")


def expand_template(template: str, match: Any) -> str:
    """``template`` with group references filled in from ``match``, as Go's ``Regexp.Expand`` (what
    Prometheus' ``label_replace`` and ``reReplaceAll`` use): ``$1`` or ``${1}`` by number, ``$name`` or
    ``${name}`` by name (as long as possible: ``$1x`` is ``${1x}``), ``$$`` for ``$``. A group that does
    not exist or did not take part is empty."""

    def reference(ref: re.Match[str]) -> str:
        if ref.group() == "$$":
            return "$"
        name = ref.group(1) or ref.group(2)
        index = int(name) if name.isascii() and name.isdigit() else match.re.groupindex.get(name)
        if index is None or index > match.re.groups:
            return ""
        return match.group(index) or ""

    return _REFERENCE.sub(reference, template)


def _compile(source: str, pattern: str, what: str, options: re2.Options) -> UserRegex:
    try:
        return UserRegex(re2.compile(source, options))
    except re2.error as exc:
        raise UserRegexError(_message(pattern, what, exc)) from None


def _message(pattern: str, what: str, exc: re2.error) -> str:
    # google-re2 hands RE2's message over as bytes, without attributes.
    reason = (
        exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    )
    for known, explanation in _EXPLANATIONS:
        if known.search(reason):
            reason = f"{explanation} ({reason})"
            break
    return _refusal(pattern, what, reason)


def _refusal(pattern: str, what: str, reason: str) -> str:
    return f"{what}: {pattern!r} is not a valid regular expression in RE2 syntax: {reason}"


def _refuse_unsupported_escapes(pattern: str, what: str, anchored: bool) -> None:
    escapes = _escapes(pattern)
    if "\\C" in escapes:
        # RE2 accepts \C (any byte), Go's regexp (Prometheus) does not; it could also split a UTF-8
        # character, and a match inside one cannot be mapped back to the text.
        raise UserRegexError(_refusal(pattern, what, "\\C (any byte) is not supported"))
    if anchored and escapes[-1:] == ["\\Q"]:
        # Quoting runs to the end: it would swallow the anchoring's closing ``)$`` (Prometheus too).
        raise UserRegexError(_refusal(pattern, what, "\\Q...\\E quoting is not closed with \\E"))


def _escapes(pattern: str) -> list[str]:
    """The escapes (``\\d``, ``\\C``, ...) outside ``\\Q...\\E`` quoting, in order; the last is ``\\Q``
    when quoting runs to the end of the pattern."""
    found: list[str] = []
    i = 0
    while i < len(pattern) - 1:
        if pattern[i] != "\\":
            i += 1
            continue
        pair = pattern[i : i + 2]
        found.append(pair)
        if pair == "\\Q":
            end = pattern.find("\\E", i + 2)
            if end < 0:
                break
            found.append("\\E")
            i = end
        i += 2
    return found
