"""Trusted verification keys: static PEM keys and secrets, the local dev key, and JWKS sets.

Each key carries its own algorithm allow-list, checked against the key's type so that an RSA public
key can never be used as an HMAC secret (algorithm confusion) and an EC key never verifies RS256.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import get_default_algorithms
from prometheus_client import Counter

from .config import HMAC_ALGORITHMS, AuthConfig, JwksConfig, KeyConfig

log = logging.getLogger("custos.auth")

JWKS_REFRESHES = Counter("custos_auth_jwks_refreshes_total", "JWKS fetches by result", ["result"])

_ALGORITHMS = get_default_algorithms()
# Which algorithms each key type can verify; anything else is refused for that key.
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {
    "secp256r1": frozenset({"ES256"}),
    "secp384r1": frozenset({"ES384"}),
    "secp521r1": frozenset({"ES512"}),
}
_OKP_ALGS = frozenset({"EdDSA"})
_HMAC_ALGS = frozenset(HMAC_ALGORITHMS)
_MIN_HMAC_SECRET = 32  # bytes: RFC 7518 section 3.2 asks for a key at least as long as the hash


class KeyError_(ValueError):
    """A key that cannot be loaded or used, phrased for a human."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    kid: str | None
    key: Any  # a cryptography public key object, or bytes for an HMAC secret
    algorithms: frozenset[str]
    source: str
    issuer: str | None = None
    # Prepared once per algorithm so the hot path never re-parses the key.
    prepared: dict[str, Any] = field(default_factory=dict, compare=False)


def compatible_algorithms(key: Any) -> frozenset[str]:
    if isinstance(key, bytes):
        return _HMAC_ALGS
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC_ALGS.get(key.curve.name, frozenset())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _OKP_ALGS
    return frozenset()


def make_key(
    key: Any, algorithms: Iterable[str], *, kid: str | None, source: str, issuer: str | None = None
) -> VerifyKey:
    fits = compatible_algorithms(key)
    wanted = frozenset(algorithms) if algorithms else fits
    allowed = wanted & fits
    refused = wanted - fits
    if refused:
        raise KeyError_(
            f"{source}: algorithm(s) {', '.join(sorted(refused))} cannot be used with this key type"
        )
    if not allowed:
        raise KeyError_(f"{source}: no usable algorithm for this key type")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise KeyError_(f"{source}: RSA keys shorter than 2048 bits are refused ({key.key_size})")
    if isinstance(key, bytes) and len(key) < _MIN_HMAC_SECRET:
        raise KeyError_(f"{source}: HMAC secrets must be at least {_MIN_HMAC_SECRET} bytes")
    prepared = {alg: _ALGORITHMS[alg].prepare_key(key) for alg in allowed}
    return VerifyKey(kid=kid, key=key, algorithms=allowed, source=source, issuer=issuer, prepared=prepared)


def load_static_key(cfg: KeyConfig) -> VerifyKey:
    source = f"auth.keys[{cfg.path}]"
    try:
        data = cfg.path.expanduser().read_bytes()
    except OSError as exc:
        raise KeyError_(f"{source}: cannot read key file: {exc.strerror}") from None
    if cfg.type == "secret":
        key: Any = data.strip()
    else:
        key = _load_public(data, source)
    return make_key(key, cfg.algorithms, kid=cfg.kid, source=source, issuer=cfg.issuer)


def _load_public(data: bytes, source: str) -> Any:
    if b"PRIVATE KEY" in data:
        raise KeyError_(f"{source}: this is a private key; give the sidecar only the public key")
    try:
        if b"CERTIFICATE" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyError_(f"{source}: not a PEM public key or certificate: {exc}") from None


