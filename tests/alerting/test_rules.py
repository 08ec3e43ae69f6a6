"""Rule files: loading errors, export for Prometheus/the Operator, and the default rules checked by
promtool (``check rules``, ``test rules``) with the same alerts our own engine raises."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alerting.engine import RuleEngine
from alerting.rules import RuleError, export, load_rule_files, parse_rules
from alerting.tsdb import MISSING, Store, expand_values, parse_series_selector
from bench.procs import REPO

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")

# Input series that trip every default rule at some point (1 sample per minute from t=0).
SEED_INPUT = [
    ('custos_gpu_utilization_ratio{gpu="0", name="H100", uuid="GPU-0", mig=""}', "0.5 0.95x10 0.3x9"),
    ('custos_gpu_utilization_ratio{gpu="1", name="H100", uuid="GPU-1", mig=""}', "0.5x20"),
    ('custos_gpu_temperature_celsius{gpu="1", name="H100", uuid="GPU-1", mig=""}', "80 88x3 92x5 70x11"),
    ('custos_gpu_memory_used_bytes{gpu="0", mig=""}', "79e9x20"),
    ('custos_gpu_memory_total_bytes{gpu="0", mig=""}', "80e9x20"),
    ('custos_gpu_lost{gpu="2"}', "0x5 1x5 0x9"),
    ('custos_gpu_xid_errors_total{gpu="2", xid="79"}', "0x5 1x14"),
    (
        'custos_request_duration_seconds_bucket{route="/v1/chat/completions", status_class="2xx", le="0.25"}',
        "0+1x20",
    ),
    (
        'custos_request_duration_seconds_bucket{route="/v1/chat/completions", status_class="2xx", le="0.5"}',
        "0+2x20",
    ),
    (
        'custos_request_duration_seconds_bucket{route="/v1/chat/completions", status_class="2xx", le="1"}',
        "0+10x20",
    ),
    (
        'custos_request_duration_seconds_bucket{route="/v1/chat/completions", status_class="2xx", le="+Inf"}',
        "0+10x20",
    ),
    ('custos_requests_total{route="/v1/chat/completions", status_class="5xx"}', "0x4 0+1x15"),
    ('custos_requests_total{route="/v1/chat/completions", status_class="2xx"}', "0+20x20"),
    ('up{job="upstream", instance="127.0.0.1:8000"}', "1 1 0x10 1x7"),
    ("custos_audit_dead_letters_total", "0x5 3x14"),
    ('custos_auth_failures_total{reason="expired"}', "0x10 0+10x9"),
    # The TLS certificate expires at t = 87000 s: less than a day away from 11m on.
    ('custos_tls_certificate_expiry_timestamp_seconds{instance="tls"}', "87000x20"),
    # A sidecar without TLS must not count as a certificate that expired in 1970.
    ('custos_tls_certificate_expiry_timestamp_seconds{instance="plain"}', "0x20"),
]
MINUTES = 20


def _engine_alerts() -> dict[int, list[dict]]:
    """Our engine over SEED_INPUT, evaluated every minute: firing alerts per minute."""
    groups = load_rule_files()
    store = Store(retention_s=1e9)
    for series, values in SEED_INPUT:
        labels = parse_series_selector(series)
        for i, v in enumerate(expand_values(values)):
            if v is not MISSING:
                store.add(labels, i * 60.0, v)  # type: ignore[arg-type]
    engine = RuleEngine(groups, store)
    out: dict[int, list[dict]] = {}

    async def run() -> None:
        for minute in range(MINUTES):
            for g in groups:
                await engine.evaluate_group(g, minute * 60.0)
            out[minute] = [
                {"exp_labels": dict(st.labels), "exp_annotations": dict(st.annotations)}
                for st in engine.alert_states()
                if st.state == "firing"
            ]

    asyncio.run(run())
    return out


def test_seed_table_rules_fire_when_and_as_specified() -> None:
    alerts = _engine_alerts()

    def firing(minute: int, name: str) -> list[dict]:
        return [a for a in alerts[minute] if a["exp_labels"]["alertname"] == name]

    # GPU utilization > 90% for 5 minutes: above from 1m, so firing from 6m, not at 5m.
    assert not firing(5, "CustosGPUUtilizationHigh")
    gpu = firing(6, "CustosGPUUtilizationHigh")
    assert [a["exp_labels"]["gpu"] for a in gpu] == ["0"]
    assert gpu[0]["exp_annotations"]["summary"] == "GPU 0 utilization is 95% (> 90% for 5m)"
    # keep_firing_for 1m: below at 12m, still firing then, resolved at 13m.
    assert firing(12, "CustosGPUUtilizationHigh") and not firing(13, "CustosGPUUtilizationHigh")
    # Latency p95 > 500 ms, for 2m.
    lat = firing(4, "CustosInferenceLatencyHigh")
    assert lat and lat[0]["exp_annotations"]["summary"].startswith("p95 inference latency is 968.8ms")
    # Error rate > 1%: 1 of 21 requests per minute fail from 6m on (steady over the 5m window by 12m).
    err = firing(12, "CustosErrorRateHigh")
    assert err and err[0]["exp_labels"]["severity"] == "critical"
    assert "4.762%" in err[0]["exp_annotations"]["summary"]
    # Both temperature severities, so the dispatcher's critical-inhibits-warning rule has work.
    sev = sorted(a["exp_labels"]["severity"] for a in firing(6, "CustosGPUTemperatureHigh"))
    assert sev == ["critical", "warning"]
    assert firing(4, "CustosUpstreamDown") and firing(12, "CustosAuditDeadLetters")
    assert (
        firing(14, "CustosAuthFailureSpike")
        and firing(6, "CustosGPULost")
        and firing(6, "CustosGPUXIDErrors")
    )
    assert not any(a["exp_labels"]["gpu"] == "1" for a in firing(10, "CustosGPUUtilizationHigh"))
    assert not firing(10, "CustosTLSCertificateExpiringSoon")
    tls = firing(11, "CustosTLSCertificateExpiringSoon")
    assert tls and tls[0]["exp_labels"]["severity"] == "critical"
    assert tls[0]["exp_annotations"]["summary"].startswith("The sidecar's TLS certificate expires in 23h 59m")


@needs_promtool
def test_promtool_agrees_with_engine_on_default_rules(tmp_path: Path) -> None:
    """promtool evaluates the exported default rules on the same series: same alerts, same labels,
    same rendered annotations, minute by minute."""
    groups = load_rule_files()
    (tmp_path / "rules.yaml").write_text(export(groups, "prometheus"))
    names = sorted({r.name for g in groups for r in g.rules if r.kind == "alert"})
    alerts = _engine_alerts()
    cases = []
    for minute in range(MINUTES):
        for name in names:
            exp = [
                {
                    "exp_labels": {k: v for k, v in a["exp_labels"].items() if k != "alertname"},
                    "exp_annotations": a["exp_annotations"],
                }
                for a in alerts[minute]
                if a["exp_labels"]["alertname"] == name
            ]
            cases.append({"eval_time": f"{minute}m", "alertname": name, "exp_alerts": exp})
    assert sum(1 for c in cases if c["exp_alerts"]) > 60
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in SEED_INPUT],
                "alert_rule_test": cases,
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False, allow_unicode=True))
    out = subprocess.run(
        ["promtool", "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


@needs_promtool
@pytest.mark.parametrize("fmt", ["prometheus", "prometheusrule"])
def test_cli_export_passes_promtool_check(tmp_path: Path, fmt: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar.cli",
            "alerts",
            "export",
            "--format",
            fmt,
            "--namespace",
            "monitoring",
            "--label",
            "release=prom",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    if fmt == "prometheusrule":
        assert doc["kind"] == "PrometheusRule" and doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"] == {
            "name": "custos-alerts",
            "namespace": "monitoring",
            "labels": {"app.kubernetes.io/name": "custos", "release": "prom"},
        }
        doc = doc["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(doc))
    check = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    builtin = sum(len(g.rules) for g in load_rule_files())
    assert f"SUCCESS: {builtin} rules found" in check.stdout


def test_export_drops_custos_only_fields_and_keeps_keep_firing_for() -> None:
    groups = parse_rules("""
