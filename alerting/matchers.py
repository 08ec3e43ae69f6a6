"""Alertmanager label matchers: ``name="value"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``.

Parsed exactly as Alertmanager's classic parser (``pkg/labels/parse.go``) does, so a matcher that
works in an Alertmanager config or with amtool works here, and the other way round:

- a label name is ``[a-zA-Z_:][a-zA-Z0-9_:]*``; whitespace around the name, operator and value is
  dropped;
- the value may be double-quoted; inside it ``\\"`` is a quote, ``\\n`` a line feed and ``\\\\`` a
  backslash; any other backslash is literal; an unescaped ``"`` is an error;
- several matchers: ``{a="b", c=~"d"}``, split at commas outside quotes; the braces and a trailing
  comma are optional;
- regexes are RE2 and fully anchored (``^(?:re)$``); ``.`` does not match a line feed.

Used by routes, inhibition rules and silences (admin API, ``custos alerts silence``, config files).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import re2

from custos.regex import utf8_safe

from .promql import Matcher

# Alertmanager's own expression, compiled with RE2 as Go compiles it (same \s, same lazy value).
_MATCHER = re2.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*((?s).*?)\s*$")
_SYNTAX = (
    'expected name="value", name!="value", name=~"regex" or name!~"regex"; a label name is letters, '
    "digits, _ and :, not starting with a digit"
)
_UNESCAPE = {"n": "\n", '"': '"', "\\": "\\"}


def parse_matcher(text: str) -> Matcher:
    """``'severity=~"critical|page"'`` -> Matcher. ``ValueError`` names the bad matcher and why."""
    if utf8_safe(text) != text:
        raise ValueError(f"bad matcher {text!r}: not valid UTF-8")
    m = _MATCHER.search(text)
    if m is None:
        raise ValueError(f"bad matcher {text!r} ({_SYNTAX})")
    name, op, raw = m.group(1), m.group(2), m.group(3)
    value = _unquote(raw)
    if value is None:
        raise ValueError(f'bad matcher {text!r}: the value holds an unescaped double quote (\\" is a quote)')
    try:
        return Matcher(name, op, value, dot_all=False)
    except ValueError as exc:
        raise ValueError(f"bad matcher {text!r}: {exc}") from None


def _unquote(raw: str) -> str | None:
    """The value with its optional quotes removed and escapes resolved; None for a stray quote."""
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(body):
        last = i == len(body) - 1
        if escaped:
            escaped = False
            out.append(_UNESCAPE.get(ch, "\\" + ch))  # a spurious escape keeps its backslash
        elif ch == "\\":
            escaped = not last  # a backslash at the very end is literal
            if last:
                out.append(ch)
        elif ch == '"':
            if not quoted or not last:
                return None
            quoted = False  # the closing quote
        else:
            out.append(ch)
    return None if quoted else "".join(out)


def parse_matcher_list(text: str) -> list[Matcher]:
    """One string with any number of matchers, as Alertmanager's ``ParseMatchers``:
    ``{foo="bar", baz=~"q.*"}``, ``foo=bar,baz!=quux``; ``{}`` is none."""
    return [parse_matcher(part) for part in _split(text.removeprefix("{").removesuffix("}"))]


def _split(text: str) -> list[str]:
    # At commas outside double quotes; an escaped quote (\") does not open or close quoting.
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text:
        if ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        if ch == '"':
            quoted = quoted if escaped else not quoted
            escaped = False
        elif ch == "\\":
            escaped = not escaped
        elif ch != ",":  # a comma inside quotes leaves a pending escape as it is (as parse.go)
            escaped = False
        buf.append(ch)
    last = "".join(buf).strip()
    if last:  # a trailing comma (and whitespace) is allowed
        parts.append(last)
    return parts


def parse_matchers(texts: Iterable[str]) -> list[Matcher]:
    """Every matcher of every string (each may hold a ``{...}`` list, see ``parse_matcher_list``)."""
    return [m for text in texts for m in parse_matcher_list(text)]


def matches(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


def matcher_text(name: str, op: str, value: str) -> str:
    """``name op "value"`` with the value escaped as Alertmanager prints it (parses back the same)."""
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'{name}{op}"{escaped}"'


def format_matcher(m: Matcher) -> str:
    return matcher_text(m.name, m.op, m.value)
