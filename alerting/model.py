"""The alert as the dispatcher sees it (Alertmanager's model: labels, annotations, start, end)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def fingerprint(labels: dict[str, str]) -> str:
    """Stable identity of a label set (what deduplicates an alert across evaluations and restarts)."""
    h = hashlib.sha256()
    for k, v in sorted(labels.items()):
        h.update(k.encode())
        h.update(b"\xff")
        h.update(v.encode())
        h.update(b"\xff")
    return h.hexdigest()[:16]


def iso(ts: float | None) -> str:
    if ts is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(slots=True)
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: float = 0.0
    ends_at: float | None = None  # set once resolved
    generator_url: str = ""
    value: float | None = None
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.labels)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def resolved(self, now: float) -> bool:
        return self.ends_at is not None and self.ends_at <= now

    def status(self, now: float) -> str:
        return "resolved" if self.resolved(now) else "firing"

    def to_json(self, now: float) -> dict[str, Any]:
        """Alertmanager's webhook alert object."""
        return {
            "status": self.status(now),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": iso(self.starts_at),
            "endsAt": iso(self.ends_at),
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }
