"""Helpers for the deployment tests: the checkers installed by deploy/tools/install.sh, Helm rendering
and reading the files under deploy/ and dashboards/."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bench.procs import REPO

DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "custos"
COMPOSE = DEPLOY / "compose"
DOCKER = DEPLOY / "docker"
DASHBOARDS = REPO / "dashboards"
KUBE_VERSION = "1.31.0"


@cache
def tools() -> dict[str, str]:
    """Install (or find, when cached) the checkers; NAME -> executable path."""
    proc = subprocess.run(
        ["bash", str(DEPLOY / "tools" / "install.sh")], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(f"deploy/tools/install.sh failed:\n{proc.stderr[-4000:]}")
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    for name, path in found.items():
        if not Path(path).exists():
            raise RuntimeError(f"{name} not installed at {path}")
    return found


def run(argv: list[str], *, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def helm_template(
    *args: str,
    values: list[Path] | None = None,
    release: str = "custos",
    namespace: str = "llm",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    argv = [
        tools()["HELM"],
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]
    for v in values or []:
        argv += ["--values", str(v)]
    return run([*argv, *args], check=check)


def render(*args: str, values: list[Path] | None = None, release: str = "custos") -> list[dict[str, Any]]:
    """The chart rendered with Helm, as a list of Kubernetes objects."""
    out = helm_template(*args, values=values, release=release).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(objs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, (
        f"expected one {kind} named *{suffix}, got {[o['metadata']['name'] for o in matches]}"
    )
    return matches[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name!r}")


def container_environ(c: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process would see it; Secret values become placeholders."""
    env: dict[str, str] = {}
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = f"secret-{ref['name']}-{ref['key']}"
        else:
            env[item["name"]] = "from-downward-api"
    return env
