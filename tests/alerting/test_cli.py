"""``custos alerts test`` and the silence commands on a state dir, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from alerting.rules import load_rule_files
from bench.procs import REPO


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "alerts", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_alerts_test_replays_a_gpu_scenario_and_says_who_gets_paged() -> None:
    out = _cli("test", "--scenario", "alerting/scenarios/gpu-saturated.yaml")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    builtin = sum(len(g.rules) for g in load_rule_files())
    assert lines[0] == f"replayed 20m in steps of 15s ({builtin} rules)"
    pending = next(line for line in lines if "PENDING" in line)
    assert pending.split()[0] == "+1m" and 'CustosGPUUtilizationHigh{gpu="0"' in pending
    notify = [line for line in lines if "NOTIFY" in line]
    assert notify[0].split()[0] == "+6m30s" and notify[0].endswith("firing -> wecom via log/0")
    assert notify[-1].endswith("resolved -> wecom via log/0")
    assert 'gpu="1"' not in out.stdout  # GPU 1 never crossed 90%


def test_alerts_test_json_with_series_scenario_and_custom_rules(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(
        "groups: [{name: g, rules: [{alert: ErrorsHigh, expr: 'rate(errors_total[1m]) > 1', "
        "for: 1m, labels: {severity: critical}}]}]\n"
    )
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "interval: 15s\nduration: 6m\nseries:\n"
        '  - series: errors_total{job="api"}\n    values: 0+30x12 360x12\n'
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "alerting:\n  route: {receiver: pager, group_wait: 10s}\n  receivers: [{name: pager, "
        "pagerduty_configs: [{routing_key: k}]}]\n"
    )
    out = _cli("test", "--rules", str(rules), "--scenario", str(scenario), "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [(e["at_s"], e["event"]) for e in events]
    # Prometheus' rate(): 1.5/s first seen at 45s (extrapolation), firing 1m later, paged after group_wait.
    assert kinds[:3] == [(45.0, "pending"), (105.0, "firing"), (120.0, "notify")]
    notify = [e for e in events if e["event"] == "notify"]
    assert notify[0]["detail"] == "firing -> pager via pagerduty/0" and notify[0]["labels"]["job"] == "api"
    assert any(e["event"] == "resolved" for e in events)


def test_alerts_test_rejects_a_bad_scenario_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("series:\n  - series: x\n    values: 1+zx3\n")
    out = _cli("test", "--scenario", str(bad))
    assert out.returncode == 2 and "bad series value '1+zx3'" in out.stderr and "Traceback" not in out.stderr
    out = _cli("test", "--scenario", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "scenario file not found" in out.stderr


def test_silence_add_list_expire_on_the_state_dir(tmp_path: Path) -> None:
    state = str(tmp_path)
    out = _cli(
        "silence",
        "add",
        'alertname="CustosGPUUtilizationHigh"',
        'gpu=~"0|1"',
        "--duration",
        "2h",
        "--comment",
        "driver upgrade",
        "--author",
        "alice",
        "--state-dir",
        state,
    )
    assert out.returncode == 0, out.stderr
    sid = out.stdout.strip()
    assert len(sid) == 32
    out = _cli("silence", "list", "--state-dir", state)
    assert sid[:12] in out.stdout and "active" in out.stdout and "driver upgrade" in out.stdout
    assert 'gpu=~"0|1"' in out.stdout
    doc = json.loads((tmp_path / "alerting" / "silences.json").read_text())
    assert doc["silences"][0]["created_by"] == "alice" and doc["silences"][0]["ends_at"] > time.time() + 7000
    assert _cli("silence", "expire", sid[:6], "--state-dir", state).returncode == 0
    assert "no silences" in _cli("silence", "list", "--state-dir", state).stdout
    assert "expired" in _cli("silence", "list", "--all", "--state-dir", state).stdout
    # Mistakes are one clear line, exit 2.
    for args, msg in [
        (
            ["silence", "add", "gpu=0", "--comment", "x", "--duration", "soon"],
            "--duration: 'soon' is not a duration",
        ),
        (["silence", "add", 'gpu=~".*"', "--comment", "x"], "would silence every alert"),
        (["silence", "add", "gpu", "--comment", "x"], "bad matcher 'gpu'"),
        (["silence", "add", 'alertname=~"Custos(?=GPU)"', "--comment", "x"], "lookahead"),
        (["silence", "expire", "ffff"], "no single silence with id 'ffff'"),
        (["silence", "add", "a=b", "--comment", "x", "--until", "tomorrow"], "--until 'tomorrow'"),
    ]:
        out = _cli(*args, "--state-dir", state)
        assert out.returncode == 2 and msg in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


def test_send_test_reports_each_integration(recorder, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    team = {
        "name": "team",
        "language": "zh",
        "dingtalk_configs": [{"url": recorder.url + "/robot", "secret": "s"}],
        "webhook_configs": [{"url": recorder.url + "/broken"}],
    }
    alerting = {
        "retry": {"max_attempts": 2, "initial_backoff_s": 0.05},
        "route": {"receiver": "team"},
        "receivers": [team],
    }
    cfg.write_text(yaml.safe_dump({"alerting": alerting}))
    recorder.on("/broken", always=(500, b"down"))
    out = _cli("send-test", "--receiver", "team", "--config", str(cfg))
    assert out.returncode == 1
    assert out.stdout.splitlines() == ["dingtalk/0: delivered", "webhook/0: FAILED (see the log above)"]
    body = recorder.at("/robot")[0].json()
    assert "CustosTestNotification" in body["markdown"]["text"] and "告警" in body["markdown"]["title"]
    assert len(recorder.at("/broken")) == 2
    out = _cli("send-test", "--receiver", "nobody", "--config", str(cfg))
    assert out.returncode == 2 and "no such receiver (have: team)" in out.stderr
