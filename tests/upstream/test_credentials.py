"""An upstream that wants credentials: an API key (vLLM --api-key), extra headers, TLS with a private
CA and a client certificate. A real sidecar in front of a real TLS server (the recording upstream)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.stack import Sidecar
from bench.upstream import RecordingUpstream
from custos.errors import ConfigError
from sidecar.config import load_config

CHAT = {"model": "custos-tiny", "messages": [{"role": "user", "content": "hi"}]}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key=None) -> Path:
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    path.write_bytes(data)
    return path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("custos test CA", ca_key, "custos test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("upstream", server_key, "custos test CA", ca_key, ca=False, ip="127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("custos-sidecar", client_key, "custos test CA", ca_key, ca=False)
    return {
        "ca": _write(tmp_path / "ca.pem", ca),
        "server": _write(tmp_path / "server.pem", server, server_key),
        "client_cert": _write(tmp_path / "client.pem", client),
        "client_key": _write(tmp_path / "client.key", key=client_key),
    }


@pytest.fixture
def tls_upstream(pki: dict[str, Path]) -> Iterator[RecordingUpstream]:
    """An https upstream that requires a client certificate signed by the private CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    context.load_cert_chain(str(pki["server"]))
    context.verify_mode = ssl.CERT_REQUIRED
    up = RecordingUpstream(ssl_context=context)
    yield up
    up.close()


def test_api_key_headers_ca_and_client_certificate_reach_a_tls_upstream(
    tls_upstream: RecordingUpstream,
    start_sidecar: Callable[..., Sidecar],
    pki: dict[str, Path],
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "upstream.key"
    key_file.write_text("sk-upstream-123\n")
    sc = start_sidecar(
        tls_upstream.url,
        {
            "upstream": {
                "api_key_file": str(key_file),
                "headers": {"X-Tenant": "bank-a"},
                "ca_bundle": str(pki["ca"]),
                "client_cert": str(pki["client_cert"]),
                "client_key": str(pki["client_key"]),
            }
        },
    )
    r = httpx.post(sc.url + "/v1/chat/completions", headers=sc.headers, json=CHAT, timeout=30)
    assert r.status_code == 200, r.text
    got = tls_upstream.inference_requests()[-1].headers
    # The upstream's own key, never the caller's JWT.
    assert got["authorization"] == "Bearer sk-upstream-123"
    assert got["x-tenant"] == "bank-a"
    assert sc.headers["Authorization"].split()[1] not in str(got)
    # Readiness asks /v1/models with the same credentials over the same TLS.
    assert httpx.get(sc.url + "/ready", timeout=30).status_code == 200
    assert tls_upstream.requests[-1].headers["authorization"] == "Bearer sk-upstream-123"


def test_an_upstream_certificate_from_an_unknown_ca_is_refused(
    tls_upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], pki: dict[str, Path]
) -> None:
    # The client certificate is there, but the private CA is not trusted: no request may go out.
    sc = start_sidecar(
        tls_upstream.url,
        {"upstream": {"client_cert": str(pki["client_cert"]), "client_key": str(pki["client_key"])}},
    )
    r = httpx.post(sc.url + "/v1/chat/completions", headers=sc.headers, json=CHAT, timeout=30)
    assert r.status_code == 502
    assert "127.0.0.1" not in r.text and "certificate" not in r.text.lower()
    assert tls_upstream.requests == []
    assert httpx.get(sc.url + "/ready", timeout=30).status_code == 503


def test_without_a_client_certificate_the_tls_upstream_refuses(
    tls_upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar], pki: dict[str, Path]
) -> None:
    sc = start_sidecar(tls_upstream.url, {"upstream": {"ca_bundle": str(pki["ca"])}})
    r = httpx.post(sc.url + "/v1/chat/completions", headers=sc.headers, json=CHAT, timeout=30)
    assert r.status_code == 502 and r.json()["error"]["code"] in ("upstream_error", "upstream_unreachable")
    assert tls_upstream.requests == []


def test_credential_options_are_validated(tmp_path: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="client_cert and client_key go together"):
        load_config(environ={"CUSTOS_UPSTREAM__CLIENT_CERT": str(pki["client_cert"])})
    with pytest.raises(ConfigError, match=r"api_key_file.*does not exist"):
        load_config(environ={"CUSTOS_UPSTREAM__API_KEY_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="set api_key or api_key_file"):
        key = tmp_path / "k"
        key.write_text("x")
        load_config(environ={"CUSTOS_UPSTREAM__API_KEY": "a", "CUSTOS_UPSTREAM__API_KEY_FILE": str(key)})
    with pytest.raises(ConfigError, match="set by the sidecar itself"):
        load_config(environ={"CUSTOS_UPSTREAM__HEADERS": "{Host: evil}"})
