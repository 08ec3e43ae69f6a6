"""Silences: matchers + author + comment + expiry, persisted in the state dir.

The running sidecar and ``custos alerts silence`` share one JSON file under a lock, so a silence added
from the CLI takes effect at the next dispatch tick and survives restarts.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .matchers import matches, parse_matchers
from .model import iso
from .promql import Matcher
from .state import locked_update, read_json

log = logging.getLogger("custos.alerting.silences")

RETENTION_S = 5 * 86400  # expired silences are kept this long for the record, as in Alertmanager


class SilenceError(ValueError):
    """A silence refused; ``field`` names the part of the request at fault, when it is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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


def check_silence(matchers: list[str], starts_at: float, ends_at: float, created_by: str) -> list[Matcher]:
    """The checks every silence passes, from any source; the parsed matchers, or ``SilenceError``."""
    if not matchers:
        raise SilenceError(
            'a silence needs at least one matcher, e.g. alertname="CustosGPUUtilizationHigh"', "matchers"
        )
    try:
        compiled = parse_matchers(matchers)
    except ValueError as exc:
        raise SilenceError(str(exc), "matchers") from None
    if not compiled or all(m.matches("") for m in compiled):
        # As Alertmanager: at least one matcher must not match the empty string.
        raise SilenceError("the matchers would silence every alert; add one that names something", "matchers")
    if ends_at <= starts_at:
        raise SilenceError("the silence must end after it starts")
    if not created_by.strip():
        raise SilenceError("createdBy (author) is required")
    return compiled


# -- breadth: does a silence cover everything, or a protected rule's every alert? --------------------
def _probe_value() -> str:
    return "zzprobe" + uuid.uuid4().hex  # a label value (and alert name) no rule or silence foresees


def _static_labels(rule: Any) -> dict[str, str]:
    """The labels every alert of ``rule`` carries with a value known before evaluation (a templated
    label value is not known)."""
    out = {k: v for k, v in rule.labels.items() if "{{" not in v}
    out["alertname"] = rule.name
    return out


def silence_breadth(
    compiled: list[Matcher],
    groups: list[Any],
    external_labels: Mapping[str, str] | None = None,
    protected: list[Matcher] | None = None,
) -> str | None:
    """Why a silence with these matchers is broad, or None. Conservative by design:

    - it matches an alert of any name (a probe alert with a random ``alertname`` and only the external
      labels), or every rule's alert (each rule's static labels; labels a rule does not set count as
      absent): it silences everything;
    - or it may cover every alert of a protected rule (one whose static labels match ``protected``):
      a matcher on a label the rule does not fix counts as covering it when it matches the label
      absent or an arbitrary value (``instance=~".+"``, ``gpu!="0"``), since the rule's series decide.
    """
    ext = dict(external_labels or {})
    alert_rules = [r for g in groups for r in g.rules if r.kind == "alert"]
    if matches(compiled, {**ext, "alertname": _probe_value()}):
        return "it would silence alerts of any name"
    probes = [{**ext, **_static_labels(r)} for r in alert_rules]
    probes = [{k: v for k, v in p.items() if v != ""} for p in probes]
    if probes and all(matches(compiled, p) for p in probes):
        return "it would silence every alert of every rule"
    arbitrary = _probe_value()
    for rule in alert_rules:
        fixed = _static_labels(rule)
        static = {k: v for k, v in {**ext, **fixed}.items() if v != ""}
        if not protected or not matches(protected, static):
            continue
        if all(_may_cover(m, fixed, ext, arbitrary) for m in compiled):
            return f"it would silence every alert of the protected rule {rule.name}"
    return None


def _may_cover(m: Matcher, fixed: dict[str, str], ext: dict[str, str], arbitrary: str) -> bool:
    """Whether matcher ``m`` may let every alert of a rule with static labels ``fixed`` through."""
    if m.name in fixed:
        return m.matches(fixed[m.name])
    # Not fixed by the rule: absent, any value the series bring, or the external label's.
    values = ["", arbitrary] + ([ext[m.name]] if m.name in ext else [])
    return any(m.matches(v) for v in values)


def _parse_stored(silences: list[Silence]) -> dict[str, list[Matcher]]:
    """The matchers of each stored silence. One written before matchers were RE2 (a lookahead, say)
    no longer parses: it is logged and mutes nothing, and the other silences keep working."""
    parsed: dict[str, list[Matcher]] = {}
    for s in silences:
        try:
            parsed[s.id] = parse_matchers(s.matchers)
        except ValueError as exc:
            log.warning("silence %s mutes nothing: %s", s.id, exc)
    return parsed


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
        self._state = (silences, _parse_stored(silences))
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
        start = now if starts_at is None else starts_at
        check_silence(matchers, start, ends_at, created_by)
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
        return [
            s.id
            for s in silences
            if s.starts_at <= now < s.ends_at and s.id in compiled and matches(compiled[s.id], labels)
        ]
