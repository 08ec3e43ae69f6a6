"""`custos up --tls`: the embedded stack over HTTPS with a development certificate, and the banner's
commands (token + curl with --cacert) work as printed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import yaml

from bench.procs import ManagedProcess, custos_cmd, free_port
from bench.upstream import RecordingUpstream


def test_up_tls_serves_https_and_the_banner_commands_work(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = free_port()
    cfg = tmp_path / "custos.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port},
                "upstream": {"url": upstream.url},
                "state": {"dir": str(tmp_path / "state")},
            }
        )
    )
    up = ManagedProcess("up-tls", custos_cmd("up", "--tls", "--no-engine", "--config", str(cfg)))
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in up.log():
            assert up.alive(), up.log()[-3000:]
            assert time.monotonic() < deadline, up.log()[-3000:]
            time.sleep(0.2)
        banner = up.log()
        assert f"https://localhost:{port}/v1" in banner
        ca = tmp_path / "state" / "tls" / "ca.pem"
        assert ca.is_file() and f"--cacert {ca}" in banner
        # The banner's two commands, pasted into a fresh shell as printed.
        token_cmd = re.search(r"export TOKEN=\$\((.+)\)\n", banner)
        curl = re.search(r"\n\s+(curl -s --cacert .+?)\n\n", banner, re.S)
        assert token_cmd and curl, banner[-3000:]
        script = f"export TOKEN=$({token_cmd.group(1)})\n{curl.group(1)}"
        out = subprocess.run(
            ["bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env={k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_")},
        )
        assert out.returncode == 0, out.stderr
        assert '"chat.completion"' in out.stdout, out.stdout
        assert upstream.inference_requests(), "the request reached the upstream over the sidecar"
        os.kill(up.pid, signal.SIGINT)
        up.proc.wait(60)
        assert up.proc.returncode == 0
    finally:
        up.stop()
