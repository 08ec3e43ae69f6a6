"""Error paths: every failure is an OpenAI-shaped JSON error with the right status, never a traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from bench.procs import free_port
from bench.stack import TINY_MODEL_NAME, start_engine


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert "type" in err and "code" in err
    if code is not None:
        assert err["code"] == code
    assert "Traceback" not in r.text
    return err


CHAT = {"model": TINY_MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_upstream_down_is_502(start_sidecar) -> None:
    port = free_port()
    dead = f"http://127.0.0.1:{port}"  # nothing listens there
    sc = start_sidecar(dead)
    r = httpx.post(sc.url + "/v1/chat/completions", json=CHAT, headers=sc.headers, timeout=30)
    err = assert_openai_error(r, 502, "upstream_unreachable")
    # The client learns that the model server is down, not where it lives or why.
    assert err["message"] == "The upstream model server is unreachable."
    assert str(port) not in r.text and "127.0.0.1" not in r.text
    ready = httpx.get(sc.url + "/ready")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "reason": "upstream unreachable"}
    assert str(port) not in ready.text
    # ... the operator does, in the log
    assert f"upstream {dead} unreachable" in sc.process.log()


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """Fault injection: a TCP peer that accepts connections and reads, but never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conns.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def test_upstream_timeout_is_504(start_sidecar, silent_upstream: str) -> None:
    sc = start_sidecar(silent_upstream, {"upstream": {"read_timeout_s": 0.5, "ready_timeout_s": 0.5}})
    r = httpx.post(sc.url + "/v1/chat/completions", json=CHAT, headers=sc.headers, timeout=30)
    assert_openai_error(r, 504, "upstream_timeout")
    ready = httpx.get(sc.url + "/ready")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "upstream did not answer in time"


def test_body_over_limit_is_413(sidecar) -> None:
    big = b'{"model": "x", "prompt": "' + b"a" * (11 * 1024 * 1024) + b'"}'
    r = httpx.post(
        sidecar.url + "/v1/completions",
        content=big,
        headers={**sidecar.headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert_openai_error(r, 413, "request_too_large")


def test_body_over_limit_without_content_length_is_413(sidecar) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "x", "prompt": "'
        for _ in range(11):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    r = httpx.post(
        sidecar.url + "/v1/completions",
        content=chunks(),
        headers={**sidecar.headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert_openai_error(r, 413, "request_too_large")


@pytest.mark.parametrize("body", [b'{"model": "x", "messages": [', b"not json at all", b"[1, 2]", b'"text"'])
def test_malformed_json_is_400(sidecar, body: bytes) -> None:
    r = httpx.post(
        sidecar.url + "/v1/chat/completions",
        content=body,
        headers={**sidecar.headers, "Content-Type": "application/json"},
        timeout=30,
    )
    assert_openai_error(r, 400, "invalid_json")


def test_wrong_field_types_are_400_naming_the_field(sidecar) -> None:
    r = httpx.post(
        sidecar.url + "/v1/chat/completions", json={**CHAT, "stream": "yes"}, headers=sidecar.headers
    )
    err = assert_openai_error(r, 400)
    assert err["param"] == "stream"


def test_engine_killed_mid_stream_ends_stream_with_error(start_sidecar, tiny_model_dir) -> None:
    """Fault injection: the upstream dies mid-stream; the client gets an error event, the sidecar lives."""
    eng = start_engine(tiny_model_dir)
    try:
        sc = start_sidecar(eng.url)
        body = {**CHAT, "max_tokens": 1900, "stream": True, "ignore_eos": True}
        lines: list[str] = []
        with httpx.stream(
            "POST", sc.url + "/v1/chat/completions", json=body, headers=sc.headers, timeout=60
        ) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    lines.append(line)
                    if len(lines) == 3:
                        eng.process.kill9()
        assert lines[-1] != "data: [DONE]"
        assert '"error"' in lines[-1]
        assert httpx.get(sc.url + "/health").status_code == 200
        r = httpx.post(sc.url + "/v1/chat/completions", json=CHAT, headers=sc.headers, timeout=30)
        assert_openai_error(r, 502)
    finally:
        eng.process.stop()
