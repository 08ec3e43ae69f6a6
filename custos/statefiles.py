"""State files written safely, and the locks that serialize them across processes.

- ``atomic_file`` / ``write_atomic``: a reader sees the old content or the new one, whole, also after a
  crash: the data goes to a temporary file beside the target (same file system), is flushed (and
  fsynced unless ``sync=False``), then renamed over it (``sync_dir``: the rename itself made durable).
- ``create_once``: create a file unless it exists; of several processes racing, exactly one wins.
- ``exclusive_lock``: wait for and hold an exclusive ``flock`` for a block (read-modify-write).
- ``try_lock`` / ``release_lock``: take an exclusive ``flock`` without waiting and keep it (ownership
  of a slot, leadership among worker processes); the kernel drops it when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in ``path`` durable (best effort: not every file system can)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _temp_beside(path: Path, mode: int, sync: bool) -> Iterator[tuple[Path, BinaryIO]]:
    # A fresh name per call (O_EXCL): concurrent writers never share a temporary file, and one left
    # by a killed process with a recycled pid cannot block the next write.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            yield tmp, out
            out.flush()
            if sync:
                os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(
    path: Path, *, mode: int = 0o666, sync: bool = True, sync_dir: bool = False
) -> Iterator[BinaryIO]:
    """A binary file to fill; it replaces ``path`` when the block ends without an exception (else it
    is removed and ``path`` is untouched). ``mode`` is that of the new file (less the umask)."""
    with _temp_beside(path, mode, sync) as (tmp, out):
        yield out
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o666, sync: bool = True, sync_dir: bool = False
) -> None:
    """``data`` into ``path`` atomically (see ``atomic_file``)."""
    with atomic_file(path, mode=mode, sync=sync, sync_dir=sync_dir) as out:
        out.write(data)


def create_once(path: Path, data: bytes, *, mode: int = 0o600, sync: bool = True) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it.

    The data is complete before the file appears (hard-linked into place from a temporary file), so
    a reader never sees a partial file, and of several processes racing exactly one wins."""
    with _temp_beside(path, mode, sync) as (tmp, out):
        out.write(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block, waiting for it."""
    with open(path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def try_lock(path: Path, *, owner: bytes = b"") -> int | None:
    """An exclusive ``flock`` on ``path`` (created 0600 if missing) without waiting: the open fd that
    holds it, or None when someone else does. ``owner`` (e.g. the pid) replaces the file's content,
    for people who wonder who holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if owner:
        os.ftruncate(fd, 0)
        os.write(fd, owner)
    return fd


def release_lock(fd: int) -> None:
    """Give up a lock from ``try_lock`` and close its fd."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
