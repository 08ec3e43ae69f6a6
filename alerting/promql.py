"""A PromQL subset, parsed and evaluated in-process over ``alerting.tsdb.Store``.

Rule expressions are written in PromQL so the same text runs here (no Prometheus needed) and in
Prometheus itself (``custos alerts export``). The subset covers what alert rules use: selectors with
``= != =~ !~`` matchers, range selectors and ``offset``, ``rate/irate/increase/delta`` and the
``*_over_time`` family, ``histogram_quantile``, aggregations (``sum avg min max count quantile
stddev stdvar topk bottomk`` with ``by``/``without``), arithmetic, comparisons (with ``bool``),
``and/or/unless`` and vector matching with ``on``/``ignoring``/``group_left``/``group_right``.
Semantics follow Prometheus 2.x (rate extrapolation, 5m lookback, inclusive range start) so that
``promtool test rules`` and this evaluator agree on the same input series.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from custos.regex import UserRegex, UserRegexError, compile_user_regex, expand_template

LOOKBACK_S = 300.0

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs, including __name__


class PromQLError(ValueError):
    """A syntax or type error in an expression; the message names the position and the problem."""


# -- durations ------------------------------------------------------------------------------------
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str | float | int) -> float:
    """``"1h30m"`` -> 5400.0. Numbers are seconds. Raises ``ValueError`` naming the bad text."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"duration {text!r} must not be negative")
        return float(text)
    s = str(text).strip()
    if s in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 5m, 1h30m, 2d)")
    return total


def format_duration(seconds: float) -> str:
    """5400 -> ``"1h30m"``: the Prometheus spelling, for exported rules."""
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    out = []
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


def anchored_regex(pattern: str, what: str, dot_all: bool = True) -> UserRegex:
    """A user's regex as Prometheus compiles a matcher's or label_replace's: RE2, matching the whole
    value; ``PromQLError`` naming ``what`` and the reason when RE2 refuses it."""
    try:
        return compile_user_regex(pattern, what=what, anchored=True, dot_all=dot_all)
    except UserRegexError as exc:
        raise PromQLError(str(exc)) from None


# -- AST --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str
    regex: UserRegex | None = None
    # Regexes are RE2 and anchored, as in Prometheus, whose ``.`` also matches a line feed (since 3.0);
    # Alertmanager's does not (``alerting.matchers``).
    dot_all: bool = True

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            self.regex = anchored_regex(self.value, f"bad regex for label {self.name}", self.dot_all)

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.regex is not None
        hit = self.regex.match(value) is not None
        return hit if self.op == "=~" else not hit


@dataclass(slots=True)
class NumberLit:
    value: float


@dataclass(slots=True)
class StringLit:
    value: str


@dataclass(slots=True)
class Selector:
    name: str | None
    matchers: list[Matcher]
    range_s: float | None = None
    offset_s: float = 0.0


@dataclass(slots=True)
class Call:
    func: str
    args: list[Any]


@dataclass(slots=True)
class Aggregate:
    op: str
    expr: Any
    param: Any = None
    grouping: list[str] = field(default_factory=list)
    without: bool = False


@dataclass(slots=True)
class Binary:
    op: str
    lhs: Any
    rhs: Any
    return_bool: bool = False
    on: bool = False
    matching: list[str] | None = None  # labels named in on()/ignoring(); None: no clause
    card: str = "one-to-one"  # many-to-one (group_left), one-to-many (group_right)
    include: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Unary:
    op: str
    expr: Any


