"""Fixtures shared by every test area: the real CPU engine with the tiny model, and real sidecars.

Every sidecar a test starts is a real `custos serve` process on a free local port. Tests send
``sidecar.headers`` with every proxied request, so stages that need credentials (JWT) get them
from this one place.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import CACHE, ManagedProcess, custos_cmd, free_port
from tests.support.upstream import RecordingUpstream

TINY_MODEL_NAME = "custos-tiny"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny random-weight model, built once per machine into the cache (seconds on a CPU)."""
    from inference.tiny import TINY_MODEL_VERSION

    target = CACHE / "models" / f"tiny-{TINY_MODEL_VERSION}"
    if not (target / "config.json").exists():
        subprocess.run(custos_cmd("inference", "make-tiny-model", str(target)), check=True, timeout=600)
    return target


@dataclass
class Engine:
    url: str
    port: int
    process: ManagedProcess
    model: str = TINY_MODEL_NAME


def start_engine(model_dir: Path, *extra: str, env: dict[str, str] | None = None) -> Engine:
    port = free_port()
    proc = ManagedProcess(
        "engine",
        custos_cmd(
            "inference",
            "serve",
            "--engine",
            "transformers",
            "--model",
            str(model_dir),
            "--served-model-name",
            TINY_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ),
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(url + "/v1/models", timeout=180)
    return Engine(url=url, port=port, process=proc)


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Iterator[Engine]:
    """The project's own CPU inference server with the tiny model, shared by the whole session."""
    eng = start_engine(tiny_model_dir)
    yield eng
    eng.process.stop()


@dataclass
class Sidecar:
    url: str
    port: int
    process: ManagedProcess
    config_path: Path
    config: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def openai_client(self, **kwargs: Any):
        import openai

        api_key = self.headers.get("Authorization", "Bearer unused").removeprefix("Bearer ")
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kwargs)

    def stop(self) -> int | None:
        return self.process.stop()


def sidecar_base_config(state_dir: Path, upstream_url: str) -> dict[str, Any]:
    """The config every test sidecar starts from; tests merge their own sections on top."""
    return {
        "server": {"host": "127.0.0.1"},
        "upstream": {"url": upstream_url},
        "state": {"dir": str(state_dir)},
        # Identity: trust the suite's test key; the test policy gives role `tester` everything.
        "auth": {"keys": [{"kid": TEST_KEY_ID, "path": str(test_signing_key()[1]), "algorithms": ["EdDSA"]}]},
        "rbac": {"policy_file": str(TEST_POLICY)},
    }


def default_headers(config: dict[str, Any], state_dir: Path) -> dict[str, str]:
    """Headers a well-behaved client sends to a sidecar started with ``config``."""
    auth = config.get("auth") or {}
    if auth.get("enabled", True) is False:
        return {}
    issuer = _first(auth.get("issuer")) or "custos-test"
    token = mint_token(audience=_first(auth.get("audience")), issuer=issuer)
    return {"Authorization": f"Bearer {token}"}


# -- identity for tests: one Ed25519 key per test process, trusted by every test sidecar ----------
TEST_KEY_ID = "custos-test"
TEST_ROLE = "tester"
TEST_POLICY = Path(__file__).parent / "identity" / "data" / "test-policy.yaml"


@functools.cache
def test_signing_key() -> tuple[Any, Path]:
    """(private key, path of its public PEM); made once per process, never written to the repo."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pub = Path(tempfile.mkdtemp(prefix="custos-test-key-")) / "test-key.pub.pem"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub


def mint_token(
    subject: str = "test-user",
    roles: list[str] | tuple[str, ...] = (TEST_ROLE,),
    *,
    ttl_s: int = 6 * 3600,
    audience: str | None = None,
    issuer: str | None = "custos-test",
    **claims: Any,
) -> str:
    """A token the test sidecars accept, e.g. ``mint_token("alice", ["analyst"])``."""
    from sidecar.auth.devkey import mint_token as _mint

    return _mint(
        test_signing_key()[0],
        subject=subject,
        roles=list(roles),
        ttl_s=ttl_s,
        algorithm="EdDSA",
        issuer=issuer,
        audience=audience,
        kid=TEST_KEY_ID,
        extra=claims or None,
    )


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value or None


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    """Factory: ``start_sidecar(upstream_url, config={...}, env={...})`` starts a real sidecar process."""
    started: list[Sidecar] = []

    def _start(
        upstream_url: str,
        config: dict[str, Any] | None = None,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        name: str = "sidecar",
        wait: bool = True,
    ) -> Sidecar:
        port = port or free_port()
        state_dir = tmp_path / "state"
        cfg = deep_merge(sidecar_base_config(state_dir, upstream_url), config or {})
        cfg.setdefault("server", {})["port"] = port
        cfg_path = tmp_path / f"{name}-{port}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        proc = ManagedProcess(name, custos_cmd("serve", "--config", str(cfg_path)), env=env)
        url = f"http://127.0.0.1:{port}"
        if wait:
            proc.wait_ready(url + "/health", timeout=60)
        sc = Sidecar(
            url=url,
            port=port,
            process=proc,
            config_path=cfg_path,
            config=cfg,
            headers=default_headers(cfg, state_dir),
        )
        started.append(sc)
        return sc

    yield _start
    for sc in started:
        sc.stop()


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    """A recording upstream (``tests/support/upstream.py``): a real HTTP server that records what a
    sidecar forwarded and answers as the test says, for tests that need no model."""
    up = RecordingUpstream()
    yield up
    up.close()


@pytest.fixture
def sidecar(engine: Engine, start_sidecar: Callable[..., Sidecar]) -> Sidecar:
    """A sidecar with every default stage, in front of the real CPU engine."""
    return start_sidecar(engine.url)


def pytest_report_header(config: pytest.Config) -> str:
    return f"custos cache: {CACHE}; test logs: {os.environ.get('CUSTOS_TEST_LOGS', '/tmp/custos-test-logs')}"
