"""TLS on the sidecar with real TLS clients (Python's ssl, openssl s_client, the openai SDK): TLS 1.3
by default, mutual TLS, and certificate rotation without a restart while a stream stays open."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from bench.procs import custos_cmd
from bench.stack import Sidecar
from bench.upstream import MODEL, RecordingUpstream, Reply
from sidecar.commands.tls import DevPKI, make_dev_pki

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def tls_config(pki: DevPKI, **extra: object) -> dict:
    tls = {"enabled": True, "cert_file": str(pki.server_cert), "key_file": str(pki.server_key), **extra}
    return {"server": {"tls": tls}}


def client_context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def served_serial(port: int, ca: Path, *, cert: tuple[Path, Path] | None = None) -> int:
    """The serial number of the certificate a new handshake gets."""
    context = client_context(ca, cert)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def wait_https(url: str, ca: Path, cert: tuple[Path, Path] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", verify=client_context(ca, cert), timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@pytest.fixture
def pki(tmp_path: Path) -> DevPKI:
    return make_dev_pki(tmp_path / "pki", ["localhost", "127.0.0.1"], days=2)


@pytest.fixture
def https_sidecar(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], pki: DevPKI
) -> Callable[..., Sidecar]:
    def start(**tls: object) -> Sidecar:
        sc = start_sidecar(upstream.url, tls_config(pki, **tls), wait=False)
        sc.url = sc.url.replace("http://", "https://")
        cert = (pki.client_cert, pki.client_key) if tls.get("client_ca_file") else None
        wait_https(sc.url, pki.ca_cert, cert)
        return sc

    return start


def test_tls13_by_default_and_tls12_refused(https_sidecar: Callable[..., Sidecar], pki: DevPKI) -> None:
    sc = https_sidecar()
    r = httpx.post(
        sc.url + "/v1/chat/completions",
        headers=sc.headers,
        json=CHAT,
        verify=client_context(pki.ca_cert),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
    # A client that speaks at most TLS 1.2 gets no connection.
    old = ssl.create_default_context(cafile=str(pki.ca_cert))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost")
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{sc.port}", "-tls1_2", "-CAfile", str(pki.ca_cert)],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert out.returncode != 0
    ok = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{sc.port}", "-tls1_3", "-CAfile", str(pki.ca_cert)],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0 and b"Verify return code: 0 (ok)" in ok.stdout


def test_tls12_only_when_configured(https_sidecar: Callable[..., Sidecar], pki: DevPKI) -> None:
    sc = https_sidecar(min_version="1.2")
    old = ssl.create_default_context(cafile=str(pki.ca_cert))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", sc.port), timeout=10) as raw:
        with old.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"


def test_mutual_tls_refuses_clients_without_a_certificate(
    https_sidecar: Callable[..., Sidecar], pki: DevPKI, upstream: RecordingUpstream
) -> None:
    sc = https_sidecar(client_ca_file=str(pki.ca_cert))
    with pytest.raises(httpx.HTTPError):
        httpx.get(sc.url + "/health", verify=client_context(pki.ca_cert), timeout=10)
    # The openai SDK over mutual TLS.
    import openai

    http_client = httpx.Client(verify=client_context(pki.ca_cert, (pki.client_cert, pki.client_key)))
    client = openai.OpenAI(
        base_url=sc.url + "/v1",
        api_key=sc.headers["Authorization"].removeprefix("Bearer "),
        http_client=http_client,
        max_retries=0,
    )
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Hello there."
    assert upstream.inference_requests(), "the request went through to the upstream"


def test_rotation_new_handshakes_get_the_new_certificate_while_a_stream_finishes(
    https_sidecar: Callable[..., Sidecar], pki: DevPKI, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    sc = https_sidecar(reload_interval_s=0.2)
    old_serial = served_serial(sc.port, pki.ca_cert)
    assert old_serial == x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).serial_number
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": MODEL}
    upstream.reply = Reply(
        sse=[{**chunk, "choices": [{"index": 0, "delta": {"content": f"w{i} "}}]} for i in range(20)],
        delay_s=0.1,
    )
    body = {**CHAT, "stream": True}
    with httpx.Client(verify=client_context(pki.ca_cert), timeout=30) as client:
        with client.stream("POST", sc.url + "/v1/chat/completions", headers=sc.headers, json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            assert "w0" in first
            # Renew the certificate in place, as cert-manager would, while the stream is open.
            subprocess.run(
                custos_cmd("tls", "dev-cert", str(pki.ca_cert.parent), "--host", "localhost", "--force"),
                check=True,
                capture_output=True,
                timeout=60,
            )
            new_serial = x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).serial_number
            assert new_serial != old_serial
            deadline = time.monotonic() + 10
            while served_serial(sc.port, pki.ca_cert) != new_serial:
                assert time.monotonic() < deadline, "new handshakes never got the renewed certificate"
                time.sleep(0.1)
            rest = [line for line in lines if line.startswith("data:")]
    # The connection opened before the rotation finished its stream.
    assert rest[-1] == "data: [DONE]" and any("w19" in line for line in rest)


def test_a_broken_renewal_is_refused_and_the_old_certificate_stays(
    https_sidecar: Callable[..., Sidecar], pki: DevPKI, tmp_path: Path
) -> None:
    sc = https_sidecar(reload_interval_s=0.2)
    serial = served_serial(sc.port, pki.ca_cert)
    other = make_dev_pki(tmp_path / "other", ["localhost"], days=2)
    # A key that does not match the certificate in place (a half-done renewal).
    pki.server_key.write_bytes(other.server_key.read_bytes())
    time.sleep(1.0)
    assert served_serial(sc.port, pki.ca_cert) == serial
    log = sc.process.log()
    assert "was refused" in log and "stays in force" in log
    r = httpx.get(sc.url + "/health", verify=client_context(pki.ca_cert), timeout=10)
    assert r.status_code == 200


def test_expiry_metric_names_the_certificate_in_force(
    https_sidecar: Callable[..., Sidecar], pki: DevPKI
) -> None:
    sc = https_sidecar()
    text = httpx.get(
        sc.url + "/metrics", headers=sc.headers, verify=client_context(pki.ca_cert), timeout=10
    ).text
    line = next(
        x for x in text.splitlines() if x.startswith("custos_tls_certificate_expiry_timestamp_seconds")
    )
    expiry = x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).not_valid_after_utc.timestamp()
    assert abs(float(line.split()[-1]) - expiry) < 1


def test_a_pair_that_does_not_load_fails_at_start(tmp_path: Path, pki: DevPKI) -> None:
    other = make_dev_pki(tmp_path / "other", ["localhost"], days=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"server:\n  port: 1\n"
        f"  tls: {{enabled: true, cert_file: {pki.server_cert}, key_file: {other.server_key}}}\n"
        f"state: {{dir: {tmp_path / 'state'}}}\n"
    )
    out = subprocess.run(
        custos_cmd("serve", "--config", str(cfg)), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "server.tls" in out.stderr and "Traceback" not in out.stderr


def test_a_plain_http_sidecar_exports_no_expiry(
    upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]
) -> None:
    # An unset gauge would read 0: a certificate that expired in 1970, paging on-call for nothing.
    sc = start_sidecar(upstream.url)
    text = httpx.get(sc.url + "/metrics", headers=sc.headers, timeout=10).text
    assert "custos_requests_total" in text or "custos_build_info" in text
    assert "custos_tls_certificate_expiry_timestamp_seconds" not in text
