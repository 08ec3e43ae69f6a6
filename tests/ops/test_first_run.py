"""The first run cannot mislead: `custos up` refuses busy ports before starting anything, its banner's
token command works as printed, and `custos serve` logs what it runs with and warns loudly when the
dev key is trusted on a reachable address."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from bench.procs import ManagedProcess, custos_cmd, free_port
from sidecar.config import load_config
from sidecar.startup import is_loopback, summary, warnings


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_") or k == "CUSTOS_CACHE"}
    return {**env, **extra}


def write_config(tmp_path: Path, **sections) -> Path:
    data = {
        "server": {"host": "127.0.0.1", "port": free_port()},
        "upstream": {"url": f"http://127.0.0.1:{free_port()}"},  # nothing listens there
        "inference": {"port": free_port()},
        "state": {"dir": str(tmp_path / "state")},
        "alerting": {"enabled": False},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp_path / "custos.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def listen(port: int, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((host, port))
    s.listen()
    return s


@pytest.mark.parametrize("which", ["server", "inference"])
def test_up_refuses_a_busy_port_before_starting_anything(tmp_path: Path, which: str) -> None:
    cfg = write_config(tmp_path)
    port = yaml.safe_load(cfg.read_text())[which]["port"]
    cache = tmp_path / "cache"
    with listen(port) as busy:
        busy.settimeout(0.5)
        started = time.monotonic()
        r = subprocess.run(
            custos_cmd("up", "--config", str(cfg)),
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(CUSTOS_CACHE=str(cache)),
        )
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stdout == ""  # no "starting ...", no banner
        lines = r.stderr.splitlines()
        assert len(lines) == 1, r.stderr
        what = "the sidecar" if which == "server" else "the inference engine"
        assert f"port {port}" in lines[0] and what in lines[0] and "already in use" in lines[0]
        assert f"{which}.port" in lines[0] and "nothing was started" in lines[0]
        assert time.monotonic() - started < 30
        with pytest.raises(TimeoutError):  # nobody probed the listener as if it were ours
            busy.accept()
    assert not cache.exists()  # not even the tiny model was made
    assert not (tmp_path / "state").exists()


def test_up_refuses_the_same_port_for_engine_and_sidecar(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, server={"port": port}, inference={"port": port})
    r = subprocess.run(
        custos_cmd("up", "--config", str(cfg)), capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "different ports" in r.stderr


def _banner_token_command(log: str) -> str:
    m = re.search(r"export TOKEN=\$\((.+)\)\n", log)
    assert m, log[-3000:]
    return m.group(1)


@pytest.mark.parametrize("how", ["--config", "CUSTOS_CONFIG"])
def test_banner_token_command_works_as_printed(tmp_path: Path, how: str) -> None:
    cfg = write_config(tmp_path)
    port = yaml.safe_load(cfg.read_text())["server"]["port"]
    if how == "--config":
        argv, env = custos_cmd("up", "--no-engine", "--config", str(cfg)), clean_env()
    else:
        argv, env = custos_cmd("up", "--no-engine"), clean_env(CUSTOS_CONFIG=str(cfg))
    up = ManagedProcess("up", argv, env=env)
    try:
        deadline = time.monotonic() + 120
        while "Custos is up" not in up.log():
            assert up.alive(), up.log()[-3000:]
            assert time.monotonic() < deadline, up.log()[-3000:]
            time.sleep(0.2)
        time.sleep(0.3)  # the rest of the banner
        log = up.log()
        command = _banner_token_command(log)
        assert f"--config {cfg}" in command
        # As a reader would: pasted into a fresh shell elsewhere, without the stack's environment.
        r = subprocess.run(
            ["bash", "-c", f'export TOKEN=$({command}) && printf %s "$TOKEN"'],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env=clean_env(),
        )
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        base = f"http://127.0.0.1:{port}"
        assert f"curl -s {base}/v1/chat/completions" in log
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
        ok = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert ok.status_code == 200, ok.text  # the sidecar accepts it (admin: metrics:read)
        # `custos serve` (started by up) logged its startup summary, without a warning on loopback
        assert "custos.startup: upstream: " in log and "custos.startup: auth: JWT; keys: dev key" in log
        assert "SECURITY" not in log
    finally:
        up.stop()


def test_banner_without_dev_key_prints_no_token_command(tmp_path: Path) -> None:
    import argparse

    from sidecar.commands.up import banner

    args = argparse.Namespace(config=None, no_engine=True)
    cfg = load_config(write_config(tmp_path, auth={"dev_key": False}), environ={})
    text = banner(cfg, args, "m")
    assert "custos token" not in text and "identity provider" in text
    cfg = load_config(write_config(tmp_path, auth={"enabled": False}), environ={})
    text = banner(cfg, args, "m")
    assert "TOKEN" not in text and "no token needed" in text


def test_serve_warns_loudly_about_the_dev_key_on_a_reachable_address(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, server={"host": "0.0.0.0"})
    port = yaml.safe_load(cfg.read_text())["server"]["port"]
    serve = ManagedProcess("serve", custos_cmd("serve", "--config", str(cfg)), env=clean_env())
    try:
        serve.wait_ready(f"http://127.0.0.1:{port}/health", timeout=60)
        log = serve.log()
        warning = [line for line in log.splitlines() if "WARNING custos.startup" in line]
        assert len(warning) == 1, log
        assert "SECURITY" in warning[0] and "auth.dev_key" in warning[0] and "0.0.0.0" in warning[0]
        assert log.count("custos.startup: upstream:") == 1  # the summary once
    finally:
        serve.stop()


def test_summary_names_what_is_in_force(tmp_path: Path) -> None:
    cfg = load_config(
        write_config(
            tmp_path,
            audit={"elasticsearch": {"hosts": ["https://user:pw@es1:9200"]}},
            alerting={
                "enabled": True,
                "receivers": [
                    {"name": "default"},
                    {"name": "wecom", "wecom_configs": [{"url": "https://qyapi.weixin.qq.com/x?key=k"}]},
                    {"name": "email-audible"},
                    {"name": "sms"},
                ],
            },
        ),
        environ={},
    )
    text = "\n".join(summary(cfg))
    assert f"upstream: {cfg.upstream.url}" in text
    assert "dev key" in text and str(tmp_path / "state") in text
    assert f"policy file {cfg.rbac.policy_file}" in text
    assert "Elasticsearch https://****@es1:9200" in text and "user:pw" not in text
    assert "wecom (wecom)" in text and "default (log only)" in text
    no_sink = load_config(write_config(tmp_path), environ={})
    assert "no sink" in "\n".join(summary(no_sink))


def test_warnings_only_for_exposed_dev_key(tmp_path: Path) -> None:
    def cfg(**sections):
        return load_config(write_config(tmp_path, **sections), environ={})

    assert warnings(cfg()) == []  # 127.0.0.1
    assert len(warnings(cfg(server={"host": "0.0.0.0"}))) == 1
    assert len(warnings(cfg(server={"host": "10.1.2.3"}))) == 1
    assert warnings(cfg(server={"host": "0.0.0.0"}, auth={"dev_key": False})) == []
    assert warnings(cfg(server={"host": "::1"})) == []
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("::")
