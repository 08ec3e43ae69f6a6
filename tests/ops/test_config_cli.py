"""`custos config check` and `custos config show [--effective] [--json]`: the real CLI, real files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from bench.procs import REPO, custos_cmd

SECRETS = {
    "es-password-s3cret",
    "wecom-robot-key-123",
    "hook-bearer-s3cret",
    "Bearer header-s3cret",
    "T000/B000/slackpath",
    "admin-token-s3cret",
}


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_") or k == "CUSTOS_CACHE"}
    return subprocess.run(
        custos_cmd(*args),
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        cwd=str(cwd or REPO),
    )


def write(tmp_path: Path, data: dict, name: str = "custos.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def good_config(tmp_path: Path) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 18080},
        "state": {"dir": str(tmp_path / "state")},
        "audit": {
            "elasticsearch": {
                "hosts": ["https://es.example:9200"],
                "username": "custos",
                "password": "es-password-s3cret",
            }
        },
        "alerting": {
            "receivers": [
                {
                    "name": "default",
                    "wecom_configs": [
                        {"url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=wecom-robot-key-123"}
                    ],
                    "webhook_configs": [
                        {
                            "url": "http://hooks.example/alert",
                            "bearer_token": "hook-bearer-s3cret",
                            "headers": {"Authorization": "Bearer header-s3cret", "X-Team": "ml"},
                        }
                    ],
                    "slack_configs": [{"api_url": "https://hooks.slack.com/services/T000/B000/slackpath"}],
                },
                {"name": "wecom"},
                {"name": "email-audible"},
                {"name": "sms"},
            ],
            "admin": {"token": "admin-token-s3cret"},
        },
    }


def test_check_accepts_a_good_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, good_config(tmp_path))
    r = run("config", "check", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"OK: {cfg}\n"
    assert r.stderr == ""  # loopback host: no warning


def test_check_without_a_file_checks_the_defaults_and_warns_about_the_dev_key(tmp_path: Path) -> None:
    r = run("config", "check", env={"CUSTOS_STATE_DIR": str(tmp_path / "state")})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "OK: defaults\n"
    assert "SECURITY" in r.stderr and "auth.dev_key" in r.stderr  # 0.0.0.0 with the dev key trusted
    assert not (tmp_path / "state").exists()  # checking creates nothing


def test_check_names_the_environment(tmp_path: Path) -> None:
    cfg = write(tmp_path, good_config(tmp_path))
    r = run("config", "check", "--config", str(cfg), env={"CUSTOS_SERVER__PORT": "9191"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"OK: {cfg} + environment\n"


def test_check_reports_every_error_one_per_line(tmp_path: Path) -> None:
    data = good_config(tmp_path)
    data["server"]["port"] = 99999
    data["server"]["bogus"] = 1
    cfg = write(tmp_path, data)
    r = run("config", "check", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert any("server.port" in line and "99999" in line for line in lines)
    assert any("server.bogus" in line and "unknown option" in line for line in lines)
    assert all(line.startswith(str(cfg)) for line in lines)
    assert "Traceback" not in r.stderr


def test_check_reads_the_files_the_config_names(tmp_path: Path) -> None:
    policy = tmp_path / "rbac.yaml"
    policy.write_text("version: 1\nroles:\n  - name: analyst\n    permissions: [not a permission]\n")
    data = good_config(tmp_path)
    data["rbac"] = {"policy_file": str(policy)}
    data["auth"] = {"keys": [{"path": str(tmp_path / "missing.pem")}]}
    r = run("config", "check", "--config", str(cfg := write(tmp_path, data)))
    assert r.returncode == 2, r.stdout
    assert "rbac.policy_file" in r.stderr and "auth.keys.0.path" in r.stderr and str(cfg) in r.stderr
    assert len(r.stderr.splitlines()) == 2


def test_check_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    r = run("config", "check", "--config", str(tmp_path / "nope.yaml"))
    assert (
        r.returncode == 2 and r.stderr.strip() == f"{tmp_path / 'nope.yaml'}: (file): config file not found"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [\n")
    r = run("config", "check", "--config", str(bad))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "not valid YAML" in r.stderr


def test_show_effective_applies_environment_overrides_and_masks_secrets(tmp_path: Path) -> None:
    cfg = write(tmp_path, good_config(tmp_path))
    env = {"CUSTOS_SERVER__PORT": "9191", "CUSTOS_AUDIT__ELASTICSEARCH__PASSWORD": "es-password-s3cret"}
    r = run("config", "show", "--effective", "--config", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"# effective configuration (defaults included); source: {cfg} + environment")
    data = yaml.safe_load(r.stdout)
    assert data["server"]["port"] == 9191
    assert data["server"]["host"] == "127.0.0.1"
    assert data["server"]["max_body_bytes"] == 10 * 1024 * 1024  # a default: shown with --effective
    assert data["rbac"]["policy_file"]  # defaults of every section
    es = data["audit"]["elasticsearch"]
    assert es["password"] == "****" and es["username"] == "custos"
    receiver = data["alerting"]["receivers"][0]
    assert receiver["wecom_configs"][0]["url"].endswith("?key=****")
    assert receiver["webhook_configs"][0]["bearer_token"] == "****"
    assert receiver["webhook_configs"][0]["headers"] == {"Authorization": "****", "X-Team": "ml"}
    assert receiver["webhook_configs"][0]["url"] == "http://hooks.example/alert"
    assert data["alerting"]["admin"]["token"] == "****"
    for secret in SECRETS:
        assert secret not in r.stdout

    j = run("config", "show", "--effective", "--json", "--config", str(cfg), env=env)
    assert j.returncode == 0, j.stderr
    as_json = json.loads(j.stdout)
    assert as_json == data
    for secret in SECRETS:
        assert secret not in j.stdout


def test_show_without_effective_lists_only_what_was_set(tmp_path: Path) -> None:
    cfg = write(tmp_path, {"server": {"port": 18081}, "state": {"dir": str(tmp_path / "s")}})
    r = run(
        "config", "show", "--json", "--config", str(cfg), env={"CUSTOS_UPSTREAM__URL": "http://10.0.0.5:8000"}
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "server": {"port": 18081},
        "upstream": {"url": "http://10.0.0.5:8000/"},
        "state": {"dir": str(tmp_path / "s")},
    }


def test_show_rejects_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    cfg = write(tmp_path, {"server": {"port": "eighty"}})
    r = run("config", "show", "--effective", "--config", str(cfg))
    assert r.returncode == 2 and "server.port" in r.stderr and r.stdout == ""
    assert "Traceback" not in r.stderr
