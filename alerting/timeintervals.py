"""Alertmanager time intervals (``mute_time_intervals`` / ``active_time_intervals`` of routes).

Same fields as Alertmanager: ``times`` (HH:MM ranges, end exclusive), ``weekdays``, ``days_of_month``
(negative counts from the end of the month), ``months``, ``years`` and ``location`` (IANA zone).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_WEEKDAYS = {
    d: i for i, d in enumerate(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])
}
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}


def _ranges(
    items: list[str], names: dict[str, int] | None, lo: int, hi: int, what: str, allow_negative: bool = False
) -> list[tuple[int, int]]:
    out = []

    def num(text: str, item: str) -> int:
        if names is not None and text in names:
            return names[text]
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"{what}: {item!r} is not valid") from None
        if allow_negative and n < 0:
            if n < -31:
                raise ValueError(f"{what}: {item!r} is out of range")
            return n
        if not lo <= n <= hi:
            raise ValueError(f"{what}: {item!r} is out of range {lo}..{hi}")
        return n

    for item in items:
        first, _, last = str(item).lower().partition(":")
        last = last or first
        a, b = num(first, item), num(last, item)
        if not allow_negative and a > b:
            raise ValueError(f"{what}: range {item!r} ends before it starts")
        out.append((a, b))
    return out


@dataclass(slots=True)
class CompiledSpec:
    times: list[tuple[int, int]]  # minutes since midnight, [start, end)
    weekdays: list[tuple[int, int]]
    days_of_month: list[tuple[int, int]]
    months: list[tuple[int, int]]
    years: list[tuple[int, int]]
    zone: ZoneInfo

    def contains(self, ts: float) -> bool:
        dt = datetime.fromtimestamp(ts, self.zone)
        if self.times:
            minute = dt.hour * 60 + dt.minute
            if not any(a <= minute < b for a, b in self.times):
                return False
        if self.weekdays and not any(a <= dt.weekday() <= b for a, b in self.weekdays):
            return False
        if self.days_of_month:
            last = calendar.monthrange(dt.year, dt.month)[1]

            def norm(d: int) -> int:
                return last + d + 1 if d < 0 else d

            if not any(norm(a) <= dt.day <= norm(b) for a, b in self.days_of_month):
                return False
        if self.months and not any(a <= dt.month <= b for a, b in self.months):
            return False
        return not (self.years and not any(a <= dt.year <= b for a, b in self.years))


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def compile_spec(spec: Any) -> CompiledSpec:
    try:
        zone = ZoneInfo(spec.location) if spec.location not in ("", "UTC", "Local") else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"location {spec.location!r} is not a known time zone (e.g. Asia/Shanghai)"
        ) from None
    times = []
    for t in spec.times:
        a, b = _minutes(t.start_time), _minutes(t.end_time)
        if a >= b:
            raise ValueError(f"times: {t.start_time}-{t.end_time} must end after it starts")
        times.append((a, b))
    return CompiledSpec(
        times=times,
        weekdays=_ranges(spec.weekdays, _WEEKDAYS, 0, 6, "weekdays"),
        days_of_month=_ranges(spec.days_of_month, None, 1, 31, "days_of_month", allow_negative=True),
        months=_ranges(spec.months, _MONTHS, 1, 12, "months"),
        years=_ranges(spec.years, None, 1970, 9999, "years"),
        zone=zone,
    )


class TimeIntervals:
    def __init__(self, configs: list[Any]) -> None:
        self.intervals = {c.name: [compile_spec(s) for s in c.time_intervals] for c in configs}

    def active(self, name: str, ts: float) -> bool:
        return any(spec.contains(ts) for spec in self.intervals.get(name, []))
