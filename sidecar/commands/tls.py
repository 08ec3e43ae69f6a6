"""``custos tls dev-cert DIR``: a local CA, a server certificate and a client certificate for trying
TLS and mutual TLS out (never for production: use your PKI, cert-manager or Vault there)."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custos.errors import ConfigError
from custos.keyfile import replace_file

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevPKI:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tls", help="TLS helpers (a local CA and certificates for trying HTTPS out)")
    tsub = p.add_subparsers(dest="tls_command", required=True, metavar="COMMAND")
    d = tsub.add_parser("dev-cert", help="write a local CA, a server and a client certificate into DIR")
    d.add_argument(
        "dir", metavar="DIR", help="output directory (created; existing files are not overwritten)"
    )
    d.add_argument(
        "--host",
        action="append",
        default=None,
        help=f"name or IP the server certificate covers (repeatable; default: {', '.join(DEFAULT_HOSTS)})",
    )
    d.add_argument("--days", type=int, default=30, help="validity of the server and client certificates")
    d.add_argument("--force", action="store_true", help="replace existing files (a rotation)")
    d.set_defaults(func=run_dev_cert)


def run_dev_cert(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= 825:
        raise ConfigError(f"--days {args.days}: must be between 1 and 825")
    hosts = args.host or list(DEFAULT_HOSTS)
    try:
        pki = make_dev_pki(Path(args.dir), hosts, days=args.days, force=args.force)
    except FileExistsError as exc:
        raise ConfigError(
            f"{exc.filename}: already exists (use --force to replace the certificates)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{args.dir}: cannot write certificates: {exc.strerror}") from None
    print(
        f"""Wrote a development CA and certificates for {", ".join(hosts)} into {args.dir}:
  CA                 {pki.ca_cert}   (trust this one in clients)
  server certificate {pki.server_cert} + {pki.server_key}
  client certificate {pki.client_cert} + {pki.client_key}   (for mutual TLS)

Serve HTTPS (custos.yaml):
  server:
    tls: {{enabled: true, cert_file: {pki.server_cert}, key_file: {pki.server_key}}}
    # mutual TLS: add  client_ca_file: {pki.ca_cert}

Then:  curl --cacert {pki.ca_cert} https://localhost:8080/health
Renew in place (the sidecar picks it up within server.tls.reload_interval_s):
  custos tls dev-cert {args.dir} --force"""
    )
    return 0


def make_dev_pki(
    directory: Path, hosts: list[str] | tuple[str, ...], *, days: int = 30, force: bool = False
) -> DevPKI:
    """Write a CA (10 years), a server certificate for ``hosts`` and a client certificate, all signed by
    the CA; the CA is reused when it exists, so a renewed server certificate chains to the same trust."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    pki = DevPKI(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    if not force:
        for path in (pki.server_cert, pki.server_key, pki.client_cert, pki.client_key):
            if path.exists():
                raise FileExistsError(0, "exists", str(path))
    if pki.ca_cert.exists() and pki.ca_key.exists():
        from cryptography import x509

        ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        ca_key: Any = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("Custos development CA", ca_key.public_key(), None, ca_key, days=3650, ca=True)
        _write_key(pki.ca_key, ca_key)
        _write_cert(pki.ca_cert, ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(hosts[0], server_key.public_key(), ca, ca_key, days=days, hosts=hosts)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("custos-dev-client", client_key.public_key(), ca, ca_key, days=days, client=True)
    # Key first, then the certificate: a watcher never sees a new certificate with the old key for long.
    _write_key(pki.server_key, server_key)
    _write_cert(pki.server_cert, server)
    _write_key(pki.client_key, client_key)
    _write_cert(pki.client_cert, client)
    return pki


def _certificate(
    common_name: str,
    public_key: Any,
    issuer: Any,
    issuer_key: Any,
    *,
    days: int,
    ca: bool = False,
    hosts: list[str] | tuple[str, ...] = (),
    client: bool = False,
) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        names: list[Any] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(path: Path, cert: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    replace_file(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    replace_file(path, data, 0o600)
