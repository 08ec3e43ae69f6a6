"""``custos redact``: stdin to stdout, exactly one output line per input line."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

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


# --- the read loop: lines detected together per read, the same output as line by line -------------


def _line_by_line(redactor, data: bytes, *, response: bool, as_json: bool) -> bytes:
    """What ``custos redact`` wrote before lines were read in batches: one ``find`` per line, the
    private-key state carried from line to line (the reference for the batched loop)."""
    from sidecar.redaction.detectors import Entity
    from sidecar.redaction.operators import Session

    session = Session()
    out = bytearray()
    in_pem = False
    for raw in data.splitlines(keepends=True):
        line = raw.decode("utf-8", "surrogateescape")
        ending = ""
        if line.endswith("\n"):
            line, ending = line[:-1], "\n"
        if in_pem:
            idx = line.find("-----END")
            if idx < 0:
                entities = [Entity("PRIVATE_KEY", 0, len(line))] if line else []
                text = ""
            else:
                stop = line.find("-----", idx + 8)
                stop = len(line) if stop < 0 else stop + 5
                in_pem = False
                rest = redactor.find(line[stop:], response=response)
                text = redactor.render(line[stop:], rest, session, response=response)
                entities = [Entity("PRIVATE_KEY", 0, stop)] + [
                    Entity(e.type, e.start + stop, e.end + stop) for e in rest
                ]
        else:
            entities = redactor.find(line, response=response)
            text = redactor.render(line, entities, session, response=response) if entities else line
            in_pem = any(
                e.type == "PRIVATE_KEY" and "-----END" not in line[e.start : e.end] for e in entities
            )
        if as_json:
            doc = {
                "text": text.encode("utf-8", "replace").decode("utf-8"),
                "entities": [{"type": e.type, "start": e.start, "end": e.end} for e in entities],
            }
            out += json.dumps(doc, ensure_ascii=False).encode("utf-8", "replace") + ending.encode()
        else:
            out += (text + ending).encode("utf-8", "surrogateescape")
    return bytes(out)


def _cli_input() -> bytes:
    from bench.redaction_data import build

    lines = [r["text"] for r in build(8, 5)]
    lines += LINES[:6]
    lines += [
        "我的手机１３８１２３４５６７８",  # fullwidth digits
        "138\u200b1234\u200b5678 and bob\uff20example.com",
        "x -----BEGIN PRIVATE KEY----- MIIB",
        "still inside 13812345678",
        "-----END PRIVATE KEY-----",
        "windows line 10.0.0.1\r",
        "客户张伟先生的电话 13911960587",
    ]
    data = (
        "\n".join(lines).encode() + b"\nbad \xff\xfe bytes 13812345678\n" + b"no newline at the end 10.0.0.1"
    )
    return data


@pytest.mark.parametrize("mode", ["text", "json", "response"])
def test_batched_reads_write_what_line_by_line_wrote(mode: str) -> None:
    """Whatever the reads bring (one byte, a line cut anywhere, many lines, all of it), the output is
    byte for byte the line-by-line output: placeholders numbered across lines, a private-key block
    across lines, fullwidth and zero-width evasions, bytes that are not UTF-8, no final newline."""
    import io

    from sidecar.commands import redact as cli
    from sidecar.redaction.engine import Redactor
    from sidecar.redaction.policy import Policy

    redactor = Redactor(Policy(), b"test-key")
    response, as_json = mode == "response", mode == "json"
    data = _cli_input()
    expected = _line_by_line(redactor, data, response=response, as_json=as_json)
    assert b"<PRIVATE_KEY_1>" in expected or as_json  # the block is there to be carried
    rng = random.Random(mode)
    for sizes in ([1], [7], [len(data)], [rng.randint(1, 90) for _ in range(400)]):
        pieces = itertools.cycle(sizes)
        src = io.BytesIO(data)
        out = io.BytesIO()
        job = cli.LineRedactor(redactor, response=response, as_json=as_json)
        cli.pump(lambda _n, src=src, pieces=pieces: src.read(next(pieces)), out, job, flush_each=False)
        assert out.getvalue() == expected, sizes[:3]


def test_streaming_input_is_answered_before_the_next_read() -> None:
    """``tail -f | custos redact``: a line that arrived is written and flushed before the loop waits
    for more input."""
    import io

    from sidecar.commands import redact as cli
    from sidecar.redaction.engine import Redactor
    from sidecar.redaction.policy import Policy

    class Out(io.BytesIO):
        flushed = b""

        def flush(self) -> None:
            self.flushed = self.getvalue()

    out = Out()
    arrivals = [b"call 13812345678\n", b"half a li", b"ne 13912345678\n", b""]
    seen: list[bytes] = []

    def read(_n: int) -> bytes:
        seen.append(out.flushed)  # what the reader had when the next read began to wait
        return arrivals[len(seen) - 1]

    cli.pump(
        read, out, cli.LineRedactor(Redactor(Policy(), b"k"), response=False, as_json=False), flush_each=True
    )
    assert seen == [
        b"",
        b"call <CN_PHONE_1>\n",
        b"call <CN_PHONE_1>\n",
        b"call <CN_PHONE_1>\nhalf a line <CN_PHONE_2>\n",
    ]
