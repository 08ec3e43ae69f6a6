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

from custos.keyfile import create_secret_file

from .canonical import canonical, utc_iso

log = logging.getLogger("custos.audit")


class KeyError_(Exception):
    """The key file cannot be read or is not an Ed25519 key (message names the file)."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


DEFAULT_KEY = ("audit", "signing.key")  # <state.dir>/audit/signing.key: the only key ever generated


class MissingKeyError(KeyError_):
    """A configured signing key is not there: never replaced by a new one (a new key would sign a
    trail that no published public key verifies, and hide that the real key is gone)."""


def is_default_key_path(path: Path) -> bool:
    return tuple(Path(path).parts[-2:]) == DEFAULT_KEY


def missing_key_message(path: Path) -> str:
    return (
        f"audit.signing_key {path}: no such file; a configured signing key is never replaced by a new "
        "one: restore the key file (or its Secret), or remove audit.signing_key to use "
        "<state.dir>/audit/signing.key (made on first start)"
    )


def check_signing_key(path: Path, *, configured: bool) -> None:
    """Startup check, before anything is served: a configured key must exist and load (``KeyError_``,
    one line). The default key may be absent: it is made at first start."""
    path = Path(path).expanduser()
    if not path.exists():
        if configured:
            raise MissingKeyError(missing_key_message(path))
        return
    _read_private(path)


def load_or_create_signing_key(path: Path, *, create: bool | None = None) -> Ed25519PrivateKey:
    """Read the PEM private key at ``path``; make one (mode 0600, plus ``.pub`` next to it) if absent
    and ``create`` (default: only at the default location ``<state.dir>/audit/signing.key``; a key
    configured elsewhere that is missing raises ``MissingKeyError``).

    Several workers may start at once: the new key is written to a temporary file and hard-linked
    into place, so exactly one wins and the others read the winner's key.
    """
    if create is None:
        create = is_default_key_path(path)
    if not path.exists() and not create:
        raise MissingKeyError(missing_key_message(path))
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
    key = _read_private(path)
    pub = path.with_suffix(".pub")
    if not pub.exists():
        pub.write_bytes(public_pem(key.public_key()))
    return key


def _read_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read the audit signing key: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        why = str(exc).split(". See https://", 1)[0]  # cryptography appends a FAQ link
        raise KeyError_(f"{path}: cannot read the audit signing key: {why}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path}: the audit signing key must be an Ed25519 key, got {type(key).__name__}")
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
    reason: str | None = None,
) -> dict[str, Any]:
    """A signed note "records ``first``-``last`` of chain C (the last with hash H) were pruned from the
    spool after Elasticsearch acknowledged them" (or, with ``reason``, by the local retention policy:
    room, age, size). Kept with the checkpoints; the verifier accepts a
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
    if reason:
        note["audit"]["reason"] = reason
    note["signature"] = base64.b64encode(key.sign(_signed_part(note))).decode()
    return note


class Keyring:
    """The public keys a trail may be signed with, by key id: the signing key in force and those it
    replaced (``custos keys rotate audit`` keeps each retired public key in ``<key dir>/keyring/``).
    A checkpoint is checked with the key its ``audit.key_id`` names; a key id not in the ring fails."""

    def __init__(self, keys: list[Ed25519PublicKey]) -> None:
        self.keys = {key_id(k): k for k in keys}

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    def for_checkpoint(self, cp: dict[str, Any]) -> Ed25519PublicKey | None:
        audit = cp.get("audit") if isinstance(cp, dict) else None
        named = audit.get("key_id") if isinstance(audit, dict) else None
        if isinstance(named, str) and named:
            return self.keys.get(named)
        # Checkpoints from before key ids were written: only a ring of one key can vouch for them.
        return next(iter(self.keys.values())) if len(self.keys) == 1 else None


def keyring_dir(key_path: Path) -> Path:
    return Path(key_path).expanduser().parent / "keyring"


def load_keyring(public_key_paths: list[Path], key_path: Path | None = None) -> Keyring:
    """The given public keys, plus (with ``key_path``) the retired keys kept beside the signing key."""
    paths = list(public_key_paths)
    if key_path is not None and keyring_dir(key_path).is_dir():
        paths += sorted(keyring_dir(key_path).glob("*.pub"))
    return Keyring([load_public_key(p) for p in paths])


def rotate_signing_key(path: Path, *, older_than_s: float | None = None) -> tuple[str, str] | None:
    """Retire the signing key at ``path``: its public key goes to the keyring beside it (so earlier
    checkpoints still verify) and a new key takes its place, atomically. Running sidecars sign their
    next checkpoints with the new key. Returns (old, new) key ids; None when ``older_than_s`` is given
    and the key in place is younger (another process rotated it first). Serialized by a lock file."""
    from custos.keyfile import replace_file
    from custos.statefiles import exclusive_lock

    path = Path(path).expanduser()
    with exclusive_lock(path.parent / ".rotate.lock"):
        if older_than_s is not None and time.time() - path.stat().st_mtime < older_than_s:
            return None
        return _rotate_locked(path, replace_file)


def _rotate_locked(path: Path, replace_file: Any) -> tuple[str, str]:
    old = _read_private(path)
    old_kid = key_id(old.public_key())
    ring = keyring_dir(path)
    ring.mkdir(parents=True, exist_ok=True)
    replace_file(ring / f"{old_kid}.pub", public_pem(old.public_key()), 0o644)
    new = Ed25519PrivateKey.generate()
    pem = new.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    replace_file(path, pem, 0o600)
    replace_file(path.with_suffix(".pub"), public_pem(new.public_key()), 0o644)
    return old_kid, key_id(new.public_key())


def checkpoint_ok(public: Ed25519PublicKey | Keyring, cp: dict[str, Any]) -> bool:
    key = public.for_checkpoint(cp) if isinstance(public, Keyring) else public
    if key is None:
        return False  # signed by a key the ring does not hold (unknown or removed)
    try:
        signature = base64.b64decode(cp["signature"], validate=True)
        key.verify(signature, _signed_part(cp))
    except (KeyError, TypeError, ValueError, InvalidSignature):
        return False
    return True
