"""Dockerfiles: hadolint-clean, multi-stage, pinned, non-root, with a HEALTHCHECK; the sidecar image's
Python set has no torch, and the sidecar really runs without torch."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from bench.procs import REPO, ManagedProcess, free_port, wait_http

from .tools import DOCKER, run, tools

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def parsed(path: Path) -> list[dict]:
    parser = DockerfileParser(fileobj=path.open("rb"))
    return parser.structure


def _args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), flags=re.M))


def test_all_three_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} >= {"sidecar.Dockerfile", "vllm.Dockerfile", "cpu-engine.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    proc = run([tools()["HADOLINT"], "--failure-threshold", "info", str(path)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    """The linter is live: a Dockerfile with known faults fails."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    proc = run([tools()["HADOLINT"], str(bad)], check=False)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # latest tag


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_conventions(path: Path) -> None:
    instr = parsed(path)
    froms = [i["value"] for i in instr if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    args = _args(path)
    for value in froms:
        image = value.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        if image in {"build"}:
            continue
        assert ":" in image and not image.endswith(":latest") and "$" not in image, f"unpinned base {image}"
    # Everything after the last FROM is the runtime image.
    last = max(i for i, x in enumerate(instr) if x["instruction"] == "FROM")
    runtime = instr[last:]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "runtime stage must run as non-root"
    assert any(i["instruction"] == "HEALTHCHECK" for i in runtime)
    # Every COPY source from the build context exists in the repository.
    for i in instr:
        if i["instruction"] == "COPY" and "--from=" not in i["value"]:
            for src in i["value"].split()[:-1]:
                if not src.startswith("--"):
                    assert (REPO / src).exists(), f"{path.name}: COPY source {src} is not in the repository"


def test_sidecar_requirements_pinned_without_torch() -> None:
    lines = [
        ln
        for ln in (DOCKER / "sidecar-requirements.txt").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    pins = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in (ln.split("==") for ln in lines)}
    assert all(v and v[0].isdigit() for v in pins.values()), "every requirement has an exact version"
    assert not {"torch", "transformers", "vllm"} & set(pins)
    # Every runtime dependency of pyproject is in the lock (it cannot drift from the code).
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for req in [*project["dependencies"], *project["optional-dependencies"]["gpu"]]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0]).lower()
        assert name in pins, f"{name} (pyproject) missing from deploy/docker/sidecar-requirements.txt"


def test_sidecar_runs_without_torch(engine, tmp_path: Path) -> None:
    """What the slim image ships: the sidecar must start and proxy with torch and transformers absent."""
    port = free_port()
    cfg = tmp_path / "custos.yaml"
    cfg.write_text(
        f"server: {{host: 127.0.0.1, port: {port}}}\nupstream: {{url: '{engine.url}'}}\n"
        f"state: {{dir: '{tmp_path / 'state'}'}}\nauth: {{enabled: false, anonymous_roles: [admin]}}\n"
    )
    blocker = (
        "import sys\n"
        "for m in ('torch', 'transformers', 'vllm'):\n"
        "    sys.modules[m] = None  # import fails like in the image\n"
        "from sidecar.cli import main\n"
        "sys.exit(main(['serve', '--config', sys.argv[1]]))\n"
    )
    proc = ManagedProcess("sidecar-notorch", [sys.executable, "-c", blocker, str(cfg)])
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", timeout=60, proc=proc.proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as resp:
            assert resp.status == 200
            assert b"custos-tiny" in resp.read()
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.modules['torch']=None; import sidecar.app, sidecar.pipeline; "
                "from sidecar.config import load_config; from sidecar.pipeline import build_stages; "
                "build_stages(load_config(sys.argv[1])); print('ok')",
                str(cfg),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert probe.stdout.strip().endswith("ok"), probe.stderr[-2000:]
    finally:
        proc.stop()
