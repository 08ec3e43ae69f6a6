"""``custos redact``: redact text from stdin to stdout, line for line (pipelines, evaluation).

Exactly one output line per input line, in order. The session (placeholder numbering) spans the
whole run, so one value keeps one placeholder across lines. A private-key block spans lines: the
lines inside it come out empty.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import stat
import sys
from pathlib import Path
from typing import Any

from custos.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "redact",
        help="redact PII in text read from stdin, line for line",
        description="Reads text on stdin and writes it redacted on stdout, exactly one line per input line.",
    )
    p.add_argument(
        "--policy", metavar="FILE", help="redaction policy YAML (default: redaction.policy_file or built-in)"
    )
    p.add_argument("--config", metavar="PATH", help="sidecar config (hash key, default policy)")
    p.add_argument(
        "--json",
        action="store_true",
        help='write {"text": ..., "entities": [{"type", "start", "end"}]} per line '
        "(offsets into the input line)",
    )
    p.add_argument("--response", action="store_true", help="use the policy's response operators")
    p.add_argument("--check", action="store_true", help="only validate the policy and print a summary")
    p.set_defaults(func=run_redact)


def build_redactor(policy_path: str | None, config_path: str | None):
    from ..config import load_config
    from ..redaction.engine import Redactor
    from ..redaction.operators import load_hash_key
    from ..redaction.policy import PolicyError, load_policy

    config = load_config(config_path)
    rc = config.redaction
    path = Path(policy_path) if policy_path else rc.policy_file
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        raise UsageError(str(exc)) from None
    key_file = rc.hash_key_file or (config.state.dir / "redaction.key")
    try:
        key = load_hash_key(rc.hash_key.get_secret_value() if rc.hash_key else None, key_file)
    except OSError as exc:
        raise UsageError(
            f"redaction.hash_key_file: cannot read or create {key_file}: {exc.strerror}"
        ) from None
    return Redactor(policy, key)


def run_redact(args: argparse.Namespace) -> int:
    from ..redaction.detectors import Entity
    from ..redaction.operators import Session

    redactor = build_redactor(args.policy, args.config)
    if args.check:
        policy = redactor.policy
        ops: dict[str, list[str]] = {}
        for type_, rule in sorted(policy.entities.items()):
            ops.setdefault("off" if not rule.enabled else rule.operator, []).append(type_)
        print(f"policy ok: {len(policy.entities)} entity types, {len(policy.custom)} custom detectors")
        for op, types in sorted(ops.items()):
            print(f"  {op}: {', '.join(types)}")
        return 0
    session = Session()
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    # Interactive use and `tail -f | custos redact`: flush whenever no more input is waiting.
    try:
        streaming = not stat.S_ISREG(os.fstat(stdin.fileno()).st_mode)
    except (OSError, ValueError):
        streaming = False
    in_pem = False
    for raw in iter(stdin.readline, b""):
        line = raw.decode("utf-8", "surrogateescape")
        ending = ""
        if line.endswith("\n"):
            line, ending = line[:-1], "\n"
        entities: list[Entity]
        if in_pem:
            # Inside a private-key block that began on an earlier line: drop up to its END line.
            idx = line.find("-----END")
            if idx < 0:
                entities = [Entity("PRIVATE_KEY", 0, len(line))] if line else []
                text = ""
            else:
                stop = line.find("-----", idx + 8)
                stop = len(line) if stop < 0 else stop + 5
                in_pem = False
                rest_entities = redactor.find(line[stop:], response=args.response)
                text = redactor.render(line[stop:], rest_entities, session, response=args.response)
                entities = [Entity("PRIVATE_KEY", 0, stop)] + [
                    Entity(e.type, e.start + stop, e.end + stop) for e in rest_entities
                ]
        else:
            entities = redactor.find(line, response=args.response)
            text = redactor.render(line, entities, session, response=args.response) if entities else line
            for e in entities:
                if e.type == "PRIVATE_KEY" and "-----END" not in line[e.start : e.end]:
                    in_pem = True
        if args.json:
            out: dict[str, Any] = {
                "text": text.encode("utf-8", "replace").decode("utf-8"),
                "entities": [{"type": e.type, "start": e.start, "end": e.end} for e in entities],
            }
            stdout.write(json.dumps(out, ensure_ascii=False).encode("utf-8", "replace") + ending.encode())
        else:
            stdout.write((text + ending).encode("utf-8", "surrogateescape"))
        if streaming and not select.select([stdin], [], [], 0)[0]:
            stdout.flush()
    stdout.flush()
    return 0
