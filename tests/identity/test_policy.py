"""RBAC: permission wildcards, the route table, deny by default, constraints, validation, hot reload."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import textwrap
from pathlib import Path

import pytest

from bench.stack import TEST_POLICY
from sidecar.rbac.decide import decide
from sidecar.rbac.permissions import compile_grant, grant_error, model_name_error
from sidecar.rbac.policy import Policy, PolicyError, load_policy_file, parse_policy
from sidecar.rbac.routes import RouteTable
from sidecar.rbac.store import PolicyStore

REPO = Path(__file__).resolve().parents[2]

POLICY = """
version: 1
routes:
  - {method: GET, path: /v1/history, permission: history:list}
roles:
  - name: admin
    permissions: ["*"]
  - name: analyst
    permissions: [model:read, history:list]
    constraints:
      models: [deepseek-7b, "llama-*"]
      max_tokens: 512
      rate_limit: {per_subject_rpm: 10}
  - name: embedder
    permissions: ["model:invoke:bge-*"]
  - name: office
    permissions: ["model:invoke"]
    constraints:
      source_cidrs: [10.0.0.0/8, "2001:db8::/32"]
  - name: lead
    inherits: [analyst]
    permissions: [audit:read]
  - name: viewer
    permissions: [model:list]
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(parse_policy(POLICY, "test.yaml"))


def ask(
    policy: Policy, roles, method="POST", path="/v1/chat/completions", model="deepseek-7b", ip="127.0.0.1"
):
    return decide(policy, RouteTable(policy.routes), tuple(roles), method, path, model, ip)


@pytest.mark.parametrize(
    ("grant", "permission", "expected"),
    [
        ("*", "model:invoke:x", True),
        ("*", "audit:read", True),
        ("model:*", "model:invoke:llama3:8b", True),
        ("model:*", "model:list", True),
        ("model:*", "audit:read", False),
        ("model:invoke:*", "model:invoke:deepseek-7b", True),
        ("model:invoke:*", "model:list", False),
        ("model:invoke", "model:invoke:anything", True),
        ("model:invoke:deepseek-7b", "model:invoke:deepseek-7b", True),
        ("model:invoke:deepseek-7b", "model:invoke:deepseek-7b-chat", False),
        ("model:invoke:llama-*", "model:invoke:llama-3-70b", True),
        ("model:invoke:llama-*", "model:invoke:mistral", False),
        ("model:list", "model:list", True),
        ("model:list", "model:listing", False),
        ("*:read", "audit:read", True),
        ("*:read", "audit:write", False),
        ("audit:read", "audit:read:x", True),
    ],
)
def test_wildcards(grant: str, permission: str, expected: bool) -> None:
    assert grant_error(grant) is None
    assert bool(compile_grant(grant).match(permission)) is expected


@pytest.mark.parametrize(
    "bad", ["model", "Model:read", "model: read", "model:re ad", "", "mo*del:x", ":read"]
)
def test_bad_permission_syntax(bad: str) -> None:
    assert grant_error(bad) is not None


