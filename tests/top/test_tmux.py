"""``custos top`` in a real terminal: a detached tmux session (160x50) runs it against a sidecar whose
simulated GPU overheats 40 s after start (thermal-spike) while traffic flows. The captured screen
must show the requests, the temperature rising, the throttling and the alert; ``q`` must end it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.procs import REPO
from tests.top.conftest import chat, operator_token

pytestmark = pytest.mark.slow


class Tmux:
    def __init__(self, tmp_path: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.skip("tmux is not installed")
        self.socket = f"custos-top-{os.getpid()}-{time.monotonic_ns()}"
        self.session = "top"

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout

    def start(self, command: str) -> None:
        self.run("new-session", "-d", "-s", self.session, "-x", "160", "-y", "50", command)

    def capture(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def send(self, keys: str) -> None:
        self.run("send-keys", "-t", self.session, keys)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def _wait_screen(tmux: Tmux, pattern: str, timeout: float, what: str) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.capture()
        m = re.search(pattern, screen)
        if m:
            return m
        time.sleep(0.5)
    raise AssertionError(f"{what}: {pattern!r} not on screen within {timeout:.0f}s; last screen:\n{screen}")


def _gpu_temp(screen: str) -> int | None:
    """The temperature in the GPU table's row for GPU 0 (overview pane)."""
    for line in screen.splitlines():
        if "NVIDIA H100" in line:
            m = re.search(r"(\d+)°C", line)
            return int(m.group(1)) if m else None
    return None


def test_top_in_tmux_shows_requests_heat_throttling_and_alert_then_quits(top_sidecar, tmp_path: Path) -> None:
    started = time.monotonic()  # the simulation's clock started with the sidecar, just before
    token_file = tmp_path / "token"
    token_file.write_text(operator_token())
    marker = tmp_path / "exit-status"
    command = (
        # COLUMNS/LINES from the test run would override the terminal size (rich reads them).
        f"cd {REPO} && env -u COLUMNS -u LINES {sys.executable} -m sidecar.cli top --url {top_sidecar.url} "
        f"--token-file {token_file} --interval 1; echo $? > {marker}; sleep 600"
    )
    tmux = Tmux(tmp_path)
    stop = threading.Event()
    sent = [0]

    def traffic() -> None:
        while not stop.is_set():
            if chat(top_sidecar, operator_token("app-carol"), stream=sent[0] % 2 == 0) == 200:
                sent[0] += 1
            stop.wait(0.3)

    pump = threading.Thread(target=traffic, daemon=True)
    try:
        tmux.start(command)
        pump.start()
        # Requests: the chat route row counts up.
        m = _wait_screen(tmux, r"/v1/chat/completions\s+(\d+\.\d+)\s.*?(\d+) │", 30, "chat traffic")
        first_total = int(m.group(2))
        screen = tmux.capture()
        assert "custos top" in screen and "Engine & tokens" in screen and "GPUs" in screen
        early = _gpu_temp(screen)
        assert early is not None, screen
        assert early < 85, f"the spike starts 40 s after the sidecar: {screen}"
        # The thermal spike: 93 °C, thermal throttling and the temperature alert (pending, then firing).
        remaining = 40 - (time.monotonic() - started)
        _wait_screen(tmux, r"NVIDIA H100.*\b9[0-9]°C", remaining + 25, "the thermal spike")
        screen = _wait_screen(tmux, r"CustosGPUTemperatureHigh", 20, "the temperature alert").string
        hot = _gpu_temp(screen)
        assert hot is not None and hot > early and hot >= 90, (early, hot)
        assert "thermal" in screen.split("GPUs", 1)[1].split("Alerts", 1)[0], screen  # throttling reason
        alert_line = next(line for line in screen.splitlines() if "CustosGPUTemperatureHigh" in line)
        assert re.search(r"(pending|FIRING)\s+CustosGPUTemperatureHigh\s+gpu=0", alert_line), screen
        # its severity, since when, and its receiver
        assert re.search(r"gpu=0\s+(warning|critical)\s+\d+[ms]\S*\s+default\b", alert_line), alert_line
        m = re.search(r"/v1/chat/completions\s+(\d+\.\d+)\s.*?(\d+) │", screen)
        assert m and int(m.group(2)) > first_total, "the request total keeps counting"
        assert float(m.group(1)) > 0, "requests per second while traffic flows"

        # Keys: the GPU pane, with one line per metric and its history.
        tmux.send("3")
        screen = _wait_screen(
            tmux, r"GPU 0  NVIDIA H100 80GB HBM3\s+throttling: \S*thermal", 5, "GPU pane"
        ).string
        assert re.search(r"temp\s+9\d°C\s+[▁▂▃▄▅▆▇█ ]*[▇█]", screen), screen
        tmux.send("4")
        _wait_screen(tmux, r"summary", 5, "alerts pane with summaries")
        # q quits, restores the terminal and exits 0.
        tmux.send("q")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not marker.exists():
            time.sleep(0.2)
        assert marker.exists(), tmux.capture()
        assert marker.read_text().strip() == "0"
        assert "custos top" not in tmux.capture(), "the alternate screen was left"
    finally:
        stop.set()
        tmux.kill()
