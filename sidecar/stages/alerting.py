"""The ``alerting`` stage: no per-request hooks, only a background service and the admin API.

``build(section, env)`` is listed in ``sidecar.pipeline.STAGES`` with the ``alerting`` section. At startup
one process per state dir (the lock holder among uvicorn workers) runs the engine; every process
mounts ``/admin/alerts``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alerting.api import PREFIX, AlertsAPI, make_authorizer
from alerting.config import AlertingConfig
from alerting.service import AlertingService, build_service, leader_lock
from alerting.silences import SilenceStore
from alerting.state import Leader
from sidecar.stage import Stage, StageEnv

log = logging.getLogger("custos.alerting")


class AlertingStage(Stage):
    name = "alerting"

    def __init__(self, config: AlertingConfig, state_dir: Path, upstream_url: str) -> None:
        self.config = config
        self.state_dir = state_dir.expanduser() / "alerting"
        # Built now so rule-file and template errors fail `custos serve` at startup, not later.
        self.service: AlertingService | None = build_service(config, self.state_dir, upstream_url)
        self.leader: Leader | None = None

    async def startup(self, app: Any) -> None:
        cfg = self.config
        state_dir = self.state_dir
        self.leader = leader_lock(state_dir)
        try:
            leading = self.leader.acquire()
        except OSError as exc:
            # Alerting must work even when the state dir is unusable; it just cannot persist.
            log.error(
                "alert state dir %s unusable (%s): alerts and silences will not survive a restart",
                state_dir,
                exc,
            )
            leading, self.leader = True, None
        if leading:
            assert self.service is not None
            render = getattr(app, "render_metrics", None)
            self.service.self_metrics = render
            self.service.start()
            log.info(
                "alert engine started: %d rule group(s), every %s, state in %s",
                len(self.service.groups),
                cfg.evaluation_interval,
                state_dir,
            )
        else:
            log.info("alert engine runs in another worker (lock %s held)", self.leader.path)
            self.service = None
        if cfg.admin.enabled and hasattr(app, "mount"):
            silences = self.service.silences if self.service else SilenceStore(state_dir / "silences.json")
            api = AlertsAPI(
                self.service,
                silences,
                make_authorizer(app, cfg.admin),
                cfg.admin,
                state_dir,
                # Workers without the engine judge a silence's breadth against the same rules.
                rule_files=cfg.rules or None,
                external_labels=cfg.external_labels,
            )
            app.mount(PREFIX, api)

    async def shutdown(self) -> None:
        if self.service is not None:
            await self.service.stop()
        if self.leader is not None:
            self.leader.release()


def build(alerting: AlertingConfig, env: StageEnv) -> Stage | None:
    if not alerting.enabled:
        return None
    return AlertingStage(alerting, env.state_dir, env.upstream_url)
