"""The alert engine as a background service of the sidecar: scrape -> evaluate -> dispatch, on a clock.

One process per state dir runs it (a file lock elects the leader among uvicorn workers). Every
evaluation reads the sidecar's own /metrics text (what Prometheus would scrape, all workers
included) plus, by default, the upstream's /metrics with a synthetic ``up{job="upstream"}``.
Disk writes (alert state, notification log) go to a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .config import AlertingConfig
from .dispatch import Dispatcher, NotificationLog
from .engine import PrometheusClient, RuleEngine
from .metrics import RELOADS, SCRAPE_FAILURES, SILENCES
from .promql import parse_duration
from .receivers import Notifier
from .rules import Group, RuleError, load_rule_files
from .rules import signature as rules_signature
from .silences import SilenceStore
from .state import Leader, read_json, write_json
from .templates import Templates
from .tsdb import Store, labels_of, parse_exposition

log = logging.getLogger("custos.alerting")


class Target:
    """A /metrics endpoint of a local process, scraped at each evaluation."""

    def __init__(self, job: str, url: str) -> None:
        self.job = job
        self.url = url
        parts = urlsplit(url)
        self.instance = parts.netloc or url


class AlertingService:
    def __init__(
        self,
        config: AlertingConfig,
        state_dir: Path,
        *,
        groups: list[Group] | None = None,
        targets: list[Target] | None = None,
        self_metrics: Callable[[], bytes] | None = None,
        clock: Callable[[], float] = time.time,
        notifier: Any = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.clock = clock
        # Rules from config files are watched and reloaded when edited; given groups are fixed.
        self._watch_rules = groups is None
        self._rule_sig = rules_signature(config.rules or None) if self._watch_rules else ()
        self.groups = groups if groups is not None else load_rule_files(config.rules or None)
        self.interval_s = parse_duration(config.evaluation_interval)
        self.store = Store()
        prom = None
        if config.prometheus.url:
            prom = PrometheusClient(
                config.prometheus.url, config.prometheus.timeout_s, config.prometheus.headers
            )
        self.engine = RuleEngine(
            self.groups,
            self.store,
            external_labels=config.external_labels,
            external_url=config.external_url,
            resolved_retention_s=parse_duration(config.resolved_retention),
            prometheus=prom,
        )
        self.silences = SilenceStore(state_dir / "silences.json")
        self.nflog = NotificationLog(state_dir / "nflog.json")
        templates = Templates(config.templates, timezone=config.timezone)
        templates.check()
        self.notifier = notifier or Notifier(config, templates)
        self.dispatcher = Dispatcher(config, self.notifier, silences=self.silences, nflog=self.nflog)
        self.targets = targets or []
        self.self_metrics = self_metrics
        self.next_eval: dict[str, float] = {}
        self.last_eval: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._save_lock = asyncio.Lock()
        restored = self.engine.restore(read_json(state_dir / "alerts.json", {}))
        if restored:
            log.info("restored %d alert(s) from %s", restored, state_dir / "alerts.json")

    # -- one step ----------------------------------------------------------------------------------
    async def scrape(self, now: float) -> None:
        """Read every source; parsing and ingesting (CPU work over thousands of series) run in a
        thread, one source after the other, so the event loop keeps serving requests."""
        scrapes: list[tuple[str, list[Any]]] = []
        if self.self_metrics is not None:
            try:
                text = await asyncio.to_thread(self.self_metrics)
                samples = await asyncio.to_thread(parse_exposition, text.decode("utf-8", "replace"))
                scrapes.append(("self", samples))
            except Exception as exc:
                SCRAPE_FAILURES.labels("custos").inc()
                log.warning("reading the sidecar's own metrics failed: %s", exc)
        if self.targets:
            scrapes.extend(await asyncio.gather(*(self._scrape_target(t) for t in self.targets)))
        if scrapes:
            await asyncio.to_thread(self._ingest_all, scrapes, now)

    def _ingest_all(self, scrapes: list[tuple[str, list[Any]]], now: float) -> None:
        for source, samples in scrapes:
            self.store.ingest(source, samples, now)

    async def _scrape_target(self, target: Target) -> tuple[str, list[Any]]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=min(10.0, self.interval_s))
            )
        extra = {"job": target.job, "instance": target.instance}
        up = 0.0
        samples = []
        try:
            async with self._session.get(target.url) as resp:
                body = await resp.text(errors="replace")
                # Reachable but without metrics (404) still counts as up: "down" means unreachable.
                up = 1.0 if resp.status < 500 else 0.0
                if resp.status == 200:
                    samples = await asyncio.to_thread(parse_exposition, body, extra)
        except Exception as exc:
            SCRAPE_FAILURES.labels(target.job).inc()
            log.debug("scrape of %s failed: %s", target.url, exc)
        samples.append((labels_of("up", extra), up))
        return f"target:{target.job}:{target.url}", samples

    async def evaluate(self, now: float) -> None:
        """Scrape, evaluate due groups, hand the result to the dispatcher."""
        await self.scrape(now)
        for group in self.groups:
            due = self.next_eval.get(group.name, 0.0)
            if now + 1e-6 < due:
                continue
            self.next_eval[group.name] = now + (group.interval_s or self.interval_s)
            await self.engine.evaluate_group(group, now)
        if self.engine.offload:
            await asyncio.to_thread(self.store.trim, now)
        else:
            self.store.trim(now)
        self.dispatcher.sync(self.engine.alerts_for_dispatch(), now)
        self.last_eval = now
        self._silence_gauges(now)

    async def step(self, now: float, *, wait: bool = True) -> None:
        """One evaluation plus one dispatch tick at ``now`` (replays and tests drive this)."""
        await self.evaluate(now)
        self.silences.refresh()
        await self.dispatcher.tick(now, wait=wait)
        await self.save()

    def _silence_gauges(self, now: float) -> None:
        counts = {"active": 0, "pending": 0, "expired": 0}
        for s in self.silences.list(refresh=False):
            counts[s.state(now)] += 1
        for state, n in counts.items():
            SILENCES.labels(state).set(n)

    async def save(self) -> None:
        async with self._save_lock:
            if self.engine.changed:
                self.engine.changed = False
                await asyncio.to_thread(write_json, self.state_dir / "alerts.json", self.engine.to_state())
            if self.nflog.dirty:
                snapshot = self.nflog.snapshot()
                self.nflog.dirty = False
                await asyncio.to_thread(write_json, self.state_dir / "nflog.json", snapshot)

    async def reload_rules_if_changed(self) -> bool:
        """Reload rule files edited since the last check. A broken edit is logged and the rules in
        force stay; alert states of unchanged rules carry over."""
        if not self._watch_rules:
            return False
        sig = await asyncio.to_thread(rules_signature, self.config.rules or None)
        if sig == self._rule_sig:
            return False
        self._rule_sig = sig
        try:
            groups = await asyncio.to_thread(load_rule_files, self.config.rules or None)
        except RuleError as exc:
            RELOADS.labels("rejected").inc()
            log.error("alert rules changed but are INVALID; the previous rules stay in force:\n%s", exc)
            return False
        self.groups = groups
        self.engine.set_groups(groups)
        self.next_eval = {k: v for k, v in self.next_eval.items() if any(g.name == k for g in groups)}
        RELOADS.labels("applied").inc()
        log.info(
            "alert rules reloaded: %d group(s), %d rule(s)", len(groups), sum(len(g.rules) for g in groups)
        )
        return True

    # -- live loop ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.engine.offload = True  # live: rule evaluation off the event loop
        self._task = asyncio.create_task(self._run(), name="custos-alerting")

    async def _run(self) -> None:
        next_eval = self.clock()
        while True:
            try:
                now = self.clock()
                if now >= next_eval:
                    await self.reload_rules_if_changed()
                    await self.evaluate(now)
                    next_eval = now + self.interval_s
                await asyncio.to_thread(self.silences.refresh)
                await self.dispatcher.tick(now, wait=False)
                await self.save()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert evaluation failed; retrying at the next interval")
                next_eval = self.clock() + self.interval_s
            # Sleep until the next evaluation or group flush, at most a second (silences, shutdown).
            deadline = min(next_eval, self.dispatcher.next_deadline() or next_eval)
            await asyncio.sleep(min(1.0, max(0.05, deadline - self.clock())))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.dispatcher.drain(grace_s=3.0)
        await self.save()
        if self._session is not None:
            await self._session.close()
        await self.notifier.close()
        if self.engine.prometheus is not None:
            await self.engine.prometheus.close()


def build_service(
    acfg: AlertingConfig,
    state_dir: Path,
    upstream_url: str,
    *,
    self_metrics: Callable[[], bytes] | None = None,
    clock: Callable[[], float] = time.time,
) -> AlertingService:
    """The engine keeping its state in ``state_dir`` (``<state dir>/alerting``); targets include the
    upstream's /metrics unless disabled."""
    targets = [Target(t.job, t.url) for t in acfg.scrape_targets]
    if acfg.scrape_upstream:
        targets.insert(0, Target("upstream", upstream_url.rstrip("/") + "/metrics"))
    return AlertingService(acfg, state_dir, targets=targets, self_metrics=self_metrics, clock=clock)


def leader_lock(state_dir: Path) -> Leader:
    """The lock that makes one process per ``state_dir`` (``<state dir>/alerting``) run the engine."""
    return Leader(state_dir / "engine.lock")
