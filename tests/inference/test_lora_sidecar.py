"""The sidecar governs LoRA adapters like models: loading and unloading need ``lora:manage`` (denied
and audited otherwise), invoking one needs ``model:invoke:<adapter>`` (globs work), ``/v1/models``
lists only the adapters a caller may invoke, and the adapter's name labels the sidecar's metrics.
The load request's ``lora_path`` goes through the redaction walker like every body string and must
reach the engine unchanged."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bench.stack import TINY_MODEL_NAME, Engine, Sidecar, mint_token, start_engine
from tests.inference.lora_support import ANSWER, TOPICS, chat_body, train_adapter, write_dataset

pytest.importorskip("peft")

ADMIN = ["model:list", "model:invoke:*", "lora:manage", "audit:read", "metrics:read"]
POLICY = {
    "version": 1,
    "roles": [
        {"name": "lora-admin", "permissions": ADMIN},
        {
            "name": "helpdesk-app",
            "permissions": ["model:list", "model:invoke:custos-*", "model:invoke:helpdesk-*"],
        },
        {"name": "base-only", "permissions": ["model:list", f"model:invoke:{TINY_MODEL_NAME}"]},
    ],
}


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # An ordinary path with digits, dashes and dots in it, as pytest makes them.
    root = tmp_path_factory.mktemp("adapters-2026.11")
    data = write_dataset(root / "train.jsonl", n=48, emails=0)
    train_adapter(tiny_model_dir, data, root / "helpdesk-v1", epochs=8)
    return root / "helpdesk-v1"


@pytest.fixture(scope="module")
def base_engine(tiny_model_dir: Path) -> Iterator[Engine]:
    eng = start_engine(tiny_model_dir)  # its own engine: adapters loaded here stay out of other tests
    yield eng
    eng.process.stop()


@pytest.fixture
def governed(base_engine: Engine, start_sidecar: Callable[..., Sidecar], tmp_path: Path) -> Sidecar:
    policy = tmp_path / "lora-policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    return start_sidecar(base_engine.url, config={"rbac": {"policy_file": str(policy)}})


def call(
    sidecar: Sidecar, path: str, role: str, body: dict | None = None, user: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {mint_token(user or role + '-user', [role])}"}
    if body is None:
        return httpx.get(sidecar.url + path, headers=headers, timeout=60)
    return httpx.post(sidecar.url + path, json=body, headers=headers, timeout=60)


def model_ids(sidecar: Sidecar, role: str) -> list[str]:
    r = call(sidecar, "/v1/models", role)
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


def audited(sidecar: Sidecar, path: str, status: int, user: str) -> dict:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = call(sidecar, f"/admin/audit/recent?status={status}&limit=50", "lora-admin")
        assert r.status_code == 200, r.text
        for record in r.json()["records"]:
            if record["path"] == path and record["user_id"] == user:
                return record
        time.sleep(0.2)
    raise AssertionError(f"no audit record of {path} -> {status} for {user}")


def test_lora_path_survives_redaction() -> None:
    from sidecar.redaction.engine import Redactor
    from sidecar.redaction.policy import Policy

    redactor = Redactor(Policy(), b"k" * 32)
    for path in ("/srv/adapters/legal-v2", "/tmp/pytest-of-root/pytest-17/adapters-2026.110/helpdesk-v1"):
        assert redactor.redact(path) == path


def test_load_invoke_unload_through_the_sidecar(
    governed: Sidecar, base_engine: Engine, adapter_dir: Path
) -> None:
    load = {"lora_name": "helpdesk-v1", "lora_path": str(adapter_dir)}

    # Without lora:manage: 403 from RBAC, audited with the permission it lacked; nothing reaches the engine.
    r = call(governed, "/v1/load_lora_adapter", "helpdesk-app", load, user="mallory")
    assert r.status_code == 403, r.text
    record = audited(governed, "/v1/load_lora_adapter", 403, "mallory")
    assert "lora:manage" in record["reason"]
    assert [m["id"] for m in httpx.get(base_engine.url + "/v1/models").json()["data"]] == [TINY_MODEL_NAME]

    # With it: the body (lora_path included) passes the redaction walker unchanged and loads.
    r = call(governed, "/v1/load_lora_adapter", "lora-admin", load, user="ops-alice")
    assert r.status_code == 200, r.text
    assert "added successfully" in r.text
    audited(governed, "/v1/load_lora_adapter", 200, "ops-alice")
    engine_cards = httpx.get(base_engine.url + "/v1/models").json()["data"]
    assert [m["id"] for m in engine_cards] == [TINY_MODEL_NAME, "helpdesk-v1"]

    # /v1/models per caller: the adapter only for those who may invoke it; its parent survives.
    assert model_ids(governed, "helpdesk-app") == [TINY_MODEL_NAME, "helpdesk-v1"]
    assert model_ids(governed, "base-only") == [TINY_MODEL_NAME]
    card = call(governed, "/v1/models/helpdesk-v1", "helpdesk-app").json()
    assert card["parent"] == TINY_MODEL_NAME and card["root"] == "helpdesk-v1"
    assert call(governed, "/v1/models/helpdesk-v1", "base-only").status_code == 404

    # Invoking: model:invoke:helpdesk-* covers the adapter; model:invoke:<base> alone does not.
    r = call(governed, "/v1/chat/completions", "helpdesk-app", chat_body("helpdesk-v1", TOPICS[2]))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "helpdesk-v1"
    assert r.json()["choices"][0]["message"]["content"].startswith(ANSWER[:20])
    r = call(governed, "/v1/chat/completions", "base-only", chat_body("helpdesk-v1", TOPICS[2]), user="bob")
    assert r.status_code == 403
    assert "model:invoke:helpdesk-v1" in audited(governed, "/v1/chat/completions", 403, "bob")["reason"]

    # The adapter's name labels the sidecar's own metrics.
    metrics = call(governed, "/metrics", "lora-admin").text
    assert 'model="helpdesk-v1"' in metrics

    # Unloading needs lora:manage too.
    unload = {"lora_name": "helpdesk-v1"}
    assert call(governed, "/v1/unload_lora_adapter", "helpdesk-app", unload).status_code == 403
    r = call(governed, "/v1/unload_lora_adapter", "lora-admin", unload)
    assert r.status_code == 200 and "removed successfully" in r.text
    assert model_ids(governed, "helpdesk-app") == [TINY_MODEL_NAME]
    r = call(governed, "/v1/chat/completions", "helpdesk-app", chat_body("helpdesk-v1", TOPICS[2]))
    assert r.status_code == 404
    r = call(governed, "/v1/unload_lora_adapter", "lora-admin", unload)
    assert r.status_code == 404
    # The base model serves on without its last adapter, and the adapter can come back.
    assert (
        call(governed, "/v1/chat/completions", "base-only", chat_body(TINY_MODEL_NAME, "hi")).status_code
        == 200
    )
    assert call(governed, "/v1/load_lora_adapter", "lora-admin", load).status_code == 200
    r = call(governed, "/v1/chat/completions", "helpdesk-app", chat_body("helpdesk-v1", TOPICS[2]))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith(ANSWER[:20])
