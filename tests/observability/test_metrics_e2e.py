"""Request metrics scraped from a real `custos serve` in front of the real CPU engine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.procs import free_port
from bench.stack import mint_token
from sidecar.audit.trail import ACTION_RESTART

from ..audit.helpers import spool_records
from .promtext import Scrape, scrape

CHAT = "/v1/chat/completions"


@contextlib.contextmanager
def paused(engine):
    """SIGSTOP the engine (this test session's own) so a stream in progress stays open; SIGCONT after."""
    engine.process.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        engine.process.signal(signal.SIGCONT)


def chat(
    sidecar,
    *,
    stream: bool = False,
    model: str | None = None,
    headers=None,
    max_tokens: int = 6,
    client: httpx.Client | None = None,
):
    body = {
        "model": model or "custos-tiny",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
        "stream": stream,
        # The tiny model has random weights: without this it may stop after one token, and a stream
        # of one token has no time per output token to observe.
        "ignore_eos": True,
    }
    if stream:
        # The exact token count from the usage block: counting content events instead undercounts
        # when random byte-level tokens only complete a character together (covered elsewhere).
        body["stream_options"] = {"include_usage": True}
    h = sidecar.headers if headers is None else headers
    c = client or httpx.Client(timeout=60)
    try:
        if not stream:
            return c.post(sidecar.url + CHAT, json=body, headers=h)
        with c.stream("POST", sidecar.url + CHAT, json=body, headers=h) as resp:
            events = [line for line in resp.iter_lines() if line.startswith("data: ")]
            return resp, events
    finally:
        if client is None:
            c.close()


def test_counts_tokens_and_latency_after_real_traffic(engine, start_sidecar):
    sidecar = start_sidecar(engine.url)
    prompt_tokens = completion_tokens = 0
    for _ in range(3):
        resp = chat(sidecar)
        assert resp.status_code == 200, resp.text
        usage = resp.json()["usage"]
        prompt_tokens += usage["prompt_tokens"]
        completion_tokens += usage["completion_tokens"]
    streamed = 0
    for _ in range(2):
        resp, events = chat(sidecar, stream=True)
        assert resp.status_code == 200
        assert events[-1] == "data: [DONE]"
        streamed += sum(
            1
            for e in events[:-1]
            for ch in json.loads(e[6:]).get("choices", [])
            if (ch.get("delta") or {}).get("content")
        )
    bad = httpx.post(
        sidecar.url + CHAT,
        content=b"{not json",
        headers={**sidecar.headers, "content-type": "application/json"},
    )
    assert bad.status_code == 400

    m = scrape(sidecar.url, sidecar.headers)
    ok = {"route": CHAT, "model": "custos-tiny", "status_class": "2xx", "role": "tester"}
    assert m.get("custos_requests_total", **ok) == 5
    assert m.get("custos_requests_total", route=CHAT, status_class="4xx") == 1
    assert m.get("custos_request_duration_seconds_count", route=CHAT) == 6
    assert m.get("custos_request_duration_seconds_bucket", route=CHAT, le="120.0") == 6
    # Tokens: exactly the usage blocks of the answers (streams add their own counts on top).
    assert m.get("custos_input_tokens_total", model="custos-tiny", role="tester") >= prompt_tokens
    out = m.get("custos_output_tokens_total", model="custos-tiny", role="tester")
    assert out >= completion_tokens + streamed > completion_tokens
    assert m.get("custos_time_to_first_token_seconds_count", route=CHAT, model="custos-tiny") == 2
    assert m.get("custos_time_per_output_token_seconds_count", route=CHAT, model="custos-tiny") == 2
    assert m.get("custos_requests_in_flight", route=CHAT) == 0
    assert m.get("custos_errors_total", kind="invalid_json") == 1
    assert m.has("custos_build_info")
    # (this scrape's own record is written after its page was rendered: 6 = the chat requests)
    assert m.get("custos_audit_records_total") == 6, "other features' metrics render on the same endpoint"
    # no user ids or raw paths as labels
    for name, labels in m.samples:
        if name.startswith("custos_"):
            assert "test-user" not in dict(labels).values()


def test_auth_failures_rbac_denials_and_cardinality_cap(engine, start_sidecar):
    sidecar = start_sidecar(engine.url, {"metrics": {"max_models": 1}})
    assert chat(sidecar).status_code == 200
    assert chat(sidecar, headers={}).status_code == 401
    assert chat(sidecar, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    viewer = {"Authorization": f"Bearer {mint_token('vera', ['viewer'])}"}
    assert chat(sidecar, headers=viewer).status_code == 403
    # Many junk model names: the engine refuses them, and none gets its own label.
    for i in range(5):
        assert chat(sidecar, model=f"junk-model-{i}").status_code >= 400
    m = scrape(sidecar.url, sidecar.headers)
    assert sum(v for (n, ls), v in m.samples.items() if n == "custos_auth_failures_total") == 2
    assert len(m.series("custos_auth_failures_total")) >= 1
    assert m.get("custos_rbac_denials_total") == 1
    assert m.get("custos_requests_total", status_class="4xx", route=CHAT) == 8
    models = {s["model"] for s in m.series("custos_requests_total")}
    assert models <= {"custos-tiny", "other", "none"}
    assert not any(k.startswith("junk") for k in models)
    assert m.get("custos_requests_total", role="viewer") == 1
    assert m.get("custos_requests_total", role="none") == 2


def test_upstream_unreachable_and_rejected_bodies(start_sidecar):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sidecar = start_sidecar(dead, {"server": {"max_body_bytes": 1024}})
    for _ in range(2):
        resp = chat(sidecar)
        assert resp.status_code == 502
    big = {"model": "custos-tiny", "messages": [{"role": "user", "content": "x" * 4096}]}
    assert httpx.post(sidecar.url + CHAT, json=big, headers=sidecar.headers).status_code == 413
    m = scrape(sidecar.url, sidecar.headers)
    assert m.get("custos_upstream_errors_total", kind="upstream_unreachable") == 2
    assert m.get("custos_requests_total", status_class="5xx", route=CHAT) == 2
    # rejected before the pipeline ran: still counted, never left in flight
    assert m.get("custos_requests_total", status_class="4xx", route=CHAT) == 1
    assert m.get("custos_errors_total", kind="request_too_large") == 1
    assert m.get("custos_requests_in_flight", route=CHAT) == 0


def _stream_in_thread(sidecar, close_after_first: bool) -> tuple[threading.Thread, dict]:
    """A streamed chat request in a thread: it reads the first event, then closes (client gone)
    or reads to the end. ``result`` gets what happened."""
    result: dict = {}
    body = {
        "model": "custos-tiny",
        "messages": [{"role": "user", "content": "long"}],
        "max_tokens": 400,
        "stream": True,
    }

    def run() -> None:
        try:
            with (
                httpx.Client(timeout=60) as c,
                c.stream("POST", sidecar.url + CHAT, json=body, headers=sidecar.headers) as resp,
            ):
                result["status"] = resp.status_code
                for line in resp.iter_lines():
                    if line.startswith("data: ") and close_after_first:
                        result["first"] = line
                        return
        except httpx.HTTPError as exc:
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def wait_metric(sidecar, name: str, want: float, timeout: float = 30, **labels: str) -> Scrape:
    """Scrape ``sidecar`` (with its token: /metrics needs metrics:read) until ``name`` == ``want``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with httpx.Client() as fresh:  # a new connection each time: any worker may answer
                m = Scrape(fresh.get(sidecar.url + "/metrics", headers=sidecar.headers, timeout=5).text)
            if m.get(name, **labels) == want or time.monotonic() > deadline:
                return m
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_client_disconnect_mid_stream_is_cancelled_and_in_flight_returns_to_zero(engine, start_sidecar):
    sidecar = start_sidecar(engine.url)
    with paused(engine):  # the tiny model is fast: hold it so the request is surely open while we look
        thread, result = _stream_in_thread(sidecar, close_after_first=True)
        m = wait_metric(sidecar, "custos_requests_in_flight", 1, route=CHAT)
        assert m.get("custos_requests_in_flight", route=CHAT) == 1
    thread.join(30)
    assert result.get("status") == 200 and result.get("first")
    # the client closed the connection after the first event, long before the end of the stream
    m = wait_metric(sidecar, "custos_requests_total", 1, route=CHAT, status_class="cancelled")
    assert m.get("custos_requests_total", route=CHAT, status_class="cancelled") == 1
    assert m.get("custos_requests_total", route=CHAT, status_class="2xx") == 0
    m = wait_metric(sidecar, "custos_requests_in_flight", 0, route=CHAT)
    assert m.get("custos_requests_in_flight", route=CHAT) == 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    # uvicorn's supervisor also starts a resource tracker; workers are the ones running our app
    return [
        c for c in out if b"multiprocessing.resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()
    ]


def _mp_dir_of(pid: int) -> Path:
    # /proc/PID/environ shows a process's start environment: read a worker's, set by `custos serve`.
    env = Path(f"/proc/{_children(pid)[0]}/environ").read_bytes().split(b"\0")
    for item in env:
        if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return Path(item.split(b"=", 1)[1].decode())
    raise AssertionError("custos serve did not set PROMETHEUS_MULTIPROC_DIR for its workers")


def test_two_workers_sum_their_counts(engine, start_sidecar):
    sidecar = start_sidecar(engine.url, {"server": {"workers": 2}})
    n = 24
    # Concurrent requests on separate connections so both workers take some.
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda _: chat(sidecar, max_tokens=2).status_code, range(n)))
    assert codes == [200] * n
    # Every worker's own counters live in the shared directory; each scrape (whichever worker
    # answers) reports the total.
    mp_dir = _mp_dir_of(sidecar.process.pid)
    pids = {p.stem.rsplit("_", 1)[1] for p in mp_dir.glob("*.db")}
    assert len(pids) >= 2, f"expected files of two workers in {mp_dir}: {sorted(os.listdir(mp_dir))}"
    spool = Path(sidecar.config["state"]["dir"]) / "audit" / "spool"
    for scrapes in range(6):
        with httpx.Client() as fresh:  # a new connection per scrape: different workers answer
            m = Scrape(fresh.get(sidecar.url + "/metrics", headers=sidecar.headers).text)
        assert m.get("custos_requests_total", route=CHAT, status_class="2xx") == n
        assert m.get("custos_request_duration_seconds_count", route=CHAT) == n
        assert m.get("custos_requests_in_flight", route=CHAT) == 0
        # other features' prometheus-client metrics (the audit stage's) are summed the same way
        # ... and every scrape before this one left its own record (/metrics is audited too). A worker
        # that uvicorn replaced (it missed a health check on a loaded machine) leaves one restart
        # record when its successor takes over its chain: the spool says how many.
        actions = Counter(r["event"]["action"] for r in spool_records(spool) if "event" in r)
        restarts = actions[ACTION_RESTART]
        records = m.get("custos_audit_records_total")
        assert n + restarts <= records <= n + scrapes + restarts, f"{records} counted; spool: {actions}"
    stopped = sidecar.stop()
    assert stopped == 0
    by_path = Counter(r["url"]["path"] for r in spool_records(spool) if "url" in r)
    assert by_path[CHAT] == n, f"exactly one record per request: {by_path}"
    assert not mp_dir.exists(), "the temporary multiprocess directory is removed on exit"


def test_redactions_by_entity_type(engine, start_sidecar):
    sidecar = start_sidecar(engine.url)
    body = {
        "model": "custos-tiny",
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "Mail alice.smith@example.com or bob@example.org please"}],
    }
    resp = httpx.post(sidecar.url + CHAT, json=body, headers=sidecar.headers, timeout=60)
    assert resp.status_code == 200
    m = scrape(sidecar.url, sidecar.headers)
    series = m.series("custos_redactions_total")
    assert sum(m.get("custos_redactions_total", **s) for s in series) >= 2
    assert all("example" not in v for s in series for v in s.values()), "values never become labels"


def test_killed_workers_do_not_leave_requests_in_flight(engine, start_sidecar):
    """kill -9 every worker while a request is in flight: uvicorn starts new workers, the dead ones'
    in-flight gauges are dropped, their finished-request counts stay."""
    sidecar = start_sidecar(engine.url, {"server": {"workers": 2}})
    for _ in range(3):
        assert chat(sidecar, max_tokens=2).status_code == 200
    with paused(engine):
        thread, result = _stream_in_thread(sidecar, close_after_first=False)
        m = wait_metric(sidecar, "custos_requests_in_flight", 1, route=CHAT)
        assert m.get("custos_requests_in_flight", route=CHAT) == 1
        old = _children(sidecar.process.pid)
        for pid in old:
            os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert "error" in result, "the request died with its worker"
    m = wait_metric(sidecar, "custos_requests_in_flight", 0, timeout=60, route=CHAT)
    assert not set(_children(sidecar.process.pid)) & set(old), "uvicorn replaced the killed workers"
    assert m.get("custos_requests_in_flight", route=CHAT) == 0
    assert m.get("custos_requests_total", route=CHAT, status_class="2xx") == 3


def test_engine_killed_mid_stream_counts_an_upstream_error(tiny_model_dir, start_sidecar):
    from bench.stack import start_engine

    own = start_engine(tiny_model_dir)  # this test kills its engine: not the shared one
    try:
        sidecar = start_sidecar(own.url)
        first = threading.Event()
        lines: list[str] = []
        body = {
            "model": "custos-tiny",
            "messages": [{"role": "user", "content": "long"}],
            "max_tokens": 400,
            "stream": True,
        }

        def run() -> None:
            with (
                httpx.Client(timeout=60) as c,
                c.stream("POST", sidecar.url + CHAT, json=body, headers=sidecar.headers) as resp,
            ):
                for line in resp.iter_lines():
                    lines.append(line)
                    if line.startswith("data: "):
                        first.set()

        t = threading.Thread(target=run, daemon=True)
        with paused(own):
            t.start()
            wait_metric(sidecar, "custos_requests_in_flight", 1, route=CHAT)
        assert first.wait(30)
        own.process.kill9()
        t.join(30)
        assert any('"upstream_error"' in line for line in lines), "the stream ends with an error event"
        m = wait_metric(sidecar, "custos_upstream_errors_total", 1, kind="upstream_error")
        assert m.get("custos_upstream_errors_total", kind="upstream_error") == 1
        assert m.get("custos_requests_in_flight", route=CHAT) == 0
        assert m.get("custos_time_to_first_token_seconds_count") == 0, "a broken stream is no latency sample"
    finally:
        own.process.stop()
