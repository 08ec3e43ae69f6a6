"""The Compose stack: valid against the Compose specification (compose-go, the loader of `docker
compose`), with every mounted file present and each service's config accepted by its own checker."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sidecar.config import load_config
from sidecar.rbac.policy import load_policy_file

from .tools import COMPOSE, run, tools

COMPOSE_FILE = COMPOSE / "compose.yaml"


def compose_doc() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.mark.parametrize(("profile", "engine"), [("cpu", "engine-cpu"), ("gpu", "vllm")])
def test_compose_spec_valid(profile: str, engine: str) -> None:
    out = run([tools()["VALIDATE"], "compose", str(COMPOSE_FILE), "--profile", profile], cwd=COMPOSE).stdout
    services = set(out.rsplit(":", 1)[1].split())
    expected = {
        engine,
        "sidecar",
        "elasticsearch",
        "kibana",
        "kibana-setup",
        "prometheus-token",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert services == expected


def test_gpu_override_gives_the_sidecar_nvml() -> None:
    gpu = COMPOSE / "compose.gpu.yaml"
    out = run(
        [tools()["VALIDATE"], "compose", str(COMPOSE_FILE), str(gpu), "--profile", "gpu"], cwd=COMPOSE
    ).stdout
    assert "vllm" in out and "sidecar" in out
    devices = yaml.safe_load(gpu.read_text())["services"]["sidecar"]["deploy"]["resources"]["reservations"][
        "devices"
    ]
    assert devices[0]["capabilities"] == ["utility"]


def test_compose_validator_rejects_bad_files(tmp_path: Path) -> None:
    """The validator is live: unknown keys and dangling references fail."""
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  a:\n    image: x\n    restart_policy: always\n")
    assert run([tools()["VALIDATE"], "compose", str(bad)], check=False, cwd=tmp_path).returncode == 1
    bad.write_text("services:\n  a:\n    image: x\n    depends_on: [b]\n")
    proc = run([tools()["VALIDATE"], "compose", str(bad)], check=False, cwd=tmp_path)
    assert proc.returncode == 1 and "b" in proc.stderr


def test_engines_share_the_inference_alias_and_sidecar_points_there() -> None:
    doc = compose_doc()
    for name in ("engine-cpu", "vllm"):
        assert "inference" in doc["services"][name]["networks"]["inference"]["aliases"]
    cfg = yaml.safe_load((COMPOSE / "custos.yaml").read_text())
    assert cfg["upstream"]["url"] == "http://inference:8000"
    assert doc["networks"]["inference"]["internal"] is True
    # The GPU engine reserves NVIDIA GPUs.
    devices = doc["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_published_ports_bind_loopback_only() -> None:
    for name, svc in compose_doc()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_mounted_files_exist() -> None:
    for name, svc in compose_doc()["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (COMPOSE / src).resolve().exists(), f"{name}: mounted {src} does not exist"


def test_sidecar_config_loads_with_the_real_loader() -> None:
    doc = compose_doc()
    env = {
        k: str(v)
        for k, v in doc["services"]["sidecar"].get("environment", {}).items()
        if k != "CUSTOS_CONFIG"
    }
    cfg = load_config(COMPOSE / "custos.yaml", environ=env)
    assert cfg.server.port == 8080
    assert str(cfg.upstream.url).startswith("http://inference:8000")
    assert cfg.audit.elasticsearch.hosts == ["http://elasticsearch:9200"]


def test_prometheus_and_alertmanager_configs() -> None:
    run([tools()["PROMTOOL"], "check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml")])
    run([tools()["AMTOOL"], "check-config", str(COMPOSE / "alertmanager.yml")])
    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {"sidecar:8080", "inference:8000"} <= targets


def test_prometheus_scrapes_the_sidecar_with_a_token() -> None:
    """The sidecar's /metrics needs a token (metrics.require_token): Prometheus reads one from the
    volume the one-shot service prometheus-token fills, for a role that grants metrics:read."""
    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (custos,) = [j for j in prom["scrape_configs"] if j["job_name"] == "custos"]
    token_file = custos["authorization"]["credentials_file"]
    services = compose_doc()["services"]
    mounts = dict(v.split(":")[:2][::-1] for v in services["prometheus"]["volumes"])
    volume = mounts[str(Path(token_file).parent)]
    minter = services["prometheus-token"]
    assert f"{volume}:/token" in minter["volumes"]
    assert "/token/custos.token" in minter["command"][0]
    assert services["prometheus"]["depends_on"]["prometheus-token"]["condition"] == (
        "service_completed_successfully"
    )
    role = minter["command"][0].split("--role ", 1)[1].split()[0]
    policy = load_policy_file(COMPOSE.parents[1] / "policies" / "rbac.yaml")
    assert policy.evaluate((role,), "metrics:read", model=None, client_ip=None).allowed
    cfg = load_config(COMPOSE / "custos.yaml", environ={})
    assert cfg.metrics.require_token is True
