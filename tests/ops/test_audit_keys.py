"""Issue 20: ``custos audit verify`` tells a wrong key from a forged checkpoint, and a configured
``audit.signing_key`` that is missing is an error, never silently replaced by a new key."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.procs import free_port
from sidecar.audit.config import AuditConfig
from sidecar.audit.keys import MissingKeyError, key_id, load_or_create_signing_key, load_public_key
from sidecar.audit.record import build_record
from sidecar.audit.trail import AuditTrail
from tests.audit.helpers import make_ctx

from .test_bad_input import one_line_error, run


def write_trail(state: Path, n: int = 25) -> Path:
    async def go() -> None:
        trail = AuditTrail(AuditConfig(checkpoint_every=5, compression="none"), state)
        await trail.open()
        for i in range(n):
            trail.append(build_record(make_ctx(i)))
        await trail.close()

    asyncio.run(go())
    return state / "audit" / "spool"


@pytest.fixture
def two_sidecars(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(spool of sidecar A, A's public key, B's public key)."""
    spool = write_trail(tmp_path / "a")
    write_trail(tmp_path / "b", 1)
    return spool, tmp_path / "a" / "audit" / "signing.pub", tmp_path / "b" / "audit" / "signing.pub"


def checkpoint_file(spool: Path) -> Path:
    (path,) = spool.glob("*/checkpoints.jsonl")
    return path


def test_right_key_verifies(two_sidecars: tuple[Path, Path, Path]) -> None:
    spool, pub_a, _ = two_sidecars
    out = run("audit", "verify", str(spool), "--public-key", str(pub_a))
    assert out.returncode == 0 and out.stdout.startswith("OK"), out.stdout + out.stderr


def test_wrong_key_is_bad_input_naming_both_key_ids(two_sidecars: tuple[Path, Path, Path]) -> None:
    spool, pub_a, pub_b = two_sidecars
    out = run("audit", "verify", str(spool), "--public-key", str(pub_b))
    line = one_line_error(out, "wrong public key")
    assert key_id(load_public_key(pub_a)) in line and key_id(load_public_key(pub_b)) in line
    assert "forged" not in line and "FAILED" not in out.stdout


def test_forged_checkpoint_is_reported_as_forged(two_sidecars: tuple[Path, Path, Path]) -> None:
    spool, pub_a, _ = two_sidecars
    path = checkpoint_file(spool)
    lines = path.read_text().splitlines()
    cp = json.loads(lines[1])
    cp["audit"]["hash"] = "0" * 64  # rewritten, still naming the sidecar's key id
    lines[1] = json.dumps(cp)
    path.write_text("\n".join(lines) + "\n")
    out = run("audit", "verify", str(spool), "--public-key", str(pub_a))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "BAD_SIGNATURE" in out.stdout and "forged or altered" in out.stdout
    assert "WRONG_KEY" not in out.stdout and "Traceback" not in out.stderr


def test_one_checkpoint_naming_another_key_among_good_ones(two_sidecars: tuple[Path, Path, Path]) -> None:
    spool, pub_a, pub_b = two_sidecars
    path = checkpoint_file(spool)
    lines = path.read_text().splitlines()
    cp = json.loads(lines[1])
    cp["audit"]["key_id"] = key_id(load_public_key(pub_b))
    lines[1] = json.dumps(cp)
    path.write_text("\n".join(lines) + "\n")
    out = run("audit", "verify", str(spool), "--public-key", str(pub_a), "--json")
    assert out.returncode == 1
    (problem,) = json.loads(out.stdout)["problems"]
    assert problem["kind"] == "bad_signature"
    assert problem["detail"].startswith(
        f"checkpoint signed with key id {key_id(load_public_key(pub_b))}, which is not in the keyring"
    )


def test_a_configured_key_that_is_missing_is_never_replaced(tmp_path: Path) -> None:
    configured = tmp_path / "secrets" / "audit-signing.key"
    with pytest.raises(MissingKeyError, match="no such file"):
        load_or_create_signing_key(configured)
    assert not configured.exists() and not configured.parent.exists()
    # The default location is made on first start, as before.
    default = tmp_path / "state" / "audit" / "signing.key"
    default.parent.mkdir(parents=True)
    load_or_create_signing_key(default)
    assert default.exists() and default.with_suffix(".pub").exists()


def test_serve_with_a_missing_configured_key_fails_and_makes_none(tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "audit-signing.key"
    cfg = tmp_path / "custos.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": free_port()},
                "upstream": {"url": "http://127.0.0.1:1"},
                "state": {"dir": str(tmp_path / "state")},
                "audit": {"signing_key": str(key)},
            }
        )
    )
    try:
        out = run("serve", "--config", str(cfg), timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("custos serve kept running with its configured audit signing key missing")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"audit.signing_key {key}: no such file" in out.stderr
    assert not key.exists() and not key.parent.exists()
    assert not (tmp_path / "state" / "audit" / "signing.key").exists()
