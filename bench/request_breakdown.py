"""Where a non-streamed request's time goes in the sidecar, stage by stage (issue 14).

The real app (``create_app`` with every default stage, as ``custos serve`` builds it) in this process,
driven through ASGI one request at a time (1 connection), forwarding to an instant nginx upstream (the
same one ``custos bench proxy`` uses). Each stage's ``on_request``, response filter (``feed`` +
``flush``) and ``on_complete`` is timed per request; "forward + relay" is the rest of the request: the
app's routing, the upstream client's round trip to nginx over loopback and sending the answer.
Uvicorn's HTTP parsing and the client are not in it (``custos bench proxy`` measures the whole).

Reproduce: ``custos bench breakdown --requests 3000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from bench.proxy import REQUEST, start_instant_upstream
from sidecar.app import create_app
from sidecar.config import load_config
from sidecar.stage import ResponseFilter

Timings = dict[str, float]
Samples = dict[str, list[float]]


class TimedFilter(ResponseFilter):
    def __init__(self, inner: ResponseFilter, name: str, spent: Timings) -> None:
        self.inner = inner
        self.name = name
        self.spent = spent

    def feed(self, chunk: bytes) -> bytes:
        t = time.perf_counter()
        out = self.inner.feed(chunk)
        self.spent[self.name] += time.perf_counter() - t
        return out

    def flush(self) -> bytes:
        t = time.perf_counter()
        out = self.inner.flush()
        self.spent[self.name] += time.perf_counter() - t
        return out


def instrument(app: Any, spent: Timings) -> list[str]:
    """Wrap every stage's hooks to add their time to ``spent``; returns the row names in order."""
    rows: list[str] = []
    for stage in app.pipeline.stages:
        name = stage.name
        for hook in ("on_request", "on_response_end", "on_complete"):
            if getattr(type(stage), hook) is not getattr(type(stage).__mro__[-2], hook, None):
                setattr(stage, hook, _timed(getattr(stage, hook), f"{name}.{hook}", spent))
                rows.append(f"{name}.{hook}")
        make = stage.response_filter

        def response_filter(ctx: Any, make: Callable = make, name: str = name) -> ResponseFilter | None:
            t = time.perf_counter()
            f = make(ctx)
            spent[f"{name}.filter"] += time.perf_counter() - t
            return None if f is None else TimedFilter(f, f"{name}.filter", spent)

        stage.response_filter = response_filter
        rows.append(f"{name}.filter")
    return rows


def _timed(hook: Callable, row: str, spent: Timings) -> Callable:
    async def timed(ctx: Any) -> Any:
        t = time.perf_counter()
        try:
            return await hook(ctx)
        finally:
            spent[row] += time.perf_counter() - t

    return timed


async def lifespan(app: Any, phase: str) -> None:
    sent: list[dict] = []
    queue: asyncio.Queue[dict] = asyncio.Queue()
    await queue.put({"type": f"lifespan.{phase}"})
    await queue.put({"type": "lifespan.shutdown" if phase == "startup" else "lifespan.startup"})

    async def receive() -> dict:
        return await queue.get()

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"].endswith((".complete", ".failed")):
            raise _Done

    try:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    except _Done:
        pass
    if not sent or not sent[-1]["type"].endswith(".complete"):
        raise SystemExit(f"bench breakdown: lifespan {phase} failed: {sent}")


class _Done(Exception):
    pass


async def one_request(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(app: Any, token: str, requests: int, warmup: int) -> tuple[list[str], Samples]:
    spent: Timings = defaultdict(float)
    rows = instrument(app, spent)
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + token.encode()),
    ]
    body = REQUEST.encode()
    samples: Samples = defaultdict(list)
    for i in range(warmup + requests):
        spent.clear()
        t = time.perf_counter()
        status = await one_request(app, headers, body)
        total = time.perf_counter() - t
        if status != 200:
            raise SystemExit(f"bench breakdown: the sidecar answered {status}")
        if i < warmup:
            continue
        for row in rows:
            samples[row].append(spent.get(row, 0.0))
        samples["forward + relay (rest)"].append(total - sum(spent.values()))
        samples["total"].append(total)
    return rows, samples


def print_table(rows: list[str], samples: Samples) -> None:
    print(f"\n{'part':<34} {'p50 µs':>8} {'mean µs':>8} {'share':>6}")
    total = statistics.mean(samples["total"])
    for row in [*rows, "forward + relay (rest)", "total"]:
        values = samples[row]
        mean = statistics.mean(values)
        if row != "total" and statistics.median(values) < 0.5e-6 and mean < 0.5e-6:
            continue  # a hook that does nothing for this request
        share = f"{100 * mean / total:5.1f}%"
        print(f"{row:<34} {1e6 * statistics.median(values):8.1f} {1e6 * mean:8.1f} {share:>6}")


def main(args: argparse.Namespace) -> int:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        print("bench breakdown: nginx is not installed (apt-get install nginx)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="custos-breakdown-"))
    upstream = start_instant_upstream(tmp)
    try:
        cfg_path = tmp / "custos.yaml"
        cfg_path.write_text(
            json.dumps({"upstream": {"url": upstream.url}, "state": {"dir": str(tmp / "state")}})
        )
        config = load_config(cfg_path)
        from bench.proxy import sidecar_headers

        token = sidecar_headers(cfg_path).get("Authorization", "Bearer ").split(" ", 1)[1]

        async def run() -> tuple[list[str], Samples]:
            app = create_app(config)
            await lifespan(app, "startup")
            try:
                return await measure(app, token, args.requests, args.warmup)
            finally:
                await lifespan(app, "shutdown")

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as uvicorn runs it
            rows, samples = runner.run(run())
        print_table(rows, samples)
        return 0
    finally:
        upstream.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    sys.exit(main(parser.parse_args()))
