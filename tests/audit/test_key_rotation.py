"""Audit signing key rotation against a real sidecar: `custos keys rotate audit` (and the schedule)
make a new key, running sidecars sign their next checkpoints with it, the retired public key stays in
the keyring, and `custos audit verify` proves the trail across the rotation and says which key signed
what; a checkpoint whose key was removed from the keyring fails."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from bench.procs import custos_cmd
from bench.stack import Sidecar
from bench.upstream import RecordingUpstream

CHAT = {"model": "custos-tiny", "messages": [{"role": "user", "content": "hi"}]}
AUDIT = {"checkpoint_interval_s": 0.2, "retention": {"enabled": False}, "compression": "none"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(custos_cmd(*args), capture_output=True, text=True, timeout=120)


def _signers(state: Path) -> set[str]:
    out = set()
    for path in (state / "audit" / "spool").rglob("checkpoints.jsonl"):
        for line in path.read_bytes().splitlines():
            if line.strip():
                out.add(orjson.loads(line)["audit"]["key_id"])
    return out


def _traffic(sc: Sidecar, n: int) -> None:
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=30) as client:
        for _ in range(n):
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def _wait(cond: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_trail_that_spans_a_rotation_verifies_with_the_keyring(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]
) -> None:
    sc = start_sidecar(upstream.url, {"audit": AUDIT})
    state = Path(sc.config["state"]["dir"])
    _traffic(sc, 5)
    _wait(lambda: len(_signers(state)) == 1, "no checkpoint under the first key")
    (old,) = _signers(state)
    out = _run("keys", "rotate", "audit", "--config", str(sc.config_path))
    assert out.returncode == 0, out.stderr
    new = out.stdout.split(" -> ")[1].split()[0]
    assert new != old and (state / "audit" / "keyring" / f"{old}.pub").is_file()
    # Records after the switch are signed with the new key (those before it, with the old one).
    _wait(lambda: _traffic(sc, 1) or new in _signers(state), "the running sidecar never took the rotated key")
    sc.stop()
    verified = _run("audit", "verify", "--config", str(sc.config_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "signed by" in verified.stdout and old in verified.stdout and new in verified.stdout
    # A retired key that is removed from the keyring no longer vouches for its checkpoints.
    (state / "audit" / "keyring" / f"{old}.pub").unlink()
    broken = _run("audit", "verify", "--config", str(sc.config_path))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"signed with key id {old}, which is not in the keyring" in broken.stdout


def test_scheduled_rotation_keeps_the_trail_provable(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]
) -> None:
    sc = start_sidecar(upstream.url, {"audit": {**AUDIT, "rotate_key_every_s": 1.0}})
    state = Path(sc.config["state"]["dir"])
    deadline = time.monotonic() + 20
    while len(_signers(state)) < 2:
        assert time.monotonic() < deadline, "the audit key was never rotated on schedule"
        _traffic(sc, 2)
        time.sleep(0.3)
    assert list((state / "audit" / "keyring").glob("*.pub"))
    sc.stop()
    verified = _run("audit", "verify", "--config", str(sc.config_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "signed by" in verified.stdout


def test_rotating_without_a_key_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state: {{dir: {tmp_path / 'state'}}}\n")
    out = _run("keys", "rotate", "audit", "--config", str(cfg))
    assert (
        out.returncode == 2
        and "no audit signing key to rotate" in out.stderr
        and "Traceback" not in out.stderr
    )
