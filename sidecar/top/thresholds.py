"""Warning and critical levels for ``custos top``'s colours, read from the alert rules.

Every alerting rule whose expression compares something with a number (``X > 85``, ``A / B > 0.97``,
``histogram_quantile(0.95, ...) > 0.5``, either side of an ``or``) gives one threshold: the metric
names on the compared side, the label matchers of its selectors, the comparison, the number and the
rule's ``severity`` label. The view asks "which severity does this value reach?" by metric names, so
a changed rule file changes the colours, and nothing here knows the numbers.

Rules come from the sidecar (``GET /admin/alerts/rules``: the rules it really evaluates) or, when
that cannot be read, from the built-in rule files (``alerting/rules/``).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from alerting import promql

log = logging.getLogger("custos.top")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
_SET_OPS = {"or", "and", "unless"}
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Threshold:
    alert: str
    severity: str
    op: str
    value: float
    metrics: frozenset[str]
    matchers: tuple[promql.Matcher, ...]
    quantile: float | None
    range_s: float
    for_s: float

    def reached(self, value: float) -> bool:
        return _OPS[self.op](value, self.value)

    def applies(self, labels: dict[str, str] | None) -> bool:
        if labels is None:
            return True
        return all(m.matches(labels[m.name]) for m in self.matchers if m.name in labels)

    def describe(self) -> str:
        return f"{self.op} {self.value:g} ({self.alert}, {self.severity})"


def _selectors(node: Any) -> list[promql.Selector]:
    found: list[promql.Selector] = []

    def walk(n: Any) -> None:
        if isinstance(n, promql.Selector):
            found.append(n)
            return
        for name in getattr(n, "__slots__", ()):
            value = getattr(n, name, None)
            for v in value if isinstance(value, list) else [value]:
                if hasattr(v, "__slots__") and not isinstance(v, promql.Matcher):
                    walk(v)

    walk(node)
    return found


def _quantile(node: Any) -> float | None:
    while isinstance(node, promql.Aggregate | promql.Unary):
        node = node.expr
    if isinstance(node, promql.Call) and node.func == "histogram_quantile":
        q = node.args[0] if node.args else None
        return q.value if isinstance(q, promql.NumberLit) else None
    return None


def extract(node: Any, alert: str, severity: str, for_s: float) -> list[Threshold]:
    """The thresholds of one rule expression (comparisons with a number, through set operators)."""
    if not isinstance(node, promql.Binary):
        return []
    if node.op in _SET_OPS:
        return extract(node.lhs, alert, severity, for_s) + extract(node.rhs, alert, severity, for_s)
    if node.op not in _OPS:
        return []
    if isinstance(node.rhs, promql.NumberLit) and not isinstance(node.lhs, promql.NumberLit):
        side, op, number = node.lhs, node.op, node.rhs.value
    elif isinstance(node.lhs, promql.NumberLit) and not isinstance(node.rhs, promql.NumberLit):
        side, op, number = node.rhs, _FLIP[node.op], node.lhs.value
    else:
        return []
    sels = _selectors(side)
    names = frozenset(s.name for s in sels if s.name)
    if not names:
        return []
    matchers = tuple(m for s in sels for m in s.matchers if m.name != "__name__")
    range_s = max((s.range_s or 0.0) for s in sels)
    return [Threshold(alert, severity, op, number, names, matchers, _quantile(side), range_s, for_s)]


class Thresholds:
    def __init__(self, items: Iterable[Threshold] = (), source: str = "none") -> None:
        self.items = list(items)
        self.source = source

    @classmethod
    def from_rules(cls, rules: Iterable[dict[str, Any]], source: str) -> Thresholds:
        """From rule documents ``{alert, expr, for, labels}`` (the admin API's or a rule file's)."""
        items: list[Threshold] = []
        for r in rules:
            if not r.get("alert") or not r.get("expr"):
                continue
            try:
                node = promql.parse(str(r["expr"]))
                for_s = promql.parse_duration(r.get("for") or "0s")
            except (promql.PromQLError, ValueError, TypeError):
                continue
            severity = str((r.get("labels") or {}).get("severity") or "warning")
            items.extend(extract(node, str(r["alert"]), severity, for_s))
        return cls(items, source)

    @classmethod
    def builtin(cls) -> Thresholds:
        from alerting.rules import RuleError, load_rule_files

        try:
            groups = load_rule_files(None)
        except RuleError as exc:  # pragma: no cover - the built-in files are checked by their tests
            log.warning("built-in alert rules unreadable: %s", exc)
            return cls([], "none")
        return cls.from_rules((r.to_dict() for g in groups for r in g.rules), "built-in rules")

    @classmethod
    def from_api(cls, doc: Any) -> Thresholds | None:
        """From ``GET /admin/alerts/rules``; None when it lists no rules (not the engine's worker)."""
        groups = doc.get("groups") if isinstance(doc, dict) else None
        rules = [r for g in groups or [] if isinstance(g, dict) for r in g.get("rules") or []]
        if not rules:
            return None
        return cls.from_rules(rules, "the sidecar's rules")

    def find(self, *metrics: str, quantile: float | None = None) -> list[Threshold]:
        want = frozenset(metrics)
        return [t for t in self.items if t.metrics == want and t.quantile == quantile]

    def level(
        self,
        metrics: str | tuple[str, ...],
        value: float | None,
        labels: dict[str, str] | None = None,
        quantile: float | None = None,
    ) -> str | None:
        """The highest severity ``value`` reaches (``"warning"``, ``"critical"``), or None."""
        if value is None:
            return None
        names = (metrics,) if isinstance(metrics, str) else metrics
        best: str | None = None
        for t in self.find(*names, quantile=quantile):
            if t.applies(labels) and t.reached(value):
                if best is None or SEVERITY_RANK.get(t.severity, 1) > SEVERITY_RANK.get(best, 1):
                    best = t.severity
        return best

    def limits(self, *metrics: str, quantile: float | None = None) -> str:
        """``"> 85 warning, > 90 critical"``: for legends."""
        found = sorted(self.find(*metrics, quantile=quantile), key=lambda t: t.value)
        return ", ".join(f"{t.op} {t.value:g} {t.severity}" for t in found)
