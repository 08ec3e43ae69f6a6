"""User-supplied regexes (``custos.regex``): RE2 syntax as Prometheus reads it, clear refusals, linear
time whatever the pattern, anchoring, and ``re``'s offsets on any text."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from custos.regex import SearchText, UserRegexError, compile_user_regex, expand_template

# Go's regexp (Prometheus, Alertmanager) accepts these ...
ACCEPTED = [
    "5..",
    "(?i)critical|page",
    "[[:alpha:]]+",
    r"\pL+",
    "(?P<gpu>[0-9]+)",
    "a{2,5}",
    r"\Qa.b\E",
    "(?U)a+",
    r"\x{1F600}",
    "a{,3}",  # a literal "{,3}" in RE2
    r"\z",
    r"\123",
    "",
]
# ... and refuses these, each for the reason the message gives.
REFUSED = {
    r"(a)\1": "backreferences",
    "(?P<x>a)(?P=x)": "named backreferences",
    "Custos(?=GPU)": "lookahead",
    "a(?!b)": "lookahead",
    "(?<=a)b": "lookbehind",
    "(?<!a)b": "lookbehind",
    "a++": "possessive",
    "(?>a)": "atomic groups",
    r"a\Z": r"use $ (or \z)",
    "(?x)a": "RE2 knows the flags i, m, s and U",
    "a{1001}": "above 1000",
    r"\C": r"\C (any byte)",
    "(0": "missing )",
    "[a": "missing ]",
    r"\8": "invalid escape sequence",
}


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_re2_accepts_what_prometheus_accepts(pattern: str) -> None:
    compile_user_regex(pattern, what="test", anchored=True)


@pytest.mark.parametrize(("pattern", "reason"), REFUSED.items())
def test_refusals_name_the_place_and_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(UserRegexError) as info:
        compile_user_regex(pattern, what='matcher job=~"x"')
    message = str(info.value)
    assert message.startswith(
        f'matcher job=~"x": {pattern!r} is not a valid regular expression in RE2 syntax: '
    )
    assert reason in message and "\n" not in message


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize("pattern", [*ACCEPTED, *REFUSED])
def test_prometheus_agrees(pattern: str, tmp_path: Path) -> None:
    """The same verdict as Prometheus' own parser (``promtool check rules``) on a label matcher."""
    expr = f"up{{job=~{json.dumps(pattern)}}}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"groups:\n- name: g\n  rules:\n  - alert: A\n    expr: {json.dumps(expr)}\n")
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    try:
        compile_user_regex(pattern, what="test", anchored=True)
        ours = True
    except UserRegexError:
        ours = False
    assert ours == (checked.returncode == 0), checked.stdout + checked.stderr


def test_catastrophic_pattern_runs_in_linear_time() -> None:
    # Exponential on a backtracking engine; RE2 answers at once (no timing threshold: it finishes).
    evil = compile_user_regex("(a+)+$", what="test")
    text = "a" * 100_000 + "!"
    assert evil.search(text) is None
    assert compile_user_regex("(a|aa)+$", what="test", anchored=True).match(text) is None
    assert evil.search(text[:-1]).span() == (0, 100_000)


def test_anchoring_matches_the_whole_value_only() -> None:
    gpu = compile_user_regex("0|1", what="test", anchored=True)
    assert gpu.match("0") and gpu.match("1")
    assert gpu.match("10") is None and gpu.match("01") is None and gpu.search("x0") is None
    assert compile_user_regex("0|1", what="test").search("x10")  # unanchored: anywhere
    # A pattern cannot close the anchoring group itself: refused as it stands, never unanchored.
    with pytest.raises(UserRegexError, match="unexpected \\)"):
        compile_user_regex("a)|(b", what="test", anchored=True)
    with pytest.raises(UserRegexError, match=r"not closed with \\E"):
        compile_user_regex(r"\Qab", what="test", anchored=True)


def test_dot_matches_a_line_feed_only_when_asked() -> None:
    assert compile_user_regex("a.b", what="t", anchored=True).match("a\nb") is None
    assert compile_user_regex("a.b", what="t", anchored=True, dot_all=True).match("a\nb")


def test_offsets_are_str_indexes_on_any_text() -> None:
    # Searched as UTF-8 bytes, reported as ``re`` would: str indexes, groups by number and name.
    emp = compile_user_regex(r"EMP-(?P<num>[0-9]{6})", what="t")
    text = "工号 EMP-123456，😀 EMP-654321"
    first = emp.search(text)
    assert first is not None and first.span() == (3, 13) and first.group() == "EMP-123456"
    assert first.span("num") == (7, 13) and first.group(1) == "123456"
    # One text searched many times is encoded once; the offsets are the same.
    subject = SearchText(text)
    second = emp.search(subject, first.end())
    assert second is not None and text[second.start() : second.end()] == "EMP-654321"
    assert second.span() == emp.search(text, first.end()).span()
    assert emp.search(subject, second.start() + 1) is None
    assert emp.match(subject, second.start()) is not None and emp.search(subject, 0, 12) is None
    assert emp.search(subject, 3).span("num") == (7, 13)  # backwards again
    # A lone surrogate (surrogateescape decoding) cannot be UTF-8: matched around, never a crash.
    broken = "\udcff EMP-111111"
    assert emp.search(broken).span() == (2, 12)


def test_expand_template_follows_go() -> None:
    m = compile_user_regex(r"(?P<host>[a-z]+):(\d+)", what="t").search("db:5432")
    assert expand_template("$host/$2/${1}x/$$/$9/$nope/${host}/$", m) == "db/5432/dbx/$///db/$"
    assert expand_template("$1x", m) == ""  # $1x is ${1x}: no such group, as in Go
