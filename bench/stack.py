"""The local stack benchmarks and tests run against, from real processes: the project's CPU engine with
the tiny model, and ``custos serve`` sidecars.

Every sidecar started here trusts one Ed25519 key made per process (never written to the repository) and
starts from ``bench/data/test-policy.yaml``, whose role ``tester`` may do everything; ``Sidecar.headers``
carries a token with that role, so stages that need credentials (JWT) get them from this one place.
"""

from __future__ import annotations

import copy
import functools
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.procs import ManagedProcess, custos_cmd, free_port
from inference.tiny import TINY_MODEL_NAME, default_tiny_model_dir

DATA = Path(__file__).resolve().parent / "data"
# Two simulated GPUs whose faults give every panel of the GPU dashboard data (the dashboard checks).
GPU_DASHBOARD_SIMULATION = DATA / "gpu-dashboard.yaml"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_model_dir() -> Path:
    """The tiny random-weight model, built once per machine into the cache (seconds on a CPU). Built by
    the CLI in a child process, so the caller never imports torch."""
    target = default_tiny_model_dir()
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


@dataclass
class Sidecar:
    url: str
    port: int
    process: ManagedProcess
    config_path: Path
    config: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return Path(self.config["state"]["dir"])

    def openai_client(self, **kwargs: Any):
        import openai

        api_key = self.headers.get("Authorization", "Bearer unused").removeprefix("Bearer ")
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kwargs)

    def stop(self) -> int | None:
        return self.process.stop()


def launch_sidecar(
    workdir: Path,
    upstream_url: str,
    config: dict[str, Any] | None = None,
    *,
    state_dir: Path | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    name: str = "sidecar",
    wait: bool = True,
) -> Sidecar:
    """A real ``custos serve`` process: the base config with ``config`` merged on top, written to
    ``workdir``; its state in ``state_dir`` (default ``workdir/state``, so a restarted sidecar finds it)."""
    port = port or free_port()
    state_dir = state_dir or workdir / "state"
    cfg = deep_merge(sidecar_base_config(state_dir, upstream_url), config or {})
    cfg.setdefault("server", {})["port"] = port
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / f"{name}-{port}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = ManagedProcess(name, custos_cmd("serve", "--config", str(cfg_path)), env=env)
    url = f"http://127.0.0.1:{port}"
    if wait:
        proc.wait_ready(url + "/health", timeout=60)
    return Sidecar(
        url=url,
        port=port,
        process=proc,
        config_path=cfg_path,
        config=cfg,
        headers=default_headers(cfg, state_dir),
    )


def sidecar_base_config(state_dir: Path, upstream_url: str) -> dict[str, Any]:
    """The config every sidecar here starts from; callers merge their own sections on top."""
    return {
        "server": {"host": "127.0.0.1"},
        "upstream": {"url": upstream_url},
        "state": {"dir": str(state_dir)},
        # Identity: trust this process's key; the policy gives role `tester` everything.
        "auth": {"keys": [{"kid": TEST_KEY_ID, "path": str(signing_key()[1]), "algorithms": ["EdDSA"]}]},
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


# -- identity: one Ed25519 key per process, trusted by every sidecar started here ----------------
TEST_KEY_ID = "custos-test"
TEST_ROLE = "tester"
TEST_POLICY = DATA / "test-policy.yaml"


@functools.cache
def signing_key() -> tuple[Any, Path]:
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
    """A token the sidecars started here accept, e.g. ``mint_token("alice", ["analyst"])``."""
    from sidecar.auth.devkey import mint_token as _mint

    return _mint(
        signing_key()[0],
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
