"""Real peers for the alerting tests: a recording HTTP server, an SMTP server (aiosmtpd) and
Alertmanager (the Debian binary), all on free loopback ports."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from bench.procs import ManagedProcess, free_port


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Recorder:
    """An HTTP server that records every request; ``script`` sets answers per path (status, body)."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    script: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    default: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def on(
        self, path: str, *answers: tuple[int, bytes | dict[str, Any]], always: tuple[int, Any] | None = None
    ) -> None:
        self.script[path] = [(s, b if isinstance(b, bytes) else orjson.dumps(b)) for s, b in answers]
        if always is not None:
            s, b = always
            self.default[path] = (s, b if isinstance(b, bytes) else orjson.dumps(b))

    def at(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, n: int = 1, timeout: float = 20.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"expected {n} request(s) to {path}, got {len(self.at(path))}: {self.requests}")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    loop = asyncio.new_event_loop()
    port = free_port()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        rec.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        queue = rec.script.get(request.path)
        if queue:
            status, answer = queue.pop(0)
        else:
            status, answer = rec.default.get(request.path, (200, b'{"errcode":0,"errmsg":"ok","code":0}'))
        return web.Response(status=status, body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Any] = field(default_factory=list)


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.envelopes.append(envelope)
            box.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
            return "250 OK"

    controller = Controller(Handler(), hostname=box.host, port=box.port)
    controller.start()
    yield box
    controller.stop()


@dataclass
class Alertmanager:
    url: str
    process: ManagedProcess


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    port = free_port()
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(yaml.safe_dump({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}))
    proc = ManagedProcess(
        "alertmanager",
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(url + "/-/ready", timeout=30)
    yield Alertmanager(url, proc)
    proc.stop()