@pytest.mark.parametrize(
    ("roles", "method", "path", "model", "allowed", "rule_part"),
    [
        (["analyst"], "POST", "/v1/chat/completions", "deepseek-7b", True, "role:analyst grant:model:read"),
        (["analyst"], "POST", "/v1/completions", "llama-3-8b", True, "role:analyst"),
        (["analyst"], "POST", "/v1/embeddings", "mistral", False, "constraint:models"),
        (["analyst"], "GET", "/v1/models", None, True, "model:read=model:list"),
        (["analyst"], "GET", "/v1/history", None, True, "policy route GET /v1/history"),
        (["analyst"], "DELETE", "/v1/history", None, False, "default-deny"),
        (["analyst"], "GET", "/v1/files", None, False, "default-deny"),
        (["viewer"], "POST", "/v1/chat/completions", "deepseek-7b", False, "default-deny"),
        (["viewer"], "GET", "/v1/models", None, True, "role:viewer grant:model:list"),
        (["embedder"], "POST", "/v1/embeddings", "bge-large", True, "grant:model:invoke:bge-*"),
        (["embedder"], "GET", "/v1/models", None, False, "default-deny"),
        (["lead"], "POST", "/v1/chat/completions", "llama-2", True, "inherited from analyst"),
        (["admin"], "PATCH", "/v1/anything", None, False, "default-deny"),  # no route: even admin
        ([], "POST", "/v1/chat/completions", "deepseek-7b", False, "default-deny"),
        (["ghost"], "POST", "/v1/chat/completions", "deepseek-7b", False, "default-deny"),
        (["viewer", "analyst"], "POST", "/v1/chat/completions", "deepseek-7b", True, "role:analyst"),
    ],
)
def test_route_table(policy, roles, method, path, model, allowed, rule_part) -> None:
    out = ask(policy, roles, method, path, model)
    assert out.decision.allowed is allowed, out.decision
    assert rule_part in out.decision.rule


def test_source_cidr_rule(policy) -> None:
    assert ask(policy, ["office"], ip="10.1.2.3").decision.allowed
    assert ask(policy, ["office"], ip="2001:db8::1").decision.allowed
    assert ask(policy, ["office"], ip="::ffff:10.9.9.9").decision.allowed  # v4-mapped
    out = ask(policy, ["office"], ip="192.168.1.5")
    assert not out.decision.allowed and out.decision.rule == "role:office constraint:source_cidrs"
    # Another role of the same caller without the rule still allows it.
    assert ask(policy, ["office", "analyst"], ip="192.168.1.5").decision.allowed


def test_constraints_merge_most_permissive(policy) -> None:
    out = ask(policy, ["analyst"])
    assert out.grant.max_tokens == 512 and out.grant.per_subject.per_subject_rpm == 10
    out = ask(policy, ["analyst", "admin"])
    assert out.grant.max_tokens is None and out.grant.per_subject is None


def test_model_detail_route_hides_uninvokable_models(policy) -> None:
    assert ask(policy, ["analyst"], "GET", "/v1/models/deepseek-7b", None).failure == ""
    assert ask(policy, ["analyst"], "GET", "/v1/models/secret-model", None).failure == "hidden_model"
    assert ask(policy, ["viewer"], "GET", "/v1/models/deepseek-7b", None).failure == "hidden_model"


def test_missing_model_is_not_allowed(policy) -> None:
    out = ask(policy, ["admin"], model=None)
    assert out.failure == "model_missing" and not out.decision.allowed


def test_shipped_policy_is_valid_and_seed_roles_work() -> None:
    shipped = load_policy_file(REPO / "policies" / "rbac.yaml")
    assert {"admin", "analyst"} <= set(shipped.roles)
    assert ask(shipped, ["analyst"], model="anything").decision.allowed
    assert not ask(shipped, ["viewer"], model="anything").decision.allowed
    test_policy = load_policy_file(TEST_POLICY)
    assert ask(test_policy, ["tester"], model="custos-tiny").decision.allowed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "roles:\n  - name: a\n    permissions: [model:read]\n    colour: red\n",
            ["x.yaml:4:5: roles[0].colour: unknown option"],
        ),
        (
            "roles:\n  - name: a\n  - name: b\n  - name: a\n",
            ["x.yaml:4:11: roles[2].name: duplicate role 'a' (first defined at line 2)"],
        ),
        (
            "roles:\n  - name: a\n    inherits: [b]\n",
            ["x.yaml:3:16: roles[0].inherits[0]: role 'a' inherits unknown role 'b'"],
        ),
        (
            "roles:\n  - name: a\n    permissions:\n      - model:read\n      - 'Bad Perm'\n",
            ["x.yaml:5:9: roles[0].permissions[1]: 'Bad Perm' is not resource:action"],
        ),
        (
            "roles:\n  - name: a\n    constraints:\n      source_cidrs: [10.0.0.300/8]\n",
            ["x.yaml:4:7: roles[0].constraints.source_cidrs:"],
        ),
        (
            "roles:\n  - name: a\n    constraints: {max_tokens: -1}\n",
            ["x.yaml:3:31: roles[0].constraints.max_tokens:"],
        ),
        (
            "roles:\n  - name: a\n  - name: b\n    permissions: [x:y]\n    permissions: [z:w]\n",
            ["x.yaml:5:5: roles[1].permissions: duplicate key"],
        ),
        ("roles: [\n", ["x.yaml:2:1: (yaml): not valid YAML"]),
        ("version: 2\nroles: []\n", ["x.yaml:1:10: version:"]),
        (
            "roles:\n  - name: a\n    inherits: [b]\n  - name: b\n    inherits: [a]\n",
            ["x.yaml:1:1: roles: roles inherit in a cycle: a -> b -> a"],
        ),
        ("", ["x.yaml:1:1: roles: Field required"]),
    ],
)
def test_validation_errors_name_file_and_line(text: str, expected: list[str]) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "x.yaml")
    for fragment in expected:
        assert any(fragment in e for e in info.value.errors), info.value.errors


