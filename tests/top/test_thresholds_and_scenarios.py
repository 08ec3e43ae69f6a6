"""Colours follow the alert rules (not numbers in the view), and ``custos alerts test --scenario``
accepts the bundled scenario names that ``custos gpu scenarios`` lists."""

from __future__ import annotations

import subprocess

from bench.procs import custos_cmd
from sidecar.top.thresholds import Thresholds


def test_thresholds_come_from_the_rules() -> None:
    builtin = Thresholds.builtin()
    assert builtin.level("custos_gpu_temperature_celsius", 84) is None
    assert builtin.level("custos_gpu_temperature_celsius", 86) == "warning"
    assert builtin.level("custos_gpu_temperature_celsius", 93) == "critical"
    assert builtin.level("custos_gpu_clock_event_reason", 1, {"reason": "hw_thermal_slowdown"}) == "warning"
    assert builtin.level("custos_gpu_clock_event_reason", 1, {"reason": "sw_power_cap"}) is None
    mem = ("custos_gpu_memory_used_bytes", "custos_gpu_memory_total_bytes")
    assert builtin.level(mem, 0.98) == "warning" and builtin.level(mem, 0.5) is None
    p95 = "custos_request_duration_seconds_bucket"
    chat = {"route": "/v1/chat/completions", "status_class": "2xx"}
    assert builtin.level(p95, 0.6, chat, quantile=0.95) == "warning"
    assert builtin.level(p95, 0.6, {"route": "/metrics", "status_class": "2xx"}, quantile=0.95) is None
    assert builtin.level("custos_audit_ship_lag_seconds", 601) == "warning"
    assert builtin.level("custos_audit_dead_letters_total", 1) == "critical"

    # The sidecar's own rules (GET /admin/alerts/rules) replace the built-in numbers.
    slow = "0.2 < histogram_quantile(0.95, sum by (le) (rate(custos_request_duration_seconds_bucket[5m])))"
    hot = {"alert": "Hot", "expr": "custos_gpu_temperature_celsius >= 70", "labels": {"severity": "critical"}}
    rules = [hot, {"alert": "Slow", "expr": slow}, {"record": "x", "expr": "sum(up)"}]
    api = {"groups": [{"name": "site", "rules": rules}]}
    site = Thresholds.from_api(api)
    assert site is not None and site.source == "the sidecar's rules"
    assert site.level("custos_gpu_temperature_celsius", 70) == "critical"
    assert site.level("custos_gpu_temperature_celsius", 69) is None
    assert site.level(p95, 0.3, chat, quantile=0.95) == "warning"  # default severity, flipped comparison
    assert site.limits("custos_gpu_temperature_celsius") == ">= 70 critical"
    assert Thresholds.from_api({"groups": []}) is None  # a worker without the engine: keep the others


def _alerts_test(scenario: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        custos_cmd("alerts", "test", "--scenario", scenario), capture_output=True, text=True, timeout=120
    )


def test_alerts_test_accepts_bundled_gpu_scenario_names() -> None:
    listed = subprocess.run(custos_cmd("gpu", "scenarios"), capture_output=True, text=True, timeout=60)
    assert "thermal-spike" in listed.stdout.split()
    proc = _alerts_test("thermal-spike")
    assert proc.returncode == 0, proc.stderr
    assert "PENDING   CustosGPUTemperatureHigh" in proc.stdout
    assert "CustosGPUThermalThrottling" in proc.stdout
    proc = _alerts_test("gpu-saturated")  # the alerting's own bundled scenario, by name too
    assert proc.returncode == 0, proc.stderr
    assert "CustosGPUUtilizationHigh" in proc.stdout
    proc = _alerts_test("no-such-scenario")
    assert proc.returncode == 2
    assert "no bundled scenario of that name" in proc.stderr and "thermal-spike" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
