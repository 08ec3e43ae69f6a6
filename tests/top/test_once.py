"""``custos top --once`` against a real sidecar in front of the real CPU engine: one plain-text frame
with the real numbers, per-pane reasons for what a token may not read, and exit 2 on bad input."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from bench.procs import custos_cmd, free_port
from bench.stack import mint_token
from tests.top.conftest import operator_token, run_top, send_traffic

ANSI = re.compile(r"\x1b\[")


def _row(text: str, route: str) -> list[str]:
    """The cells of a table row that starts with ``route`` (split on 2+ spaces and box edges)."""
    for line in text.splitlines():
        cells = [c for c in re.split(r"\s{2,}|│", line) if c.strip()]
        if cells and cells[0].strip() == route:
            return [c.strip() for c in cells]
    raise AssertionError(f"no row for {route!r} in:\n{text}")


def test_once_shows_traffic_engine_gpu_audit_and_denials(top_sidecar, tmp_path: Path) -> None:
    sent = send_traffic(top_sidecar, n_ok=4)
    assert sent == {"ok": 4, "401": 401, "403": 403}
    token_file = tmp_path / "token"
    token_file.write_text(operator_token() + "\n")
    time.sleep(1.5)  # one GPU sample (gpu.interval_s 1) and the audit writer
    before = run_top("--url", top_sidecar.url, "--token-file", str(token_file), "--once", "--interval", "0.5")
    assert re.search(r"last verify\s+never", before.stdout), before.stdout
    verified = subprocess.run(
        custos_cmd("audit", "verify", "--config", str(top_sidecar.config_path)),
        capture_output=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    proc = run_top("--url", top_sidecar.url, "--token-file", str(token_file), "--once", "--interval", "0.5")
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert not ANSI.search(out), "--once must print plain text"

    # Traffic: the chat route with its 4 answered requests and the denied one, latency quantiles.
    chat = _row(out, "/v1/chat/completions")
    assert chat[-1] == "5", chat  # total
    assert re.fullmatch(r"\d+(\.\d+)?ms\*?|\d+\.\d+s\*?", chat[7]), chat  # p50 of the 2xx answers
    assert _row(out, "/v1/models")[-1] == "1"
    # The 401 and the 403: 4xx share of the chat route is 1 in 5 (the 403), of /v1/models all.
    assert chat[6].startswith("20.0%"), chat
    # Tokens: the engine generated tokens and the sidecar counted them.
    m = re.search(r"tokens/s in / out\s+\S+ / \S+\s+\(total (\d+) / (\d+)\)", out)
    assert m and int(m.group(2)) > 0, out
    assert re.search(r"engine running / queued\s+0 / 0", out), out

    # GPU: the simulated H100 with a temperature, utilization and power from the scenario.
    assert "GPU 0  NVIDIA H100 80GB HBM3" in out
    temp = re.search(r"temp\s+(\d+)°C", out)
    assert temp and 40 <= int(temp.group(1)) <= 95, out
    assert re.search(r"power\s+\d+ / 700 W", out), out
    assert "temp > 85 warning, > 90 critical" in out  # thresholds read from the alert rules

    # Audit: records were written (every request, top's own reads too).
    recs = re.search(r"records\s+(\d+)", out)
    assert recs and int(recs.group(1)) >= 6, out

    # The last verification of the trail on the sidecar's host (custos audit verify, just run).
    assert re.search(r"last verify\s+OK \S+ ago", out), out

    # Denials from /admin/audit/recent: the 403 with its subject and reason, the 401 without identity.
    lines = out.splitlines()

    def denial(*words: str) -> str:  # the row and the next line (a long reason wraps)
        i = next(i for i, line in enumerate(lines) if all(w in line for w in words))
        return " ".join(lines[i : i + 2])

    denial_403 = denial(" 403 ", "mallory")
    assert "/v1/chat/completions" in denial_403 and "model:invoke" in denial_403, denial_403
    denial_401 = denial(" 401 ", "/v1/models")
    assert "(no identity)" in denial_401 and "auth_missing_token" in denial_401, denial_401


def test_once_says_per_pane_what_the_token_may_not_read(top_sidecar) -> None:
    proc = run_top("--url", top_sidecar.url, "--token", mint_token("grafana", ["metrics-only"]), "--once")
    assert proc.returncode == 0, proc.stderr
    assert "alerts: your token lacks alerts:read" in proc.stdout
    assert "denials: your token lacks audit:read" in proc.stdout
    assert "GPU 0  NVIDIA H100" in proc.stdout  # what it may read is still there


def test_once_bad_input_exits_2_with_one_line(top_sidecar) -> None:
    cases = {
        "ftp://example.org": ("--url", "not an http:// or https:// URL"),
        f"http://127.0.0.1:{free_port()}": ("--url", "cannot reach the sidecar"),
    }
    for url, (_, words) in cases.items():
        proc = run_top("--url", url, "--token", "x", "--once", timeout=30)
        assert proc.returncode == 2, (url, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr
    # No token against a sidecar that requires one: 401, and the hint where a token goes.
    proc = run_top("--url", top_sidecar.url, "--once", env={"CUSTOS_TOKEN": ""})
    assert proc.returncode == 2
    assert "needs a token (--token, --token-file or CUSTOS_TOKEN)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # A token the sidecar does not trust.
    proc = run_top("--url", top_sidecar.url, "--token", "not.a.jwt", "--once")
    assert proc.returncode == 2
    assert "refused the token (401" in proc.stderr
    proc = run_top("--url", top_sidecar.url, "--token", "t", "--interval", "0", "--once")
    assert proc.returncode == 2 and "--interval" in proc.stderr
    proc = run_top("--url", top_sidecar.url, "--token-file", "/nonexistent/token", "--once")
    assert proc.returncode == 2 and "--token-file" in proc.stderr
