"""Issue 20: every bad input is answered with one line and exit 2, and success is only claimed when
something succeeded. Real commands (``custos ...`` in a subprocess), real files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.procs import REPO, custos_cmd


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_") or k == "CUSTOS_CACHE"}
    return subprocess.run(
        custos_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
        cwd=str(REPO),
    )


def one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, one line on stderr starting ``custos: error:``; returns it."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("custos: error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a directory\n")
    return path


# -- audit setup-es --export -----------------------------------------------------------------------------
def test_setup_es_export_refuses_existing_files_and_unwritable_paths(tmp_path: Path, a_file: Path) -> None:
    out_dir = tmp_path / "export"
    first = run("audit", "setup-es", "--export", str(out_dir))
    assert first.returncode == 0 and first.stdout.count("wrote ") == 3, first.stderr
    one_line_error(run("audit", "setup-es", "--export", str(out_dir)), "would overwrite", "--force")
    again = run("audit", "setup-es", "--export", str(out_dir), "--force")
    assert again.returncode == 0 and again.stdout.count("wrote ") == 3
    one_line_error(run("audit", "setup-es", "--export", str(a_file)), "not a directory")
    one_line_error(run("audit", "setup-es", "--export", str(a_file / "sub")), "cannot write there")


# -- alerts ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", [("list",), ("silence", "list"), ("silence", "expire", "abc")])
def test_alerts_url_that_is_not_a_url(action: tuple[str, ...]) -> None:
    one_line_error(run("alerts", *action, "--url", "notaurl"), "--url 'notaurl'")


def test_alerts_url_nobody_listens_on() -> None:
    one_line_error(run("alerts", "list", "--url", "http://127.0.0.1:1"), "cannot connect")


def test_alerts_test_scenario_directory_and_unknown_name(tmp_path: Path) -> None:
    one_line_error(run("alerts", "test", "--scenario", str(tmp_path)), "is a directory")
    line = one_line_error(run("alerts", "test", "--scenario", "no-such-scenario"), "no bundled scenario")
    assert "gpu-saturated" in line and "thermal-spike" in line  # the names that would work


def test_alerts_test_accepts_bundled_names() -> None:
    for name in ("gpu-saturated", "thermal-spike"):
        out = run("alerts", "test", "--scenario", name)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr


def test_alerts_state_dir_that_does_not_exist_or_cannot_be_written(tmp_path: Path, a_file: Path) -> None:
    missing = str(tmp_path / "nonexistent")
    one_line_error(run("alerts", "list", "--state-dir", missing), "no such directory")
    one_line_error(run("alerts", "silence", "list", "--state-dir", missing), "no such directory")
    add = ("alerts", "silence", "add", 'alertname="X"', "--comment", "c")
    one_line_error(run(*add, "--state-dir", missing), "no such directory")
    one_line_error(run(*add, "--state-dir", str(a_file)), "not a directory")
    # The state dir exists but its alerting/ is not a directory: the silence cannot be written.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "alerting").write_text("")
    one_line_error(run(*add, "--state-dir", str(blocked)), "silences")


def test_alerts_list_on_an_existing_state_dir_says_no_alerts(tmp_path: Path) -> None:
    out = run("alerts", "list", "--state-dir", str(tmp_path))
    assert out.returncode == 0 and out.stdout.strip() == "no alerts", out.stderr


def test_cli_silence_labels_the_os_user_as_such(tmp_path: Path) -> None:
    out = run("alerts", "silence", "add", 'alertname="X"', "--comment", "c", "--state-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "local OS user" in out.stderr
    listed = run("alerts", "silence", "list", "--state-dir", str(tmp_path))
    assert "os-user:" in listed.stdout
    named = run(
        "alerts", "silence", "add", 'alertname="Y"', "--comment", "c", "--author", "carol",
        "--state-dir", str(tmp_path),
    )  # fmt: skip
    assert named.returncode == 0 and "OS user" not in named.stderr
    assert "carol" in run("alerts", "silence", "list", "--state-dir", str(tmp_path)).stdout


def test_alerts_check_on_a_directory_without_rules(tmp_path: Path) -> None:
    one_line_error(run("alerts", "check", str(tmp_path)), "no rule files")


def test_alerts_check_names_an_unsupported_function(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "disk",
                        "rules": [{"alert": "DiskFull", "expr": "predict_linear(node_free[1h], 3600) < 0"}],
                    }
                ]
            }
        )
    )
    out = run("alerts", "check", str(rules))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "'predict_linear'" in out.stderr and "not supported in-process" in out.stderr, out.stderr
    assert "unexpected input" not in out.stderr


def test_send_test_to_a_receiver_without_integrations_is_not_delivered(tmp_path: Path) -> None:
    cfg = tmp_path / "custos.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state": {"dir": str(tmp_path / "state")},
                "alerting": {"route": {"receiver": "nobody"}, "receivers": [{"name": "nobody"}]},
            }
        )
    )
    out = run("alerts", "send-test", "--receiver", "nobody", "--config", str(cfg))
    one_line_error(out, "no integrations", "nothing was sent")
    assert "delivered" not in out.stdout + out.stderr


# -- inference, bench, gpu ---------------------------------------------------------------------------------
def test_make_tiny_model_into_an_unwritable_place(a_file: Path) -> None:
    one_line_error(run("inference", "make-tiny-model", str(a_file / "model")), "cannot write")
    one_line_error(run("inference", "make-tiny-model", str(a_file)), "not a directory")


@pytest.mark.parametrize("value", ["abc", "0", "1,x", ""])
def test_bench_proxy_connections_must_be_numbers(value: str) -> None:
    one_line_error(run("bench", "proxy", "--connections", value), "--connections")


def test_unknown_gpu_simulation_names_the_bundled_ones() -> None:
    line = one_line_error(run("gpu", "sample", "--sim", "no-such-scenario"), "no bundled scenario")
    for name in ("steady", "thermal-spike", "gpu-lost"):
        assert name in line


# -- audit verify ----------------------------------------------------------------------------------------
def test_verify_a_file_that_is_not_an_audit_trail(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sidecar.audit.keys import public_pem

    pub = tmp_path / "audit.pub"
    pub.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    for content in ('{"a": 1}\n{"b": 2}\n', "hello\nworld\n"):
        path = tmp_path / "notes.jsonl"
        path.write_text(content)
        out = run("audit", "verify", str(path), "--public-key", str(pub))
        one_line_error(out, "not an audit trail")
        assert "ALTERED" not in out.stdout


# -- usage -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (("audit", "verify", "--bogus"), "usage: custos audit verify"),
        (
            ("alerts", "silence", "add", 'alertname="X"', "--comment", "c", "--bogus"),
            "usage: custos alerts silence add",
        ),
        (("alerts", "silence", "add", 'alertname="X"'), "usage: custos alerts silence add"),
        (("audit", "search", "--outcome", "maybe"), "usage: custos audit search"),
        (("bench", "proxy", "--duration", "x"), "usage: custos bench proxy"),
    ],
)
def test_argument_errors_print_the_subcommands_usage(argv: tuple[str, ...], usage: str) -> None:
    out = run(*argv)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(usage), out.stderr
    assert "usage: custos [-h]" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("custos: error: ")
