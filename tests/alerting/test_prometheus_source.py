"""``source: prometheus`` groups are evaluated by a real Prometheus over its HTTP API."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from alerting.rules import parse_rules
from alerting.service import AlertingService
from bench.procs import ManagedProcess, free_port
from tests.alerting.helpers import config

RULES = """
groups:
  - name: fleet
    source: prometheus
    rules:
      - alert: PrometheusSelfScrapeUp
        expr: up{job="prometheus"} == 1
        labels: {severity: info}
        annotations: {summary: 'target {{ $labels.instance }} is up'}
      - alert: FleetBroken
        expr: rate(up)
"""


@pytest.fixture
def prometheus(tmp_path: Path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed")
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                ],
            }
        )
    )
    proc = ManagedProcess(
        "prometheus",
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(url + "/-/ready", timeout=60)
    yield url
    proc.stop()


def test_prometheus_groups_fire_and_a_bad_query_is_a_health_error(prometheus: str, tmp_path: Path) -> None:
    # FleetBroken is not valid PromQL: only Prometheus can tell (no local parse for remote groups).
    groups = parse_rules(RULES)
    cfg = config(
        prometheus={"url": prometheus}, receivers=[{"name": "default"}], route={"receiver": "default"}
    )

    async def run() -> tuple[list, dict]:
        svc = AlertingService(cfg, tmp_path / "state", groups=groups)
        deadline = time.monotonic() + 30
        firing: list = []
        while time.monotonic() < deadline and not firing:
            await svc.evaluate(time.time())
            firing = [st for st in svc.engine.alert_states() if st.rule == "PrometheusSelfScrapeUp"]
            await asyncio.sleep(0.5)
        health = {k[1]: (h.health, h.last_error) for k, h in svc.engine.health.items()}
        await svc.stop()
        return firing, health

    firing, health = asyncio.run(run())
    assert firing and firing[0].labels["instance"].startswith("127.0.0.1:")
    assert firing[0].annotations["summary"] == f"target {firing[0].labels['instance']} is up"
    assert firing[0].state == "firing"  # for: 0s
    assert health["PrometheusSelfScrapeUp"] == ("ok", "")
    assert health["FleetBroken"][0] == "err" and "400" in health["FleetBroken"][1]


def test_prometheus_down_is_counted_not_fatal(tmp_path: Path) -> None:
    groups = parse_rules(RULES.split("      - alert: FleetBroken")[0])
    cfg = config(
        prometheus={"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2},
        receivers=[{"name": "default"}],
        route={"receiver": "default"},
    )
    before = REGISTRY.get_sample_value("custos_alert_rule_evaluation_failures_total", {"group": "fleet"}) or 0

    async def run() -> str:
        svc = AlertingService(cfg, tmp_path / "state", groups=groups)
        await svc.evaluate(time.time())
        err = svc.engine.health[("fleet", "PrometheusSelfScrapeUp")].last_error
        await svc.stop()
        return err

    assert "Cannot connect to host" in asyncio.run(run())
    assert (
        REGISTRY.get_sample_value("custos_alert_rule_evaluation_failures_total", {"group": "fleet"})
        == before + 1
    )
