"""Alertmanager's pipeline in-process: route tree -> group -> inhibit/silence/time mute -> dedup -> notify.

Time is always passed in (``now``), so the same dispatcher runs on the wall clock in the sidecar and on
a virtual clock in replays and tests. The notification log (what was sent to whom, per group and
integration) is persisted: after a restart, alerts that were already notified are not sent again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import AlertingConfig, RouteConfig
from .matchers import format_matcher, matches, parse_matchers
from .model import Alert
from .promql import Matcher, parse_duration
from .silences import SilenceStore
from .state import read_json, write_json
from .timeintervals import TimeIntervals

log = logging.getLogger("custos.alerting.dispatch")

NFLOG_RETENTION_S = 5 * 86400


class Route:
    def __init__(self, cfg: RouteConfig, parent: Route | None = None, index: int = 0) -> None:
        self.matchers: list[Matcher] = parse_matchers(cfg.matchers)
        self.receiver: str = cfg.receiver or (parent.receiver if parent else "")
        group_by = cfg.group_by if cfg.group_by is not None else (parent.group_by_raw if parent else [])
        self.group_by_raw = list(group_by)
        self.group_all = "..." in group_by
        self.group_by = [g for g in group_by if g != "..."]

        def inherit(value: str | None, attr: str, default: float) -> float:
            if value is not None:
                return parse_duration(value)
            return getattr(parent, attr) if parent else default

        self.group_wait = inherit(cfg.group_wait, "group_wait", 30.0)
        self.group_interval = inherit(cfg.group_interval, "group_interval", 300.0)
        self.repeat_interval = inherit(cfg.repeat_interval, "repeat_interval", 4 * 3600.0)
        self.continue_ = cfg.continue_
        self.mute_time_intervals = list(cfg.mute_time_intervals)
        self.active_time_intervals = list(cfg.active_time_intervals)
        matcher_text = ",".join(format_matcher(m) for m in self.matchers)
        self.id = "{}" if parent is None else f"{parent.id}/{{{matcher_text}}}/{index}"
        self.routes = [Route(c, self, i) for i, c in enumerate(cfg.routes)]

    def match(self, labels: dict[str, str]) -> list[Route]:
        if not matches(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            hit = child.match(labels)
            found.extend(hit)
            if hit and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        if self.group_all:
            return dict(labels)
        return {k: labels[k] for k in self.group_by if k in labels}


class Inhibitor:
    def __init__(self, rules: list[Any]) -> None:
        self.rules = [
            (parse_matchers(r.source_matchers), parse_matchers(r.target_matchers), list(r.equal))
            for r in rules
        ]

    def inhibited_by(self, alert: Alert, firing: list[Alert]) -> str | None:
        """The fingerprint of a firing alert that inhibits ``alert``, if any."""
        for source_m, target_m, equal in self.rules:
            if not matches(target_m, alert.labels):
                continue
            for src in firing:
                if src.fingerprint == alert.fingerprint or not matches(source_m, src.labels):
                    continue
                # An alert matching both sides does not inhibit others that also match both (Alertmanager).
                if matches(target_m, src.labels) and matches(source_m, alert.labels):
                    continue
                if all(src.labels.get(k, "") == alert.labels.get(k, "") for k in equal):
                    return src.fingerprint
        return None


@dataclass(slots=True)
class LogEntry:
    sent_at: float
    firing: set[str]
    resolved: set[str]


class NotificationLog:
    """What each integration of each group last received; persisted for dedup across restarts."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries: dict[str, LogEntry] = {}
        self.dirty = False
        if path is not None:
            for key, rec in read_json(path, {}).get("entries", {}).items():
                self.entries[key] = LogEntry(float(rec["sent_at"]), set(rec["firing"]), set(rec["resolved"]))

    def get(self, key: str) -> LogEntry | None:
        return self.entries.get(key)

    def put(self, key: str, entry: LogEntry) -> None:
        self.entries[key] = entry
        self.dirty = True

    def gc(self, now: float) -> None:
        for key in [k for k, e in self.entries.items() if e.sent_at < now - NFLOG_RETENTION_S]:
            del self.entries[key]
            self.dirty = True

    def snapshot(self) -> dict[str, Any]:
        return {
            "entries": {
                k: {"sent_at": e.sent_at, "firing": sorted(e.firing), "resolved": sorted(e.resolved)}
                for k, e in self.entries.items()
            }
        }

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, self.snapshot())
        self.dirty = False


