"""Proxy overhead benchmark: one load generator (wrk), one instant upstream (nginx returning a fixed
OpenAI-shaped chat completion), four ways in one run:

  (a) direct to the upstream
  (b) through nginx as a plain reverse proxy (the ceiling for any proxy on this machine)
  (c) through the Custos sidecar, with every stage that exists switched on
  (d) through LiteLLM's proxy (no callbacks, no database)

At each connection count it prints requests/s and p50/p99 latency, and the p50 each proxy adds over (a).
Reproduce: ``make bench`` (or ``custos bench proxy``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from bench.procs import CACHE, ManagedProcess, free_port, wait_http

MODEL = "bench-model"
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1732780800,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    },
    separators=(",", ":"),
)
REQUEST = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to Li Lei, the new analyst."}],
        "max_tokens": 16,
    },
    separators=(",", ":"),
)

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  upstream instant {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{upstream_port};
    location = /v1/models {{ default_type application/json;
      return 200 '{{"object":"list","data":[{{"id":"{model}","object":"model","owned_by":"bench"}}]}}'; }}
    location /v1/ {{ default_type application/json; return 200 '{answer}'; }}
  }}
  server {{
    listen 127.0.0.1:{proxy_port};
    location / {{ proxy_pass http://instant; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""

WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
"""


@dataclass
class Result:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class InstantUpstream:
    """nginx answering every chat completion at once (``url``), and proxying to itself (``proxy_url``)."""

    url: str
    proxy_url: str
    process: ManagedProcess

    def stop(self) -> None:
        self.process.stop()


