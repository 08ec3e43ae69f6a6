"""`custos up`: the embedded stack (engine + sidecar) starts, serves, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from bench.procs import ManagedProcess, custos_cmd, free_port
from bench.stack import TINY_MODEL_NAME


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc (children of children too)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_up_serves_and_ctrl_c_stops_everything(tiny_model_dir: Path, tmp_path: Path) -> None:
    sidecar_port, engine_port = free_port(), free_port()
    cfg = tmp_path / "custos.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": sidecar_port},
                "inference": {"port": engine_port, "model": str(tiny_model_dir)},
                "state": {"dir": str(tmp_path / "state")},
            }
        )
    )
    up = ManagedProcess("up", custos_cmd("up", "--config", str(cfg)))
    try:
        deadline = time.monotonic() + 180
        while "Custos is up" not in up.log():
            assert up.alive(), up.log()[-3000:]
            assert time.monotonic() < deadline, up.log()[-3000:]
            time.sleep(0.2)
        time.sleep(0.3)  # the rest of the banner
        banner = up.log()
        assert f"http://127.0.0.1:{sidecar_port}/v1" in banner
        assert " token --config " in banner and "--sub you" in banner and "curl" in banner
        assert f'"model": "{TINY_MODEL_NAME}"' in banner
        # The banner's own token command, run as printed (in a fresh shell elsewhere): it names the
        # config, so the token is signed with the key this sidecar trusts.
        printed = re.search(r"export TOKEN=\$\((.+)\)\n", banner)
        assert printed, banner[-3000:]
        assert f"--config {cfg}" in printed.group(1)
        token = subprocess.run(
            ["bash", "-c", printed.group(1)],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
            env={k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_")},
        ).stdout.strip()
        r = httpx.post(
            f"http://127.0.0.1:{sidecar_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "model": TINY_MODEL_NAME,
                "messages": [{"role": "user", "content": "Hello!"}],
                "max_tokens": 8,
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["role"] == "assistant"
        below = descendants(up.pid)
        assert len(below) >= 2  # the engine and the sidecar (and their workers)
        os.kill(up.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
        up.proc.wait(60)
        assert up.proc.returncode == 0
        deadline = time.monotonic() + 30
        while any(alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in below if alive(p)], "orphan processes after Ctrl-C"
    finally:
        up.stop()