def keys_from_jwks(doc: Any, cfg: JwksConfig) -> list[VerifyKey]:
    """Signature keys of a JWKS document; keys we cannot use are skipped with a log line."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    out = []
    for i, jwk in enumerate(doc["keys"]):
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        if "d" in jwk or jwk.get("kty") == "oct":
            log.warning("JWKS %s: key %s is private or symmetric; ignored", cfg.url, jwk.get("kid", i))
            continue
        kid = jwk.get("kid")
        try:
            kty = jwk.get("kty")
            alg_hint = jwk.get("alg")
            if kty == "RSA":
                key = _ALGORITHMS["RS256"].from_jwk(jwk)
            elif kty == "EC":
                key = _ALGORITHMS["ES256"].from_jwk(jwk)
            elif kty == "OKP":
                key = _ALGORITHMS["EdDSA"].from_jwk(jwk)
            else:
                continue
            algs = set(cfg.algorithms) & compatible_algorithms(key)
            if alg_hint:
                algs &= {alg_hint}
            if not algs:
                continue
            out.append(make_key(key, algs, kid=kid, source=f"jwks[{cfg.url}]", issuer=cfg.issuer))
        except Exception as exc:  # one bad key must not discard the whole set
            log.warning("JWKS %s: key %s unusable: %s", cfg.url, kid or i, exc)
    return out


class JwksSource:
    """One JWKS URL: last good keys, periodic refresh, refetch on unknown kid (rate-limited).

    An outage or a broken document keeps the last good keys: logins keep working while the IdP is down.
    """

    def __init__(self, cfg: JwksConfig) -> None:
        self.cfg = cfg
        self.url = str(cfg.url)
        self.keys: list[VerifyKey] = []
        self.fetched_at = 0.0
        self._last_attempt = -1e9
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch the set; returns True when the keys changed. Without ``force`` at most one fetch per
        ``min_refresh_interval_s`` (unknown-kid storms must not hammer the IdP)."""
        async with self._lock:
            now = time.monotonic()
            if not force and now - self._last_attempt < self.cfg.min_refresh_interval_s:
                return False
            self._last_attempt = now
            try:
                async with self._http().get(self.url, headers={"Accept": "application/json"}) as resp:
                    if resp.status != 200:
                        raise ValueError(f"HTTP {resp.status}")
                    body = await resp.read()
                keys = keys_from_jwks(orjson.loads(body), self.cfg)
                if not keys and self.keys:
                    # A set with no usable key is far likelier an IdP fault than a wish to lock
                    # everyone out: treat it like an outage.
                    raise ValueError("the document has no usable signature key")
            except Exception as exc:
                JWKS_REFRESHES.labels("error").inc()
                log.warning(
                    "JWKS %s: refresh failed (%s: %s); keeping the last %d good key(s)",
                    self.url,
                    type(exc).__name__,
                    exc,
                    len(self.keys),
                )
                return False
            JWKS_REFRESHES.labels("ok").inc()
            self.fetched_at = time.time()
            old = {(k.kid, k.algorithms) for k in self.keys}
            self.keys = keys
            changed = old != {(k.kid, k.algorithms) for k in keys}
            if changed:
                log.info("JWKS %s: %d key(s): %s", self.url, len(keys), ", ".join(str(k.kid) for k in keys))
            return changed


def static_keys(cfg: AuthConfig, state_dir: Any) -> list[VerifyKey]:
    keys = [load_static_key(k) for k in cfg.keys]
    if cfg.dev_key:
        from . import devkey

        private = devkey.load_or_create(state_dir, cfg.dev_key_algorithm)
        public = private.public_key()
        trusted = [(devkey.key_id(public), public, "dev key")]
        # Keys retired by a rotation stay trusted (by kid) until their overlap window closes.
        trusted += [
            (kid, pub, "retired dev key")
            for kid, pub, _ in devkey.retired_keys(state_dir, cfg.dev_key_algorithm)
        ]
        for kid, pub, source in trusted:
            keys.append(
                make_key(pub, [cfg.dev_key_algorithm], kid=kid, source=source, issuer=devkey.DEV_ISSUER)
            )
    return keys
