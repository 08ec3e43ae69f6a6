"""Access control against a hostile client, through a real `custos serve` in front of the recording
upstream: what the upstream received (or did not) is the evidence.

- the role's max_tokens caps the whole request (n, best_of, prompt lists), not each sequence;
- model names are validated before any policy glob sees them, and globs do not cross "/";
- refusals say what was refused, never the role, rule, constraint or source address behind it;
- hostile identity claims (lone surrogates, control characters, oversized) are a 401, not a 500;
- a source that keeps failing is refused before its tokens are verified, other sources are not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.stack import Sidecar, mint_token
from tests.security.conftest import MODEL, RecordingUpstream

POLICY = """
version: 1
roles:
  - name: tester
    permissions: ["*"]
  - name: capped-role-x1
    permissions: [model:read]
    constraints:
      models: [custos-tiny, "allowed-*"]
      max_tokens: 4096
  - name: office-role-x2
    permissions: [model:read]
    constraints:
      source_cidrs: [10.42.0.0/16]
  - name: shared-role-x3
    permissions: [model:read]
    constraints:
      rate_limit: {per_role_rpm: 1}
"""
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@pytest.fixture
def policy_sidecar(
    tmp_path: Path, upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]
) -> Sidecar:
    policy = tmp_path / "rbac.yaml"
    policy.write_text(POLICY)
    return start_sidecar(upstream.url, config={"rbac": {"policy_file": str(policy)}})


def bearer(subject: str, roles: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(subject, roles)}"}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


def completion(prompt: Any, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt, **extra}


# -- 1. the token cap holds for the whole request ---------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "total", "how"),
    [
        (CHAT, chat(n=16, max_tokens=1000), 16000, "max_tokens 1000 × n 16 × 1 prompt"),
        (CHAT, chat(n=8, max_completion_tokens=600), 4800, "max_completion_tokens 600 × n 8"),
        (COMPLETIONS, completion(["a"] * 8, max_tokens=1000), 8000, "× 8 prompts"),
        (COMPLETIONS, completion([[1, 2], [3, 4], [5]], max_tokens=2000), 6000, "× 3 prompts"),
        (COMPLETIONS, completion("a", best_of=5, max_tokens=1000), 5000, "best_of 5"),
        (COMPLETIONS, completion(["a", "b"], n=2, best_of=3, max_tokens=1000), 6000, "best_of 3 × 2 prompts"),
    ],
)
def test_token_cap_covers_every_sequence_and_prompt(
    policy_sidecar: Sidecar, upstream: RecordingUpstream, path: str, body: dict, total: int, how: str
) -> None:
    r = httpx.post(policy_sidecar.url + path, json=body, headers=bearer("eve", ["capped-role-x1"]))
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "max_tokens_exceeded"
    assert str(total) in err["message"] and how in err["message"] and "4096" in err["message"]
    assert "capped-role-x1" not in r.text
    assert upstream.inference_requests() == []


def test_token_cap_within_budget_and_shared_out_when_absent(
    policy_sidecar: Sidecar, upstream: RecordingUpstream
) -> None:
    h = bearer("eve", ["capped-role-x1"])
    url = policy_sidecar.url

    def sent(path: str, body: dict) -> dict:
        upstream.clear()
        r = httpx.post(url + path, json=body, headers=h)
        assert r.status_code == 200, r.text
        (req,) = upstream.inference_requests()
        return req.json

    assert sent(CHAT, chat(n=4, max_tokens=1024))["max_tokens"] == 1024  # exactly the cap
    assert sent(CHAT, chat(n=4))["max_tokens"] == 1024  # 4096 / 4
    assert sent(CHAT, chat())["max_tokens"] == 4096
    assert sent(COMPLETIONS, completion(["a", "b", "c"], n=2))["max_tokens"] == 682  # 4096 / 6
    assert sent(COMPLETIONS, completion([1, 2, 3], best_of=2))["max_tokens"] == 2048  # one token-id prompt
    upstream.clear()
    r = httpx.post(url + CHAT, json=chat(n=5000), headers=h)  # not even one token each
    assert r.status_code == 403 and r.json()["error"]["code"] == "max_tokens_exceeded"
    assert "5000" in r.json()["error"]["message"]
    assert upstream.inference_requests() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", "16"),
        ("n", True),
        ("n", 0),
        ("n", 1.5),
        ("best_of", -1),
        ("best_of", [2]),
        ("max_tokens", True),
        ("max_tokens", "1000"),
        ("max_tokens", 0),
        ("max_completion_tokens", 1e9),
    ],
)
def test_size_fields_must_be_positive_integers(
    guarded: Sidecar, upstream: RecordingUpstream, field: str, value: Any
) -> None:
    r = httpx.post(guarded.url + CHAT, json=chat(**{field: value}), headers=guarded.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and field in r.json()["error"]["message"]
    assert upstream.inference_requests() == []


# -- 2. model names ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model",
    ["allowed-../secret-model", "../secret-model", "custos-tiny\n", "custos tiny", "a\u202eb", "x" * 200],
)
def test_malformed_model_names_are_refused_before_policy(
    policy_sidecar: Sidecar, upstream: RecordingUpstream, model: str
) -> None:
    for roles in (["capped-role-x1"], ["tester"]):  # the glob role and the allow-everything role
        r = httpx.post(policy_sidecar.url + CHAT, json=chat(model=model), headers=bearer("eve", roles))
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "model" and err["code"] == "invalid_model"
    assert upstream.inference_requests() == []


def test_model_id_in_the_path_is_validated(policy_sidecar: Sidecar, upstream: RecordingUpstream) -> None:
    h = bearer("eve", ["capped-role-x1"])
    r = httpx.get(policy_sidecar.url + "/v1/models/allowed-../secret-model", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_model", r.text
    assert not [q for q in upstream.requests if "secret" in q.raw_path]
    r = httpx.get(policy_sidecar.url + f"/v1/models/{MODEL}", headers=h)
    assert r.status_code == 200, r.text


def test_model_globs_do_not_cross_slashes(policy_sidecar: Sidecar, upstream: RecordingUpstream) -> None:
    h = bearer("eve", ["capped-role-x1"])  # models: [custos-tiny, "allowed-*"]
    r = httpx.post(policy_sidecar.url + CHAT, json=chat(model="allowed-x/secret-model"), headers=h)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", r.text
    assert upstream.inference_requests() == []
    r = httpx.post(policy_sidecar.url + CHAT, json=chat(model="allowed-x", max_tokens=5), headers=h)
    assert r.status_code == 200, r.text
    assert upstream.inference_requests()[0].json["model"] == "allowed-x"


# -- 3. refusals reveal nothing about the inside ----------------------------------------------------
def _spool(sidecar: Sidecar) -> list[dict]:
    spool = Path(sidecar.config["state"]["dir"]) / "audit" / "spool"
    out = []
    for seg in sorted(spool.glob("*/seg-*.jsonl")):
        out.extend(json.loads(line) for line in seg.read_bytes().splitlines())
    return out


def test_403_bodies_name_no_role_constraint_or_address(
    policy_sidecar: Sidecar, upstream: RecordingUpstream
) -> None:
    url = policy_sidecar.url
    internals = [
        "capped-role-x1",
        "office-role-x2",
        "ghost-role-x4",
        "127.0.0.1",
        "10.42",
        "source",
        "cidr",
        "constraint",
        "role",
        "rule",
        "policy",
    ]
    cases = [
        (["office-role-x2"], chat(), f"Permission model:invoke:{MODEL} denied."),  # wrong source address
        (["capped-role-x1"], chat(model="secret-model"), "Permission model:invoke:secret-model denied."),
        (["ghost-role-x4"], chat(), f"Permission model:invoke:{MODEL} denied."),  # role not in the policy
        ([], chat(), f"Permission model:invoke:{MODEL} denied."),
    ]
    for roles, body, message in cases:
        r = httpx.post(url + CHAT, json=body, headers=bearer("eve", roles))
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["message"] == message and err["code"] == "permission_denied"
        for word in internals:
            assert word not in r.text.lower(), (word, r.text)
    r = httpx.delete(url + "/v1/files/abc", headers=bearer("eve", ["tester"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "route_not_allowed"
    assert "default-deny" not in r.text and "rule" not in r.text
    r = httpx.post(url + CHAT, json=chat(n=2, max_tokens=4000), headers=bearer("eve", ["capped-role-x1"]))
    assert r.status_code == 403 and "capped-role-x1" not in r.text and "role" not in r.text
    # A role's shared rate limit: the 429 does not name the role either.
    h = bearer("eve", ["shared-role-x3"])
    codes = [httpx.post(url + CHAT, json=chat(), headers=h).status_code for _ in range(2)]
    r = httpx.post(url + CHAT, json=chat(), headers=h)
    assert codes[1] == 429 and r.status_code == 429 and "shared-role-x3" not in r.text
    assert upstream.inference_requests()[-1].json["model"] == MODEL  # only the allowed one went through
    # The detail stays in the audit record.
    deadline = time.monotonic() + 15
    while True:
        records = _spool(policy_sidecar)
        office = [
            rec
            for rec in records
            if (rec.get("user") or {}).get("roles") == ["office-role-x2"]
            and rec["http"]["response"]["status_code"] == 403
        ]
        if office or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert office, "no audit record of the denied request"
    authz = office[0]["llm"]["authz"]
    assert "source_cidrs" in authz["rule"] and "office-role-x2" in authz["rule"]
    assert "127.0.0.1" in authz["reason"]


# -- 5. hostile identity claims ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("subject", "roles"),
    [
        ("al\ud800ice", ["tester"]),  # lone surrogate: a 500 before
        ("alice\r\nX-Custos-Roles: admin", ["tester"]),
        ("alice\x00", ["tester"]),
        ("a" * 300, ["tester"]),
        ("alice", ["tester", "adm\udc80in"]),
        ("alice", ["tester", *(f"r{i}" for i in range(70))]),
        ("alice", ["tester", "r" * 100]),
    ],
)
def test_hostile_identity_claims_get_401(
    guarded: Sidecar, upstream: RecordingUpstream, subject: str, roles: list[str]
) -> None:
    r = httpx.post(guarded.url + CHAT, json=chat(), headers=bearer(subject, roles))
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_token" and "Bearer token" in err["message"]
    assert upstream.inference_requests() == []
    # The sidecar is fine, and an ordinary caller still gets through.
    assert httpx.post(guarded.url + CHAT, json=chat(), headers=guarded.headers).status_code == 200
    assert "Traceback" not in guarded.process.log()


# -- 6. failing callers are limited per source --------------------------------------------------------
def test_a_flood_of_bad_tokens_is_cut_off_per_source(guarded: Sidecar, upstream: RecordingUpstream) -> None:
    bad = {"Authorization": "Bearer " + mint_token("eve", ["tester"])[:-8] + "AAAAAAAA"}  # bad signature
    codes = []
    with httpx.Client(base_url=guarded.url) as client:
        first = None
        for _ in range(200):
            r = client.post(CHAT, json=chat(), headers=bad)
            codes.append(r.status_code)
            if r.status_code == 429 and first is None:
                first = r
        assert set(codes) == {401, 429}
        # The default burst (rbac.failure_burst: 30), give or take the refill while the flood ran.
        assert 30 <= codes.count(401) <= 33, codes
        assert codes.index(429) >= 30 and codes[-100:] == [429] * 100  # refused to the end
        assert first is not None and first.json()["error"]["code"] == "too_many_failures"
        assert int(first.headers["retry-after"]) >= 1
        assert "127.0.0.1" not in first.text
        # Refused before the token is even looked at: a valid token from the flooding source too.
        r = client.post(CHAT, json=chat(), headers=guarded.headers)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_failures"
        # X-Forwarded-For from an untrusted peer does not move the flood to another bucket.
        for i in range(5):
            r = client.post(CHAT, json=chat(), headers={**bad, "X-Forwarded-For": f"198.51.100.{i}"})
            assert r.status_code == 429
    assert upstream.inference_requests() == []
    # Another source address is not affected by the flood: a valid caller from 127.0.0.2 gets through.
    with httpx.Client(
        base_url=guarded.url, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    ) as other:
        r = other.post(CHAT, json=chat(), headers=guarded.headers)
        assert r.status_code == 200, r.text
    assert len(upstream.inference_requests()) == 1


def test_the_failure_limit_can_be_configured_and_switched_off(
    tmp_path: Path, upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]
) -> None:
    tight = start_sidecar(upstream.url, config={"rbac": {"failure_burst": 2, "failure_limit_per_minute": 1}})
    codes = [httpx.post(tight.url + CHAT, json=chat()).status_code for _ in range(4)]  # no token at all
    assert codes == [401, 401, 429, 429]
    off = start_sidecar(
        upstream.url,
        config={"rbac": {"failure_limit_enabled": False}, "state": {"dir": str(tmp_path / "state-off")}},
        name="off",
    )
    codes = [httpx.post(off.url + CHAT, json=chat()).status_code for _ in range(40)]
    assert codes == [401] * 40


# -- model cards: the name, not where the host keeps the weights --------------------------------------
def test_model_cards_do_not_show_the_host_s_weight_directories(
    upstream: RecordingUpstream, guarded: Sidecar
) -> None:
    # vLLM names the weights' directory in `root` (and an adapter's base in `parent`).
    upstream.models = [
        {"id": MODEL, "object": "model", "root": "/srv/models/secret-dir/custos-tiny", "parent": None},
        {"id": "org/adapter", "object": "model", "root": "/srv/lora/a", "parent": "/srv/models/base"},
    ]
    listed = httpx.get(guarded.url + "/v1/models", headers=guarded.headers, timeout=30)
    assert listed.status_code == 200
    one = httpx.get(guarded.url + f"/v1/models/{MODEL}", headers=guarded.headers, timeout=30)
    assert one.status_code == 200
    for text in (listed.text, one.text):
        assert "/srv/" not in text and "secret-dir" not in text
    cards = {c["id"]: c for c in listed.json()["data"]}
    assert cards[MODEL]["root"] == MODEL and cards["org/adapter"] == {
        "id": "org/adapter",
        "object": "model",
        "root": "org/adapter",
        "parent": None,
    }
    assert one.json()["root"] == MODEL
