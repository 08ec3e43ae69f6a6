"""Dev JWT key rotation against a real sidecar: `custos keys rotate dev-jwt` (and the schedule) make a
new key; tokens of the retired key stay valid for the overlap window, by kid, then stop."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt

from bench.procs import custos_cmd
from bench.stack import Sidecar
from bench.upstream import RecordingUpstream


def _custos(*args: str) -> str:
    out = subprocess.run(custos_cmd(*args), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _token(sc: Sidecar) -> str:
    return _custos("token", "--config", str(sc.config_path), "--sub", "rotor", "--role", "tester")


def _status(sc: Sidecar, token: str) -> int:
    return httpx.get(
        sc.url + "/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).status_code


def _wait_status(sc: Sidecar, token: str, want: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (got := _status(sc, token)) != want:
        assert time.monotonic() < deadline, f"expected {want}, still {got}"
        time.sleep(0.2)


def test_rotation_keeps_old_tokens_for_the_overlap_then_drops_them(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]
) -> None:
    sc = start_sidecar(upstream.url, {"auth": {"dev_key_check_interval_s": 0.2, "dev_key_overlap_s": 4}})
    old = _token(sc)
    assert _status(sc, old) == 200
    out = _custos("keys", "rotate", "dev-jwt", "--config", str(sc.config_path))
    old_kid = jwt.get_unverified_header(old)["kid"]
    assert f"rotated the dev JWT key: {old_kid} -> " in out
    new = _token(sc)
    assert jwt.get_unverified_header(new)["kid"] != old_kid
    _wait_status(sc, new, 200)  # the running sidecar follows the rotation
    assert _status(sc, old) == 200  # inside the overlap window
    listed = _custos("keys", "list", "--config", str(sc.config_path))
    assert f"retired  {old_kid}" in listed
    _wait_status(sc, old, 401)  # the window closed: the retired key is no longer trusted
    body = httpx.get(sc.url + "/v1/models", headers={"Authorization": f"Bearer {old}"}, timeout=10).json()
    assert body["error"]["type"] == "authentication_error"
    assert _status(sc, new) == 200


def test_scheduled_rotation(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    sc = start_sidecar(
        upstream.url,
        {"auth": {"dev_key_check_interval_s": 0.2, "dev_key_rotate_every_s": 1.5, "dev_key_overlap_s": 60}},
    )
    before = _token(sc)
    kid = jwt.get_unverified_header(before)["kid"]
    deadline = time.monotonic() + 20
    while f"retired  {kid}" not in _custos("keys", "list", "--config", str(sc.config_path)):
        assert time.monotonic() < deadline, "the dev key was never rotated on schedule"
        time.sleep(0.3)
    after = _token(sc)
    assert jwt.get_unverified_header(after)["kid"] != kid
    _wait_status(sc, after, 200)
    assert _status(sc, before) == 200  # the overlap keeps it valid
    # A bad overlap on the command line: one line, exit 2.
    out = subprocess.run(
        custos_cmd("keys", "rotate", "dev-jwt", "--config", str(sc.config_path), "--overlap-s", "-1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "must be 0 or more" in out.stderr and "Traceback" not in out.stderr
