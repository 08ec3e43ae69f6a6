"""The committed dashboards are what the generators produce, wired to the provisioning files and
the deployment (Compose mounts, Helm ConfigMaps), with the template variables the issue asks for."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from bench.procs import REPO

from .tools import COMPOSE, DASHBOARDS

GRAFANA = DASHBOARDS / "grafana"


def _load(uid: str) -> dict:
    return json.loads((GRAFANA / "dashboards" / f"{uid}.json").read_text())


def test_committed_grafana_json_is_generated() -> None:
    proc = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate_grafana.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_generator_check_detects_a_hand_edit(tmp_path) -> None:
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate_grafana.py"), "--out", str(out)],
        check=True,
        cwd=REPO,
        timeout=120,
    )
    edited = out / "custos-gpus.json"
    edited.write_text(edited.read_text().replace("custos_gpu_power_watts", "custos_gpu_power"))
    proc = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate_grafana.py"), "--check", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 1 and "custos-gpus.json" in proc.stderr


def test_five_dashboards_with_their_variables() -> None:
    wanted = {
        "custos-overview": {"datasource", "instance", "model"},
        "custos-gpus": {"datasource", "instance", "gpu"},
        "custos-compliance": {"datasource", "instance"},
        "custos-alerts": {"datasource", "instance"},
        "custos-inference": {"datasource", "engine_instance", "model"},
    }
    files = {p.stem for p in (GRAFANA / "dashboards").glob("*.json")}
    assert files == set(wanted)
    for uid, variables in wanted.items():
        doc = _load(uid)
        assert doc["uid"] == uid
        assert {v["name"] for v in doc["templating"]["list"]} == variables
        for panel in doc["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (uid, panel["title"])
            assert panel["targets"], (uid, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                # Variables are used where they exist, so the dashboard filters what it shows.
                for var in variables - {"datasource"}:
                    if var == "instance" and "ALERTS" in target["expr"]:
                        continue  # Prometheus' own series: no sidecar instance label
                    if var == "gpu" and re.search(r"custos_gpu_(count|collector_up)\b", target["expr"]):
                        continue  # per-sidecar panels (GPU count, telemetry up)
                    if var == "model" and uid == "custos-overview" and "_in_flight" in target["expr"]:
                        continue  # in-flight requests carry no model label
                    if var in {"model", "gpu"} and "custos_errors_total" in target["expr"]:
                        continue
                    if var == "model" and "custos_upstream_errors_total" in target["expr"]:
                        continue
                    assert f"${var}" in target["expr"], (uid, panel["title"], var)


def test_panels_do_not_overlap() -> None:
    for path in (GRAFANA / "dashboards").glob("*.json"):
        taken: set[tuple[int, int]] = set()
        for panel in json.loads(path.read_text())["panels"]:
            g = panel["gridPos"]
            cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & taken, (path.name, panel["title"])
            assert g["x"] + g["w"] <= 24
            taken |= cells


def test_provisioning_matches_the_compose_mounts() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "custos.yaml").read_text())
    prom = next(d for d in ds["datasources"] if d["type"] == "prometheus")
    assert prom["isDefault"] and prom["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "custos.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    grafana = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["grafana"]
    mounts = dict(v.split(":")[:2][::-1] for v in grafana["volumes"])
    assert (COMPOSE / mounts[path]).resolve() == (GRAFANA / "dashboards").resolve()
    assert (COMPOSE / mounts["/etc/grafana/provisioning"]).resolve() == (GRAFANA / "provisioning").resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path) and (GRAFANA / "dashboards" / home.rsplit("/", 1)[1]).exists()
    # Kibana setup imports the NDJSON from its mount.
    kibana_setup = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["kibana-setup"]
    src, dst = kibana_setup["volumes"][0].split(":")[:2]
    file_arg = next(a for a in kibana_setup["command"] if a.startswith("file=@"))
    assert (COMPOSE / src / file_arg.removeprefix(f"file=@{dst}/")).resolve().exists()


def test_exported_alert_rules_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "tools" / "export_rules.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
