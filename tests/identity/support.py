"""Helpers for the identity tests: real keys, real servers (JWKS over HTTP, nginx, redis-server)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bench.procs import ManagedProcess, free_port, wait_http
from bench.stack import Sidecar, launch_sidecar

ALG_KEYS = {
    "RS256": lambda: rsa.generate_private_key(65537, 2048),
    "PS256": lambda: rsa.generate_private_key(65537, 2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "EdDSA": lambda: ed25519.Ed25519PrivateKey.generate(),
}


def new_key(alg: str) -> Any:
    return ALG_KEYS[alg]()


def public_pem(private: Any) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_public(tmp: Path, private: Any, name: str = "key.pub.pem") -> Path:
    path = tmp / name
    path.write_bytes(public_pem(private))
    return path


def sign(
    private: Any,
    alg: str,
    claims: dict[str, Any] | None = None,
    *,
    kid: str | None = None,
    headers: dict[str, Any] | None = None,
    exp_in: int = 600,
    **extra: Any,
) -> str:
    now = int(time.time())
    body = {"sub": "alice", "roles": ["analyst"], "iat": now, "exp": now + exp_in}
    body.update(claims or {})
    body.update(extra)
    body = {k: v for k, v in body.items() if v is not None}
    hdr = dict(headers or {})
    if kid:
        hdr["kid"] = kid
    return jwt.encode(body, private, algorithm=alg, headers=hdr or None)


def jwk_of(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.get_algorithm_by_name(alg)
    doc = json.loads(algo.to_jwk(private.public_key()))
    doc.update({"kid": kid, "alg": alg, "use": "sig"})
    return doc


class JwksServer:
    """A real HTTP server publishing a JWKS document that tests can change, stop and restart."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.status = 200
        self.port = free_port()
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                body = json.dumps({"keys": owner.keys}).encode() if owner.status == 200 else b"oops"
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    default_type application/json;
    location = /v1/models {{
      return 200 '{{"object":"list","data":[{models}]}}';
    }}
    location / {{
      # Echo what the sidecar sent upstream, so tests see identity headers and the body sizes.
      return 200 '{{"subject":"$http_x_custos_subject","roles":"$http_x_custos_roles",\
"authorization":"$http_authorization","path":"$uri","length":"$content_length"}}';
    }}
  }}
}}
"""


@dataclass
class Nginx:
    url: str
    process: ManagedProcess


def start_nginx(tmp: Path, models: list[str]) -> Nginx:
    """nginx as an OpenAI-shaped upstream that echoes the identity headers it receives."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    d = tmp / "nginx"
    d.mkdir(exist_ok=True)
    port = free_port()
    listed = ",".join(f'{{"id":"{m}","object":"model","owned_by":"custos"}}' for m in models)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=d, port=port, models=listed))
    proc = ManagedProcess(
        "nginx", [binary, "-e", str(d / "error.log"), "-p", str(d), "-c", str(conf), "-g", "daemon off;"]
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models", timeout=20, proc=proc.proc)
    return Nginx(url=url, process=proc)


@dataclass
class Redis:
    url: str
    port: int
    process: ManagedProcess


def start_redis(port: int | None = None) -> Redis:
    port = port or free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = ManagedProcess(
        "redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            == "PONG"
        ):
            return Redis(url=f"redis://127.0.0.1:{port}/0", port=port, process=proc)
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError("redis-server did not start")


def launch(tmp: Path, upstream: str, extra: dict | None = None, name: str = "idsidecar") -> Sidecar:
    return launch_sidecar(tmp, upstream, extra, name=name)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def chat(model: str = "deepseek-7b", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
