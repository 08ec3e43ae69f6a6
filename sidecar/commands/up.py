"""``custos up``: the whole embedded stack on one machine — the inference engine on 127.0.0.1 and
the sidecar in front of it. Ctrl-C (or SIGTERM) stops everything; no process is left behind."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..cli import UsageError
from ..config import Config, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the inference engine and the sidecar together (embedded setup)")
    p.add_argument(
        "--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or built-in defaults)"
    )
    p.add_argument(
        "--model", metavar="DIR", help="local model directory (default: inference.model, else the tiny model)"
    )
    p.add_argument(
        "--gpu-sim", metavar="FILE", help="GPU telemetry from a scenario file or a bundled name (gpu-lost)"
    )
    p.add_argument(
        "--no-engine", action="store_true", help="do not start an engine; use upstream.url as it is"
    )
    p.set_defaults(func=run_up)


def _python() -> str:
    return sys.executable


def _wait(url: str, proc: subprocess.Popen, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UsageError(
                f"{what} exited with status {proc.returncode} while starting (see its output above)"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise UsageError(f"{what} did not become ready at {url} within {timeout:.0f}s")


def tiny_model_dir(config: Config) -> Path:
    from inference.tiny import TINY_MODEL_VERSION

    cache = Path(os.environ.get("CUSTOS_CACHE", Path.home() / ".cache" / "custos"))
    return cache / "models" / f"tiny-{TINY_MODEL_VERSION}"


def run_up(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    env = dict(os.environ)
    if args.config:
        env["CUSTOS_CONFIG"] = os.path.abspath(args.config)
    procs: list[tuple[str, subprocess.Popen]] = []

    def stop_all(*_: object) -> None:
        for _name, proc in reversed(procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for _name, proc in reversed(procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # SIGTERM behaves like Ctrl-C so that a supervisor stops the stack as cleanly as a person does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not args.no_engine:
            inf = config.inference
            model = args.model or (str(inf.model) if inf.model else None)
            if model is None:
                target = tiny_model_dir(config)
                if not (target / "config.json").exists():
                    print(f"custos up: creating the tiny demo model in {target} ...", flush=True)
                    subprocess.run(
                        [_python(), "-m", "sidecar.cli", "inference", "make-tiny-model", str(target)],
                        check=True,
                        env=env,
                    )
                model = str(target)
            engine_url = f"http://{inf.host}:{inf.port}"
            cmd = [_python(), "-m", "sidecar.cli", "inference", "serve", "--model", model]
            if args.config:
                cmd += ["--config", os.path.abspath(args.config)]
            print(f"custos up: starting the {inf.engine} engine on {engine_url} ...", flush=True)
            engine = subprocess.Popen(cmd, env=env, start_new_session=True)
            procs.append(("engine", engine))
            _wait(engine_url + "/v1/models", engine, "the inference engine", timeout=900)
            env["CUSTOS_UPSTREAM__URL"] = engine_url
        sidecar_cmd = [_python(), "-m", "sidecar.cli", "serve"]
        if args.config:
            sidecar_cmd += ["--config", os.path.abspath(args.config)]
        if args.gpu_sim:
            # `serve` resolves bundled scenario names and checks the file (exit 2 when bad).
            sidecar_cmd += ["--gpu-sim", args.gpu_sim]
        sidecar = subprocess.Popen(sidecar_cmd, env=env, start_new_session=True)
        procs.append(("sidecar", sidecar))
        port = config.server.port
        _wait(f"http://127.0.0.1:{port}/health", sidecar, "the sidecar", timeout=120)
        print(banner(config, args), flush=True)
        while True:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"custos up: the {name} exited with status {proc.returncode}; stopping", flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ncustos up: stopping ...", flush=True)
        return 0
    finally:
        stop_all()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def banner(config: Config, args: argparse.Namespace) -> str:
    port = config.server.port
    model_name = config.inference.served_model_name or "custos-tiny"
    # The full path: after `make run` the venv's bin directory is usually not on PATH.
    custos = Path(sys.executable).with_name("custos")
    token_cmd = f"{custos if custos.exists() else 'custos'} token --sub you --role admin"
    base = f"http://127.0.0.1:{port}"
    return f"""
  Custos is up.
    OpenAI-compatible API : {base}/v1   (send requests here)
    health / ready        : {base}/health  {base}/ready
    metrics               : {base}/metrics

  Get a token and send a chat completion:
    export TOKEN=$({token_cmd})
    curl -s {base}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\
      -H 'Content-Type: application/json' \\
      -d '{{"model": "{model_name}", "max_tokens": 16,
           "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  Ctrl-C stops everything.
"""
