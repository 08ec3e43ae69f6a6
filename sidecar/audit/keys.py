"""Ed25519 signing key and signed chain checkpoints.

A checkpoint states "chain C had record ``seq`` with hash H at time T", signed with the sidecar's
Ed25519 key. Anyone with the public key can then detect a rewritten chain (the recomputed hash at
``seq`` differs) and a truncated one (records up to ``seq`` are missing).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import stat
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..keyfile import create_secret_file
from .canonical import canonical, utc_iso

log = logging.getLogger("custos.audit")


class KeyError_(Exception):
    """The key file cannot be read or is not an Ed25519 key (message names the file)."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read the PEM private key at ``path``; make one (mode 0600, plus ``.pub`` next to it) if absent.

    Several workers may start at once: the new key is written to a temporary file and hard-linked
    into place, so exactly one wins and the others read the winner's key.
    """
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if create_secret_file(path, pem):
            pub = path.with_suffix(".pub")
            pub.write_bytes(public_pem(key.public_key()))
            log.warning("audit: generated a new Ed25519 signing key at %s (public key: %s)", path, pub)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "audit: signing key %s is readable by group/others (mode %o); use chmod 600", path, mode & 0o777
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise KeyError_(f"{path}: cannot read the audit signing key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path}: the audit signing key must be an Ed25519 key, got {type(key).__name__}")
    pub = path.with_suffix(".pub")
    if not pub.exists():
        pub.write_bytes(public_pem(key.public_key()))
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read the public key: {exc.strerror}") from None
    try:
        if b"PRIVATE KEY" in data:
            key: Any = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"{path}: not a PEM key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def _signed_part(cp: dict[str, Any]) -> bytes:
    return canonical({k: v for k, v in cp.items() if k != "signature"})


def make_checkpoint(
    key: Ed25519PrivateKey, kid: str, chain_id: str, seq: int, last_hash: str, now: float | None = None
) -> dict[str, Any]:
    cp: dict[str, Any] = {
        "@timestamp": utc_iso(time.time() if now is None else now),
        "audit": {"chain_id": chain_id, "seq": seq, "hash": last_hash, "key_id": kid, "type": "checkpoint"},
    }
    cp["signature"] = base64.b64encode(key.sign(_signed_part(cp))).decode()
    return cp


def make_prune_note(
    key: Ed25519PrivateKey,
    kid: str,
    chain_id: str,
    first: int,
    last: int,
    last_hash: str,
    now: float | None = None,
) -> dict[str, Any]:
    """A signed note "records ``first``-``last`` of chain C (the last with hash H) were pruned from the
    spool after Elasticsearch acknowledged them". Kept with the checkpoints; the verifier accepts a
    chain that starts after seq 1 only when such notes cover everything before its first record."""
    note: dict[str, Any] = {
        "@timestamp": utc_iso(time.time() if now is None else now),
        "audit": {
            "chain_id": chain_id,
            "type": "prune",
            "from": first,
            "seq": last,
            "hash": last_hash,
            "key_id": kid,
        },
    }
    note["signature"] = base64.b64encode(key.sign(_signed_part(note))).decode()
    return note


def checkpoint_ok(public: Ed25519PublicKey, cp: dict[str, Any]) -> bool:
    try:
        signature = base64.b64decode(cp["signature"], validate=True)
        public.verify(signature, _signed_part(cp))
    except (KeyError, TypeError, ValueError, InvalidSignature):
        return False
    return True
