"""A small in-memory time-series store: what the in-process evaluator reads instead of Prometheus.

Each evaluation ingests one scrape (the sidecar's own /metrics text, optionally local targets) at the
evaluation time; series absent from a scrape get a stale marker, as Prometheus does. History is kept
only as far back as the longest range any rule reads.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from .promql import Labels, Matcher

# Samples that are bookkeeping, not values (prometheus-client exports them for counters etc.).
_SKIP_SUFFIX = ("_created",)


def labels_of(name: str, labels: dict[str, str]) -> Labels:
    # An empty label value is the same as no label (Prometheus data model).
    return tuple(sorted((k, v) for k, v in {**labels, "__name__": name}.items() if v != ""))


class Store:
    def __init__(self, retention_s: float = 3600.0) -> None:
        self.retention_s = retention_s
        # labels -> (timestamps, values, labels as a dict); values None are stale markers.
        self._all: dict[Labels, tuple[list[float], list[float | None], dict[str, str]]] = {}
        self._by_name: dict[str, dict[Labels, tuple[list[float], list[float | None], dict[str, str]]]] = {}
        self._last_scrape: dict[str, set[Labels]] = {}

    def add(self, labels: Labels, t: float, value: float | None) -> None:
        entry = self._all.get(labels)
        if entry is None:
            d = dict(labels)
            entry = ([], [], d)
            self._all[labels] = entry
            self._by_name.setdefault(d.get("__name__", ""), {})[labels] = entry
        ts, vs, _ = entry
        if ts:
            last = ts[-1]
            if t < last:
                return  # out of order: ignored, as Prometheus does
            if t == last:
                vs[-1] = value
                return
        ts.append(t)
        vs.append(value)

    def ingest(self, source: str, samples: Iterable[tuple[Labels, float]], t: float) -> int:
        """One scrape from ``source`` at ``t``; series it no longer exposes become stale."""
        seen: set[Labels] = set()
        add = self.add
        for labels, value in samples:
            add(labels, t, value)
            seen.add(labels)
        for gone in self._last_scrape.get(source, set()) - seen:
            self.add(gone, t, None)
        self._last_scrape[source] = seen
        return len(seen)

    def trim(self, now: float) -> None:
        cutoff = now - self.retention_s
        for labels, (ts, vs, d) in list(self._all.items()):
            if ts and ts[0] >= cutoff:
                continue
            i = bisect.bisect_left(ts, cutoff)
            if i:
                del ts[:i]
                del vs[:i]
            if not ts or (len(vs) == 1 and vs[0] is None):
                del self._all[labels]
                pool = self._by_name.get(d.get("__name__", ""), {})
                pool.pop(labels, None)
                if not pool:
                    self._by_name.pop(d.get("__name__", ""), None)

    def select(
        self, name: str | None, matchers: list[Matcher], start: float, end: float
    ) -> list[tuple[Labels, list[tuple[float, float | None]]]]:
        pools = [self._by_name.get(name, {})] if name is not None else list(self._by_name.values())
        out = []
        for pool in pools:
            for labels, (ts, vs, d) in pool.items():
                if matchers and not all(m.matches(d.get(m.name, "")) for m in matchers):
                    continue
                if not ts or ts[-1] < start or ts[0] > end:
                    continue
                lo = bisect.bisect_left(ts, start)
                hi = bisect.bisect_right(ts, end)
                if lo < hi:
                    out.append((labels, list(zip(ts[lo:hi], vs[lo:hi], strict=True))))
        return out

    def series_count(self) -> int:
        return len(self._all)

    def names(self) -> set[str]:
        return set(self._by_name)


_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_BOOKKEEPING_TYPES = {"counter", "histogram", "summary", "gaugehistogram"}
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return re.sub(r'\\[\\"n]', lambda m: _ESCAPES[m.group()], value)


def parse_exposition(text: str, extra: dict[str, str] | None = None) -> list[tuple[Labels, float]]:
    """Prometheus text format -> samples, with ``extra`` labels (job, instance) added.

    A small line parser: prometheus-client's own parser is ~10x slower, and this runs every
    evaluation over thousands of series. Falls back to it for lines this one does not understand."""
    out: list[tuple[Labels, float]] = []
    types: dict[str, str] = {}
    extra_items = tuple((k, v) for k, v in (extra or {}).items() if v != "")
    for line in text.splitlines():
        if not line or line[0] == "#":
            if line.startswith("# TYPE "):
                parts = line.split(None, 3)
                if len(parts) == 4:
                    types[parts[2]] = parts[3].strip()
            continue
        brace = line.find("{")
        if brace == -1:
            name, _, rest = line.partition(" ")
            pairs: list[tuple[str, str]] = []
        else:
            name = line[:brace].strip()
            pairs = []
            pos = brace + 1
            while True:
                m = _LABEL_RE.match(line, pos)
                if m is None:
                    break
                pairs.append((m.group(1), _unescape(m.group(2))))
                pos = m.end()
            close = line.find("}", pos)
            if close == -1 or line[pos:close].strip():
                return _slow_parse(text, extra)
            rest = line[close + 1 :]
        if name.endswith("_created") and types.get(name[:-8]) in _BOOKKEEPING_TYPES:
            continue
        fields = rest.split()
        if not fields:
            return _slow_parse(text, extra)
        try:
            value = float(fields[0])
        except ValueError:
            return _slow_parse(text, extra)
        labels = {k: v for k, v in pairs if v != ""}
        labels.update(extra_items)
        labels["__name__"] = name
        out.append((tuple(sorted(labels.items())), value))
    return out


def _slow_parse(text: str, extra: dict[str, str] | None) -> list[tuple[Labels, float]]:
    out: list[tuple[Labels, float]] = []
    for family in text_string_to_metric_families(text):
        bookkeeping = family.type in _BOOKKEEPING_TYPES
        for sample in family.samples:
            if bookkeeping and sample.name.endswith(_SKIP_SUFFIX):
                continue
            labels = {**sample.labels, **(extra or {})}
            out.append((labels_of(sample.name, labels), float(sample.value)))
    return out


# -- promtool's expanding notation ("1+2x3 _ stale 5x2") -------------------------------------------
_TERM = re.compile(
    r"^(?P<start>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|_|stale|Inf|-Inf|NaN)"
    r"(?:(?P<sign>[-+])(?P<step>\d+\.?\d*(?:[eE][-+]?\d+)?))?(?:x(?P<n>\d+))?$"
)

MISSING = object()


def expand_values(text: str) -> list[float | object | None]:
    """promtool's series notation: ``a+bxn`` is n+1 values from a stepping by b; ``_`` is a missing
    sample (``MISSING``), ``stale`` a stale marker (``None``)."""
    out: list[float | object | None] = []
    for term in str(text).split():
        m = _TERM.match(term)
        if m is None:
            raise ValueError(f"bad series value {term!r} (expected e.g. 1, 1+2x3, 5x4, _, _x3, stale)")
        start, sign, step, n = m.group("start"), m.group("sign"), m.group("step"), m.group("n")
        count = int(n) if n is not None else 0
        if start == "_":
            out.extend([MISSING] * (count or 1))
            continue
        if start == "stale":
            out.append(None)
            continue
        value = float(start)
        delta = float(step or 0) * (-1 if sign == "-" else 1)
        if n is None:
            out.append(value)
        else:
            out.extend(value + delta * i for i in range(count + 1))
    return out


def parse_series_selector(text: str) -> Labels:
    """``name{a="b"}`` -> labels, for scenario and test files."""
    from .promql import Selector, parse

    node = parse(text)
    if not isinstance(node, Selector) or node.range_s is not None or any(m.op != "=" for m in node.matchers):
        raise ValueError(f'{text!r} is not a plain series like name{{label="value"}}')
    labels = {m.name: m.value for m in node.matchers if m.value != ""}
    if node.name:
        labels["__name__"] = node.name
    return tuple(sorted(labels.items()))


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
