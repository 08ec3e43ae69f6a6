"""Secret files the sidecar generates on first run (dev JWT key, audit signing key, redaction HMAC key),
and files it renews in place (development TLS certificates)."""

from __future__ import annotations

from pathlib import Path

from custos.statefiles import create_once, write_atomic


def create_secret_file(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` with mode 0600, unless it exists.

    Several worker processes may start at once: the data goes to a private temporary file, is fsynced,
    and is hard-linked into place, so no reader ever sees a partial file and exactly one writer wins.
    Returns True when this call created the file, False when another process already had.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return create_once(path, data, mode=0o600)


def replace_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` (new or renewed) atomically: a reader sees the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=mode)