async def test_hot_reload_rejects_a_broken_file_and_keeps_the_old_policy(tmp_path: Path, caplog) -> None:
    path = tmp_path / "rbac.yaml"
    path.write_text("roles:\n  - name: analyst\n    permissions: [model:list]\n")
    store = PolicyStore(path, interval_s=0.05)
    await store.start()
    try:
        assert not ask(store.policy, ["analyst"]).decision.allowed
        path.write_text("roles:\n  - name: analyst\n    permissions: [model:read]\n")
        await wait_for(lambda: store.generation == 2)
        assert ask(store.policy, ["analyst"]).decision.allowed
        caplog.set_level(logging.ERROR, logger="custos.rbac")
        path.write_text("roles:\n  - name: analyst\n    permissions: [model:read]\n    typo: 1\n")
        await wait_for(lambda: "INVALID" in caplog.text)
        assert "rbac.yaml:4:5: roles[0].typo: unknown option" in caplog.text
        assert store.generation == 2 and ask(store.policy, ["analyst"]).decision.allowed
        path.unlink()  # a vanished file keeps the policy too
        await asyncio.sleep(0.2)
        assert ask(store.policy, ["analyst"]).decision.allowed
        path.write_text("roles:\n  - name: viewer\n    permissions: [model:list]\n")
        await wait_for(lambda: store.generation == 3)
        assert not ask(store.policy, ["analyst"]).decision.allowed
    finally:
        await store.stop()


async def test_sighup_forces_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "rbac.yaml"
    path.write_text("roles:\n  - name: analyst\n    permissions: [model:list]\n")
    store = PolicyStore(path, interval_s=3600)  # the poll would never notice in time: SIGHUP must
    await store.start()
    try:
        stat = path.stat()
        path.write_text("roles:\n  - name: analyst\n    permissions: [model:read]\n")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: store.generation == 2)
        assert ask(store.policy, ["analyst"]).decision.allowed
    finally:
        await store.stop()


