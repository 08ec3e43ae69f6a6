"""The operator commands against a real sidecar (``custos serve`` in front of the recording upstream):
a CLI silence records the authenticated subject, and a request's audit record is found by the
``X-Request-ID`` the client saw, in the sidecar's own spool."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bench.stack import Sidecar, mint_token
from bench.upstream import RecordingUpstream

from .test_bad_input import run


@pytest.fixture
def live(upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]) -> Sidecar:
    return start_sidecar(upstream.url)


def test_cli_silence_over_the_api_records_the_authenticated_subject(live: Sidecar) -> None:
    token = mint_token("op-alice")
    out = run(
        "alerts", "silence", "add", 'alertname="CustosUpstreamDown"', "--comment", "maintenance",
        "--author", "mallory", "--url", live.url, "--token", token,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "created by op-alice (the authenticated subject)" in out.stderr
    assert "--author is ignored with --url" in out.stderr
    listed = run("alerts", "silence", "list", "--url", live.url, "--token", token)
    assert "op-alice" in listed.stdout and "mallory" not in listed.stdout


def test_a_request_is_found_by_its_request_id(live: Sidecar) -> None:
    chat = {"model": "custos-tiny", "messages": [{"role": "user", "content": "hello"}]}
    resp = httpx.post(live.url + "/v1/chat/completions", json=chat, headers=live.headers, timeout=30)
    assert resp.status_code == 200
    request_id = resp.headers["x-request-id"]
    spool = Path(live.config["state"]["dir"]) / "audit" / "spool"
    deadline = time.monotonic() + 15
    while True:  # the record is written just after the answer, by the writer thread
        out = run("audit", "show", request_id, "--spool", str(spool), "--json")
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert out.returncode == 0, out.stderr
    (doc,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert doc["event"]["id"] == request_id and doc["user"]["id"] == "test-user"
    assert doc["http"]["response"]["status_code"] == 200
    # The same through --config (the sidecar's own config names its spool).
    out = run("audit", "search", "--config", str(live.config_path), "--user", "test-user", "--since", "5m")
    assert out.returncode == 0 and request_id in out.stdout, out.stderr
