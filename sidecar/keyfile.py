"""Secret files the sidecar generates on first run (dev JWT key, audit signing key, redaction HMAC key),
and files it renews in place (development TLS certificates)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def _write_private_temp(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a fresh, fsynced temporary file beside ``path`` (same file system, so it can be
    linked or renamed into place atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def create_secret_file(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` with mode 0600, unless it exists.

    Several worker processes may start at once: the data goes to a private temporary file, is fsynced,
    and is hard-linked into place, so no reader ever sees a partial file and exactly one writer wins.
    Returns True when this call created the file, False when another process already had.
    """
    tmp = _write_private_temp(path, data, 0o600)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` (new or renewed) atomically: a reader sees the old file or the new one, whole."""
    tmp = _write_private_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
