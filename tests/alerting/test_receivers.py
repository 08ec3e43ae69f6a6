"""Every receiver against a real peer: a recording HTTP server, aiosmtpd, Alertmanager, a real command."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import ssl
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from alerting.receivers import Notifier
from bench.procs import free_port
from tests.alerting.helpers import T0, alert, config, note


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _send(cfg, receiver: str, n) -> bool:
    async def go() -> bool:
        notifier = Notifier(cfg)
        try:
            results = [await notifier.send(i, n) for i in notifier.integrations(receiver)]
            return all(results)
        finally:
            await notifier.close()

    return asyncio.run(go())


def test_wecom_markdown_in_english_and_chinese(recorder) -> None:
    cfg = config(
        receivers=[
            {
                "name": "en",
                "wecom_configs": [
                    {"url": recorder.url + "/wecom?key=k1", "mentioned_mobile_list": ["13800000000"]}
                ],
            },
            {"name": "zh", "language": "zh", "wecom_configs": [{"url": recorder.url + "/wecom?key=k2"}]},
        ],
        route={"receiver": "en"},
    )
    assert _send(cfg, "en", note([alert(gpu="0")], "en"))
    assert _send(cfg, "zh", note([alert(gpu="1")], "zh"))
    reqs = recorder.at("/wecom")
    assert [r.query["key"] for r in reqs] == ["k1", "k1", "k2"]
    md = reqs[0].json()
    assert md["msgtype"] == "markdown"
    content = md["markdown"]["content"]
    assert (
        "[FIRING:1] CustosGPUUtilizationHigh" in content and "CustosGPUUtilizationHigh summary 0" in content
    )
    assert "\n> Started: 2026-01-01 09:00:00 UTC\n> [Runbook](https://runbooks.example/x)" in content
    mention = reqs[1].json()
    assert mention["msgtype"] == "text" and mention["text"]["mentioned_mobile_list"] == ["13800000000"]
    zh = reqs[2].json()["markdown"]["content"]
    assert "告警" in zh and "开始时间" in zh and "级别：警告" in zh


def test_dingtalk_signature_verifies(recorder) -> None:
    secret = "SECabc123"
    cfg = config(
        receivers=[
            {
                "name": "d",
                "dingtalk_configs": [
                    {
                        "url": recorder.url + "/robot/send?access_token=tok",
                        "secret": secret,
                        "at_mobiles": ["138"],
                    }
                ],
            }
        ],
        route={"receiver": "d"},
    )
    before = int(time.time() * 1000)
    assert _send(cfg, "d", note([alert(gpu="0")], "d"))
    req = recorder.at("/robot/send")[0]
    ts = req.query["timestamp"]
    assert before <= int(ts) <= int(time.time() * 1000)
    # DingTalk's server-side check, written out independently of the code under test.
    expected = base64.b64encode(
        hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    ).decode()
    assert req.query["sign"] == expected and req.query["access_token"] == "tok"
    body = req.json()
    assert body["msgtype"] == "markdown" and body["at"]["atMobiles"] == ["138"]
    assert "@138" in body["markdown"]["text"] and body["markdown"]["title"].startswith("[FIRING:1]")


def test_dingtalk_error_code_is_a_failure(recorder) -> None:
    recorder.on("/robot/send", always=(200, {"errcode": 310000, "errmsg": "sign not match"}))
    cfg = config(
        receivers=[{"name": "d", "dingtalk_configs": [{"url": recorder.url + "/robot/send", "secret": "x"}]}],
        route={"receiver": "d"},
    )
    before = _sample("custos_alert_notifications_failed_total", receiver="d", integration="dingtalk")
    assert not _send(cfg, "d", note([alert()], "d"))
    assert len(recorder.at("/robot/send")) == 1  # not retryable
    assert (
        _sample("custos_alert_notifications_failed_total", receiver="d", integration="dingtalk") == before + 1
    )


def test_feishu_signature_verifies(recorder) -> None:
    cfg = config(
        receivers=[
            {"name": "f", "feishu_configs": [{"url": recorder.url + "/hook/abc", "secret": "s3cr3t"}]}
        ],
        route={"receiver": "f"},
    )
    assert _send(cfg, "f", note([alert(gpu="0")], "f"))
    body = recorder.at("/hook/abc")[0].json()
    ts = body["timestamp"]
    expected = base64.b64encode(hmac.new(f"{ts}\ns3cr3t".encode(), b"", hashlib.sha256).digest()).decode()
    assert body["sign"] == expected
    assert body["msg_type"] == "interactive"
    assert body["card"]["header"]["template"] == "red"
    assert "CustosGPUUtilizationHigh summary 0" in body["card"]["elements"][0]["text"]["content"]


def test_webhook_is_alertmanager_format_with_truncation(recorder) -> None:
    cfg = config(
        receivers=[
            {
                "name": "w",
                "webhook_configs": [{"url": recorder.url + "/hook", "max_alerts": 1, "bearer_token": "t0k"}],
            }
        ],
        route={"receiver": "w"},
    )
    alerts = [alert(gpu="0"), alert(gpu="1", ends=T0 + 30)]
    assert _send(cfg, "w", note(alerts, "w"))
    req = recorder.at("/hook")[0]
    assert req.headers["Authorization"] == "Bearer t0k"
    doc = req.json()
    assert doc["version"] == "4" and doc["status"] == "firing" and doc["receiver"] == "w"
    assert doc["truncatedAlerts"] == 1 and len(doc["alerts"]) == 1
    assert set(doc) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    a = doc["alerts"][0]
    assert a["labels"]["gpu"] == "0" and a["status"] == "firing"
    assert a["startsAt"] == "2026-01-01T09:00:00.000Z" and a["endsAt"] == "0001-01-01T00:00:00Z"
    assert doc["commonLabels"] == {"alertname": "CustosGPUUtilizationHigh", "severity": "warning"}


def test_slack_and_pagerduty_trigger_then_resolve(recorder) -> None:
    cfg = config(
        receivers=[
            {
                "name": "p",
                "slack_configs": [{"api_url": recorder.url + "/slack", "channel": "#oncall"}],
                "pagerduty_configs": [{"url": recorder.url + "/pd", "routing_key": "R0UT1NG"}],
            }
        ],
        route={"receiver": "p"},
    )
    a = alert(gpu="0", severity="critical")
    assert _send(cfg, "p", note([a], "p"))
    a.ends_at = T0 + 100
    assert _send(cfg, "p", note([a], "p", at=T0 + 120))
    slack = [r.json() for r in recorder.at("/slack")]
    assert slack[0]["channel"] == "#oncall" and slack[0]["attachments"][0]["color"] == "danger"
    assert slack[1]["attachments"][0]["color"] == "good"
    pd = [r.json() for r in recorder.at("/pd")]
    assert [e["event_action"] for e in pd] == ["trigger", "resolve"]
    assert pd[0]["dedup_key"] == pd[1]["dedup_key"] and pd[0]["routing_key"] == "R0UT1NG"
    assert pd[0]["payload"]["severity"] == "critical" and "summary" in pd[0]["payload"]


def test_sms_gateway_templates_and_per_recipient(recorder) -> None:
    cfg = config(
        receivers=[
            {
                "name": "s",
                "sms_configs": [
                    {
                        "url": recorder.url + "/sms/send?to={{ to }}",
                        "headers": {
                            "Authorization": "Bearer gw-{{ receiver }}",
                            "Content-Type": "application/json",
                        },
                        "body": '{"phone": {{ to | tojson }}, "msg": {{ text | tojson }}, "sign": "Custos"}',
                        "to": ["+8613800000001", "+8613800000002"],
                        "success_contains": '"ok"',
                    }
                ],
            }
        ],
        route={"receiver": "s"},
    )
    recorder.on("/sms/send", always=(200, {"status": "ok"}))
    assert _send(cfg, "s", note([alert("CustosErrorRateHigh")], "s"))
    reqs = recorder.at("/sms/send")
    assert [r.query["to"] for r in reqs] == ["+8613800000001", "+8613800000002"]
    assert reqs[0].headers["Authorization"] == "Bearer gw-s"
    body = reqs[0].json()
    assert body["phone"] == "+8613800000001" and body["sign"] == "Custos"
    assert body["msg"].startswith("[Custos FIRING] CustosErrorRateHigh: CustosErrorRateHigh summary")


def test_sms_gateway_answer_without_success_marker_is_retried_then_failed(recorder) -> None:
    recorder.on("/sms", always=(200, {"status": "quota exceeded"}))
    cfg = config(
        receivers=[
            {
                "name": "s2",
                "sms_configs": [{"url": recorder.url + "/sms", "to": ["1"], "success_contains": '"ok"'}],
            }
        ],
        route={"receiver": "s2"},
    )
    assert not _send(cfg, "s2", note([alert()], "s2"))
    assert len(recorder.at("/sms")) == 3  # retry.max_attempts


def test_retries_with_backoff_until_the_server_recovers(recorder, caplog) -> None:
    recorder.on("/hook", (503, b"busy"), (500, b"oops"))
    cfg = config(
        receivers=[{"name": "rw", "webhook_configs": [{"url": recorder.url + "/hook"}]}],
        route={"receiver": "rw"},
    )
    retries = _sample("custos_alert_notification_retries_total", receiver="rw", integration="webhook")
    with caplog.at_level(logging.WARNING, logger="custos.alerting.notify"):
        assert _send(cfg, "rw", note([alert()], "rw"))
    assert len(recorder.at("/hook")) == 3
    assert (
        _sample("custos_alert_notification_retries_total", receiver="rw", integration="webhook")
        == retries + 2
    )
    assert _sample("custos_alert_notifications_total", receiver="rw", integration="webhook") >= 1
    assert "attempt 1/3" in caplog.text and "HTTP 503" in caplog.text


def test_unreachable_receiver_is_a_metric_and_a_log_line_never_a_crash(caplog) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    cfg = config(
        receivers=[
            {
                "name": "dead",
                "webhook_configs": [{"url": dead, "timeout_s": 2}],
                "slack_configs": [{"api_url": dead}],
            }
        ],
        route={"receiver": "dead"},
    )
    before = _sample("custos_alert_notifications_failed_total", receiver="dead", integration="webhook")
    with caplog.at_level(logging.ERROR, logger="custos.alerting.notify"):
        assert not _send(cfg, "dead", note([alert()], "dead"))
    assert (
        _sample("custos_alert_notifications_failed_total", receiver="dead", integration="webhook")
        == before + 1
    )
    assert _sample("custos_alert_notifications_failed_total", receiver="dead", integration="slack") >= 1
    assert "notification to dead via webhook/0 failed after 3 attempt(s)" in caplog.text


def test_client_errors_are_not_retried(recorder) -> None:
    recorder.on("/hook", always=(400, {"error": "bad payload"}))
    cfg = config(
        receivers=[{"name": "b", "webhook_configs": [{"url": recorder.url + "/hook"}]}],
        route={"receiver": "b"},
    )
    assert not _send(cfg, "b", note([alert()], "b"))
    assert len(recorder.at("/hook")) == 1


def test_email_plain_smtp_text_and_html(smtp_server) -> None:
    cfg = config(
        receivers=[
            {
                "name": "mail",
                "email_configs": [
                    {
                        "to": ["oncall@example.com", "lead@example.com"],
                        "from": "custos@example.com",
                        "smarthost": f"{smtp_server.host}:{smtp_server.port}",
                        "tls": "none",
                        "headers": {"X-Team": "inference"},
                    }
                ],
            }
        ],
        route={"receiver": "mail"},
    )
    assert _send(cfg, "mail", note([alert("CustosInferenceLatencyHigh")], "mail"))
    msg = smtp_server.messages[0]
    assert smtp_server.envelopes[0].rcpt_tos == ["oncall@example.com", "lead@example.com"]
    assert msg["Subject"] == "[FIRING:1] CustosInferenceLatencyHigh"
    assert msg["From"] == "custos@example.com" and msg["X-Team"] == "inference"
    assert msg["X-Custos-Alert-Status"] == "firing"
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")  # SMTP line endings
    html = msg.get_body(("html",)).get_content()
    assert text.startswith(
        "[FIRING:1] CustosInferenceLatencyHigh\n\n[FIRING] CustosInferenceLatencyHigh (warning): "
    )
    assert "\n  started: 2026-01-01 09:00:00 UTC\n  runbook: https://runbooks.example/x" in text
    assert "<table" in html and "CustosInferenceLatencyHigh summary" in html


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


def test_email_starttls_with_auth(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    got: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            got.append((session.authenticated, session.ssl is not None, envelope.content))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"alerts" and auth_data.password == b"pw"
        return AuthResult(success=ok, handled=False)

    port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=_self_signed(tmp_path),
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        base = {
            "to": ["a@example.com"],
            "smarthost": f"127.0.0.1:{port}",
            "tls": "starttls",
            "tls_insecure_skip_verify": True,
            "auth_username": "alerts",
        }
        ok_cfg = config(
            receivers=[{"name": "m", "email_configs": [{**base, "auth_password": "pw"}]}],
            route={"receiver": "m"},
        )
        assert _send(ok_cfg, "m", note([alert()], "m"))
        assert got and got[0][0] is True and got[0][1] is True
        bad = config(
            receivers=[{"name": "m", "email_configs": [{**base, "auth_password": "wrong"}]}],
            route={"receiver": "m"},
        )
        assert not _send(bad, "m", note([alert()], "m"))
        assert len(got) == 1
    finally:
        controller.stop()


def test_forward_to_a_real_alertmanager(alertmanager) -> None:
    cfg = config(
        receivers=[{"name": "am", "alertmanager_configs": [{"url": alertmanager.url}]}],
        route={"receiver": "am"},
    )
    now = time.time()
    a = alert("CustosUpstreamDown", at=now - 60, instance="127.0.0.1:8000", severity="critical")
    assert _send(cfg, "am", note([a], "am", at=now))

    def listed() -> list[dict]:
        with urllib.request.urlopen(
            alertmanager.url + "/api/v2/alerts?active=true&silenced=false", timeout=5
        ) as r:
            return json.loads(r.read())

    deadline = time.monotonic() + 15
    found: list[dict] = []
    while time.monotonic() < deadline and not found:
        found = [x for x in listed() if x["labels"].get("alertname") == "CustosUpstreamDown"]
        time.sleep(0.2)
    assert found, listed()
    assert found[0]["labels"]["instance"] == "127.0.0.1:8000"
    assert found[0]["annotations"]["summary"] == "CustosUpstreamDown summary"
    assert found[0]["status"]["state"] == "active"
    # Resolution: endsAt in the past; Alertmanager stops listing it as active.
    a.ends_at = time.time() - 1
    assert _send(cfg, "am", note([a], "am", at=time.time()))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
        x["labels"].get("alertname") == "CustosUpstreamDown" for x in listed()
    ):
        time.sleep(0.2)
    assert not any(x["labels"].get("alertname") == "CustosUpstreamDown" for x in listed())


def test_audible_alarm_command_gets_env_and_json(tmp_path: Path) -> None:
    out = tmp_path / "alarm.txt"
    script = (
        "import os, sys, json; d = json.load(sys.stdin); "
        f"open({str(out)!r}, 'w').write(os.environ['CUSTOS_ALERT_STATUS'] + '|' + "
        "os.environ['CUSTOS_ALERT_NAMES'] + '|' + sys.argv[1] + '|' + d['alerts'][0]['labels']['alertname'])"
    )
    cfg = config(
        receivers=[
            {
                "name": "noc",
                "command_configs": [
                    {"command": [sys.executable, "-c", script, "{{ commonLabels.severity }}"]}
                ],
            }
        ],
        route={"receiver": "noc"},
    )
    assert _send(cfg, "noc", note([alert("CustosInferenceLatencyHigh")], "noc"))
    assert out.read_text() == "firing|CustosInferenceLatencyHigh|warning|CustosInferenceLatencyHigh"
    failing = config(
        receivers=[
            {"name": "noc", "command_configs": [{"command": [sys.executable, "-c", "raise SystemExit(3)"]}]}
        ],
        route={"receiver": "noc"},
    )
    assert not _send(failing, "noc", note([alert()], "noc"))
    missing = config(
        receivers=[{"name": "noc", "command_configs": [{"command": ["/nonexistent/paplay"]}]}],
        route={"receiver": "noc"},
    )
    assert not _send(missing, "noc", note([alert()], "noc"))


def test_custom_template_directory_overrides_a_builtin(tmp_path: Path, recorder) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "markdown.j2").write_text("CUSTOM {{ alerts | length }} {{ commonLabels.alertname }}")
    cfg = config(
        templates=[str(tmp_path)],
        receivers=[{"name": "w", "wecom_configs": [{"url": recorder.url + "/w"}]}],
        route={"receiver": "w"},
    )
    assert _send(cfg, "w", note([alert()], "w"))
    assert recorder.at("/w")[0].json()["markdown"]["content"] == "CUSTOM 1 CustosGPUUtilizationHigh"


@pytest.mark.parametrize("secret_field", ["secret"])
def test_inline_message_template_is_sandboxed(recorder, secret_field: str) -> None:
    cfg = config(
        receivers=[
            {
                "name": "w",
                "wecom_configs": [
                    {"url": recorder.url + "/w", "message": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}
                ],
            }
        ],
        route={"receiver": "w"},
    )
    assert not _send(cfg, "w", note([alert()], "w"))
    assert recorder.at("/w") == []


def test_sms_gateway_with_form_body_and_signed_header(recorder) -> None:
    """A Twilio-style form body with basic auth, plus an HMAC signature header computed in the template."""
    cfg = config(
        receivers=[
            {
                "name": "s",
                "sms_configs": [
                    {
                        "url": recorder.url + "/2010-04-01/Accounts/AC1/Messages.json",
                        "headers": {
                            "Content-Type": "application/x-www-form-urlencoded",
                            "Authorization": "Basic {{ 'AC1:tok' | b64encode }}",
                            "X-Timestamp": "{{ now() }}",
                            "X-Signature": "{{ hmac_sha256('k3y', to ~ '|' ~ text, 'base64') }}",
                        },
                        "body": "To={{ to | urlencode }}&From=%2B15550000000&Body={{ text | urlencode }}",
                        "to": ["+8613800000001"],
                    }
                ],
            }
        ],
        route={"receiver": "s"},
    )
    assert _send(cfg, "s", note([alert("CustosErrorRateHigh")], "s"))
    req = recorder.at("/2010-04-01/Accounts/AC1/Messages.json")[0]
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"AC1:tok").decode()
    from urllib.parse import parse_qs

    form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
    assert form["To"] == "+8613800000001" and form["From"] == "+15550000000"
    assert form["Body"].startswith("[Custos FIRING] CustosErrorRateHigh")
    expected = base64.b64encode(
        hmac.new(b"k3y", f"{form['To']}|{form['Body']}".encode(), hashlib.sha256).digest()
    )
    assert req.headers["X-Signature"] == expected.decode()
    assert abs(int(req.headers["X-Timestamp"]) - time.time()) < 600
