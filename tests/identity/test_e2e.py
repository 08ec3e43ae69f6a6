"""Through real `custos serve` processes, with nginx as an upstream that echoes what it receives."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bench.procs import custos_cmd
from bench.stack import Sidecar, mint_token
from tests.identity.support import Nginx, bearer, chat, launch, start_nginx

MODELS = ["custos-tiny", "deepseek-7b", "secret-model"]
POLICY = """
version: 1
roles:
  - name: tester
    permissions: ["*"]
  - name: analyst
    permissions: [model:read]
    constraints:
      models: [deepseek-7b, custos-tiny]
      max_tokens: 64
  - name: viewer
    permissions: [model:list]
  - name: limited
    permissions: [model:read]
    constraints:
      rate_limit: {per_subject_rpm: 3}
"""


@pytest.fixture(scope="module")
def nginx(tmp_path_factory) -> Iterator[Nginx]:
    n = start_nginx(tmp_path_factory.mktemp("nginx"), MODELS)
    yield n
    n.process.stop()


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "rbac.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def sc(tmp_path_factory, nginx: Nginx, policy_file: Path) -> Iterator[Sidecar]:
    s = launch(tmp_path_factory.mktemp("sc"), nginx.url, {"rbac": {"policy_file": str(policy_file)}})
    yield s
    s.stop()


def test_missing_and_invalid_tokens_get_401_without_echo(sc: Sidecar) -> None:
    r = httpx.post(sc.url + "/v1/chat/completions", json=chat())
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    err = r.json()["error"]
    assert err["type"] == "authentication_error" and err["code"] == "missing_token"
    bogus = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2VjcmV0LXNpZ25hdHVyZS1tYXJrZXI"
    r = httpx.post(sc.url + "/v1/chat/completions", json=chat(), headers=bearer(bogus))
    assert r.status_code == 401 and r.json()["error"]["code"] == "alg_not_allowed"
    assert "c2VjcmV0LXNpZ25hdHVyZS1tYXJrZXI" not in r.text
    r = httpx.get(sc.url + "/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "malformed"
    time.sleep(0.2)
    assert "c2VjcmV0LXNpZ25hdHVyZS1tYXJrZXI" not in sc.process.log()


def test_identity_reaches_upstream_and_spoofed_headers_are_stripped(sc: Sidecar) -> None:
    headers = {
        # Not an e-mail address: the echoed answer passes the redaction filters, which would mask one.
        **bearer(mint_token("alice.k-42", ["analyst"])),
        "X-Custos-Subject": "root",
        "X-Custos-Roles": "admin",
    }
    r = httpx.post(sc.url + "/v1/chat/completions", json=chat(max_tokens=8), headers=headers)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["subject"] == "alice.k-42" and seen["roles"] == "analyst"
    assert seen["authorization"] == ""  # the caller's credential is not passed to the model server


def test_models_list_shows_only_invokable_models(sc: Sidecar) -> None:
    def ids(roles):
        r = httpx.get(sc.url + "/v1/models", headers=bearer(mint_token("u", roles)))
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["data"]]

    assert ids(["tester"]) == MODELS
    assert ids(["analyst"]) == ["custos-tiny", "deepseek-7b"]
    assert ids(["viewer"]) == []  # may list, may invoke nothing
    r = httpx.get(sc.url + "/v1/models", headers=bearer(mint_token("u", ["nobody"])))
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = httpx.get(sc.url + "/v1/models/secret-model", headers=bearer(mint_token("u", ["analyst"])))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_forbidden_model_route_and_max_tokens(sc: Sidecar) -> None:
    analyst = bearer(mint_token("a", ["analyst"]))
    r = httpx.post(sc.url + "/v1/chat/completions", json=chat("secret-model"), headers=analyst)
    assert r.status_code == 403
    assert "model:invoke:secret-model" in r.json()["error"]["message"]
    r = httpx.delete(sc.url + "/v1/files/abc", headers=bearer(mint_token("t", ["tester"])))
    assert r.status_code == 403 and r.json()["error"]["code"] == "route_not_allowed"
    r = httpx.post(sc.url + "/v1/chat/completions", json=chat(max_tokens=65), headers=analyst)
    assert r.status_code == 403 and r.json()["error"]["code"] == "max_tokens_exceeded"
    r = httpx.post(sc.url + "/v1/chat/completions", json=chat(max_tokens=64), headers=analyst)
    assert r.status_code == 200
    # No max_tokens asked: the cap is added to the body the upstream receives.
    body = chat()
    r = httpx.post(sc.url + "/v1/chat/completions", json=body, headers=analyst)
    assert r.status_code == 200
    import json

    assert int(r.json()["length"]) == len(json.dumps({**body, "max_tokens": 64}, separators=(",", ":")))
    r = httpx.post(sc.url + "/v1/chat/completions", json={"messages": []}, headers=analyst)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_per_subject_rate_limit(sc: Sidecar) -> None:
    carol, dave = bearer(mint_token("carol", ["limited"])), bearer(mint_token("dave", ["limited"]))
    codes = [
        httpx.post(sc.url + "/v1/chat/completions", json=chat(), headers=carol).status_code for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    r = httpx.post(sc.url + "/v1/chat/completions", json=chat(), headers=carol)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["x-ratelimit-limit-requests"] == "3"
    assert httpx.post(sc.url + "/v1/chat/completions", json=chat(), headers=dave).status_code == 200


def test_hot_reload_bad_file_and_sighup(tmp_path: Path, nginx: Nginx) -> None:
    policy = tmp_path / "rbac.yaml"
    policy.write_text("roles:\n  - name: analyst\n    permissions: [model:list]\n")
    s = launch(tmp_path, nginx.url, {"rbac": {"policy_file": str(policy)}}, name="reload")
    try:
        h = bearer(mint_token("a", ["analyst"]))

        def status() -> int:
            return httpx.post(s.url + "/v1/chat/completions", json=chat(), headers=h).status_code

        assert status() == 403
        policy.write_text("roles:\n  - name: analyst\n    permissions: [model:read]\n")
        wait_until(lambda: status() == 200)
        policy.write_text("roles:\n  - name: analyst\n    permissions: [model:read\n")  # broken YAML
        wait_until(lambda: "INVALID" in s.process.log())
        assert "previous policy stays in force" in s.process.log()
        assert status() == 200
        # SIGHUP: reload on request, even with an mtime the poll would not notice; the process lives.
        st = policy.stat()
        policy.write_text("roles:\n  - name: analyst\n    permissions: [model:list]\n")
        os.utime(policy, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.kill(s.process.pid, signal.SIGHUP)
        wait_until(lambda: "SIGHUP: reloaded" in s.process.log())
        assert status() == 403 and s.process.alive()
    finally:
        s.stop()


def test_dev_key_token_from_the_cli(tmp_path: Path, nginx: Nginx) -> None:
    # The embedded setup: no auth.keys, the dev key in the state directory, `custos token`.
    s = launch(
        tmp_path,
        nginx.url,
        {"auth": {"keys": []}, "rbac": {"policy_file": str(write(tmp_path))}},
        name="devkey",
    )
    try:
        r = subprocess.run(
            custos_cmd(
                "token", "--sub", "alice", "--role", "analyst", "--ttl", "600", "--config", str(s.config_path)
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        resp = httpx.post(s.url + "/v1/chat/completions", json=chat(), headers=bearer(token))
        assert resp.status_code == 200 and resp.json()["subject"] == "alice"
        key = next((tmp_path / "state" / "keys").glob("dev-signing-key-*.pem"))
        assert key.stat().st_mode & 0o777 == 0o600
        # The test key is no longer configured: the suite's default token is refused.
        assert (
            httpx.post(s.url + "/v1/chat/completions", json=chat(), headers=bearer(mint_token())).status_code
            == 401
        )
        bad = subprocess.run(
            custos_cmd("token", "--sub", "alice", "--ttl", "-5", "--config", str(s.config_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2 and "--ttl" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        s.stop()


def write(tmp: Path) -> Path:
    path = tmp / "p.yaml"
    path.write_text(POLICY)
    return path


def wait_until(cond, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def test_startup_with_a_bad_policy_exits_2_with_file_and_line(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("roles:\n  - name: a\n    permissions: [model:read]\n  - name: a\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": 1},
                "state": {"dir": str(tmp_path / "state")},
                "rbac": {"policy_file": str(policy)},
            }
        )
    )
    r = subprocess.run(custos_cmd("serve", "--config", str(cfg)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{policy}:4:11: roles[1].name: duplicate role 'a'" in r.stderr and "Traceback" not in r.stderr


def test_auth_disabled_gives_the_anonymous_roles(tmp_path: Path, nginx: Nginx) -> None:
    s = launch(
        tmp_path,
        nginx.url,
        {
            "auth": {"enabled": False, "anonymous_roles": ["viewer"]},
            "rbac": {"policy_file": str(write(tmp_path))},
        },
        name="anon",
    )
    try:
        r = httpx.get(s.url + "/v1/models")
        assert r.status_code == 200 and r.json()["data"] == []  # viewer: may list, may invoke nothing
        r = httpx.post(s.url + "/v1/chat/completions", json=chat())
        assert r.status_code == 403  # still deny by default
    finally:
        s.stop()
