"""The sidecar's app-level hardening, through a real ``custos serve`` in front of the recording
upstream of the security suite: token-protected /metrics, bounded request heads and bodies, canonical
paths, no upstream details in errors, no content coding, one Date and no Server header, and
X-Forwarded-For believed only from trusted proxies.

Attacks on the request head are written with raw sockets, so the test controls every byte.
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from bench.procs import free_port
from bench.stack import Sidecar, mint_token
from bench.upstream import MODEL, RecordingUpstream, Reply
from tests.audit.helpers import spool_records, wait_until

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
# Short limits so that the slow-client tests take seconds; the in-process alert engine does not read
# the upstream's /metrics, so everything the recording upstream receives came from the test.
FAST_TIMEOUTS = {
    "server": {"header_timeout_s": 1, "body_timeout_s": 1},
    "alerting": {"scrape_upstream": False},
}


@pytest.fixture
def recording() -> Iterator[RecordingUpstream]:
    up = RecordingUpstream()
    yield up
    up.close()


@pytest.fixture
def sc(recording: RecordingUpstream, start_sidecar: Callable[..., Sidecar]) -> Sidecar:
    return start_sidecar(recording.url, FAST_TIMEOUTS)


# -- raw HTTP ---------------------------------------------------------------------------------------
def _connect(port: int, timeout: float = 10) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket times out)."""
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    with _connect(port, timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early: whatever the server answered is still readable
        return _read_all(s)


def head_and_body(raw: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, body


def get_head(path: str, *extra: str, auth: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra]
    lines += [f"{k}: {v}" for k, v in (auth or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_code(body: bytes) -> str:
    return orjson.loads(body)["error"]["code"]


# -- /metrics needs a token ------------------------------------------------------------------------
def test_metrics_need_a_token_granting_metrics_read(recording: RecordingUpstream, sc: Sidecar) -> None:
    for path in ("/metrics", "/metrics/upstream"):
        r = httpx.get(sc.url + path, timeout=10)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"]
        viewer = {"Authorization": f"Bearer {mint_token('vera', ['viewer'])}"}  # model:list only
        r = httpx.get(sc.url + path, headers=viewer, timeout=10)
        assert r.status_code == 403, r.text
        assert "custos_" not in r.text and "up 1" not in r.text
    r = httpx.get(sc.url + "/metrics", headers=sc.headers, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE custos_build_info" in r.text
    r = httpx.get(sc.url + "/metrics/upstream", headers=sc.headers, timeout=10)
    assert r.status_code == 200 and "up 1" in r.text
    # only the authorized relay reached the upstream's /metrics
    assert [q.path for q in recording.requests] == ["/metrics"]
    assert "authorization" not in recording.requests[0].headers


def test_metrics_open_with_require_token_false(
    recording: RecordingUpstream, start_sidecar: Callable[..., Sidecar]
) -> None:
    sc = start_sidecar(recording.url, {"metrics": {"require_token": False}})
    r = httpx.get(sc.url + "/metrics", timeout=10)
    assert r.status_code == 200 and "# TYPE custos_build_info" in r.text
    r = httpx.get(sc.url + "/metrics/upstream", timeout=10)
    assert r.status_code == 200 and "up 1" in r.text


# -- request heads: size, field count, time ---------------------------------------------------------
def test_oversized_header_is_431_and_the_server_lives_on(sc: Sidecar) -> None:
    raw = raw_request(sc.port, get_head("/health", "X-Big: " + "a" * (64 * 1024)))
    status, headers, body = head_and_body(raw)
    assert status == 431
    assert headers["content-type"] == ["application/json"]
    assert error_code(body) == "request_header_fields_too_large"
    assert "server.max_header_bytes" in orjson.loads(body)["error"]["message"]
    assert httpx.get(sc.url + "/health", timeout=5).status_code == 200


def test_too_many_header_fields_is_431(sc: Sidecar) -> None:
    fields = [f"X-H{i}: {i}" for i in range(150)]
    status, _, body = head_and_body(raw_request(sc.port, get_head("/health", *fields)))
    assert status == 431
    assert "server.max_headers" in orjson.loads(body)["error"]["message"]
    assert httpx.get(sc.url + "/health", timeout=5).status_code == 200


def test_a_stalled_request_head_times_out_while_others_are_served(sc: Sidecar) -> None:
    with _connect(sc.port, timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # ... and nothing more
        t0 = time.monotonic()
        # Meanwhile everyone else is served.
        for _ in range(3):
            assert httpx.get(sc.url + "/health", timeout=5).status_code == 200
        raw = _read_all(s)
        took = time.monotonic() - t0
    assert took < 4, f"the stalled head was held for {took:.1f} s (server.header_timeout_s: 1)"
    if raw:  # a 408 (the connection is closed either way)
        status, _, body = head_and_body(raw)
        assert status == 408 and error_code(body) == "request_timeout"


def test_a_trickling_body_times_out_with_408(recording: RecordingUpstream, sc: Sidecar) -> None:
    body = orjson.dumps(CHAT)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {sc.headers['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with _connect(sc.port, timeout=10) as s:
        s.sendall(head)
        t0 = time.monotonic()
        raw, took = b"", float("inf")
        s.settimeout(0.3)
        for i in range(len(body) - 1):  # one byte per 0.3 s: far slower than body_timeout_s (1 s)
            try:
                s.sendall(body[i : i + 1])
                chunk = s.recv(65536)
                if chunk:
                    raw = chunk
                    took = time.monotonic() - t0
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() - t0 > 8:
                break
        s.settimeout(2)
        while raw and (b"\r\n\r\n" not in raw or not raw.split(b"\r\n\r\n", 1)[1]):
            more = s.recv(65536)  # the rest of the 408 (head and body may come apart)
            if not more:
                break
            raw += more
    status, _, resp = head_and_body(raw)
    assert status == 408 and error_code(resp) == "request_timeout"
    assert took < 4
    assert recording.inference_requests() == []


# -- canonical paths --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/v1/models%0A",
        "/v1/models/..",
        "/v1/./models",
        "//v1/models",
        "/v1/models/%2e%2e",
        "/v1/chat%2Fcompletions",
        "/v1/models/%5c..",
        "/v1//models",
    ],
)
def test_non_canonical_paths_are_refused_and_never_forwarded(
    recording: RecordingUpstream, sc: Sidecar, path: str
) -> None:
    status, _, body = head_and_body(raw_request(sc.port, get_head(path, auth=sc.headers)))
    assert status == 400, body
    assert error_code(body) == "invalid_path"
    assert recording.requests == []


def test_overlong_path_is_414(recording: RecordingUpstream, sc: Sidecar) -> None:
    status, _, body = head_and_body(
        raw_request(sc.port, get_head("/v1/models/" + "a" * 2100, auth=sc.headers))
    )
    assert status == 414 and error_code(body) == "uri_too_long"
    assert recording.requests == []


def test_canonical_path_still_forwarded(recording: RecordingUpstream, sc: Sidecar) -> None:
    status, _, body = head_and_body(
        raw_request(sc.port, get_head("/v1/models", "Connection: close", auth=sc.headers))
    )
    assert status == 200, body
    assert [r.raw_path for r in recording.requests] == ["/v1/models"]


# -- what goes to and comes back from the upstream ---------------------------------------------------
def test_one_date_no_server_header_and_identity_encoding_upstream(
    recording: RecordingUpstream, sc: Sidecar
) -> None:
    recording.reply = Reply(json={"ok": True}, headers={"Server": "upstream/1.0 (leaky)"})
    r = httpx.post(
        sc.url + "/v1/chat/completions",
        json=CHAT,
        headers={**sc.headers, "Accept-Encoding": "gzip, br"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert len(r.headers.get_list("date")) == 1
    assert "server" not in r.headers
    assert "content-encoding" not in r.headers
    (sent,) = recording.inference_requests()
    assert sent.headers["accept-encoding"] == "identity"


def test_content_encoded_upstream_answer_is_502(recording: RecordingUpstream, sc: Sidecar) -> None:
    secret = b'{"choices":[{"message":{"content":"alice@example.com"}}]}'
    recording.reply = Reply(
        raw=gzip.compress(secret),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    r = httpx.post(sc.url + "/v1/chat/completions", json=CHAT, headers=sc.headers, timeout=30)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_encoding"
    assert "alice" not in r.text
    # the sidecar is fine afterwards
    recording.reply = None
    assert (
        httpx.post(sc.url + "/v1/chat/completions", json=CHAT, headers=sc.headers, timeout=30).status_code
        == 200
    )


def test_upstream_down_errors_name_no_address_or_exception(start_sidecar: Callable[..., Sidecar]) -> None:
    port = free_port()  # nothing listens there
    sc = start_sidecar(f"http://127.0.0.1:{port}")
    r = httpx.post(sc.url + "/v1/chat/completions", json=CHAT, headers=sc.headers, timeout=30)
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "upstream_unreachable"
    assert err["message"] == "The upstream model server is unreachable."
    ready = httpx.get(sc.url + "/ready", timeout=30)
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "reason": "upstream unreachable"}
    for text in (r.text, ready.text):
        assert str(port) not in text and "127.0.0.1" not in text and "http://" not in text
        assert "Error" not in text and "Connect call failed" not in text


# -- X-Forwarded-For -------------------------------------------------------------------------------
def _lan_only_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "lan-policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "roles": [
                    {"name": "lan", "permissions": ["*"], "constraints": {"source_cidrs": ["10.0.0.0/8"]}}
                ],
            }
        )
    )
    return policy


def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    recording: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    policy = _lan_only_policy(tmp_path)
    sc = start_sidecar(
        recording.url, {**FAST_TIMEOUTS, "rbac": {"policy_file": str(policy), "trusted_proxies": []}}
    )
    lan = {"Authorization": f"Bearer {mint_token('lena', ['lan'])}", "X-Forwarded-For": "10.1.2.3"}
    r = httpx.post(
        sc.url + "/v1/chat/completions",
        json=CHAT,
        headers={**lan, "X-Request-Id": "xff-untrusted"},
        timeout=30,
    )
    assert r.status_code == 403, r.text
    assert recording.inference_requests() == []
    spool = tmp_path / "state" / "audit" / "spool"
    records = wait_until(lambda: [x for x in spool_records(spool) if x["event"]["id"] == "xff-untrusted"])
    assert records, "the denied request left an audit record"
    assert records[0]["source"]["ip"] == "127.0.0.1"


def test_forwarded_for_from_a_trusted_proxy_is_believed(
    recording: RecordingUpstream, start_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    """The control: the same request through a trusted proxy (loopback) is allowed."""
    policy = _lan_only_policy(tmp_path)
    sc = start_sidecar(
        recording.url, {"rbac": {"policy_file": str(policy), "trusted_proxies": ["127.0.0.1/32"]}}
    )
    lan = {"Authorization": f"Bearer {mint_token('lena', ['lan'])}", "X-Forwarded-For": "10.1.2.3"}
    r = httpx.post(
        sc.url + "/v1/chat/completions", json=CHAT, headers={**lan, "X-Request-Id": "xff-trusted"}, timeout=30
    )
    assert r.status_code == 200, r.text
    spool = tmp_path / "state" / "audit" / "spool"
    records = wait_until(lambda: [x for x in spool_records(spool) if x["event"]["id"] == "xff-trusted"])
    assert records and records[0]["source"]["ip"] == "10.1.2.3"


# -- /metrics while the audit gate is closed ----------------------------------------------------------
def test_open_metrics_readable_while_the_audit_gate_is_closed(start_sidecar: Callable[..., Sidecar]) -> None:
    audit = {
        "max_bytes": 64 * 1024,
        "when_full": "fail_closed",
        "fail_closed": True,
        "retention": {"enabled": False},  # the cap must close the gate (retention would make room)
        "compression": "none",
    }
    sc = start_sidecar(
        f"http://127.0.0.1:{free_port()}",  # 502s: every request still leaves a record
        {"audit": audit, "metrics": {"require_token": False}},
    )
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=30) as client:
        for _ in range(200):
            body = {**CHAT, "messages": [{"role": "user", "content": "x" * 300}]}
            if client.post("/v1/chat/completions", json=body).status_code == 503:
                break
        else:
            pytest.fail("the spool never filled")
    r = httpx.get(sc.url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert "custos_audit_refused_total" in r.text
