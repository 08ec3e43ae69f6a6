"""Durable JSON state files: atomic replace + fsync, and a cross-process lock for read-modify-write.

Alert state, the notification log and silences live under ``<state.dir>/alerting/``; the CLI and the
running sidecar share the silence file through ``locked_update``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError):
        # A torn or foreign file must not stop alerting; keep it for a post-mortem and start clean.
        with contextlib.suppress(OSError):
            path.replace(path.with_suffix(path.suffix + ".corrupt"))
        return default


def write_json(path: Path, data: Any) -> None:
    """Atomic: readers see the old or the new file, never half of one, also after a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def locked_update(path: Path, default: Any, change: Callable[[Any], Any]) -> Any:
    """Read, change and write ``path`` under an exclusive lock; returns ``change``'s result."""
    with file_lock(path):
        data = read_json(path, default)
        result = change(data)
        write_json(path, data)
        return result


class Leader:
    """Only one process per state dir runs the alert engine (uvicorn workers would page N times)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