async def wait_for(cond, within_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_policy_cli_check_and_explain(tmp_path: Path) -> None:
    import subprocess

    from bench.procs import custos_cmd

    good = tmp_path / "p.yaml"
    good.write_text(textwrap.dedent(POLICY))
    r = subprocess.run(custos_cmd("policy", "check", str(good)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("roles:\n  - name: a\n    permisions: [model:read]\n")
    r = subprocess.run(custos_cmd("policy", "check", str(bad)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"{bad}:3:5: roles[0].permisions: unknown option" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(
        custos_cmd(
            "policy",
            "explain",
            "--file",
            str(good),
            "--role",
            "analyst",
            "--method",
            "POST",
            "--path",
            "/v1/chat/completions",
            "--model",
            "deepseek-7b",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.startswith("ALLOW") and "role:analyst" in r.stdout
    assert "capped at 512" in r.stdout
    r = subprocess.run(
        custos_cmd("policy", "explain", "--file", str(good), "--role", "viewer", "--model", "deepseek-7b"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout.startswith("DENY") and "default-deny" in r.stdout


def test_packaged_default_policy_matches_the_repo_copy() -> None:
    # Wheels ship sidecar/rbac/default-policy.yaml (policies/ is not packaged): the two must not drift.
    packaged = REPO / "sidecar" / "rbac" / "default-policy.yaml"
    assert packaged.read_text() == (REPO / "policies" / "rbac.yaml").read_text()


@pytest.mark.parametrize(
    "name",
    [
        "custos-tiny",
        "deepseek-7b",
        "llama3:8b",
        "meta-llama/Llama-3.1-8B-Instruct",
        "ft:gpt-4o@v2+x",
        "a/b/c/d",
        "m" * 128,
    ],
)
def test_model_names_that_are_accepted(name: str) -> None:
    assert model_name_error(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "allowed-../secret-model",
        "..",
        "a/../b",
        "../x",
        "a..b",
        "/abs",
        "a/",
        "a//b",
        "a/b/c/d/e",
        "",
        "-x",
        ".hidden",
        "a b",
        "a\tb",
        "a\nb",
        "a\n",
        "a\x00",
        "a\ud800",
        "é",
        "m" * 129,
        "a\\b",
        "a%2fb",
        "a*",
    ],
)
def test_model_names_that_are_refused(name: str) -> None:
    assert model_name_error(name) is not None


@pytest.mark.parametrize(
    ("grant", "permission", "expected"),
    [
        ("model:invoke:allowed-*", "model:invoke:allowed-x", True),
        ("model:invoke:allowed-*", "model:invoke:allowed-x/secret", False),  # * stays in its segment
        ("model:invoke:org/*", "model:invoke:org/a", True),
        ("model:invoke:org/*", "model:invoke:org/a/b", False),
        ("model:invoke:org/**", "model:invoke:org/a/b", True),  # ** says so
        ("model:invoke:*", "model:invoke:org/a/b", True),  # * alone: every model
        ("model:invoke", "model:invoke:org/a", True),
        ("model:*", "model:invoke:org/a", True),
        ("model:invoke:llama-*", "model:invoke:llama-3\n", False),
    ],
)
def test_target_globs_do_not_cross_slashes(grant: str, permission: str, expected: bool) -> None:
    assert bool(compile_grant(grant).match(permission)) is expected


def test_model_constraint_globs_do_not_cross_slashes() -> None:
    policy = Policy(
        parse_policy(
            "roles:\n  - name: r\n    permissions: [model:read]\n"
            "    constraints: {models: ['allowed-*', 'org/**', 'x/*']}\n"
            "  - name: all\n    permissions: [model:read]\n    constraints: {models: ['*']}\n",
            "g.yaml",
        )
    )
    allowed = {
        m: ask(policy, ["r"], model=m).decision.allowed
        for m in ["allowed-a", "allowed-a/secret", "org/a/b", "x/a", "x/a/b"]
    }
    assert allowed == {
        "allowed-a": True,
        "allowed-a/secret": False,
        "org/a/b": True,
        "x/a": True,
        "x/a/b": False,
    }
    assert ask(policy, ["all"], model="any/thing/at/all").decision.allowed


def test_model_detail_route_takes_ids_with_slashes(policy) -> None:
    out = ask(policy, ["analyst"], "GET", "/v1/models/llama-3/8b", None)
    assert out.decision.allowed and out.failure == "hidden_model"  # llama-* does not cover llama-3/8b
    out = ask(policy, ["admin"], "GET", "/v1/models/org/name", None)
    assert out.decision.allowed and out.failure == ""
