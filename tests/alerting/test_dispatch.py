"""Routing tree, grouping, inhibition, silences, mute time intervals and dedup (Alertmanager's
semantics), driven through the replay on series scenarios; notifications are recorded (dry run)."""

from __future__ import annotations

import asyncio

import pytest

from alerting.config import AlertingConfig
from alerting.dispatch import Route
from alerting.replay import Replay, parse_scenario
from alerting.rules import parse_rules
from alerting.timeintervals import TimeIntervals
from tests.alerting.helpers import config

RULES = parse_rules("""
groups:
  - name: t
    rules:
      - alert: GPUHot
        expr: temp > 80
        labels: {severity: warning, team: gpu}
        annotations: {summary: 'GPU {{ $labels.gpu }} at {{ $value }}'}
      - alert: GPULost
        expr: lost == 1
        labels: {severity: critical, team: gpu}
      - alert: QueueLong
        expr: queue > 10
        for: 2m
        labels: {severity: warning, team: inference}
""")


def _run(cfg: AlertingConfig, doc: dict) -> list:
    replay = Replay(cfg, RULES, parse_scenario(doc))
    return asyncio.run(replay.run())


def _sent(events: list, receiver: str | None = None) -> list[tuple[float, str, str, str]]:
    out = []
    for e in events:
        if e.kind == "notify":
            status, _, rest = e.detail.partition(" -> ")
            recv = rest.split(" via ")[0]
            if receiver is None or recv == receiver:
                out.append((e.at, e.alert, e.labels.get("gpu", ""), status))
    return out


RECEIVERS = [{"name": n} for n in ("default", "gpu", "gpu-critical", "audit", "inference")]


def test_route_tree_matchers_continue_and_inheritance() -> None:
    cfg = config(
        receivers=RECEIVERS,
        route={
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "1m",
            "group_interval": "1m",
            "routes": [
                {
                    "matchers": ['team="gpu"'],
                    "receiver": "gpu",
                    "continue": True,
                    "group_by": ["..."],
                    "routes": [{"matchers": ['severity=~"crit.*"'], "receiver": "gpu-critical"}],
                },
                {"matchers": ['team=~"gpu|inference"', 'severity!="critical"'], "receiver": "inference"},
                {"matchers": ['team!~"gpu|inference"'], "receiver": "audit"},
            ],
        },
    )
    root = Route(cfg.route)
    recv = lambda labels: [r.receiver for r in root.match(labels)]  # noqa: E731
    assert recv({"team": "gpu", "severity": "warning"}) == ["gpu", "inference"]
    assert recv({"team": "gpu", "severity": "critical"}) == ["gpu-critical"]
    assert recv({"team": "inference", "severity": "warning"}) == ["inference"]
    assert recv({"team": "audit"}) == ["audit"]
    assert recv({}) == ["audit"]
    gpu = root.routes[0]
    assert gpu.group_all and gpu.routes[0].group_wait == 60 and gpu.routes[0].group_all


def test_grouping_group_wait_interval_and_resolved() -> None:
    cfg = config(
        receivers=RECEIVERS,
        route={
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "2m",
            "repeat_interval": "1h",
        },
    )
    events = _run(
        cfg,
        {
            "interval": "15s",
            "duration": "12m",
            "series": [
                {"series": 'temp{gpu="0"}', "values": "90x28 50x20"},  # hot 0..7m
                {"series": 'temp{gpu="1"}', "values": "50x4 90x24 50x20"},  # hot 1m..7m
            ],
        },
    )
    sent = _sent(events)
    # One group (alertname): GPU 0 pages after group_wait; GPU 1 joins and goes out with the next
    # group_interval flush; both resolutions in one later flush.
    assert sent == [
        (30.0, "GPUHot", "0", "firing"),
        (150.0, "GPUHot", "0", "firing"),
        (150.0, "GPUHot", "1", "firing"),
        (510.0, "GPUHot", "0", "resolved"),
        (510.0, "GPUHot", "1", "resolved"),
    ]


def test_inhibition_lost_gpu_suppresses_its_other_alerts_only() -> None:
    cfg = config(
        receivers=RECEIVERS,
        route={
            "receiver": "default",
            "group_by": ["alertname", "gpu"],
            "group_wait": "0s",
            "group_interval": "1m",
        },
        inhibit_rules=[
            {
                "source_matchers": ['alertname="GPULost"'],
                "target_matchers": ['alertname="GPUHot"'],
                "equal": ["gpu"],
            }
        ],
    )
    events = _run(
        cfg,
        {
            "interval": "15s",
            "duration": "5m",
            "series": [
                {"series": 'lost{gpu="0"}', "values": "1x20"},
                {"series": 'temp{gpu="0"}', "values": "95x20"},
                {"series": 'temp{gpu="1"}', "values": "95x20"},
            ],
        },
    )
    assert sorted({(a, g) for _, a, g, _ in _sent(events)}) == [("GPUHot", "1"), ("GPULost", "0")]
    assert any(
        e.alert == "GPUHot" and e.labels["gpu"] == "0" and "inhibited by GPULost" in e.detail for e in events
    )


