"""Read a /metrics scrape into {(name, frozenset(labels)): value} with prometheus-client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def series(self, name: str) -> list[dict[str, str]]:
        return [dict(ls) for (n, ls) in self.samples if n == name]

    def has(self, name: str, **labels: str) -> bool:
        want = set(labels.items())
        return any(n == name and want <= ls for (n, ls) in self.samples)


def scrape(url: str, headers: dict[str, str] | None = None) -> Scrape:
    """Scrape a sidecar's ``/metrics``: pass ``sidecar.headers`` (its /metrics needs a token whose
    roles grant ``metrics:read`` unless ``metrics.require_token: false``)."""
    resp = httpx.get(url.rstrip("/") + "/metrics", headers=headers, timeout=10)
    resp.raise_for_status()
    return Scrape(resp.text)
