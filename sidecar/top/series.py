"""Prometheus text scrapes and what ``custos top`` computes from two of them: increases, rates and
histogram quantiles (Prometheus' ``histogram_quantile`` interpolation), per label group."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = dict[str, str]
Key = tuple[str, ...]
Match = dict[str, str | Callable[[str], bool]]


def _matches(labels: Labels, match: Match | None) -> bool:
    if not match:
        return True
    for name, want in match.items():
        value = labels.get(name, "")
        if callable(want):
            if not want(value):
                return False
        elif value != want:
            return False
    return True


@dataclass
class Scrape:
    """One scrape: every sample by name (``_created`` samples left out)."""

    t: float
    samples: dict[str, list[tuple[Labels, float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, t: float, text: str) -> Scrape:
        out: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                out[s.name].append((dict(s.labels), float(s.value)))
        return cls(t, dict(out))

    def merge(self, other: Scrape) -> None:
        for name, series in other.samples.items():
            self.samples.setdefault(name, []).extend(series)

    def series(self, name: str, match: Match | None = None) -> list[tuple[Labels, float]]:
        return [(lb, v) for lb, v in self.samples.get(name, ()) if _matches(lb, match)]

    def has(self, name: str) -> bool:
        return name in self.samples

    def value(self, name: str, match: Match | None = None) -> float | None:
        """The sum over matching series; None when there is none."""
        found = self.series(name, match)
        return sum(v for _, v in found) if found else None

    def by(self, name: str, labels: Iterable[str], match: Match | None = None) -> dict[Key, float]:
        names = tuple(labels)
        out: dict[Key, float] = defaultdict(float)
        for lb, v in self.series(name, match):
            out[tuple(lb.get(n, "") for n in names)] += v
        return dict(out)


def increase(
    new: Scrape, old: Scrape | None, name: str, labels: Iterable[str] = (), match: Match | None = None
) -> dict[Key, float]:
    """Counter increase from ``old`` to ``new`` per label group (``old`` None: since the start).
    A counter that went down was reset (a restarted worker): its new value is the increase."""
    names = tuple(labels)
    before: dict[frozenset[tuple[str, str]], float] = {}
    if old is not None:
        before = {frozenset(lb.items()): v for lb, v in old.series(name, match)}
    out: dict[Key, float] = defaultdict(float)
    for lb, v in new.series(name, match):
        prev = before.get(frozenset(lb.items()), 0.0)
        out[tuple(lb.get(n, "") for n in names)] += v - prev if v >= prev else v
    return dict(out)


def rate(
    new: Scrape, old: Scrape | None, name: str, labels: Iterable[str] = (), match: Match | None = None
) -> dict[Key, float] | None:
    """Per-second rate between two scrapes; None without an older scrape."""
    if old is None or new.t <= old.t:
        return None
    span = new.t - old.t
    return {k: v / span for k, v in increase(new, old, name, labels, match).items()}


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' interpolation inside the bucket that holds the rank; None without observations."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    high = 0.0
    fixed = []
    for bound, count in buckets:  # counts of one scrape may be slightly out of order
        high = max(high, count)
        fixed.append((bound, high))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    idx = next(i for i, (_, c) in enumerate(fixed) if c >= rank)
    if idx == len(fixed) - 1:
        return fixed[-2][0]
    start, below = (0.0, 0.0) if idx == 0 else fixed[idx - 1]
    end, count = fixed[idx]
    if count - below <= 0:
        return start
    return start + (end - start) * ((rank - below) / (count - below))


def histogram(
    new: Scrape, old: Scrape | None, name: str, labels: Iterable[str] = (), match: Match | None = None
) -> dict[Key, list[tuple[float, float]]]:
    """Bucket increases of histogram ``name`` (without ``_bucket``) per label group: [(le, count)]."""
    names = tuple(labels)
    per = increase(new, old, name + "_bucket", (*names, "le"), match)
    out: dict[Key, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for key, v in per.items():
        try:
            le = float(key[-1])
        except ValueError:
            continue
        out[key[:-1]][le] += v
    return {k: sorted(v.items()) for k, v in out.items()}


def quantiles(buckets: list[tuple[float, float]], qs: Iterable[float]) -> list[float | None]:
    return [bucket_quantile(q, buckets) for q in qs]


def merge_buckets(groups: Iterable[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    total: dict[float, float] = defaultdict(float)
    for g in groups:
        for le, c in g:
            total[le] += c
    return sorted(total.items())


def count_of(buckets: list[tuple[float, float]]) -> float:
    return buckets[-1][1] if buckets else 0.0
