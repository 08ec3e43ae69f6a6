"""Alertmanager matchers parsed as Alertmanager's classic parser (``pkg/labels/parse.go``) parses them.

The table holds the inputs and results of Alertmanager's own parser tests (``parse_test.go``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from alerting.matchers import format_matcher, matcher_text, parse_matcher_list, parse_matchers
from alerting.silences import SilenceStore

EQ, NE, RE, NRE = "=", "!=", "=~", "!~"

PARSED = [
    ("{}", []),
    ("{foo='}", [("foo", EQ, "'")]),
    ("{foo=`}", [("foo", EQ, "`")]),
    ('{foo=\\"}', [("foo", EQ, '"')]),
    ("{foo=bar}", [("foo", EQ, "bar")]),
    ('{foo="bar"}', [("foo", EQ, "bar")]),
    ("{foo=~bar.*}", [("foo", RE, "bar.*")]),
    ('{foo=~"bar.*"}', [("foo", RE, "bar.*")]),
    ("{foo!=bar}", [("foo", NE, "bar")]),
    ('{foo!="bar"}', [("foo", NE, "bar")]),
    ("{foo!~bar.*}", [("foo", NRE, "bar.*")]),
    ('{foo!~"bar.*"}', [("foo", NRE, "bar.*")]),
    ('{foo="bar", baz!="quux"}', [("foo", EQ, "bar"), ("baz", NE, "quux")]),
    ('{foo="bar", baz!~"quux.*"}', [("foo", EQ, "bar"), ("baz", NRE, "quux.*")]),
    (
        '{foo="bar",baz!~".*quux", derp="wat"}',
        [("foo", EQ, "bar"), ("baz", NRE, ".*quux"), ("derp", EQ, "wat")],
    ),
    ('{foo="bar", instance=~"some-api.*"}', [("foo", EQ, "bar"), ("instance", RE, "some-api.*")]),
    ('{foo=""}', [("foo", EQ, "")]),
    ('{foo="bar,quux", job="job1"}', [("foo", EQ, "bar,quux"), ("job", EQ, "job1")]),
    ('{foo = "bar", dings != "bums", }', [("foo", EQ, "bar"), ("dings", NE, "bums")]),
    ("foo=bar,dings!=bums", [("foo", EQ, "bar"), ("dings", NE, "bums")]),
    (
        '{quote="She said: \\"Hi, ladies! That\'s gender-neutral…\\""}',
        [("quote", EQ, 'She said: "Hi, ladies! That\'s gender-neutral…"')],
    ),
    ('statuscode=~"5.."', [("statuscode", RE, "5..")]),
    ("tricky=~~~", [("tricky", RE, "~~")]),
    ('trickier==\\\\=\\=\\"', [("trickier", EQ, '=\\=\\="')]),
    (
        'contains_quote != "\\"" , contains_comma !~ "foo,bar" , ',
        [("contains_quote", NE, '"'), ("contains_comma", NRE, "foo,bar")],
    ),
    ("{foo=bar}}", [("foo", EQ, "bar}")]),
    ("{foo=bar}},}", [("foo", EQ, "bar}}")]),
    ("{foo=,bar=}}", [("foo", EQ, ""), ("bar", EQ, "}")]),
    ("{foo=bar\\t}", [("foo", EQ, "bar\\t")]),  # a spurious escape keeps its backslash
    ("{foo=bar\\n}", [("foo", EQ, "bar\n")]),
    ("{foo=bar\\}", [("foo", EQ, "bar\\")]),  # a backslash at the end is literal
    ("{foo=bar\\\\}", [("foo", EQ, "bar\\")]),
    ('{foo=bar\\"}', [("foo", EQ, 'bar"')]),
    ("job=", [("job", EQ, "")]),
    ("{foo=", [("foo", EQ, "")]),
    ("{foo=}b", [("foo", EQ, "}b")]),
    # Label names as Prometheus writes recording rules: colons allowed.
    ('job:request_rate:5m="x"', [("job:request_rate:5m", EQ, "x")]),
]

REFUSED = [
    (",", "bad matcher ''"),
    ("{,}", "bad matcher ''"),
    ('job="value', "unescaped double quote"),
    ('job=value"', "unescaped double quote"),
    ('trickier==\\\\=\\=\\""', "unescaped double quote"),
    ('contains_unescaped_quote = foo"bar', "unescaped double quote"),
    ('{invalid-name = "valid label"}', "bad matcher 'invalid-name = \"valid label\"'"),
    ('{foo=~"invalid[regexp"}', "missing ]"),
    # Double-escaped strings (a matcher quoted once too often).
    ('"{foo=\\"bar"}', "bad matcher"),
    ('"foo=\\"bar"', "bad matcher"),
    ('"foo=\\"bar\\""', "bad matcher"),
    ('"foo=\\"bar\\"', "bad matcher"),
    ('"{foo=\\"bar\\"}"', "bad matcher"),
    ('"foo="bar""', "bad matcher"),
    ("{{foo=", "bad matcher '{foo='"),
    # Regexes RE2 (and so Alertmanager) refuses.
    ('alertname=~"(Custos)\\\\1"', "backreferences"),
    ('alertname=~"Custos(?=GPU)"', "lookahead"),
    ("1gpu=0", "not starting with a digit"),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parsed_as_alertmanager_parses(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert [(m.name, m.op, m.value) for m in parse_matcher_list(text)] == expected


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_refused_as_alertmanager_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="bad matcher") as info:
        parse_matcher_list(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_regexes_are_anchored_and_dot_stops_at_a_line_feed() -> None:
    (gpu,) = parse_matchers(['gpu=~"0|1"'])
    assert gpu.matches("0") and not gpu.matches("10") and not gpu.matches("01")
    (summary,) = parse_matchers(['summary=~"disk.*"'])
    assert summary.matches("disk full") and not summary.matches("disk\nfull")  # as Alertmanager
    (negated,) = parse_matchers(['severity!~"warn.*"'])
    assert negated.matches("critical") and not negated.matches("warning")


def test_catastrophic_regex_cannot_stall_matching() -> None:
    (evil,) = parse_matchers(['instance=~"(a+)+$"'])
    assert not evil.matches("a" * 100_000 + "!")


@pytest.mark.parametrize("value", ['say "hi"', "back\\slash", "line\nfeed", "comma, brace}", "ü→☃"])
def test_printed_matchers_parse_back_the_same(value: str) -> None:
    (m,) = parse_matcher_list(matcher_text("x", NRE, value))
    assert (m.name, m.op, m.value) == ("x", NRE, value)
    assert parse_matcher_list(format_matcher(m))[0].value == value


def test_a_stored_silence_re2_refuses_mutes_nothing_and_the_others_still_work(tmp_path: Path) -> None:
    # silences.json written before matchers were RE2: a lookahead no longer parses.
    store = SilenceStore(tmp_path / "silences.json")
    kept = store.add(['alertname="GPUHot"'], time.time() + 3600, created_by="alice", comment="ok")
    data = json.loads(store.path.read_text())
    old = dict(data["silences"][0], id="old", matchers=['alertname=~"GPU(?!Lost)"'])
    store.path.write_text(json.dumps({"silences": [*data["silences"], old]}))
    store.reload()
    assert {s.id for s in store.list()} == {kept.id, "old"}
    now = time.time()
    assert store.silenced_by({"alertname": "GPUHot"}, now) == [kept.id]
    assert store.silenced_by({"alertname": "GPUCold"}, now) == []
