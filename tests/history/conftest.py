"""Fixtures for the History API tests: a real sidecar in front of the recording upstream, a policy
with history roles, and small HTTP helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from bench.stack import mint_token
from tests.es_node.fixtures import elasticsearch, es_index_prefix  # noqa: F401

POLICY = """
version: 1
roles:
  - name: chatter
    permissions: ["model:invoke:*", model:list, history:list]
  - name: auditor
    permissions: [history:list, audit:read]
  - name: no-history
    permissions: ["model:invoke:*"]
"""
CHAT = "/v1/chat/completions"
MODEL = "custos-tiny"


def history_config(tmp_path: Path, **audit: Any) -> dict[str, Any]:
    policy = tmp_path / "history-policy.yaml"
    policy.write_text(POLICY)
    return {"rbac": {"policy_file": str(policy)}, "audit": {"store_redacted_text": True, **audit}}


def token(subject: str, role: str = "chatter") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(subject, [role])}"}


def chat(url: str, who: dict[str, str], rid: str, content: str = "hi", model: str | None = MODEL) -> int:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": content}], "max_tokens": 4}
    if model is not None:
        body["model"] = model
    r = httpx.post(url + CHAT, json=body, headers={**who, "x-request-id": rid}, timeout=30)
    return r.status_code


def get(url: str, who: dict[str, str], path: str = "/v1/history", **params: Any) -> tuple[int, Any]:
    r = httpx.get(url + path, params=params, headers=who, timeout=30)
    return r.status_code, r.json()


def walk(url: str, who: dict[str, str], limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, following next_cursor."""
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        q = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        status, page = get(url, who, **q)
        assert status == 200, page
        assert len(page["data"]) <= limit
        out += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return out
        cursor = page["next_cursor"]
    raise AssertionError("pagination did not end")