def test_silence_window_and_regex_matchers() -> None:
    cfg = config(
        receivers=RECEIVERS,
        route={
            "receiver": "default",
            "group_by": ["alertname", "gpu"],
            "group_wait": "0s",
            "group_interval": "1m",
            "repeat_interval": "1h",
        },
    )
    events = _run(
        cfg,
        {
            "interval": "15s",
            "duration": "10m",
            "series": [
                {"series": 'temp{gpu="0"}', "values": "95x40"},
                {"series": 'temp{gpu="1"}', "values": "95x40"},
                {"series": 'temp{gpu="2"}', "values": "95x40"},
            ],
            "silences": [
                {
                    "matchers": ['alertname="GPUHot"', 'gpu=~"0|1"'],
                    "start": "0s",
                    "end": "5m",
                    "comment": "maintenance",
                }
            ],
        },
    )
    first = {g: t for t, _, g, s in _sent(events) if s == "firing"}
    assert first == {"2": 0.0, "0": 300.0, "1": 300.0}


def test_for_duration_and_flapping_alert_never_pages() -> None:
    cfg = config(
        receivers=RECEIVERS, route={"receiver": "default", "group_wait": "0s", "group_interval": "1m"}
    )
    events = _run(
        cfg,
        {
            "interval": "15s",
            "duration": "8m",
            "series": [
                {"series": "queue", "values": "20x6 0 20x6 0 20x6 0"},  # never 2 minutes in a row
            ],
        },
    )
    assert "pending" in [e.kind for e in events] and "firing" not in [e.kind for e in events]
    assert not _sent(events)


def test_mute_time_interval_holds_notifications_until_it_ends() -> None:
    cfg = config(
        receivers=RECEIVERS,
        time_intervals=[
            {"name": "night", "time_intervals": [{"times": [{"start_time": "09:00", "end_time": "09:10"}]}]}
        ],
        route={
            "receiver": "default",
            "group_wait": "0s",
            "group_interval": "1m",
            "routes": [{"matchers": ['team="gpu"'], "receiver": "gpu", "mute_time_intervals": ["night"]}],
        },
    )
    # The replay starts at 2026-01-01 09:00 UTC: muted for the first 10 minutes.
    events = _run(
        cfg,
        {"interval": "15s", "duration": "15m", "series": [{"series": 'temp{gpu="0"}', "values": "95x60"}]},
    )
    assert _sent(events, "gpu")[0][0] == 600.0


def test_send_resolved_false_sends_no_resolution() -> None:
    from alerting.receivers import Notifier

    cfg = config(
        receivers=[{"name": "default", "sms_configs": [{"url": "http://127.0.0.1:9/x", "to": ["1"]}]}],
        route={"receiver": "default", "group_wait": "0s", "group_interval": "1m"},
    )
    assert Notifier(cfg).integrations("default")[0].send_resolved is False
    events = _run(
        cfg,
        {
            "interval": "15s",
            "duration": "6m",
            "series": [{"series": 'temp{gpu="0"}', "values": "95x8 50x20"}],
        },
    )
    assert [s for *_, s in _sent(events)] == ["firing"]


def test_time_interval_fields() -> None:
    cfg = AlertingConfig.model_validate(
        {
            "time_intervals": [
                {
                    "name": "office",
                    "time_intervals": [
                        {
                            "times": [{"start_time": "09:00", "end_time": "18:00"}],
                            "weekdays": ["monday:friday"],
                            "location": "Asia/Shanghai",
                        }
                    ],
                },
                {"name": "eom", "time_intervals": [{"days_of_month": ["-1"], "months": ["january"]}]},
            ]
        }
    )
    ti = TimeIntervals(cfg.time_intervals)
    # 2026-01-01 is a Thursday; 09:00 UTC = 17:00 in Shanghai.
    assert ti.active("office", 1_767_258_000.0)
    assert not ti.active("office", 1_767_258_000.0 + 3600)  # 18:00 Shanghai
    assert not ti.active("office", 1_767_258_000.0 + 2 * 86400)  # Saturday
    assert ti.active("eom", 1_767_258_000.0 + 30 * 86400) and not ti.active("eom", 1_767_258_000.0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"route": {"receiver": "nobody"}}, "no receiver named 'nobody'"),
        ({"route": {"receiver": "default", "matchers": ['severity="critical']}}, "bad matcher"),
        ({"route": {"receiver": "default", "matchers": ['gpu=~"(0"']}}, "bad regex"),
        ({"route": {"receiver": "default", "matchers": ['gpu=~"(0)\\\\1"']}}, "backreferences"),
        ({"route": {"receiver": "default", "group_wait": "soon"}}, "not a duration"),
        (
            {"route": {"receiver": "default", "mute_time_intervals": ["night"]}},
            "no time interval named 'night'",
        ),
        ({"receivers": [{"name": "a"}, {"name": "a"}], "route": {"receiver": "a"}}, "unique"),
        ({"time_intervals": [{"name": "x", "time_intervals": [{"weekdays": ["funday"]}]}]}, "funday"),
        ({"time_intervals": [{"name": "x", "time_intervals": [{"location": "Mars/Base"}]}]}, "time zone"),
        (
            {"receivers": [{"name": "default", "email_configs": [{"to": ["a@b"], "smarthost": "nohost"}]}]},
            "host:port",
        ),
        ({"rules": ["/nonexistent/rules.yaml"]}, "rule file not found"),
        ({"inhibit_rules": [{"source_matchers": ['a="b"'], "target_matchers": []}]}, "at least 1"),
    ],
)
def test_config_errors_name_field_and_reason(section: dict, message: str) -> None:
    from custos.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as info:
        _load(section)
    assert str(info.value).count("\n") <= 2  # short and to the point


def _load(section: dict):
    import tempfile

    import yaml

    from sidecar.config import load_config

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"alerting": section}, f)
    return load_config(f.name, environ={})
