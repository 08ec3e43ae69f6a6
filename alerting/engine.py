"""Rule evaluation: pending -> firing -> resolved, with ``for`` and ``keep_firing_for``.

Follows Prometheus' alerting-rule state machine. Each evaluation takes an explicit timestamp, so the
same engine runs live (wall clock) and in accelerated replay (``custos alerts test``, tests), where a
5-minute rule passes in milliseconds. The state persists so a restart neither forgets a pending
``for`` timer nor re-pages for alerts already notified (the notification log does that part).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from . import gotemplate, promql
from .metrics import ALERTS, EVALUATION_FAILURES, EVALUATIONS
from .model import Alert, fingerprint
from .rules import Group, Rule
from .tsdb import Store, labels_of

log = logging.getLogger("custos.alerting.engine")


@dataclass(slots=True)
class AlertState:
    rule: str
    group: str
    rule_id: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str  # pending | firing | inactive (resolved, kept for resolved_retention)
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None
    last_eval: float = 0.0


@dataclass(slots=True)
class RuleHealth:
    health: str = "unknown"  # ok | err | unknown
    last_error: str = ""
    last_eval: float = 0.0
    last_duration_s: float = 0.0


class PrometheusClient:
    """Instant queries against a Prometheus HTTP API (``/api/v1/query``) for ``source: prometheus`` groups."""

    def __init__(self, url: str, timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.headers = headers or {}
        self._session: aiohttp.ClientSession | None = None

    async def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        async with self._session.post(
            self.url + "/api/v1/query", data={"query": expr, "time": f"{at:.3f}"}
        ) as r:
            doc = await r.json(content_type=None)
            if r.status != 200 or doc.get("status") != "success":
                raise RuntimeError(f"Prometheus answered HTTP {r.status}: {doc.get('error', doc)}")
        data = doc["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise RuntimeError(
                f"expression returned a {data['resultType']}, alert rules need an instant vector"
            )
        return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class RuleEngine:
    def __init__(
        self,
        groups: list[Group],
        store: Store,
        *,
        external_labels: dict[str, str] | None = None,
        external_url: str = "",
        resolved_retention_s: float = 900.0,
        prometheus: PrometheusClient | None = None,
    ) -> None:
        self.groups = groups
        self.store = store
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url.rstrip("/")
        self.resolved_retention_s = resolved_retention_s
        self.prometheus = prometheus
        # (group, rule) -> fingerprint -> state
        self.active: dict[tuple[str, str], dict[str, AlertState]] = {}
        self.health: dict[tuple[str, str], RuleHealth] = {}
        self.changed = False
        # Live, PromQL evaluation runs in a thread (the store is only written between evaluations);
        # replays stay on the loop, where a thread hop per rule would only cost time.
        self.offload = False
        longest = max(
            (promql.max_range(r.node) for g in groups for r in g.rules if r.node is not None), default=0.0
        )
        store.retention_s = max(store.retention_s, longest + promql.LOOKBACK_S + 60)

    # -- evaluation ------------------------------------------------------------------------------
    async def evaluate_group(self, group: Group, at: float) -> None:
        EVALUATIONS.labels(group.name).inc()
        for rule in group.rules:
            key = (group.name, rule.id)
            health = self.health.setdefault(key, RuleHealth())
            try:
                result = await self._query(group, rule, at)
                if group.limit and len(result) > group.limit:
                    raise RuntimeError(f"{len(result)} series exceed the group limit of {group.limit}")
            except Exception as exc:
                EVALUATION_FAILURES.labels(group.name).inc()
                if health.health != "err" or health.last_error != str(exc):
                    log.warning("rule %s/%s failed: %s", group.name, rule.name, exc)
                health.health, health.last_error, health.last_eval = "err", str(exc), at
                continue
            health.health, health.last_error, health.last_eval = "ok", "", at
            if rule.kind == "record":
                samples = []
                for labels, value in result:
                    lb = {**labels, **rule.labels}
                    lb.pop("__name__", None)
                    samples.append((labels_of(rule.name, lb), value))
                self.store.ingest(f"rule:{group.name}/{rule.name}", samples, at)
            else:
                self._update_alerts(group, rule, result, at)
        self._export_gauges()

    async def _query(self, group: Group, rule: Rule, at: float) -> list[tuple[dict[str, str], float]]:
        if group.source == "prometheus":
            if self.prometheus is None:
                raise RuntimeError("group has source: prometheus but alerting.prometheus.url is not set")
            return await self.prometheus.query(rule.expr, at)
        if self.offload:
            value = await asyncio.to_thread(promql.evaluate, rule.node, self.store, at)
        else:
            value = promql.evaluate(rule.node, self.store, at)
        if isinstance(value, float):
            return [({}, value)]
        return [(dict(lb), v) for lb, v in value]

    def _update_alerts(
        self, group: Group, rule: Rule, result: list[tuple[dict[str, str], float]], at: float
    ) -> None:
        states = self.active.setdefault((group.name, rule.id), {})
        seen: set[str] = set()
        for series, value in result:
            series = {k: v for k, v in series.items() if k != "__name__" and v != ""}
            labels = dict(series)
            for name, template in rule.labels.items():
                labels[name] = self._render(template, series, value)
            labels["alertname"] = rule.name
            labels = {k: v for k, v in labels.items() if v != ""}
            annotations = {k: self._render(t, series, value) for k, t in rule.annotations.items()}
            fp = fingerprint(labels)
            if fp in seen:
                log.warning("rule %s/%s: duplicate alert label set %s", group.name, rule.name, labels)
                continue
            seen.add(fp)
            st = states.get(fp)
            if st is None or st.state == "inactive":
                states[fp] = AlertState(
                    rule.name, group.name, rule.id, labels, annotations, "pending", at, value
                )
                st = states[fp]
                self.changed = True
            st.value, st.annotations, st.labels, st.last_eval = value, annotations, labels, at
            st.keep_firing_since = None
            if st.state == "pending" and at - st.active_at >= rule.for_s:
                st.state, st.fired_at = "firing", at
                self.changed = True
                log.info("alert %s firing: %s", rule.name, _short(labels))
        for fp, st in list(states.items()):
            if fp in seen:
                continue
            if st.state == "inactive":
                if st.resolved_at is not None and at - st.resolved_at > self.resolved_retention_s:
                    del states[fp]
                    self.changed = True
                continue
            if st.state == "firing" and rule.keep_firing_for_s > 0:
                if st.keep_firing_since is None:
                    st.keep_firing_since = at
                if at - st.keep_firing_since < rule.keep_firing_for_s:
                    continue
            if st.state == "pending":
                del states[fp]
            else:
                st.state, st.resolved_at = "inactive", at
                log.info("alert %s resolved: %s", rule.name, _short(st.labels))
            self.changed = True

    def _render(self, template: str, labels: dict[str, str], value: float) -> str:
        try:
            return gotemplate.render(template, labels, value, self.external_labels)
        except gotemplate.TemplateError as exc:
            return f"<error expanding template: {exc}>"

    def _export_gauges(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for g in self.groups:
            for r in g.rules:
                if r.kind == "alert":
                    counts[(r.name, "pending")] = 0
                    counts[(r.name, "firing")] = 0
        for states in self.active.values():
            for st in states.values():
                if st.state in ("pending", "firing"):
                    counts[(st.rule, st.state)] = counts.get((st.rule, st.state), 0) + 1
        for (name, state), n in counts.items():
            ALERTS.labels(name, state).set(n)

    def set_groups(self, groups: list[Group]) -> None:
        """New rules (a reload): states of rules that still exist carry over, as in Prometheus."""
        keep = {(g.name, r.id) for g in groups for r in g.rules}
        for key in [k for k in self.active if k not in keep]:
            del self.active[key]
        for key in [k for k in self.health if k not in keep]:
            del self.health[key]
        self.groups = groups
        longest = max(
            (promql.max_range(r.node) for g in groups for r in g.rules if r.node is not None), default=0.0
        )
        self.store.retention_s = max(self.store.retention_s, longest + promql.LOOKBACK_S + 60)
        self.changed = True
        self._export_gauges()

    # -- views -----------------------------------------------------------------------------------
    def alerts_for_dispatch(self) -> list[Alert]:
        """Firing alerts and recently resolved ones, as Prometheus sends them to Alertmanager."""
        out = []
        for states in self.active.values():
            for st in states.values():
                if st.state == "pending":
                    continue
                labels = {**self.external_labels, **st.labels}
                out.append(
                    Alert(
                        labels=labels,
                        annotations=dict(st.annotations),
                        starts_at=st.fired_at if st.fired_at is not None else st.active_at,
                        ends_at=st.resolved_at if st.state == "inactive" else None,
                        generator_url=self._generator_url(st),
                        value=None if math.isnan(st.value) else st.value,
                    )
                )
        return out

    def _generator_url(self, st: AlertState) -> str:
        if not self.external_url:
            return ""
        return f"{self.external_url}/admin/alerts/rules#{st.group}/{st.rule}"

    def alert_states(self) -> list[AlertState]:
        return [st for states in self.active.values() for st in states.values()]

    # -- persistence -----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"version": 1, "alerts": [asdict(st) for st in self.alert_states()]}

    def restore(self, data: dict[str, Any]) -> int:
        known = {(g.name, r.id) for g in self.groups for r in g.rules if r.kind == "alert"}
        n = 0
        for rec in data.get("alerts", []):
            try:
                st = AlertState(**rec)
            except TypeError:
                continue
            if (st.group, st.rule_id) not in known:
                continue  # the rule was removed or renamed while we were down
            self.active.setdefault((st.group, st.rule_id), {})[fingerprint(st.labels)] = st
            n += 1
        self._export_gauges()
        return n


def _short(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname") or "-"
