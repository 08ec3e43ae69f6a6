"""``custos redact``: redact text from stdin to stdout, line for line (pipelines, evaluation).

Exactly one output line per input line, in order. The session (placeholder numbering) spans the
whole run, so one value keeps one placeholder across lines. A private-key block spans lines: the
lines inside it come out empty.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from custos.errors import UsageError

if TYPE_CHECKING:
    from ..redaction.engine import Redactor


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
    job = LineRedactor(redactor, response=args.response, as_json=args.json)
    from ..gctune import tune_gc

    tune_gc()  # the compiled detectors and gazetteers stay out of the collector's sweeps (~7%)
    stdin = sys.stdin.buffer
    # Interactive use and `tail -f | custos redact`: each read takes what is waiting (at least one
    # byte), and what it completes is written and flushed before the next read waits.
    try:
        streaming = not stat.S_ISREG(os.fstat(stdin.fileno()).st_mode)
    except (OSError, ValueError):
        streaming = False
    pump(stdin.read1, sys.stdout.buffer, job, flush_each=streaming)
    return 0


# Bytes taken per read: the lines one read completes are detected together (``Redactor.find_many``).
CHUNK = 1 << 18


def pump(read: Callable[[int], bytes], out: BinaryIO, job: LineRedactor, *, flush_each: bool) -> None:
    """Read ``read(CHUNK)`` until it returns nothing; hand ``job`` the complete lines of each read and
    the unterminated rest at the end. A line longer than a read is joined from its pieces once."""
    pieces: list[bytes] = []  # a line not yet terminated
    while chunk := read(CHUNK):
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            pieces.append(chunk)
            continue
        head = chunk[:cut]
        if pieces:
            pieces.append(head)
            head = b"".join(pieces)
        pieces = [chunk[cut:]] if cut < len(chunk) else []
        out.write(job.feed(head.decode("utf-8", "surrogateescape")))
        if flush_each:
            out.flush()
    if pieces:
        out.write(job.feed(b"".join(pieces).decode("utf-8", "surrogateescape"), final=True))
    out.flush()


class LineRedactor:
    """Lines in, redacted lines out, exactly one for one; the session (placeholder numbering) and an
    open private-key block carry over from one ``feed`` to the next."""

    def __init__(self, redactor: Redactor, *, response: bool, as_json: bool) -> None:
        self.redactor = redactor
        self.response = response
        self.as_json = as_json
        from ..redaction.operators import Session  # not at import: every CLI command imports this module

        self.session = Session()
        self.in_pem = False

    def feed(self, block: str, *, final: bool = False) -> bytes:
        """``block``: whole lines, each ending in ``\\n``; with ``final``, the last may not."""
        from ..redaction.detectors import Entity

        lines = block.split("\n")
        if not final or not lines[-1]:
            lines.pop()  # what follows the last newline: nothing
            ending = "\n"
        else:
            ending = ""
        redactor, response, session = self.redactor, self.response, self.session
        rendered: list[str] = []
        for line, found in zip(lines, redactor.find_many(lines, response=response), strict=True):
            entities: list[Entity]
            if self.in_pem:
                # Inside a private-key block that began on an earlier line: drop up to its END line.
                idx = line.find("-----END")
                if idx < 0:
                    entities = [Entity("PRIVATE_KEY", 0, len(line))] if line else []
                    text = ""
                else:
                    stop = line.find("-----", idx + 8)
                    stop = len(line) if stop < 0 else stop + 5
                    self.in_pem = False
                    rest_entities = redactor.find(line[stop:], response=response)
                    text = redactor.render(line[stop:], rest_entities, session, response=response)
                    entities = [Entity("PRIVATE_KEY", 0, stop)] + [
                        Entity(e.type, e.start + stop, e.end + stop) for e in rest_entities
                    ]
            else:
                entities = found
                text = redactor.render(line, entities, session, response=response) if entities else line
                for e in entities:
                    if e.type == "PRIVATE_KEY" and "-----END" not in line[e.start : e.end]:
                        self.in_pem = True
            if self.as_json:
                doc: dict[str, Any] = {
                    "text": text.encode("utf-8", "replace").decode("utf-8"),
                    "entities": [{"type": e.type, "start": e.start, "end": e.end} for e in entities],
                }
                rendered.append(json.dumps(doc, ensure_ascii=False))
            else:
                rendered.append(text)
        if not rendered:
            return b""
        joined = "\n".join(rendered) + ending
        return joined.encode("utf-8", "replace" if self.as_json else "surrogateescape")
