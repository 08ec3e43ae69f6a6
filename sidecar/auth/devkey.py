"""The local dev signing key: generated on first run in the state directory, trusted by default.

It serves the embedded single-machine setup: ``custos token`` signs with it and ``custos serve``
trusts it, so there is a working login without an identity provider. Production setups turn it off
(``auth.dev_key: false``) and trust their IdP's JWKS instead.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..keyfile import create_secret_file

DEV_ISSUER = "custos-dev"
KEY_DIR = "keys"

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def dev_key_path(state_dir: Path, algorithm: str) -> Path:
    return Path(state_dir).expanduser() / KEY_DIR / f"dev-signing-key-{algorithm.lower()}.pem"


def _generate(algorithm: str) -> PrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported dev key algorithm {algorithm}")


def load_or_create(state_dir: Path, algorithm: str = "EdDSA") -> PrivateKey:
    """Read the dev key, creating it (mode 0600) on first use. Safe when several processes race:
    the key is written to a private temporary file and linked into place, so a reader never sees a
    partial file and exactly one key wins."""
    path = dev_key_path(state_dir, algorithm)
    if not path.exists():
        key = _generate(algorithm)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        create_secret_file(path, pem)  # when another process won the race, its key is used
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path}: the dev signing key must not be readable by others (mode {mode:o})")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an Ed25519 or EC private key")
    return key


def key_id(public_key: Any) -> str:
    """A short, stable kid: the SHA-256 of the DER public key (like an RFC 7638 thumbprint)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "dev-" + base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:12]).decode().rstrip("=")


def mint_token(
    private_key: Any,
    *,
    subject: str,
    roles: list[str],
    ttl_s: int = 3600,
    algorithm: str = "EdDSA",
    issuer: str | None = DEV_ISSUER,
    audience: str | None = None,
    kid: str | None = None,
    roles_claim: str = "roles",
    extra: dict[str, Any] | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    _set_path(claims, roles_claim, list(roles))
    if extra:
        claims.update(extra)
    if kid is None and hasattr(private_key, "public_key"):
        kid = key_id(private_key.public_key())
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, private_key, algorithm=algorithm, headers=headers)


def _set_path(claims: dict[str, Any], dotted: str, value: Any) -> None:
    node = claims
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def public_jwk(public_key: Any, kid: str, algorithm: str) -> dict[str, Any]:
    """The JWK of a public key (for publishing the dev key as a JWKS, and for tests)."""
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm

    if isinstance(public_key, ed25519.Ed25519PublicKey):
        jwk = orjson.loads(OKPAlgorithm.to_jwk(public_key))
    else:
        jwk = orjson.loads(ECAlgorithm.to_jwk(public_key))
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return jwk
