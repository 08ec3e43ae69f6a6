"""Alertmanager label matchers: ``name="value"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``.

Regexes are fully anchored, as in Alertmanager. Used by routes, inhibition rules and silences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .promql import Matcher

_MATCHER_RE = re.compile(
    r"""^\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^"{},\s][^{},]*?)\s*$"""
)


def parse_matcher(text: str) -> Matcher:
    """``'severity=~"critical|page"'`` -> Matcher. ``ValueError`` names the bad text."""
    m = _MATCHER_RE.match(text.strip().strip("{}"))
    if m is None:
        raise ValueError(f'bad matcher {text!r} (expected name="value", name!="v", name=~"re" or name!~"re")')
    value = m.group("value")
    if value.startswith('"'):
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    try:
        return Matcher(m.group("name"), m.group("op"), value)
    except Exception as exc:
        raise ValueError(f"bad matcher {text!r}: {exc}") from None


def parse_matchers(texts: Iterable[str]) -> list[Matcher]:
    out: list[Matcher] = []
    for text in texts:
        # One string may hold several comma-separated matchers: '{a="1", b=~"2"}'.
        parts = _split_commas(text.strip().removeprefix("{").removesuffix("}"))
        out.extend(parse_matcher(p) for p in parts if p.strip())
    return out


def _split_commas(text: str) -> list[str]:
    parts, buf, quoted, escape = [], [], False, False
    for ch in text:
        if escape:
            buf.append(ch)
            escape = False
            continue
        if ch == "\\":
            escape = True
            buf.append(ch)
            continue
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def matches(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


def format_matcher(m: Matcher) -> str:
    value = m.value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{m.name}{m.op}"{value}"'
