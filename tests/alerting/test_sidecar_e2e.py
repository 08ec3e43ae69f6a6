"""The alert engine inside a real ``custos serve``: it reads the sidecar's own /metrics and the
upstream's, pages a real webhook, serves the RBAC-protected admin API, and after ``kill -9`` and a
restart neither re-pages nor forgets silences."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from alerting.rules import load_rule_files
from bench.procs import REPO
from bench.stack import mint_token

RULES = """
groups:
  - name: e2e
    rules:
      - alert: UpstreamDown
        expr: up{job="upstream"} == 0
        labels: {severity: critical}
        annotations: {summary: 'upstream {{ $labels.instance }} is down'}
      - alert: ModelsListed
        expr: sum(custos_requests_total{route="/v1/models"}) > 0
        labels: {severity: info}
"""

METRICS_OK = b"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n"


def _http(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None, method=method
    )
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _wait(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _hook_alerts(recorder, name: str, status: str) -> list[dict]:
    return [
        a
        for r in recorder.at("/hook")
        for a in r.json()["alerts"]
        if a["labels"]["alertname"] == name and a["status"] == status
    ]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "alerts", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_engine_in_sidecar_pages_serves_api_and_survives_kill9(
    start_sidecar, recorder, tmp_path: Path
) -> None:
    recorder.on("/metrics", always=(503, b"starting"))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cfg = {
        "alerting": {
            "rules": [str(rules)],
            "evaluation_interval": "1s",
            "route": {
                "receiver": "hook",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "hook", "webhook_configs": [{"url": recorder.url + "/hook"}]}],
        }
    }
    sc = start_sidecar(recorder.url, cfg)
    tester = sc.headers["Authorization"].removeprefix("Bearer ")

    # The upstream answers 503 on /metrics: up == 0 -> paged through the real webhook.
    down = _wait(lambda: _hook_alerts(recorder, "UpstreamDown", "firing"), what="UpstreamDown page")
    assert down[0]["annotations"]["summary"] == f"upstream {recorder.url.removeprefix('http://')} is down"
    # A request through the proxy shows up in the sidecar's own metrics, which the engine reads.
    urllib.request.urlopen(
        urllib.request.Request(sc.url + "/v1/models", headers=sc.headers), timeout=10
    ).read()
    _wait(lambda: _hook_alerts(recorder, "ModelsListed", "firing"), what="ModelsListed page")

    # Admin API: 401 without a token, 403 without alerts:read, 200 for a role that has it.
    assert _http(sc.url + "/admin/alerts")[0] == 401
    viewer = mint_token("bob", ["viewer"])
    status, doc = _http(sc.url + "/admin/alerts", token=viewer)
    assert status == 403 and "alerts:read" in doc["error"]["message"]
    status, doc = _http(sc.url + "/admin/alerts", token=tester)
    assert status == 200
    states = {a["labels"]["alertname"]: a["state"] for a in doc["alerts"]}
    assert states == {"UpstreamDown": "firing", "ModelsListed": "firing"}
    assert _http(sc.url + "/admin/alerts/rules", token=tester)[1]["groups"][0]["rules"][0]["health"] == "ok"
    with urllib.request.urlopen(
        urllib.request.Request(sc.url + "/metrics", headers=sc.headers), timeout=10
    ) as r:
        metrics = r.read().decode()
    assert 'custos_alerts{alertname="UpstreamDown",state="firing"} 1.0' in metrics
    assert 'custos_alert_notifications_total{integration="webhook",receiver="hook"}' in metrics

    # Silences over the API (viewer may not) and from the CLI against the state dir.
    assert (
        _http(
            sc.url + "/admin/alerts/silences",
            "POST",
            {"matchers": ['alertname="X"'], "duration": "1h", "comment": "c"},
            token=viewer,
        )[0]
        == 403
    )
    status, doc = _http(
        sc.url + "/admin/alerts/silences",
        "POST",
        {"matchers": ['alertname="ModelsListed"'], "duration": "2h", "comment": "known", "createdBy": "eve"},
        token=tester,
    )
    assert status == 200 and doc["silence"]["createdBy"] == "test-user"
    api_silence = doc["silenceID"]
    bad = _http(
        sc.url + "/admin/alerts/silences",
        "POST",
        {"matchers": ['alertname=~"("'], "duration": "1h"},
        token=tester,
    )
    assert bad[0] == 400 and "bad" in bad[1]["error"]["message"]
    state_dir = Path(sc.config["state"]["dir"])
    out = _cli(
        "silence",
        "add",
        'alertname="Other"',
        "--duration",
        "30m",
        "--comment",
        "cli",
        "--author",
        "carol",
        "--state-dir",
        str(state_dir),
    )
    assert out.returncode == 0, out.stderr
    cli_silence = out.stdout.strip()
    listed = _http(sc.url + "/admin/alerts/silences", token=tester)[1]["silences"]
    assert {s["id"] for s in listed} == {api_silence, cli_silence}
    out = _cli("silence", "list", "--url", sc.url, "--token", tester)
    assert out.returncode == 0 and "carol" in out.stdout and "known" in out.stdout
    out = _cli("silence", "expire", cli_silence[:8], "--url", sc.url, "--token", tester)
    assert out.returncode == 0 and out.stdout.strip() == f"expired {cli_silence}"

    # kill -9 and restart on the same state dir: no second page, silence still there.
    pages = len(_hook_alerts(recorder, "UpstreamDown", "firing"))
    sc.process.kill9()
    sc2 = start_sidecar(recorder.url, cfg, port=sc.port, name="sidecar-restarted")
    _wait(
        lambda: any(
            a["labels"]["alertname"] == "UpstreamDown" and a["state"] == "firing"
            for a in _http(sc2.url + "/admin/alerts", token=tester)[1]["alerts"]
        ),
        what="restored alert",
    )
    silences = {
        s["id"]: s["status"]["state"]
        for s in _http(sc2.url + "/admin/alerts/silences", token=tester)[1]["silences"]
    }
    assert silences == {api_silence: "active", cli_silence: "expired"}
    time.sleep(4)  # several evaluations and group flushes
    assert len(_hook_alerts(recorder, "UpstreamDown", "firing")) == pages

    # The upstream recovers: one resolved notification.
    recorder.on("/metrics", always=(200, METRICS_OK))
    resolved = _wait(lambda: _hook_alerts(recorder, "UpstreamDown", "resolved"), what="resolution")
    assert resolved[0]["endsAt"] != "0001-01-01T00:00:00Z"
    out = _cli("list", "--url", sc2.url, "--token", tester)
    assert out.returncode == 0 and "resolved" in out.stdout and "UpstreamDown" in out.stdout


def test_sidecar_fails_fast_on_a_broken_rule_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("groups: [{name: g, rules: [{alert: A, expr: 'rate(x)'}]}]\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"alerting": {"rules": [str(rules)]}}))
    out = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "serve", "--config", str(cfg), "--port", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert (
        "rules.yaml:1:45: groups[0].rules[0].expr: rate() expects a range vector" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_admin_api_without_identity_needs_the_admin_token(start_sidecar, recorder) -> None:
    recorder.on("/metrics", always=(200, METRICS_OK))
    cfg = {
        "auth": {"enabled": False},
        "rbac": {"enabled": False},
        "alerting": {"evaluation_interval": "1s", "admin": {"token": "s3cret"}},
    }
    sc = start_sidecar(recorder.url, cfg)
    assert _http(sc.url + "/admin/alerts")[0] == 401
    assert _http(sc.url + "/admin/alerts", token="wrong")[0] == 401
    status, doc = _http(sc.url + "/admin/alerts/status", token="s3cret")
    builtin = sum(len(g.rules) for g in load_rule_files())
    assert status == 200 and doc["engine"] == "running" and doc["rules"] == builtin
    assert doc["targets"] == [{"job": "upstream", "url": recorder.url + "/metrics"}]
    status, doc = _http(
        sc.url + "/admin/alerts/silences",
        "POST",
        {
            "matchers": [{"name": "alertname", "value": "CustosGPU.*", "isRegex": True, "isEqual": True}],
            "endsAt": "2099-01-01T00:00:00Z",
            "comment": "am-style matchers",
            "createdBy": "mallory",  # ignored: the author is who authenticated
        },
        token="s3cret",
    )
    assert status == 200 and doc["silence"]["matchers"] == ['alertname=~"CustosGPU.*"']
    assert doc["silence"]["createdBy"] == "admin-token"
    status, doc = _http(sc.url + f"/admin/alerts/silences/{doc['silenceID']}", "DELETE", token="s3cret")
    assert status == 200 and doc["status"]["state"] == "expired"
    assert _http(sc.url + "/admin/alerts/nothing", token="s3cret")[0] == 404
    # The OpenAPI document: behind the admin token like every read.
    assert _http(sc.url + "/admin/alerts/openapi.json")[0] == 401
    status, doc = _http(sc.url + "/admin/alerts/openapi.json", token="s3cret")
    assert status == 200 and doc["info"]["title"] == "Custos alerting admin API"
    assert set(doc["paths"]) == {
        "/admin/alerts", "/admin/alerts/rules", "/admin/alerts/status", "/admin/alerts/silences",
        "/admin/alerts/silences/{silence_id}", "/admin/alerts/receivers/{name}/test",
    }  # fmt: skip
    body = doc["components"]["schemas"]["SilenceRequest"]
    assert body["required"] == ["matchers"]
    assert {"matchers", "startsAt", "endsAt", "duration", "comment"} <= set(body["properties"])
    assert set(doc["components"]["schemas"]["ErrorBody"]["properties"]) == {
        "message",
        "type",
        "param",
        "code",
    }


def test_gpu_simulation_in_a_real_sidecar_pages_wecom(start_sidecar, recorder, tmp_path: Path) -> None:
    """Wall clock this time: the sidecar's GPU collector runs the simulation, the engine reads it from
    the sidecar's own /metrics and pages WeCom; the receiver test endpoint checks the robot key."""
    recorder.on("/metrics", always=(200, METRICS_OK))
    rules = tmp_path / "gpu.yaml"
    rule = {
        "alert": "CustosGPUUtilizationHigh",
        "expr": "custos_gpu_utilization_ratio > 0.9",
        "for": "2s",
        "annotations": {"summary": "GPU {{ $labels.gpu }} at {{ $value | humanizePercentage }}"},
    }
    rules.write_text(yaml.safe_dump({"groups": [{"name": "gpu", "rules": [rule]}]}))
    scenario = Path(__file__).parent / "scenarios" / "busy-now.yaml"
    cfg = {
        "gpu": {"simulation": str(scenario), "interval_s": 0.5},
        "alerting": {
            "rules": [str(rules)],
            "evaluation_interval": "1s",
            "language": "zh",
            "route": {
                "receiver": "wecom",
                "group_by": ["alertname", "gpu"],
                "group_wait": "0s",
                "group_interval": "1s",
            },
            "receivers": [
                {"name": "wecom", "wecom_configs": [{"url": recorder.url + "/wecom?key=k"}]},
                {"name": "log-only"},
            ],
        },
    }
    sc = start_sidecar(recorder.url, cfg)
    page = _wait(lambda: recorder.at("/wecom"), what="WeCom page")[0].json()["markdown"]["content"]
    assert "[告警:1] CustosGPUUtilizationHigh gpu=0" in page and "GPU 0 at 97%" in page
    tester = sc.headers["Authorization"].removeprefix("Bearer ")
    status, doc = _http(sc.url + "/admin/alerts/receivers/wecom/test", "POST", {}, token=tester)
    assert status == 200 and doc["delivered"] == {"wecom/0": True}
    assert "CustosTestNotification" in recorder.at("/wecom")[-1].json()["markdown"]["content"]
    assert _http(sc.url + "/admin/alerts/receivers/nobody/test", "POST", {}, token=tester)[0] == 404
    # A receiver without integrations only logs: the test reports that nothing was sent.
    status, doc = _http(sc.url + "/admin/alerts/receivers/log-only/test", "POST", {}, token=tester)
    assert status == 409 and doc["error"]["code"] == "no_integrations", doc
