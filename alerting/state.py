"""Durable JSON state files: atomic replace + fsync, and a cross-process lock for read-modify-write.

Alert state, the notification log and silences live under ``<state.dir>/alerting/``; the CLI and the
running sidecar share the silence file through ``locked_update``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from custos.statefiles import exclusive_lock, release_lock, try_lock, write_atomic


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
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    write_atomic(path, text.encode("utf-8"), sync_dir=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(path.name + ".lock")):
        yield


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
        self._fd = try_lock(self.path, owner=str(os.getpid()).encode())
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            release_lock(self._fd)
            self._fd = None
