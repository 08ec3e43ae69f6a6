"""``custos up``: the whole embedded stack on one machine — the inference engine on 127.0.0.1 and
the sidecar in front of it. Ctrl-C (or SIGTERM) stops everything; no process is left behind."""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from custos.errors import UsageError

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
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a development certificate (custos tls dev-cert, kept in <state.dir>/tls)",
    )
    p.set_defaults(func=run_up)


def _python() -> str:
    return sys.executable


def _wait(
    url: str, proc: subprocess.Popen, what: str, timeout: float, context: ssl.SSLContext | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UsageError(
                f"{what} exited with status {proc.returncode} while starting (see its output above)"
            )
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise UsageError(f"{what} did not become ready at {url} within {timeout:.0f}s")


def _connect_host(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (wildcard binds: loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


def _url(host: str, port: int, scheme: str = "http") -> str:
    host = _connect_host(host)
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def dev_tls(config: Config, env: dict[str, str]) -> Path:
    """``--tls``: a development CA and server certificate in <state.dir>/tls (made once), switched on
    for the sidecar through the environment. Returns the CA file clients should trust."""
    from .tls import make_dev_pki

    directory = config.state.dir / "tls"
    ca = directory / "ca.pem"
    if not (directory / "server.pem").exists():
        print(f"custos up: creating a development CA and certificate in {directory} ...", flush=True)
        make_dev_pki(directory, ["localhost", "127.0.0.1", "::1"], days=30)
    env["CUSTOS_SERVER__TLS__ENABLED"] = "true"
    env["CUSTOS_SERVER__TLS__CERT_FILE"] = str(directory / "server.pem")
    env["CUSTOS_SERVER__TLS__KEY_FILE"] = str(directory / "server.key")
    return ca


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` now (in use, address not local), or None.

    Binds a throw-away socket the way uvicorn does (SO_REUSEADDR), so a port in TIME_WAIT is free
    but one with a listener, on this address or on the wildcard, is not.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    for family, socktype, proto, _name, addr in infos[:1]:
        with socket.socket(family, socktype, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return "is already in use"
                if exc.errno == errno.EADDRNOTAVAIL:
                    return f"cannot be bound: {host} is not an address of this machine"
                if exc.errno == errno.EACCES:
                    return "needs privileges to bind (ports below 1024)"
                return f"cannot be bound: {exc.strerror}"
    return None


def check_ports(config: Config, with_engine: bool) -> None:
    """Refuse to start anything (exit 2, one line) when a port the stack needs is taken: a second
    `custos up` must not adopt the engine or the sidecar that already listens there."""
    wanted: list[tuple[str, int, str, str]] = []
    if with_engine:
        inf = config.inference
        wanted.append((inf.host, inf.port, "the inference engine", "inference.port"))
    server = config.server
    wanted.append((server.host, server.port, "the sidecar", "server.port"))
    if with_engine and wanted[0][1] == wanted[1][1]:
        raise UsageError(
            f"inference.port and server.port are both {server.port}: the engine and the sidecar "
            "need different ports"
        )
    for host, port, what, option in wanted:
        problem = port_problem(host, port)
        if problem:
            env = "CUSTOS_" + option.upper().replace(".", "__")
            raise UsageError(
                f"port {port} on {host} for {what} {problem}; nothing was started "
                f"(stop what listens there, or set {option} / {env})"
            )


def tiny_model_dir(config: Config) -> Path:
    from inference.tiny import TINY_MODEL_VERSION

    cache = Path(os.environ.get("CUSTOS_CACHE", Path.home() / ".cache" / "custos"))
    return cache / "models" / f"tiny-{TINY_MODEL_VERSION}"


def run_up(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    check_ports(config, with_engine=not args.no_engine)  # before anything starts
    env = dict(os.environ)
    if args.config:
        env["CUSTOS_CONFIG"] = os.path.abspath(args.config)
    model_name: str | None = None
    procs: list[tuple[str, subprocess.Popen]] = []
    ca_file = dev_tls(config, env) if args.tls else None

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
            from inference.tiny import default_served_name

            model_name = inf.served_model_name or default_served_name(model)
            engine_url = _url(inf.host, inf.port)
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
        served = load_config(args.config, environ=env)
        tls = served.server.tls
        context = None
        if tls.enabled:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if ca_file is None:  # the operator's own certificate: readiness only, not its trust
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        scheme = "https" if tls.enabled else "http"
        sidecar_url = _url(config.server.host, config.server.port, scheme)
        _wait(sidecar_url + "/health", sidecar, "the sidecar", timeout=120, context=context)
        print(banner(served, args, model_name, ca_file=ca_file), flush=True)
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


def _custos_executable() -> str:
    # The full path: after `make run` the venv's bin directory is usually not on PATH.
    custos = Path(sys.executable).with_name("custos")
    return str(custos) if custos.exists() else "custos"


_TOKEN_ENV_PREFIXES = ("CUSTOS_STATE__", "CUSTOS_AUTH__", "CUSTOS_RBAC__POLICY_FILE", "CUSTOS_RBAC__ENABLED")


def token_command(config: Config, args: argparse.Namespace) -> str | None:
    """The `custos token` command that works as printed for this config, or None when the config
    trusts no dev token (auth disabled, or auth.dev_key: false)."""
    auth = config.auth
    if not auth.enabled or not auth.dev_key:
        return None
    # Environment settings that change which key signs or which roles exist: repeated in front
    # of the command, so that it works in a fresh shell too (nothing else, no secrets).
    assignments = [
        f"{name}={shlex.quote(value)}"
        for name, value in sorted(os.environ.items())
        if name == "CUSTOS_STATE_DIR" or name.startswith(_TOKEN_ENV_PREFIXES)
    ]
    parts = [_custos_executable(), "token"]
    config_path = args.config or os.environ.get("CUSTOS_CONFIG")
    if config_path:
        # Absolute: the banner's reader may run it from another directory or shell.
        parts += ["--config", os.path.abspath(config_path)]
    parts += ["--sub", "you"]
    from .token import _policy_roles

    roles = _policy_roles(config)
    role = "admin" if roles is None or "admin" in roles else (sorted(roles)[0] if roles else None)
    if role:
        parts += ["--role", role]
    return " ".join([*assignments, shlex.join(parts)])


def _upstream_model(config: Config) -> str | None:
    """The first model the upstream lists (for --no-engine), or None."""
    import json

    try:
        with urllib.request.urlopen(str(config.upstream.url).rstrip("/") + "/v1/models", timeout=2) as r:
            data = json.loads(r.read())
        return str(data["data"][0]["id"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def banner(
    config: Config, args: argparse.Namespace, model_name: str | None = None, *, ca_file: Path | None = None
) -> str:
    """What to do next, with commands that work as printed for ``config`` (the sidecar's config,
    environment included)."""
    tls = config.server.tls.enabled
    base = _url(config.server.host, config.server.port, "https" if tls else "http")
    # With --tls the host name is the one the development certificate names.
    if ca_file is not None:
        base = base.replace("https://127.0.0.1", "https://localhost")
    curl = f"curl -s --cacert {ca_file}" if ca_file is not None else "curl -s"
    model_name = model_name or config.inference.served_model_name
    if model_name is None:
        model_name = _upstream_model(config) if args.no_engine else None
    model_name = model_name or "custos-tiny"
    token_cmd = token_command(config, args)
    if not config.auth.enabled:
        intro = "  Send a chat completion (auth.enabled is false: no token needed):"
        token_lines = ""
        auth_header = ""
    elif token_cmd is None:
        intro = "  Send a chat completion with a token from your identity provider (auth.dev_key is false):"
        token_lines = "    export TOKEN=...   # a JWT your IdP issued for this sidecar\n"
        auth_header = ' -H "Authorization: Bearer $TOKEN"'
    else:
        intro = "  Get a token and send a chat completion:"
        token_lines = f"    export TOKEN=$({token_cmd})\n"
        auth_header = ' -H "Authorization: Bearer $TOKEN"'
    return f"""
  Custos is up.
    OpenAI-compatible API : {base}/v1   (send requests here)
    health / ready        : {base}/health  {base}/ready
    metrics               : {base}/metrics

{intro}
{token_lines}    {curl} {base}/v1/chat/completions{auth_header} \\
      -H 'Content-Type: application/json' \\
      -d '{{"model": "{model_name}", "max_tokens": 16,
           "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  Ctrl-C stops everything.
"""
