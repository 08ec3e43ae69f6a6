"""The Go-template subset Prometheus rule annotations use, rendered in-process.

Annotations stay in Prometheus' own syntax (``{{ $labels.gpu }}``, ``{{ $value | humanizePercentage }}``,
``{{ printf "%.1f" $value }}``) so an exported rule file renders the same text in Prometheus. Only
actions that print a pipeline are supported; ``check`` rejects control structures up front.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable
from typing import Any

from custos.regex import UserRegexError, compile_user_regex, expand_template

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.DOTALL)


class TemplateError(ValueError):
    pass


def _humanize(v: Any) -> str:
    v = float(v)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return f"{v:.4g}"
    if abs(v) >= 1:
        for prefix in ("", "k", "M", "G", "T", "P", "E", "Z"):
            if abs(v) < 1000:
                return f"{v:.4g}{prefix}"
            v /= 1000
        return f"{v:.4g}Y"
    for prefix in ("", "m", "u", "n", "p", "f", "a", "z"):
        if abs(v) >= 1:
            return f"{v:.4g}{prefix}"
        v *= 1000
    return f"{v:.4g}y"


def _humanize1024(v: Any) -> str:
    v = float(v)
    if abs(v) <= 1:
        return f"{v:.4g}"
    for prefix in ("", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi"):
        if abs(v) < 1024:
            return f"{v:.4g}{prefix}"
        v /= 1024
    return f"{v:.4g}Yi"


def _humanize_duration(v: Any) -> str:
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        return f"{v:.4g}"
    if v == 0:
        return "0s"
    if abs(v) < 1:
        if abs(v) >= 1e-3:
            return f"{v * 1e3:.4g}ms"
        if abs(v) >= 1e-6:
            return f"{v * 1e6:.4g}us"
        return f"{v * 1e9:.4g}ns"
    sign = "-" if v < 0 else ""
    v = abs(v)
    days, rem = divmod(int(v), 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    parts = []
    if days:
        parts.append(f"{days}d")
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{seconds}s")
    return sign + " ".join(parts)


def _printf(fmt: str, *args: Any) -> str:
    # Go verbs map to Python's % formatting for the common cases (%s %d %f %.2f %v %g).
    py = re.sub(r"%v", "%s", fmt)
    try:
        conv = tuple(int(a) if "%d" in py and isinstance(a, float) and a.is_integer() else a for a in args)
        return py % conv
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"printf {fmt!r}: {exc}") from None


def _re_replace_all(pattern: str, repl: str, text: str) -> str:
    """Prometheus' ``reReplaceAll``: the rule author's regex (RE2, as in Prometheus) replaced
    everywhere, ``$1`` and ``${name}`` in ``repl`` expanded as Go does."""
    try:
        regex = compile_user_regex(pattern, what="reReplaceAll pattern")
    except UserRegexError as exc:
        raise TemplateError(str(exc)) from None
    return regex.sub(lambda m: expand_template(repl, m), text)


FUNCS: dict[str, Callable[..., Any]] = {
    "humanize": _humanize,
    "humanize1024": _humanize1024,
    "humanizePercentage": lambda v: f"{float(v) * 100:.4g}%",
    "humanizeDuration": _humanize_duration,
    "printf": _printf,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": lambda s: str(s).title(),
    "reReplaceAll": lambda pattern, repl, text: _re_replace_all(str(pattern), str(repl), str(text)),
}


def _split(segment: str) -> list[str]:
    try:
        lexer = shlex.shlex(segment, posix=False)
        lexer.whitespace_split = True
        lexer.commenters = ""
        return list(lexer)
    except ValueError as exc:
        raise TemplateError(f"cannot read template action {segment!r}: {exc}") from None


def _operand(token: str, data: dict[str, Any]) -> Any:
    if token.startswith(('"', "`")):
        return token[1:-1].replace('\\"', '"')
    if token.startswith("$"):
        path = token[1:].split(".")
        root = {
            "labels": data["labels"],
            "value": data["value"],
            "externalLabels": data.get("external_labels", {}),
            "externalURL": data.get("external_url", ""),
        }
        if path[0] not in root:
            raise TemplateError(f"unknown variable ${path[0]} (use $labels, $value, $externalLabels)")
        value = root[path[0]]
        for part in path[1:]:
            value = value.get(part, "") if isinstance(value, dict) else ""
        return value
    if token.startswith("."):
        # "{{ .Labels.x }}" / "{{ .Value }}" are Prometheus' dot forms.
        parts = token[1:].split(".")
        head = parts[0]
        if head == "Labels":
            return data["labels"].get(parts[1], "") if len(parts) > 1 else data["labels"]
        if head == "Value":
            return data["value"]
        raise TemplateError(f"unknown field {token}")
    try:
        return float(token)
    except ValueError:
        raise TemplateError(f"unknown template word {token!r}") from None


def _call(words: list[str], data: dict[str, Any], piped: Any = None, has_piped: bool = False) -> Any:
    head = words[0]
    if head in FUNCS:
        args = [_operand(w, data) for w in words[1:]]
        if has_piped:
            args.append(piped)
        try:
            return FUNCS[head](*args)
        except TypeError as exc:
            raise TemplateError(f"{head}: {exc}") from None
    if has_piped or len(words) != 1:
        raise TemplateError(f"unknown template function {head!r}")
    return _operand(head, data)


def _format(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(value.items())) + "]"
    return str(value)


def render(
    text: str, labels: dict[str, str], value: float, external_labels: dict[str, str] | None = None
) -> str:
    data = {"labels": labels, "value": value, "external_labels": external_labels or {}}

    def action(m: re.Match[str]) -> str:
        body = m.group(1).strip()
        if body.startswith("/*"):
            return ""
        if re.match(r"^(if|else|end|range|with|define|template|block)\b", body):
            raise TemplateError(f"template control action {{{{ {body} }}}} is not supported in-process")
        result: Any = None
        for i, segment in enumerate(body.split("|")):
            words = _split(segment.strip())
            if not words:
                raise TemplateError(f"empty pipeline in {{{{ {body} }}}}")
            result = _call(words, data, result, has_piped=i > 0)
        return _format(result)

    return _ACTION.sub(action, text)


def check(text: str) -> None:
    """Raises ``TemplateError`` if ``text`` would fail to render."""
    render(text, {"alertname": "X", "instance": "i"}, 1.5)
