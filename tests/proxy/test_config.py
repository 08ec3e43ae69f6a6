"""Config loading: YAML + environment overrides, validated, with errors that name field and value."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench.procs import custos_cmd
from custos.errors import ConfigError
from sidecar.config import load_config


def test_defaults_serve_the_embedded_setup() -> None:
    config = load_config(environ={})
    assert config.server.port == 8080
    assert config.server.host == "0.0.0.0"
    assert str(config.upstream.url) == "http://127.0.0.1:8000/"
    assert config.server.max_body_bytes == 10 * 1024 * 1024


def test_yaml_file_and_env_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 9000\nupstream:\n  url: http://127.0.0.1:7000\n")
    config = load_config(
        path, environ={"CUSTOS_SERVER__PORT": "9100", "CUSTOS_UPSTREAM__READ_TIMEOUT_S": "1.5"}
    )
    assert config.server.port == 9100  # environment wins over the file
    assert config.upstream.read_timeout_s == 1.5
    assert str(config.upstream.url) == "http://127.0.0.1:7000/"


def test_custos_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 9001\n")
    assert load_config(environ={"CUSTOS_CONFIG": str(path)}).server.port == 9001


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  port: 99999\n", "server.port: value 99999"),
        ("server:\n  prot: 80\n", "server.prot: unknown option"),
        ("upstream:\n  url: ftp://x\n", "upstream.url"),
        ("server: [1, 2\n", ":2:1: (yaml): not valid YAML"),
        ("- a\n- b\n", ":1:1: (top level): must be a mapping"),
    ],
)
def test_invalid_file_names_field_value_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: not-a-port\n")
    proc = subprocess.run(
        custos_cmd("serve", "--config", str(path)), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "server.port" in proc.stderr and "not-a-port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_env_override_exits_2(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "CUSTOS_UPSTREAM__CONNECT_TIMEOUT_S": "-1"}
    proc = subprocess.run(custos_cmd("serve"), capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert "upstream.connect_timeout_s" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_example_config_is_valid_and_complete() -> None:
    """custos.example.yaml loads, and documents every option of every section."""
    import yaml

    from sidecar.config import Config

    example = Path(__file__).resolve().parents[2] / "custos.example.yaml"
    text = example.read_text()
    data = yaml.safe_load(text)
    # Optional keys whose default is "absent" are documented as comments: "# continue: false".
    commented = set(re.findall(r"#\s*([a-z_]+):", text))
    load_config(example, environ={})

    def walk(model: type, node: dict, prefix: str) -> list[str]:
        from pydantic import BaseModel

        missing = []
        for attr, field in model.model_fields.items():
            name = field.alias or attr
            key = f"{prefix}{name}"
            if name not in node:
                if name not in commented:
                    missing.append(key)
                continue
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(node[name], dict):
                missing += walk(ann, node[name], key + ".")
        return missing

    assert walk(Config, data, "") == []
    # And what it documents are the defaults themselves.
    loaded, defaults = Config.model_validate(data), Config()
    for section in Config.model_fields:
        assert getattr(loaded, section) == getattr(defaults, section), section