def start_instant_upstream(tmp: Path, conf_template: str = NGINX_CONF) -> InstantUpstream:
    """nginx from ``conf_template`` (placeholders: tmp, upstream_port, proxy_port, model, answer)."""
    up_port, ng_port = free_port(), free_port()
    for d in ("body", "proxy", "fcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(
        conf_template.format(tmp=tmp, upstream_port=up_port, proxy_port=ng_port, model=MODEL, answer=ANSWER)
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = ManagedProcess("nginx", [nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"])
    url = f"http://127.0.0.1:{up_port}"
    wait_http(url + "/v1/models", timeout=10)
    return InstantUpstream(url, f"http://127.0.0.1:{ng_port}", process)


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        raise ValueError(value)
    number, unit = float(m.group(1)), m.group(2)
    return number / 1000 if unit == "us" else number * 1000 if unit == "s" else number


def run_wrk(url: str, connections: int, duration: int, script: Path) -> tuple[float, float, float, int]:
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return rps, p50, p99, errors


def sidecar_config(tmp: Path, upstream: str, port: int) -> dict:
    """The sidecar as deployed: every stage that exists switched on, audit spooling to local disk."""
    return {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1},
        "upstream": {"url": upstream},
        "state": {"dir": str(tmp / "state")},
    }


def sidecar_headers(config_path: Path) -> dict[str, str]:
    """A bearer token from the sidecar's own dev key when identity is part of this build."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar.cli",
            "token",
            "--config",
            str(config_path),
            "--sub",
            "bench",
            "--role",
            "admin",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return {}
    return {"Authorization": f"Bearer {proc.stdout.strip()}"}


@dataclass
class LiteLLM:
    url: str
    key: str
    process: ManagedProcess


def start_litellm(tmp: Path, upstream: str) -> LiteLLM | None:
    """LiteLLM's proxy in front of ``upstream`` (one worker, no callbacks, no database), or None when
    it is not installed (``make bench-deps``)."""
    ll = litellm_bin()
    if ll is None:
        return None
    port = free_port()
    key = "sk-bench-" + os.urandom(16).hex()
    ll_cfg = tmp / "litellm.yaml"
    model = {"model": f"openai/{MODEL}", "api_base": upstream + "/v1", "api_key": "none"}
    ll_cfg.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": MODEL, "litellm_params": model}],
                "litellm_settings": {"telemetry": False, "drop_params": True},
            }
        )
    )
    # LiteLLM refuses to start without a master key; with one (and no database) it checks the bearer
    # token on each request, as Custos checks its JWT.
    env = {
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True",
        "LITELLM_MASTER_KEY": key,
    }
    cmd = [str(ll), "--config", str(ll_cfg), "--host", "127.0.0.1", "--port", str(port)]
    process = ManagedProcess("litellm", [*cmd, "--num_workers", "1"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health/liveliness", timeout=180)
    except BaseException:
        process.stop()
        raise
    return LiteLLM(url, key, process)


def litellm_bin() -> Path | None:
    path = CACHE / "litellm-venv" / "bin" / "litellm"
    return path if path.exists() else None


def parse_connections(text: str) -> list[int]:
    """``--connections 1,32``: positive whole numbers, comma-separated; ``UsageError`` otherwise."""
    from custos.errors import UsageError

    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"--connections {text!r}: expected comma-separated positive numbers, e.g. 1,32")
        out.append(int(part))
    return out


def main(args: argparse.Namespace) -> int:
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench proxy: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 2
    conns = parse_connections(args.connections)
    tmp = Path(tempfile.mkdtemp(prefix="custos-bench-"))
    procs: list[ManagedProcess] = []
    try:
        sc_port = free_port()
        instant = start_instant_upstream(tmp)
        procs.append(instant.process)
        upstream = instant.url

        cfg = sidecar_config(tmp, upstream, sc_port)
        cfg_path = tmp / "custos.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        procs.append(
            ManagedProcess(
                "sidecar", [sys.executable, "-m", "sidecar.cli", "serve", "--config", str(cfg_path)]
            )
        )
        wait_http(f"http://127.0.0.1:{sc_port}/health", timeout=60)
        headers = sidecar_headers(cfg_path)

        targets = {
            "direct": upstream,
            "nginx": instant.proxy_url,
            "custos": f"http://127.0.0.1:{sc_port}",
        }
        litellm = None if args.no_litellm else start_litellm(tmp, upstream)
        if litellm is not None:
            procs.append(litellm.process)
            targets["litellm"] = litellm.url
        elif not args.no_litellm:
            print("bench proxy: LiteLLM not found in the cache venv; run `make bench-deps`", file=sys.stderr)
        litellm_key = litellm.key if litellm is not None else ""

        scripts = {}
        for name in targets:
            auth = ""
            if name == "custos":
                auth = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
            elif name == "litellm":
                auth = f'wrk.headers["Authorization"] = "Bearer {litellm_key}"'
            script = tmp / f"{name}.lua"
            script.write_text(WRK_LUA.format(body=json.dumps(REQUEST), auth=auth))
            scripts[name] = script

        results: list[Result] = []
        for c in conns:
            for name, base in targets.items():
                url = base + "/v1/chat/completions"
                run_wrk(url, c, 2, scripts[name])  # warm-up: pools, JIT-free paths, caches
                rps, p50, p99, errors = run_wrk(url, c, args.duration, scripts[name])
                results.append(Result(name, c, rps, p50, p99, errors))
                time.sleep(0.5)
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(results: list[Result]) -> None:
    by = {(r.target, r.connections): r for r in results}
    print(
        f"\n{'target':<9} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'errors':>6}"
    )
    for r in results:
        direct = by.get(("direct", r.connections))
        added = r.p50_ms - direct.p50_ms if direct and r.target != "direct" else 0.0
        print(
            f"{r.target:<9} {r.connections:>5} {r.rps:>10.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
            f"{added:>+8.3f} {r.errors:>6}"
        )
    for c in sorted({r.connections for r in results}):
        sc, ll = by.get(("custos", c)), by.get(("litellm", c))
        if sc and ll and ll.rps:
            print(f"custos / litellm requests/s at {c} connections: {sc.rps / ll.rps:.1f}x")
    print()


if __name__ == "__main__":
    raise SystemExit(os.EX_USAGE)