groups:
  - name: fleet
    source: prometheus
    interval: 30s
    rules:
      - alert: FleetDown
        expr: up == 0
        for: 90s
        keep_firing_for: 2m
""")
    doc = yaml.safe_load(export(groups))
    assert doc == {
        "groups": [
            {
                "name": "fleet",
                "interval": "30s",
                "rules": [{"alert": "FleetDown", "expr": "up == 0", "for": "1m30s", "keep_firing_for": "2m"}],
            }
        ]
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "groups: [{name: g, rules: [{alert: A, expr: 'rate(x)'}]}]",
            "f.yaml:1:45: groups[0].rules[0].expr: rate() expects a range vector",
        ),
        ("groups: [{name: g, rules: [{alert: A, expr: 'x', for: 5 minutes}]}]", "not a duration"),
        ("groups: [{name: g, rules: [{alert: A, expr: 'x', severity: page}]}]", "unknown option"),
        (
            "groups: [{name: g, rules: [{alert: A, record: b, expr: 'x'}]}]",
            "exactly one of 'alert' or 'record'",
        ),
        ("groups: [{name: g, rules: []}, {name: g, rules: []}]", "duplicate group name"),
        (
            "groups: [{name: g, rules: [{alert: A, expr: x, annotations: "
            "{s: '{{ if $value }}x{{ end }}'}}]}]",
            "not supported",
        ),
        ("groups: [{name: g, rules: [{alert: 'bad name', expr: x}]}]", "must match"),
        ("groups: {name: g}", "groups"),
        ("groups: [{name: g, rules: [{alert: A, expr: x}]", "f.yaml:1:48: (yaml): not valid YAML"),
    ],
)
def test_rule_errors_name_the_place(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=re.escape(message)):
        parse_rules(text, "f.yaml")


def test_cli_check_reports_one_clear_line_for_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [{name: g, rules: [{alert: A, expr: 'sum(x[5m])'}]}]\n")
    out = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "alerts", "check", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"{bad}:1:45: groups[0].rules[0].expr: sum() expects an instant vector" in out.stderr
    good = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "alerts", "check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    builtin = sum(len(g.rules) for g in load_rule_files())
    assert good.returncode == 0 and f"{builtin} alerting rule(s)" in good.stdout
