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

from custos.keyfile import create_secret_file

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


# -- rotation -------------------------------------------------------------------------------------
# A rotation retires the current key: its public half goes to ``keys/dev-retired/<kid>.json`` with the
# time until which tokens it signed are still accepted (the overlap window), and a new key takes its
# place. Verifiers trust the current key and every retired key still inside its window.
RETIRED_DIR = "dev-retired"


def _retired_dir(state_dir: Path) -> Path:
    return Path(state_dir).expanduser() / KEY_DIR / RETIRED_DIR


def rotate(
    state_dir: Path,
    algorithm: str = "EdDSA",
    *,
    overlap_s: float,
    now: float | None = None,
    older_than_s: float | None = None,
) -> tuple[str, str] | None:
    """Retire the current dev key (accepted for ``overlap_s`` more) and make a new one. Returns the
    (old, new) key ids, or None when ``older_than_s`` is given and the key in place is younger (another
    process rotated first). Serialized across processes by a lock file."""
    from custos.keyfile import replace_file
    from custos.statefiles import exclusive_lock

    now = time.time() if now is None else now
    path = dev_key_path(state_dir, algorithm)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with exclusive_lock(path.parent / ".rotate.lock"):
        age = key_age_s(state_dir, algorithm, now)
        if older_than_s is not None and age is not None and age < older_than_s:
            return None
        old = load_or_create(state_dir, algorithm)
        old_kid = key_id(old.public_key())
        record = {
            "kid": old_kid,
            "algorithm": algorithm,
            "public_pem": old.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode(),
            "retired_at": now,
            "accept_until": now + overlap_s,
        }
        replace_file(_retired_dir(state_dir) / f"{old_kid}.json", orjson.dumps(record), 0o644)
        new = _generate(algorithm)
        pem = new.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        replace_file(path, pem, 0o600)
        prune_retired(state_dir, now)
    return old_kid, key_id(new.public_key())


def retired_keys(state_dir: Path, algorithm: str, now: float | None = None) -> list[tuple[str, Any, float]]:
    """(kid, public key, accept_until) of the retired keys whose overlap window is still open."""
    now = time.time() if now is None else now
    out = []
    directory = _retired_dir(state_dir)
    if not directory.is_dir():
        return out
    for entry in sorted(directory.glob("*.json")):
        try:
            record = orjson.loads(entry.read_bytes())
            if record.get("algorithm") != algorithm or float(record["accept_until"]) <= now:
                continue
            public = serialization.load_pem_public_key(record["public_pem"].encode())
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged record trusts nothing
        out.append((str(record["kid"]), public, float(record["accept_until"])))
    return out


def prune_retired(state_dir: Path, now: float) -> None:
    """Remove retired keys whose window has closed: their tokens are no longer accepted anyway."""
    directory = _retired_dir(state_dir)
    for entry in directory.glob("*.json") if directory.is_dir() else ():
        try:
            if float(orjson.loads(entry.read_bytes())["accept_until"]) <= now:
                entry.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            continue


def key_age_s(state_dir: Path, algorithm: str, now: float | None = None) -> float | None:
    """How long the current dev key has been in use (None when there is none yet)."""
    try:
        mtime = dev_key_path(state_dir, algorithm).stat().st_mtime
    except OSError:
        return None
    return (time.time() if now is None else now) - mtime


def keys_stamp(state_dir: Path, algorithm: str) -> tuple[Any, ...]:
    """Changes whenever the current key or the set of retired keys changes (for reloading verifiers)."""
    stamps: list[Any] = []
    for path in (dev_key_path(state_dir, algorithm), _retired_dir(state_dir)):
        try:
            st = path.stat()
            stamps.append((st.st_mtime_ns, st.st_ino, st.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


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
