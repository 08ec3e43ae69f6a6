"""``custos redact``: stdin to stdout, exactly one output line per input line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# The installed ``custos`` script, as users run it.
CUSTOS = str(Path(sys.executable).parent / "custos")


def run(args: list[str], stdin: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env_state = {"CUSTOS_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [CUSTOS, "redact", *args], input=stdin, capture_output=True, text=True, timeout=60, env=env_state
    )


LINES = [
    "我的手机13812345678，邮箱 jlin@example.com",
    "",
    "nothing to see, order 2024112812345678 at 1732780800000",
    "-----BEGIN RSA PRIVATE KEY-----",
    "MIIEowIBAAKCAQEAx",
    "-----END RSA PRIVATE KEY----- then 13812345678",
    "no newline at the end 10.0.0.1",
]


def test_line_for_line(tmp_path: Path) -> None:
    text = "\n".join(LINES)
    proc = run([], text, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split("\n")
    assert len(out) == len(LINES)
    assert out[0] == "我的手机<CN_PHONE_1>，邮箱 <EMAIL_1>"
    assert out[1] == "" and out[2] == LINES[2]
    assert out[3] == "<PRIVATE_KEY_1>" and out[4] == ""
    assert out[5] == " then <CN_PHONE_1>"  # same value, same placeholder across the run
    assert out[6] == "no newline at the end <IPV4_1>"


def test_json_offsets_into_the_input_line(tmp_path: Path) -> None:
    proc = run(["--json"], "\n".join(LINES[:3]) + "\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(docs) == 3
    first = docs[0]
    assert [(e["type"], LINES[0][e["start"] : e["end"]]) for e in first["entities"]] == [
        ("CN_PHONE", "13812345678"),
        ("EMAIL", "jlin@example.com"),
    ]
    assert docs[1] == {"text": "", "entities": []}


def test_policy_flag_and_errors(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("entities:\n  CN_PHONE: mask\n")
    proc = run(["--policy", str(policy)], "13812345678\n", tmp_path)
    assert proc.stdout == "138****5678\n"
    policy.write_text("entities:\n  CN_PHONE: mask\n  EMAIL: {operator: hsah}\n")
    proc = run(["--policy", str(policy)], "x\n", tmp_path)
    assert proc.returncode == 2
    assert f"{policy}:3:21: entities.EMAIL.operator: 'hsah' is not an operator" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run(["--policy", str(tmp_path / "missing.yaml")], "x\n", tmp_path)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_check_policy(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    proc = run(["--check", "--policy", str(repo / "policies" / "redaction.yaml")], "", tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("policy ok: 25 entity types, 0 custom detectors")


def test_serve_refuses_a_bad_policy(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nentities:\n  EMAIL: {operator: mask, keep_last: 999}\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"server: {{host: 127.0.0.1, port: 1}}\nredaction:\n  policy_file: {policy}\n")
    proc = subprocess.run(
        [CUSTOS, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"CUSTOS_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert f"{policy}:3:38: entities.EMAIL.keep_last" in proc.stderr and "Traceback" not in proc.stderr
