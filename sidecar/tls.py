"""TLS on the sidecar's port, with certificate rotation without a restart.

``server.tls`` names a certificate chain and its private key (PEM files). TLS 1.3 by default (1.2 only
when ``min_version: "1.2"``), HTTP/1.1 over TLS; with ``client_ca_file`` every client must present a
certificate signed by that CA (mutual TLS).

Rotation: cert-manager and Vault renew the files in place. A daemon thread polls them every
``reload_interval_s``; when they change it builds a new ``SSLContext`` from them. A pair that does not
load (a broken file, a key that does not match the certificate) is refused with a log line and the
old one stays in force. The listening socket keeps one base context whose SNI callback (OpenSSL calls
it for every ClientHello, with or without a server name) hands each new handshake the newest context:
connections already open keep theirs and are not dropped.

``custos_tls_certificate_expiry_timestamp_seconds`` tells Prometheus (and the built-in rule
``CustosTLSCertificateExpiringSoon``) when the certificate in force expires.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from prometheus_client import Gauge
from pydantic import Field, model_validator

from custos.section import Section

log = logging.getLogger("custos.tls")

_expiry: Gauge | None = None


def _set_expiry(timestamp: float) -> None:
    """Registered on first use, so a sidecar without TLS exports no expiry series (an unset gauge reads
    0, which the expiry rule would take for a certificate that expired in 1970)."""
    global _expiry
    if _expiry is None:
        _expiry = Gauge(
            "custos_tls_certificate_expiry_timestamp_seconds",
            "When the sidecar's TLS certificate in force expires (Unix time)",
            multiprocess_mode="min",
        )
    _expiry.set(timestamp)


class TLSConfig(Section):
    enabled: bool = Field(False, description="serve HTTPS on server.port")
    cert_file: Path | None = Field(None, description="PEM certificate chain (leaf first)")
    key_file: Path | None = Field(None, description="PEM private key of the certificate")
    min_version: Literal["1.2", "1.3"] = Field("1.3", description="oldest TLS version accepted")
    client_ca_file: Path | None = Field(
        None, description="mutual TLS: clients must present a certificate signed by this CA (PEM)"
    )
    reload_interval_s: float = Field(
        5.0, gt=0, le=3600, description="how often the files are checked for a renewed certificate"
    )

    @model_validator(mode="after")
    def _files(self) -> TLSConfig:
        if not self.enabled:
            return self
        if self.cert_file is None or self.key_file is None:
            raise ValueError("server.tls.enabled needs cert_file and key_file")
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None:
                path = path.expanduser()
                setattr(self, name, path)
                if not path.is_file():
                    raise ValueError(f"{name} {str(path)!r} does not exist or is not a file")
        return self


def _version(value: str) -> ssl.TLSVersion:
    return ssl.TLSVersion.TLSv1_3 if value == "1.3" else ssl.TLSVersion.TLSv1_2


def build_context(cfg: TLSConfig) -> ssl.SSLContext:
    """A server context from the files as they are now; raises ``ssl.SSLError``/``OSError`` when the
    pair does not load (unreadable, malformed, key does not match the certificate)."""
    assert cfg.cert_file is not None and cfg.key_file is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _version(cfg.min_version)
    context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    if cfg.client_ca_file is not None:
        context.load_verify_locations(cafile=str(cfg.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context


def certificate_info(path: Path) -> tuple[int, float]:
    """(serial number, expiry as Unix time) of the first certificate in a PEM file."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.serial_number, cert.not_valid_after_utc.timestamp()


def _stamp(*paths: Path | None) -> tuple[Any, ...]:
    out = []
    for path in paths:
        if path is None:
            continue
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class RotatingCertificate:
    """The context in force, replaced when the files change (see the module docstring)."""

    def __init__(self, cfg: TLSConfig) -> None:
        self.cfg = cfg
        self.current = build_context(cfg)  # at startup a bad pair is fatal: there is no old one
        self.serial, expiry = certificate_info(cfg.cert_file)  # type: ignore[arg-type]
        _set_expiry(expiry)
        self._stamp = _stamp(cfg.cert_file, cfg.key_file)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def server_context(self) -> ssl.SSLContext:
        """The context for the listening socket: its SNI callback picks the newest certificate."""
        base = build_context(self.cfg)
        base.sni_callback = self._select
        return base

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        current = self.current
        if current is not context:
            ssl_object.context = current

    def check(self) -> bool:
        """Load the files again if they changed; True when a new certificate is now in force."""
        stamp = _stamp(self.cfg.cert_file, self.cfg.key_file)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            context = build_context(self.cfg)
            serial, expiry = certificate_info(self.cfg.cert_file)  # type: ignore[arg-type]
        except (ssl.SSLError, OSError, ValueError) as exc:
            # Half-written files (a renewal in progress) land here too; the next change retries.
            log.error(
                "TLS: the renewed certificate/key in %s / %s was refused (%s); "
                "the certificate with serial %x stays in force",
                self.cfg.cert_file,
                self.cfg.key_file,
                exc,
                self.serial,
            )
            return False
        self.current, self.serial = context, serial
        _set_expiry(expiry)
        log.info("TLS: new certificate in force (serial %x), for new connections", serial)
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="tls-reload", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.cfg.reload_interval_s):
            try:
                self.check()
            except Exception:  # never let the watcher die: the next round retries
                log.exception("TLS: checking the certificate files failed")


class ContextFactory:
    """uvicorn's ``ssl_context_factory``: runs in every worker process (picklable: it holds only the
    config section), which then watches the files itself."""

    def __init__(self, cfg: TLSConfig) -> None:
        self.cfg = cfg

    def __call__(self, config: Any, default: Any) -> ssl.SSLContext:
        rotating = RotatingCertificate(self.cfg)
        rotating.start()
        return rotating.server_context()
