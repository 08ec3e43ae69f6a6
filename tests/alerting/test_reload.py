"""Rule files edited while the sidecar runs are reloaded; a broken edit keeps the rules in force."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alerting.service import AlertingService
from tests.alerting.helpers import T0, config

V1 = "groups: [{name: g, rules: [{alert: Hot, expr: 'temp > 80'}, {alert: Cold, expr: 'temp < 10'}]}]\n"
V2 = "groups: [{name: g, rules: [{alert: Hot, expr: 'temp > 90'}]}]\n"
BROKEN = "groups: [{name: g, rules: [{alert: Hot, expr: 'temp >'}]}]\n"


def test_reload_keeps_states_applies_edits_and_rejects_broken_files(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(V1)
    cfg = config(rules=[str(rules)], receivers=[{"name": "default"}], route={"receiver": "default"})

    async def run() -> None:
        svc = AlertingService(cfg, tmp_path / "state")
        labels = (("__name__", "temp"), ("gpu", "0"))
        svc.store.add(labels, T0, 95.0)
        await svc.evaluate(T0)
        assert [st.rule for st in svc.engine.alert_states()] == ["Hot"]
        assert not await svc.reload_rules_if_changed()  # unchanged
        rules.write_text(V2)
        os.utime(rules, ns=(1, 2))
        assert await svc.reload_rules_if_changed()
        assert [r.name for g in svc.groups for r in g.rules] == ["Hot"]
        # The firing-since time of the kept rule carries over.
        assert [st.active_at for st in svc.engine.alert_states()] == [T0]
        rules.write_text(BROKEN)
        os.utime(rules, ns=(3, 4))
        assert not await svc.reload_rules_if_changed()
        assert [r.expr for g in svc.groups for r in g.rules] == ["temp > 90"]
        svc.store.add(labels, T0 + 15, 85.0)
        await svc.evaluate(T0 + 15)  # 85 is not > 90 under the new rule: resolved
        assert [st.state for st in svc.engine.alert_states()] == ["inactive"]
        await svc.stop()

    asyncio.run(run())
