"""GPU rules end to end: the GPU simulation (gpu/) drives the real collector, the default
rules, the routing tree and a WeCom receiver posting to a real local HTTP server, on a virtual clock
(40 minutes replayed in seconds)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alerting.promql import parse_duration
from alerting.replay import Replay, load_scenario
from alerting.rules import load_rule_files
from alerting.silences import SilenceStore
from tests.alerting.helpers import config

SCENARIO = Path(__file__).parent / "scenarios" / "two-gpus-busy.yaml"


def _config(recorder):
    return config(
        receivers=[
            {"name": "default", "webhook_configs": [{"url": recorder.url + "/default"}]},
            {"name": "wecom", "wecom_configs": [{"url": recorder.url + "/wecom?key=oncall"}]},
            {"name": "email-audible"},
            {"name": "sms"},
        ],
        route={
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "1m",
            "repeat_interval": "10m",
            "routes": [
                {
                    "matchers": ['alertname="CustosGPUUtilizationHigh"'],
                    "receiver": "wecom",
                    "group_by": ["alertname", "gpu"],
                }
            ],
        },
    )


def _notes(events, receiver: str, **labels: str) -> list[tuple[float, str]]:
    out = []
    for e in events:
        if (
            e.kind == "notify"
            and f"-> {receiver} via" in e.detail
            and all(e.labels.get(k) == v for k, v in labels.items())
        ):
            out.append((e.at, e.detail.split(" ")[0]))
    return out


def test_gpu_utilization_pages_wecom_once_repeats_resolves_and_respects_silence_and_inhibition(
    recorder, tmp_path: Path
) -> None:
    cfg = _config(recorder)
    state = tmp_path / "state"
    SilenceStore(state / "silences.json").add(
        ['alertname="CustosGPUUtilizationHigh"', 'gpu="1"'],
        ends_at=load_scenario(SCENARIO).start + 1200,
        created_by="alice",
        comment="GPU 1 load test",
        starts_at=load_scenario(SCENARIO).start,
        now=load_scenario(SCENARIO).start,
    )
    replay = Replay(cfg, load_rule_files(), load_scenario(SCENARIO), state_dir=state, deliver=True)
    events = asyncio.run(replay.run())

    # Pending at 1m, firing after exactly 5 minutes above 90%.
    gpu0 = [
        (e.at, e.kind)
        for e in events
        if e.alert == "CustosGPUUtilizationHigh"
        and e.labels.get("gpu") == "0"
        and e.kind in ("pending", "firing", "resolved")
    ]
    assert gpu0 == [(60.0, "pending"), (360.0, "firing"), (1920.0, "resolved")]
    # WeCom: first page after group_wait, repeats every repeat_interval (10m), one resolved message.
    assert _notes(events, "wecom", gpu="0") == [
        (390.0, "firing"),
        (990.0, "firing"),
        (1590.0, "firing"),
        (1950.0, "resolved"),
    ]
    # GPU 1 is silenced until 20m: its first page comes at the first group flush after the silence ends.
    assert _notes(events, "wecom", gpu="1") == [(1230.0, "firing"), (1830.0, "firing"), (1950.0, "resolved")]
    # The real HTTP requests match the notifications one to one.
    bodies = [r.json()["markdown"]["content"] for r in recorder.at("/wecom")]
    assert len(bodies) == 7
    assert all(r.query["key"] == "oncall" for r in recorder.at("/wecom"))
    assert "[FIRING:1] CustosGPUUtilizationHigh gpu=0" in bodies[0]
    assert "GPU 0 utilization is 97% (> 90% for 5m)" in bodies[0]
    assert sum("[RESOLVED] CustosGPUUtilizationHigh" in b for b in bodies) == 2
    # Temperature: critical (93 C > 90) inhibits the warning tier of the same GPU.
    temp = [
        r.json()
        for r in recorder.at("/default")
        if r.json()["groupLabels"].get("alertname") == "CustosGPUTemperatureHigh"
    ]
    firing_sev = [a["labels"]["severity"] for d in temp for a in d["alerts"] if a["status"] == "firing"]
    assert firing_sev == ["critical"]
    assert any(
        e.alert == "CustosGPUTemperatureHigh"
        and e.labels["severity"] == "warning"
        and e.kind == "firing"
        and "inhibited by CustosGPUTemperatureHigh" in e.detail
        for e in events
    )
    assert temp[-1]["status"] == "resolved"


def test_restart_does_not_repage_and_keeps_silences(recorder, tmp_path: Path) -> None:
    cfg = _config(recorder)
    state = tmp_path / "state"
    scenario = load_scenario(SCENARIO)
    silence = SilenceStore(state / "silences.json").add(
        ['alertname="CustosGPUUtilizationHigh"', 'gpu="1"'],
        ends_at=scenario.start + 3600,
        created_by="alice",
        comment="maintenance",
        now=scenario.start,
    )
    first = Replay(cfg, load_rule_files(), scenario, state_dir=state, deliver=True)
    events1 = asyncio.run(first.run(until=600))
    assert _notes(events1, "wecom") == [(390.0, "firing")]
    assert (state / "alerts.json").exists() and (state / "nflog.json").exists()

    # A new process: empty metric history, state from disk. Resumes at 10m.
    second = Replay(cfg, load_rule_files(), scenario, state_dir=state, deliver=True)
    assert [s.id for s in second.service.silences.list()] == [silence.id]
    restored = {
        st.labels.get("gpu"): st.state
        for st in second.service.engine.alert_states()
        if st.rule == "CustosGPUUtilizationHigh"
    }
    assert restored == {"0": "firing", "1": "firing"}
    events2 = asyncio.run(second.run(until=1500, from_s=615))
    # No page at restart; the next one is the regular repeat: the first group flush (every 1m since the
    # restart at 615s) once 10 minutes have passed since the page at 390s.
    notes = _notes(events2, "wecom")
    assert len(notes) == 1 and 990 <= notes[0][0] < 1050 and notes[0][1] == "firing"
    assert len(recorder.at("/wecom")) == 2
    assert parse_duration(cfg.route.repeat_interval) == 600


def test_pending_for_timer_survives_a_restart(recorder, tmp_path: Path) -> None:
    cfg = _config(recorder)
    state = tmp_path / "state"
    scenario = load_scenario(SCENARIO)
    asyncio.run(Replay(cfg, load_rule_files(), scenario, state_dir=state, deliver=True).run(until=240))
    events = asyncio.run(
        Replay(cfg, load_rule_files(), scenario, state_dir=state, deliver=True).run(until=420, from_s=255)
    )
    # Pending since 1m before the restart: still fires at 6m, not 5 minutes after the restart.
    assert [(e.at, e.kind) for e in events if e.labels.get("gpu") == "0" and e.kind in ("pending", "firing")][
        -1
    ] == (360.0, "firing")
