"""Silences: matchers + author + comment + expiry, persisted in the state dir.

The running sidecar and ``custos alerts silence`` share one JSON file under a lock, so a silence added
from the CLI takes effect at the next dispatch tick and survives restarts.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .matchers import matches, parse_matchers
from .model import iso
from .state import locked_update, read_json

RETENTION_S = 5 * 86400  # expired silences are kept this long for the record, as in Alertmanager


class SilenceError(ValueError):
    pass


@dataclass(slots=True)
class Silence:
    id: str
    matchers: list[str]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": list(self.matchers),
            "startsAt": iso(self.starts_at),
            "endsAt": iso(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            "updatedAt": iso(self.updated_at),
            "status": {"state": self.state(now)},
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": self.matchers,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
            "updated_at": self.updated_at,
        }


def _from_record(r: dict[str, Any]) -> Silence:
    return Silence(
        r["id"],
        list(r["matchers"]),
        float(r["starts_at"]),
        float(r["ends_at"]),
        r.get("created_by", ""),
        r.get("comment", ""),
        float(r.get("updated_at", 0)),
    )


class SilenceStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        # One tuple, swapped whole: readers on the event loop never see half of a reload from a thread.
        self._state: tuple[list[Silence], dict[str, list[Any]]] = ([], {})
        self.reload()

    def reload(self) -> None:
        data = read_json(self.path, {"silences": []})
        silences = [_from_record(r) for r in data.get("silences", [])]
        self._state = (silences, {s.id: parse_matchers(s.matchers) for s in silences})
        try:
            self._mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self._mtime = None

    def refresh(self) -> None:
        """Pick up changes another process (the CLI) made. Cheap: one stat."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            self.reload()

    def list(self, refresh: bool = True) -> list[Silence]:
        if refresh:
            self.refresh()
        return list(self._state[0])

    def get(self, silence_id: str) -> Silence | None:
        self.refresh()
        return next((s for s in self._state[0] if s.id == silence_id or s.id.startswith(silence_id)), None)

    def add(
        self,
        matchers: list[str],
        ends_at: float,
        *,
        created_by: str,
        comment: str,
        starts_at: float | None = None,
        now: float | None = None,
    ) -> Silence:
        now = time.time() if now is None else now
        if not matchers:
            raise SilenceError(
                'a silence needs at least one matcher, e.g. alertname="CustosGPUUtilizationHigh"'
            )
        try:
            compiled = parse_matchers(matchers)
        except ValueError as exc:
            raise SilenceError(str(exc)) from None
        if all(m.matches("") for m in compiled):
            raise SilenceError("the matchers would silence every alert; add one that names something")
        start = now if starts_at is None else starts_at
        if ends_at <= start:
            raise SilenceError("the silence must end after it starts")
        if not created_by.strip():
            raise SilenceError("createdBy (author) is required")
        silence = Silence(uuid.uuid4().hex, list(matchers), start, ends_at, created_by, comment, now)

        def change(data: dict[str, Any]) -> None:
            data.setdefault("silences", [])
            data["silences"] = [r for r in data["silences"] if float(r["ends_at"]) > now - RETENTION_S]
            data["silences"].append(silence.to_record())

        locked_update(self.path, {"silences": []}, change)
        self.reload()
        return silence

    def expire(self, silence_id: str, now: float | None = None) -> Silence:
        now = time.time() if now is None else now
        found: list[Silence] = []

        def change(data: dict[str, Any]) -> None:
            hits = [
                r for r in data.get("silences", []) if r["id"] == silence_id or r["id"].startswith(silence_id)
            ]
            if len(hits) != 1:
                return
            r = hits[0]
            if float(r["ends_at"]) > now:
                r["ends_at"] = now
                if float(r["starts_at"]) > now:
                    r["starts_at"] = now
                r["updated_at"] = now
            found.append(_from_record(r))

        locked_update(self.path, {"silences": []}, change)
        self.reload()
        if not found:
            raise SilenceError(f"no single silence with id {silence_id!r}")
        return found[0]

    def silenced_by(self, labels: dict[str, str], now: float) -> list[str]:
        silences, compiled = self._state
        return [s.id for s in silences if s.starts_at <= now < s.ends_at and matches(compiled[s.id], labels)]
