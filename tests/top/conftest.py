"""Fixtures for ``custos top``: a real sidecar (GPU simulation, fast alert evaluation) in front of the
real CPU engine, an RBAC policy with an operator role and a metrics-only role, and traffic."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.procs import custos_cmd
from bench.stack import TINY_MODEL_NAME, Engine, Sidecar, mint_token

POLICY = """
version: 1
roles:
  - name: tester
    permissions: ["*"]
  - name: operator
    permissions: ["model:*", metrics:read, alerts:read, audit:read]
  - name: metrics-only
    permissions: [metrics:read]
  - name: viewer
    permissions: [model:list]
"""


def top_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    policy = tmp_path / "top-policy.yaml"
    policy.write_text(POLICY)
    cfg: dict[str, Any] = {
        "rbac": {"policy_file": str(policy)},
        "gpu": {"simulation": "thermal-spike", "interval_s": 1},
        "alerting": {"evaluation_interval": "1s"},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def top_sidecar(engine: Engine, start_sidecar: Callable[..., Sidecar], tmp_path: Path) -> Sidecar:
    """A sidecar whose simulated GPU heats up 40 s after it starts (docs/gpu-simulation.md)."""
    return start_sidecar(engine.url, config=top_config(tmp_path))


def operator_token(subject: str = "ops-alice") -> str:
    return mint_token(subject, ["operator"])


def http(url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"null")
        except ValueError:
            return exc.code, raw


def chat(sidecar: Sidecar, token: str, stream: bool = False) -> int:
    body = {
        "model": TINY_MODEL_NAME,
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": 8,
        "stream": stream,
    }
    req = urllib.request.Request(
        sidecar.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def send_traffic(sidecar: Sidecar, n_ok: int = 3) -> dict[str, int]:
    """Successful chats (plain and streamed), one 401 (no token), one 403 (viewer invoking a model)."""
    ok = sum(
        1 for i in range(n_ok) if chat(sidecar, mint_token("app-bob", ["tester"]), stream=i % 2 == 1) == 200
    )
    s401, _ = http(sidecar.url + "/v1/models")
    s403 = chat(sidecar, mint_token("mallory", ["viewer"]))
    return {"ok": ok, "401": s401, "403": s403}


def run_top(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        custos_cmd("top", *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )
