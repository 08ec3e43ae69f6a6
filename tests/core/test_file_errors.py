"""Every YAML file Custos reads reports problems the same way: ``file:line:col: field: problem``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from alerting.replay import ScenarioError as ReplayScenarioError
from alerting.replay import load_scenario as load_replay_scenario
from alerting.rules import RuleError, load_rule_files
from custos.errors import ConfigError
from gpu.sim import ScenarioError as GpuScenarioError
from gpu.sim import read_scenario
from sidecar.config import load_config
from sidecar.rbac.policy import PolicyError as RbacPolicyError
from sidecar.rbac.policy import load_policy_file
from sidecar.redaction.policy import PolicyError as RedactionPolicyError
from sidecar.redaction.policy import load_policy


class Site(NamedTuple):
    load: Callable[[Path], Any]
    error: type[Exception]
    bad_text: str
    expected: str  # after "<file>:"


SITES = {
    "config": Site(
        lambda p: load_config(p, environ={}),
        ConfigError,
        "server:\n  port: 80\n  workers: many\n",
        "3:12: server.workers: value 'many' is invalid: Input should be a valid integer",
    ),
    "rbac policy": Site(
        load_policy_file,
        RbacPolicyError,
        "roles:\n  - name: a\n    permissions: [model:read]\n  - name: b\n    inherits: [c]\n",
        "5:16: roles[1].inherits[0]: role 'b' inherits unknown role 'c'",
    ),
    "redaction policy": Site(
        load_policy,
        RedactionPolicyError,
        "entities:\n  EMAIL: {operator: mask, keep_first: -1}\n",
        "2:39: entities.EMAIL.keep_first: value -1 is invalid: Input should be greater than or equal to 0",
    ),
    "alert rules": Site(
        lambda p: load_rule_files([p]),
        RuleError,
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x)\n",
        "5:15: groups[0].rules[0].expr: rate() expects a range vector",
    ),
    "replay scenario": Site(
        load_replay_scenario,
        ReplayScenarioError,
        "interval: 1m\nseries:\n  - series: up\n    values: 1 2 x\n",
        "4:13: series[0].values: bad series value 'x'",
    ),
    "gpu scenario": Site(
        read_scenario,
        GpuScenarioError,
        "gpus:\n  - name: H100\n    baseline: {power_w: hot}\n",
        "3:25: gpus[0].baseline.power_w: value 'hot' is invalid: Input should be a valid number",
    ),
}


@pytest.fixture(params=list(SITES), ids=list(SITES))
def site(request: pytest.FixtureRequest) -> Site:
    return SITES[request.param]


def test_a_bad_file_names_line_column_and_field(tmp_path: Path, site: Site) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(site.bad_text)
    with pytest.raises(site.error) as info:
        site.load(bad)
    assert str(info.value).startswith(f"{bad}:{site.expected}"), str(info.value)


def test_bad_yaml_and_a_missing_file_read_the_same_everywhere(tmp_path: Path, site: Site) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: [1, 2\n")
    with pytest.raises(site.error, match=r"bad\.yaml:2:1: \(yaml\): not valid YAML: expected ',' or ']'"):
        site.load(bad)
    with pytest.raises(site.error, match=r"nope\.yaml: \(file\): [a-z ]*file not found"):
        site.load(tmp_path / "nope.yaml")


def test_a_file_the_config_names_reports_its_own_lines(tmp_path: Path) -> None:
    scenario = tmp_path / "sim.yaml"
    scenario.write_text("gpus:\n  - name: H100\nevents:\n  - {at: 1, gpu: 3}\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"gpu:\n  simulation: {scenario}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config, environ={})
    expected = "4:18: events[0].gpu: 3 is not a GPU index of this scenario or 'all'"
    assert str(info.value) == f"{scenario}:{expected}"


def test_an_environment_override_names_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server:\n  host: 127.0.0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(config, environ={"CUSTOS_SERVER__PORT": "0"})
    assert str(info.value) == (
        "CUSTOS_SERVER__PORT: server.port: value 0 is invalid: Input should be greater than or equal to 1"
    )
