"""Helpers for the audit tests: request contexts as the pipeline leaves them, and spool readers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.procs import custos_cmd
from sidecar.context import Decision, Identity, RequestContext


def make_ctx(i: int, *, status: int = 200, denied: bool = False, stream: bool = False) -> RequestContext:
    body = json.dumps(
        {"model": "custos-tiny", "messages": [{"role": "user", "content": f"hello {i}"}], "stream": stream}
    ).encode()
    ctx = RequestContext(
        request_id=f"req-{i:06d}",
        method="POST",
        path="/v1/chat/completions",
        query=b"",
        headers=[],
        client_ip="127.0.0.1",
        body=body,
    )
    ctx.model = "custos-tiny"
    ctx.stream = stream
    ctx.identity = Identity("alice", ("analyst",))
    ctx.decision = Decision(not denied, "chat", "rule-1", "" if not denied else "role not allowed")
    ctx.status = 403 if denied else status
    ctx.redactions = {"EMAIL": 1} if i % 3 == 0 else {}
    ctx.usage.prompt_tokens = 5
    ctx.usage.completion_tokens = 7
    ctx.finish_reasons = ["stop"]
    ctx.prompt_sha256 = "ab" * 32
    ctx.output_sha256 = "cd" * 32
    ctx.finished = ctx.started + 0.001
    return ctx


def spool_records(spool_dir: Path) -> list[dict[str, Any]]:
    """Every complete record in the spool, sealed (compressed) segments included; a last line still
    being written (or torn by a kill) is left out, as the writer's own readers do."""
    from sidecar.audit.compression import open_segment
    from sidecar.audit.spool import chain_dirs, list_segments

    out = []
    for chain in chain_dirs(spool_dir):
        for _first, seg in list_segments(chain):
            try:
                with open_segment(seg) as f:
                    data = f.read()
            except FileNotFoundError:  # pruned meanwhile
                continue
            lines = data.split(b"\n")
            lines.pop()  # after the last newline: empty, or a line being written (torn)
            out.extend(json.loads(line) for line in lines if line)
    return out


def wait_until(check: Any, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Polls ``check()`` every ``interval`` s until it returns something truthy (records are written
    just after the response, by the writer thread)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def run_verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        custos_cmd("audit", "verify", *args), capture_output=True, text=True, timeout=120, env=env
    )


def wait_record(spool: Path, request_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """The record of ``request_id`` once the writer has it on disk (AssertionError after ``timeout``)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in spool_records(spool):
            if rec["event"]["id"] == request_id:
                return rec
        time.sleep(0.1)
    raise AssertionError(f"no audit record for {request_id} in {spool}")