def needs_update(
    entry: LogEntry | None,
    firing: set[str],
    resolved: set[str],
    send_resolved: bool,
    repeat_s: float,
    now: float,
) -> bool:
    """Alertmanager's DedupStage: notify on new firing alerts, resolutions, or when repeat is due."""
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    if not firing:
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.sent_at <= now - repeat_s


@dataclass(slots=True)
class AggrGroup:
    key: str
    route: Route
    labels: dict[str, str]
    next_flush: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    flushed: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class Notification:
    """One message handed to one integration: the Alertmanager webhook data plus routing facts."""

    receiver: str
    integration: str
    group_key: str
    status: str
    alerts: list[Alert]
    group_labels: dict[str, str]
    at: float
    group_interval: float = 300.0


class Dispatcher:
    def __init__(
        self,
        config: AlertingConfig,
        notifier: Any,
        *,
        silences: SilenceStore | None = None,
        nflog: NotificationLog | None = None,
    ) -> None:
        self.config = config
        self.root = Route(config.route)
        self.inhibitor = Inhibitor(config.inhibit_rules)
        self.intervals = TimeIntervals(config.time_intervals)
        self.notifier = notifier
        self.silences = silences
        self.nflog = nflog or NotificationLog()
        self.alerts: dict[str, Alert] = {}
        self.groups: dict[str, AggrGroup] = {}
        self.retention_s = parse_duration(config.resolved_retention)

    # -- intake ------------------------------------------------------------------------------------
    def sync(self, alerts: list[Alert], now: float) -> None:
        """The engine's complete current view. Alerts it stopped reporting while firing count as resolved."""
        incoming = {a.fingerprint: a for a in alerts}
        for fp, old in list(self.alerts.items()):
            if fp not in incoming and old.ends_at is None:
                old.ends_at = now
        self.put(alerts, now)
        for fp, a in list(self.alerts.items()):
            if a.ends_at is not None and a.ends_at < now - self.retention_s and not self._in_group(fp):
                del self.alerts[fp]

    def _in_group(self, fp: str) -> bool:
        return any(fp in g.alerts for g in self.groups.values())

    def put(self, alerts: list[Alert], now: float) -> None:
        for alert in alerts:
            old = self.alerts.get(alert.fingerprint)
            if old is not None and old.resolved(now) and alert.resolved(now) and old.ends_at == alert.ends_at:
                alert = old
            self.alerts[alert.fingerprint] = alert
            for route in self.root.match(alert.labels):
                glabels = route.group_labels(alert.labels)
                key = route.id + ":" + ",".join(f"{k}={v!r}" for k, v in sorted(glabels.items()))
                group = self.groups.get(key)
                if group is None:
                    if alert.resolved(now) and not self._notified(key, alert.fingerprint):
                        continue  # a resolution nobody was told about the start of
                    # An alert older than group_wait (e.g. restored after a restart) flushes at once.
                    wait = 0.0 if alert.starts_at + route.group_wait <= now else route.group_wait
                    group = AggrGroup(key, route, glabels, now + wait)
                    self.groups[key] = group
                group.alerts[alert.fingerprint] = alert

    def _notified(self, group_key: str, fp: str) -> bool:
        prefix = group_key + "|"
        return any(k.startswith(prefix) and fp in e.firing for k, e in self.nflog.entries.items())

    # -- flushing -----------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return min((g.next_flush for g in self.groups.values()), default=None)

    async def tick(self, now: float, *, wait: bool = True) -> None:
        """Flush every group that is due. ``wait``: also wait for their notifications (replays).
        The caller refreshes silences from disk first (``SilenceStore.refresh``, in a thread when live)."""
        started = []
        for group in list(self.groups.values()):
            if group.task is not None and not group.task.done():
                continue
            if now >= group.next_flush:
                group.next_flush = now + group.route.group_interval
                group.task = asyncio.create_task(self._flush(group, now))
                started.append(group.task)
        if wait and started:
            await asyncio.gather(*started, return_exceptions=True)
        self.nflog.gc(now)

    async def drain(self, grace_s: float | None = None) -> None:
        """Wait for in-flight notifications; past ``grace_s`` cancel them (shutdown must not hang on a
        receiver that is down and being retried)."""
        tasks = [g.task for g in self.groups.values() if g.task is not None and not g.task.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("shutdown: %d notification(s) still retrying were cancelled", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    def muted_reason(self, alert: Alert, now: float, firing: list[Alert] | None = None) -> str | None:
        if self.silences is not None:
            ids = self.silences.silenced_by(alert.labels, now)
            if ids:
                return f"silenced by {ids[0][:8]}"
        if firing is None:
            firing = [a for a in self.alerts.values() if not a.resolved(now)]
        by = self.inhibitor.inhibited_by(alert, firing)
        if by is not None:
            source = self.alerts.get(by)
            return f"inhibited by {source.name if source else by}"
        return None

    def time_muted(self, route: Route, now: float) -> bool:
        if any(self.intervals.active(name, now) for name in route.mute_time_intervals):
            return True
        if route.active_time_intervals:
            return not any(self.intervals.active(name, now) for name in route.active_time_intervals)
        return False

    async def _flush(self, group: AggrGroup, now: float) -> None:
        try:
            await self._flush_inner(group, now)
        except Exception:
            log.exception("flushing alert group %s failed", group.key)

    async def _flush_inner(self, group: AggrGroup, now: float) -> None:
        route = group.route
        all_firing = [a for a in self.alerts.values() if not a.resolved(now)]
        firing: list[Alert] = []
        resolved: list[Alert] = []
        for alert in sorted(group.alerts.values(), key=lambda a: (a.starts_at, a.fingerprint)):
            if self.muted_reason(alert, now, all_firing) is not None:
                continue
            (resolved if alert.resolved(now) else firing).append(alert)
        snapshot = {fp: a.ends_at for fp, a in group.alerts.items()}
        all_ok = True
        if not self.time_muted(route, now):
            fset = {a.fingerprint for a in firing}
            rset = {a.fingerprint for a in resolved}
            for integration in self.notifier.integrations(route.receiver):
                key = f"{group.key}|{route.receiver}|{integration.name}"
                entry = self.nflog.get(key)
                if not integration.always_send and not needs_update(
                    entry, fset, rset, integration.send_resolved, route.repeat_interval, now
                ):
                    continue
                payload = firing + (resolved if integration.send_resolved else [])
                if payload:
                    note = Notification(
                        route.receiver,
                        integration.name,
                        group.key,
                        "firing" if firing else "resolved",
                        payload,
                        group.labels,
                        now,
                        route.group_interval,
                    )
                    if not await self.notifier.send(integration, note):
                        all_ok = False
                        continue
                self.nflog.put(key, LogEntry(now, fset, rset))
        group.flushed = True
        if all_ok:
            for fp, ends_at in snapshot.items():
                alert = group.alerts.get(fp)
                if alert is not None and alert.resolved(now) and alert.ends_at == ends_at:
                    del group.alerts[fp]
        if not group.alerts:
            self.groups.pop(group.key, None)

    # -- views ----------------------------------------------------------------------------------------
    def alert_view(self, now: float) -> list[dict[str, Any]]:
        firing = [a for a in self.alerts.values() if not a.resolved(now)]
        out = []
        for a in sorted(self.alerts.values(), key=lambda a: (a.name, a.fingerprint)):
            doc = a.to_json(now)
            reason = self.muted_reason(a, now, firing)
            doc["receivers"] = sorted({r.receiver for r in self.root.match(a.labels)})
            doc["state"] = "resolved" if a.resolved(now) else ("suppressed" if reason else "active")
            doc["suppressedBy"] = reason or ""
            out.append(doc)
        return out