# -- lexer ------------------------------------------------------------------------------------------
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<bare_duration>(?:\d+(?:ms|y|w|d|h|m|s))+(?![\w:]))
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![a-zA-Z_:])|[Ii]nf(?![\w:])|NaN(?![\w:]))
  | (?P<duration>\[(?:\d+(?:ms|y|w|d|h|m|s))+\])
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){},\[\]])
    """,
    re.VERBOSE,
)

AGGREGATIONS = {
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "quantile",
    "topk",
    "bottomk",
    "group",
}
# Every function of PromQL (Prometheus 2.x/3.x): those missing from FUNCTIONS are "not supported
# in-process" (a Prometheus server evaluating the exported rules has them), anything else is a typo.
PROMQL_FUNCTIONS = frozenset(
    """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg
    delta deriv double_exponential_smoothing exp floor histogram_avg histogram_count histogram_fraction
    histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase
    info irate label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time
    min_over_time minute month pi predict_linear present_over_time quantile_over_time rad rate resets
    round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time
    stdvar_over_time sum_over_time tan tanh time timestamp vector year""".split()
)

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
}


@dataclass(slots=True)
class Token:
    kind: str
    text: str
    pos: int


def _tokenize(src: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if m is None:
            raise PromQLError(f"unexpected character {src[pos]!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(src)))
    return tokens


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# -- parser -----------------------------------------------------------------------------------------
# Binary operator precedence, lowest first (Prometheus: or < and/unless < comparisons < +- < */% < ^).
_PRECEDENCE = [
    {"or"},
    {"and", "unless"},
    {"==", "!=", "<=", "<", ">=", ">"},
    {"+", "-"},
    {"*", "/", "%", "atan2"},
    {"^"},
]
COMPARISONS = {"==", "!=", "<=", "<", ">=", ">"}
SET_OPS = {"and", "or", "unless"}


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.tokens = _tokenize(src)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, what: str) -> PromQLError:
        tok = self.tok
        found = "end of expression" if tok.kind == "eof" else repr(tok.text)
        return PromQLError(f"{what} at position {tok.pos + 1}, found {found}")

    def expect(self, text: str) -> Token:
        if self.tok.text != text:
            raise self.error(f"expected {text!r}")
        return self.next()

    def parse(self) -> Any:
        node = self.binary(0)
        if self.tok.kind != "eof":
            raise self.error("unexpected input")
        return node

    def binary(self, level: int) -> Any:
        if level == len(_PRECEDENCE):
            return self.unary()
        lhs = self.binary(level + 1)
        ops = _PRECEDENCE[level]
        while self.tok.text in ops and self.tok.kind in ("op", "ident"):
            op = self.next().text
            node = Binary(op, lhs, None)
            if self.tok.text == "bool":
                if op not in COMPARISONS:
                    raise self.error("bool modifier only applies to comparisons")
                self.next()
                node.return_bool = True
            if self.tok.text in ("on", "ignoring"):
                node.on = self.next().text == "on"
                node.matching = self.label_list()
                if self.tok.text in ("group_left", "group_right"):
                    node.card = "many-to-one" if self.next().text == "group_left" else "one-to-many"
                    if self.tok.text == "(":
                        node.include = self.label_list()
            # ^ is right-associative.
            node.rhs = self.binary(level) if op == "^" else self.binary(level + 1)
            lhs = node
        return lhs

    def unary(self) -> Any:
        if self.tok.text in ("-", "+") and self.tok.kind == "op":
            op = self.next().text
            inner = self.unary()
            if isinstance(inner, NumberLit):
                return NumberLit(-inner.value if op == "-" else inner.value)
            return Unary(op, inner) if op == "-" else inner
        return self.postfix(self.primary())

    def postfix(self, node: Any) -> Any:
        if self.tok.kind == "duration":
            if not isinstance(node, Selector) or node.range_s is not None:
                raise self.error("a range [..] can only follow a metric selector")
            node.range_s = parse_duration(self.next().text[1:-1])
        if self.tok.text == "offset":
            if not isinstance(node, Selector):
                raise self.error("offset can only follow a metric selector")
            self.next()
            neg = False
            if self.tok.text == "-":
                self.next()
                neg = True
            tok = self.next()
            try:
                node.offset_s = parse_duration(tok.text) * (-1 if neg else 1)
            except ValueError:
                raise PromQLError(f"bad offset duration {tok.text!r} at position {tok.pos + 1}") from None
        return node

    def primary(self) -> Any:
        tok = self.tok
        if tok.kind == "number":
            self.next()
            text = tok.text
            return NumberLit(float(int(text, 16)) if text.startswith("0x") else float(text))
        if tok.kind == "string":
            self.next()
            return StringLit(_unquote(tok.text))
        if tok.text == "(":
            self.next()
            node = self.binary(0)
            self.expect(")")
            return node
        if tok.text == "{":
            return self.selector(None)
        if tok.kind == "ident":
            name = tok.text
            self.next()
            if name in AGGREGATIONS and self.tok.text in ("(", "by", "without"):
                return self.aggregate(name)
            if self.tok.text == "(" and name in FUNCTIONS:
                return self.call(name)
            if self.tok.text == "(" and name in PROMQL_FUNCTIONS:
                # A PromQL function this in-process evaluator does not implement (predict_linear,
                # holt_winters, ...): say so instead of "unexpected input".
                raise PromQLError(
                    f"function {name!r} at position {tok.pos + 1} is not supported in-process "
                    f"(supported: {', '.join(sorted(FUNCTIONS))}); a Prometheus server evaluating "
                    "the exported rules supports every PromQL function"
                )
            if name in _KEYWORDS:
                raise PromQLError(f"unexpected keyword {name!r} at position {tok.pos + 1}")
            return self.selector(name)
        raise self.error("expected a number, selector, function or '('")

    def label_list(self) -> list[str]:
        self.expect("(")
        names: list[str] = []
        while self.tok.text != ")":
            if self.tok.kind != "ident":
                raise self.error("expected a label name")
            names.append(self.next().text)
            if self.tok.text == ",":
                self.next()
            elif self.tok.text != ")":
                raise self.error("expected ',' or ')'")
        self.next()
        return names

    def selector(self, name: str | None) -> Selector:
        matchers: list[Matcher] = []
        if self.tok.text == "{":
            self.next()
            while self.tok.text != "}":
                if self.tok.kind != "ident":
                    raise self.error("expected a label name")
                label = self.next().text
                if self.tok.text not in ("=", "!=", "=~", "!~"):
                    raise self.error("expected a label matcher operator (=, !=, =~, !~)")
                op = self.next().text
                if self.tok.kind != "string":
                    raise self.error("expected a quoted label value")
                matchers.append(Matcher(label, op, _unquote(self.next().text)))
                if self.tok.text == ",":
                    self.next()
                elif self.tok.text != "}":
                    raise self.error("expected ',' or '}'")
            self.next()
        if name is None:
            named = [m for m in matchers if m.name == "__name__" and m.op == "="]
            if not any(not m.matches("") for m in matchers):
                raise PromQLError("a selector needs a metric name or a matcher that does not match empty")
            if named:
                name = named[0].value
        return Selector(name, matchers)

    def aggregate(self, op: str) -> Aggregate:
        node = Aggregate(op, None)
        if self.tok.text in ("by", "without"):
            node.without = self.next().text == "without"
            node.grouping = self.label_list()
        self.expect("(")
        if op in ("quantile", "topk", "bottomk"):
            node.param = self.binary(0)
            self.expect(",")
        node.expr = self.binary(0)
        self.expect(")")
        if self.tok.text in ("by", "without"):
            node.without = self.next().text == "without"
            node.grouping = self.label_list()
        return node

    def call(self, name: str) -> Call:
        self.expect("(")
        args: list[Any] = []
        while self.tok.text != ")":
            args.append(self.binary(0))
            if self.tok.text == ",":
                self.next()
            elif self.tok.text != ")":
                raise self.error("expected ',' or ')'")
        self.next()
        spec = FUNCTIONS[name]
        if not spec.min_args <= len(args) <= spec.max_args:
            raise PromQLError(f"{name}() takes {spec.min_args}..{spec.max_args} arguments, got {len(args)}")
        for i, kind in enumerate(spec.arg_types[: len(args)]):
            if kind == "range" and not (isinstance(args[i], Selector) and args[i].range_s is not None):
                raise PromQLError(f"{name}() expects a range vector like metric[5m] as argument {i + 1}")
        return Call(name, args)


def parse(expr: str) -> Any:
    """Parse an expression; ``PromQLError`` says where and what is wrong."""
    node = _Parser(expr).parse()
    _check_types(node)
    return node


def _check_types(node: Any) -> str:
    """Returns "scalar", "vector", "matrix" or "string"; rejects what PromQL rejects."""
    if isinstance(node, NumberLit):
        return "scalar"
    if isinstance(node, StringLit):
        return "string"
    if isinstance(node, Selector):
        return "matrix" if node.range_s is not None else "vector"
    if isinstance(node, Unary):
        return _check_types(node.expr)
    if isinstance(node, Call):
        for arg in node.args:
            _check_types(arg)
        return FUNCTIONS[node.func].returns
    if isinstance(node, Aggregate):
        if _check_types(node.expr) != "vector":
            raise PromQLError(f"{node.op}() expects an instant vector")
        return "vector"
    if isinstance(node, Binary):
        lt, rt = _check_types(node.lhs), _check_types(node.rhs)
        if "matrix" in (lt, rt) or "string" in (lt, rt):
            raise PromQLError(f"operator {node.op} needs scalars or instant vectors, not range vectors")
        if node.op in SET_OPS and (lt != "vector" or rt != "vector"):
            raise PromQLError(f"set operator {node.op} needs instant vectors on both sides")
        if node.op in COMPARISONS and lt == rt == "scalar" and not node.return_bool:
            raise PromQLError("comparisons between scalars must use the bool modifier")
        return "vector" if "vector" in (lt, rt) else "scalar"
    raise PromQLError(f"unsupported expression {node!r}")


# -- evaluation -------------------------------------------------------------------------------------
class SeriesSource(Protocol):
    def select(
        self, name: str | None, matchers: list[Matcher], start: float, end: float
    ) -> list[tuple[Labels, list[tuple[float, float | None]]]]: ...


Vector = list[tuple[Labels, float]]


def _drop_name(labels: Labels) -> Labels:
    return tuple(kv for kv in labels if kv[0] != "__name__")


def _get(labels: Labels, name: str) -> str:
    for k, v in labels:
        if k == name:
            return v
    return ""


def _with(labels: Labels, name: str, value: str) -> Labels:
    d = dict(labels)
    if value == "":
        d.pop(name, None)
    else:
        d[name] = value
    return tuple(sorted(d.items()))


class Evaluator:
    def __init__(self, source: SeriesSource, at: float) -> None:
        self.source = source
        self.at = at

    def eval(self, node: Any) -> Any:
        if isinstance(node, NumberLit):
            return node.value
        if isinstance(node, StringLit):
            return node.value
        if isinstance(node, Selector):
            if node.range_s is not None:
                return self.matrix(node)
            return self.instant(node)
        if isinstance(node, Unary):
            val = self.eval(node.expr)
            if isinstance(val, float):
                return -val
            return [(_drop_name(lb), -v) for lb, v in val]
        if isinstance(node, Call):
            return FUNCTIONS[node.func].fn(self, node.args)
        if isinstance(node, Aggregate):
            return self.aggregate(node)
        if isinstance(node, Binary):
            return self.binary(node)
        raise PromQLError(f"cannot evaluate {node!r}")

    def instant(self, sel: Selector) -> Vector:
        t = self.at - sel.offset_s
        out: Vector = []
        for labels, samples in self.source.select(sel.name, sel.matchers, t - LOOKBACK_S, t):
            if samples:
                value = samples[-1][1]
                if value is not None:  # a stale marker ends the series
                    out.append((labels, value))
        return out

    def matrix(self, sel: Selector) -> list[tuple[Labels, list[tuple[float, float]]]]:
        t = self.at - sel.offset_s
        assert sel.range_s is not None
        out = []
        for labels, samples in self.source.select(sel.name, sel.matchers, t - sel.range_s, t):
            points = [(ts, v) for ts, v in samples if v is not None]
            if points:
                out.append((labels, points))
        return out

    # aggregation ------------------------------------------------------------------------------
    def aggregate(self, node: Aggregate) -> Vector:
        vec: Vector = self.eval(node.expr)
        param = self.eval(node.param) if node.param is not None else None
        groups: dict[Labels, list[tuple[Labels, float]]] = {}
        for labels, value in vec:
            if node.without:
                drop = {*node.grouping, "__name__"}
                key = tuple(kv for kv in labels if kv[0] not in drop)
            else:
                keep = set(node.grouping)
                key = tuple(kv for kv in labels if kv[0] in keep)
            groups.setdefault(key, []).append((labels, value))
        out: Vector = []
        for key, members in groups.items():
            values = [v for _, v in members]
            op = node.op
            if op in ("topk", "bottomk"):
                k = int(param or 0)
                ranked = sorted(members, key=lambda m: m[1], reverse=op == "topk")[:k]
                out.extend(ranked)
                continue
            if op == "sum":
                r = math.fsum(values)
            elif op == "avg":
                r = math.fsum(values) / len(values)
            elif op == "min":
                r = min(values)
            elif op == "max":
                r = max(values)
            elif op == "count":
                r = float(len(values))
            elif op == "group":
                r = 1.0
            elif op in ("stddev", "stdvar"):
                mean = math.fsum(values) / len(values)
                var = math.fsum((v - mean) ** 2 for v in values) / len(values)
                r = math.sqrt(var) if op == "stddev" else var
            elif op == "quantile":
                r = _quantile(float(param), values)  # type: ignore[arg-type]
            else:
                raise PromQLError(f"unsupported aggregation {op}")
            out.append((key, r))
        return out

    # binary operators -------------------------------------------------------------------------
    def binary(self, node: Binary) -> Any:
        lhs = self.eval(node.lhs)
        rhs = self.eval(node.rhs)
        op = node.op
        if isinstance(lhs, float) and isinstance(rhs, float):
            return _arith(op, lhs, rhs, True)  # type: ignore[return-value]
        if op in SET_OPS:
            return self.set_op(node, lhs, rhs)
        if isinstance(lhs, float) or isinstance(rhs, float):
            scalar_left = isinstance(lhs, float)
            vec = rhs if scalar_left else lhs
            out: Vector = []
            for labels, value in vec:
                a, b = (lhs, value) if scalar_left else (value, rhs)
                r = _arith(op, a, b, node.return_bool)
                if r is None:
                    continue
                keep_name = op in COMPARISONS and not node.return_bool
                # A filtering comparison keeps the vector's own sample value.
                if op in COMPARISONS and not node.return_bool:
                    r = value
                out.append((labels if keep_name else _drop_name(labels), r))
            return out
        return self.vector_match(node, lhs, rhs)

    def _sig(self, node: Binary, labels: Labels) -> Labels:
        if node.matching is None:
            return _drop_name(labels)
        if node.on:
            keep = set(node.matching)
            return tuple(kv for kv in labels if kv[0] in keep)
        drop = {*node.matching, "__name__"}
        return tuple(kv for kv in labels if kv[0] not in drop)

    def set_op(self, node: Binary, lhs: Vector, rhs: Vector) -> Vector:
        rsigs = {self._sig(node, lb) for lb, _ in rhs}
        if node.op == "and":
            return [(lb, v) for lb, v in lhs if self._sig(node, lb) in rsigs]
        if node.op == "unless":
            return [(lb, v) for lb, v in lhs if self._sig(node, lb) not in rsigs]
        lsigs = {self._sig(node, lb) for lb, _ in lhs}
        return lhs + [(lb, v) for lb, v in rhs if self._sig(node, lb) not in lsigs]

    def vector_match(self, node: Binary, lhs: Vector, rhs: Vector) -> Vector:
        if node.card == "one-to-many":
            lhs, rhs = rhs, lhs
        one: dict[Labels, tuple[Labels, float]] = {}
        for labels, value in rhs:
            sig = self._sig(node, labels)
            if sig in one:
                raise PromQLError(
                    f"many-to-many matching not allowed for {node.op}: duplicate series on the "
                    f"{'left' if node.card == 'one-to-many' else 'right'} side for {dict(sig)}"
                )
            one[sig] = (labels, value)
        out: Vector = []
        seen: set[Labels] = set()
        for labels, value in lhs:
            sig = self._sig(node, labels)
            match = one.get(sig)
            if match is None:
                continue
            if node.card == "one-to-one":
                if sig in seen:
                    raise PromQLError(
                        f"multiple matches for labels {dict(sig)} on the left side of {node.op}"
                    )
                seen.add(sig)
            a, b = value, match[1]
            if node.card == "one-to-many":
                a, b = b, a
            r = _arith(node.op, a, b, node.return_bool)
            if r is None:
                continue
            filtering = node.op in COMPARISONS and not node.return_bool
            if filtering:
                r = value if node.card != "one-to-many" else match[1]
            out.append((self._result_labels(node, labels, match[0], filtering), r))
        return out

    def _result_labels(self, node: Binary, lhs: Labels, rhs: Labels, filtering: bool) -> Labels:
        labels = lhs if filtering else _drop_name(lhs)
        if node.card == "one-to-one":
            if node.matching is not None and not filtering:
                if node.on:
                    keep = set(node.matching)
                    labels = tuple(kv for kv in labels if kv[0] in keep)
                else:
                    drop = set(node.matching)
                    labels = tuple(kv for kv in labels if kv[0] not in drop)
            return labels
        for name in node.include:
            labels = _with(labels, name, _get(rhs, name))
        return labels


def _arith(op: str, a: float, b: float, return_bool: bool) -> float | None:
    if op in COMPARISONS:
        hit = {
            "==": a == b,
            "!=": a != b,
            ">": a > b,
            "<": a < b,
            ">=": a >= b,
            "<=": a <= b,
        }[op]
        if return_bool:
            return 1.0 if hit else 0.0
        return a if hit else None
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                return (
                    math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1, b)
                )
            return a / b
        if op == "%":
            return math.fmod(a, b) if b != 0 else math.nan
        if op == "^":
            return a**b
        if op == "atan2":
            return math.atan2(a, b)
    except (OverflowError, ZeroDivisionError):
        return math.nan
    raise PromQLError(f"unsupported operator {op}")


def _quantile(q: float, values: list[float]) -> float:
    if not values:
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    s = sorted(values)
    rank = q * (len(s) - 1)
    lo = max(0, math.floor(rank))
    hi = min(len(s) - 1, lo + 1)
    weight = rank - math.floor(rank)
    return s[lo] * (1 - weight) + s[hi] * weight


# -- functions --------------------------------------------------------------------------------------
@dataclass(slots=True)
class FuncSpec:
    fn: Callable[[Evaluator, list[Any]], Any]
    arg_types: list[str]
    returns: str
    min_args: int
    max_args: int


def _extrapolated(ev: Evaluator, args: list[Any], is_counter: bool, is_rate: bool) -> Vector:
    sel: Selector = args[0]
    assert sel.range_s is not None
    range_end = ev.at - sel.offset_s
    range_start = range_end - sel.range_s
    out: Vector = []
    for labels, points in ev.matrix(sel):
        if len(points) < 2:
            continue
        first_t, first_v = points[0]
        last_t, last_v = points[-1]
        result = last_v - first_v
        if is_counter:
            prev = first_v
            for _, v in points[1:]:
                if v < prev:
                    result += prev
                prev = v
        duration_to_start = first_t - range_start
        duration_to_end = range_end - last_t
        sampled = last_t - first_t
        if sampled <= 0:
            continue
        avg_step = sampled / (len(points) - 1)
        if is_counter and result > 0 and first_v >= 0:
            duration_to_zero = sampled * (first_v / result)
            duration_to_start = min(duration_to_start, duration_to_zero)
        threshold = avg_step * 1.1
        interval = sampled
        interval += duration_to_start if duration_to_start < threshold else avg_step / 2
        interval += duration_to_end if duration_to_end < threshold else avg_step / 2
        # Prometheus multiplies once by one factor; the same order keeps results bit-identical.
        factor = interval / sampled
        if is_rate:
            factor /= sel.range_s
        result *= factor
        out.append((_drop_name(labels), result))
    return out


def _instant_delta(ev: Evaluator, args: list[Any], is_rate: bool) -> Vector:
    out: Vector = []
    for labels, points in ev.matrix(args[0]):
        if len(points) < 2:
            continue
        (t1, v1), (t2, v2) = points[-2], points[-1]
        diff = v2 if is_rate and v2 < v1 else v2 - v1
        if is_rate:
            if t2 == t1:
                continue
            diff /= t2 - t1
        out.append((_drop_name(labels), diff))
    return out


def _over_time(reduce: Callable[[list[float]], float]) -> Callable[[Evaluator, list[Any]], Vector]:
    def fn(ev: Evaluator, args: list[Any]) -> Vector:
        return [(_drop_name(lb), reduce([v for _, v in pts])) for lb, pts in ev.matrix(args[-1])]

    return fn


def _quantile_over_time(ev: Evaluator, args: list[Any]) -> Vector:
    q = float(ev.eval(args[0]))
    return [(_drop_name(lb), _quantile(q, [v for _, v in pts])) for lb, pts in ev.matrix(args[1])]


def _changes(ev: Evaluator, args: list[Any]) -> Vector:
    out: Vector = []
    for lb, pts in ev.matrix(args[0]):
        n = sum(1 for (_, a), (_, b) in itertools.pairwise(pts) if a != b)
        out.append((_drop_name(lb), float(n)))
    return out


def _resets(ev: Evaluator, args: list[Any]) -> Vector:
    out: Vector = []
    for lb, pts in ev.matrix(args[0]):
        n = sum(1 for (_, a), (_, b) in itertools.pairwise(pts) if b < a)
        out.append((_drop_name(lb), float(n)))
    return out


def _absent_labels(node: Any) -> Labels:
    if isinstance(node, Selector):
        return tuple(sorted((m.name, m.value) for m in node.matchers if m.op == "=" and m.name != "__name__"))
    return ()


def _absent(ev: Evaluator, args: list[Any]) -> Vector:
    return [] if ev.eval(args[0]) else [(_absent_labels(args[0]), 1.0)]


def _histogram_quantile(ev: Evaluator, args: list[Any]) -> Vector:
    q = float(ev.eval(args[0]))
    vec: Vector = ev.eval(args[1])
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    for labels, value in vec:
        le = _get(labels, "le")
        if not le:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        key = tuple(kv for kv in labels if kv[0] not in ("le", "__name__"))
        buckets.setdefault(key, []).append((bound, value))
    out: Vector = []
    for key, bs in buckets.items():
        out.append((key, _bucket_quantile(q, sorted(bs))))
    return out


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' bucketQuantile: linear interpolation inside the bucket that holds the rank."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    # Monotonicity fix (counts in a scrape may be slightly inconsistent).
    fixed: list[tuple[float, float]] = []
    high = 0.0
    for bound, count in buckets:
        high = max(high, count)
        fixed.append((bound, high))
    buckets = fixed
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    idx = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if idx == len(buckets) - 1:
        return buckets[-2][0]
    if idx == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, lower_count = (0.0, 0.0) if idx == 0 else (buckets[idx - 1][0], buckets[idx - 1][1])
    end, count = buckets[idx]
    count -= lower_count
    rank -= lower_count
    if count == 0:
        return start
    return start + (end - start) * (rank / count)


def _clamp(kind: str) -> Callable[[Evaluator, list[Any]], Vector]:
    def fn(ev: Evaluator, args: list[Any]) -> Vector:
        vec: Vector = ev.eval(args[0])
        bound = float(ev.eval(args[1]))
        op = max if kind == "min" else min
        return [(_drop_name(lb), op(v, bound)) for lb, v in vec]

    return fn


def _math(f: Callable[[float], float]) -> Callable[[Evaluator, list[Any]], Vector]:
    def fn(ev: Evaluator, args: list[Any]) -> Vector:
        return [(_drop_name(lb), f(v)) for lb, v in ev.eval(args[0])]

    return fn


def _scalar(ev: Evaluator, args: list[Any]) -> float:
    vec = ev.eval(args[0])
    return vec[0][1] if len(vec) == 1 else math.nan


def _label_replace(ev: Evaluator, args: list[Any]) -> Vector:
    vec: Vector = ev.eval(args[0])
    dst, repl, src, pattern = (ev.eval(a) for a in args[1:5])
    regex = anchored_regex(pattern, "label_replace regex")
    out: Vector = []
    for lb, v in vec:
        m = regex.match(_get(lb, src))
        if m:
            lb = _with(lb, dst, expand_template(repl, m))
        out.append((lb, v))
    return out


def _round(ev: Evaluator, args: list[Any]) -> Vector:
    to = float(ev.eval(args[1])) if len(args) > 1 else 1.0
    return [(_drop_name(lb), math.floor(v / to + 0.5) * to) for lb, v in ev.eval(args[0])]


FUNCTIONS: dict[str, FuncSpec] = {
    "rate": FuncSpec(lambda ev, a: _extrapolated(ev, a, True, True), ["range"], "vector", 1, 1),
    "increase": FuncSpec(lambda ev, a: _extrapolated(ev, a, True, False), ["range"], "vector", 1, 1),
    "delta": FuncSpec(lambda ev, a: _extrapolated(ev, a, False, False), ["range"], "vector", 1, 1),
    "irate": FuncSpec(lambda ev, a: _instant_delta(ev, a, True), ["range"], "vector", 1, 1),
    "idelta": FuncSpec(lambda ev, a: _instant_delta(ev, a, False), ["range"], "vector", 1, 1),
    "avg_over_time": FuncSpec(_over_time(lambda v: math.fsum(v) / len(v)), ["range"], "vector", 1, 1),
    "min_over_time": FuncSpec(_over_time(min), ["range"], "vector", 1, 1),
    "max_over_time": FuncSpec(_over_time(max), ["range"], "vector", 1, 1),
    "sum_over_time": FuncSpec(_over_time(math.fsum), ["range"], "vector", 1, 1),
    "count_over_time": FuncSpec(_over_time(lambda v: float(len(v))), ["range"], "vector", 1, 1),
    "last_over_time": FuncSpec(_over_time(lambda v: v[-1]), ["range"], "vector", 1, 1),
    "quantile_over_time": FuncSpec(_quantile_over_time, ["scalar", "range"], "vector", 2, 2),
    "changes": FuncSpec(_changes, ["range"], "vector", 1, 1),
    "resets": FuncSpec(_resets, ["range"], "vector", 1, 1),
    "absent": FuncSpec(_absent, ["vector"], "vector", 1, 1),
    "absent_over_time": FuncSpec(
        lambda ev, a: [] if ev.eval(a[0]) else [(_absent_labels(a[0]), 1.0)], ["range"], "vector", 1, 1
    ),
    "histogram_quantile": FuncSpec(_histogram_quantile, ["scalar", "vector"], "vector", 2, 2),
    "clamp_min": FuncSpec(_clamp("min"), ["vector", "scalar"], "vector", 2, 2),
    "clamp_max": FuncSpec(_clamp("max"), ["vector", "scalar"], "vector", 2, 2),
    "abs": FuncSpec(_math(abs), ["vector"], "vector", 1, 1),
    "ceil": FuncSpec(_math(math.ceil), ["vector"], "vector", 1, 1),
    "floor": FuncSpec(_math(math.floor), ["vector"], "vector", 1, 1),
    "round": FuncSpec(_round, ["vector", "scalar"], "vector", 1, 2),
    "time": FuncSpec(lambda ev, a: ev.at, [], "scalar", 0, 0),
    "vector": FuncSpec(lambda ev, a: [((), float(ev.eval(a[0])))], ["scalar"], "vector", 1, 1),
    "scalar": FuncSpec(_scalar, ["vector"], "scalar", 1, 1),
    "label_replace": FuncSpec(
        _label_replace, ["vector", "string", "string", "string", "string"], "vector", 5, 5
    ),
}


def metric_names(node: Any) -> set[str]:
    """Every metric name an expression reads (for `custos alerts check` warnings)."""
    names: set[str] = set()

    def walk(n: Any) -> None:
        if isinstance(n, Selector) and n.name:
            names.add(n.name)
        for child in getattr(n, "__slots__", ()):
            value = getattr(n, child, None)
            if isinstance(value, list):
                for v in value:
                    walk(v)
            elif hasattr(value, "__slots__") and not isinstance(value, Matcher):
                walk(value)

    walk(node)
    return names


def max_range(node: Any) -> float:
    """The longest range/offset an expression looks back: how much history the store keeps."""
    best = 0.0

    def walk(n: Any) -> None:
        nonlocal best
        if isinstance(n, Selector):
            best = max(best, (n.range_s or 0.0) + max(n.offset_s, 0.0))
        for child in getattr(n, "__slots__", ()):
            value = getattr(n, child, None)
            if isinstance(value, list):
                for v in value:
                    walk(v)
            elif hasattr(value, "__slots__"):
                walk(value)

    walk(node)
    return best


def evaluate(node: Any, source: SeriesSource, at: float) -> Any:
    return Evaluator(source, at).eval(node)
