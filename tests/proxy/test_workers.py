"""``server.workers: auto``: one worker per usable core, bounded by the affinity mask and cgroup quota."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from custos.errors import ConfigError
from sidecar import cpus
from sidecar.commands.serve import _workers
from sidecar.config import load_config


def test_auto_is_the_usable_cores(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  workers: auto\n")
    assert load_config(cfg, environ={}).server.workers == cpus.usable_cpus()
    assert load_config(None, environ={"CUSTOS_SERVER__WORKERS": "auto"}).server.workers == cpus.usable_cpus()
    assert cpus.usable_cpus() <= len(os.sched_getaffinity(0))


def test_other_words_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  workers: many\n")
    with pytest.raises(ConfigError, match=r"server\.workers"):
        load_config(cfg, environ={})


@pytest.mark.parametrize(
    ("v2", "expected"), [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000\n", 0.5)]
)
def test_cgroup_v2_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, v2: str, expected: float | None
) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(v2)
    monkeypatch.setattr(cpus, "_CGROUP_V2", path)
    assert cpus.cgroup_quota() == expected
    if expected is not None:  # a fraction of a core still gets one worker; 1.5 cores get two
        assert cpus.usable_cpus() == min(len(os.sched_getaffinity(0)), max(1, -(-expected // 1)))


def test_cgroup_v1_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quota, period = tmp_path / "q", tmp_path / "p"
    quota.write_text("-1\n")
    period.write_text("100000\n")
    monkeypatch.setattr(cpus, "_CGROUP_V2", tmp_path / "absent")
    monkeypatch.setattr(cpus, "_CGROUP_V1", (quota, period))
    assert cpus.cgroup_quota() is None  # -1: unlimited
    quota.write_text("200000\n")
    assert cpus.cgroup_quota() == 2.0


def test_command_line_value() -> None:
    assert _workers("auto") == min(64, cpus.usable_cpus())
    assert _workers("3") == 3
    for bad in ("0", "65", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _workers(bad)
