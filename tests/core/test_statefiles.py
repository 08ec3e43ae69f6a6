"""custos.statefiles: atomic replacement, create-once and flock locks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from custos.statefiles import atomic_file, create_once, exclusive_lock, release_lock, try_lock, write_atomic


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_write_atomic_replaces_the_whole_file_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    write_atomic(target, b"new", mode=0o600, sync_dir=True)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as out:
        out.write(b"half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_create_once_has_one_winner(tmp_path: Path) -> None:
    target = tmp_path / "key"
    assert create_once(target, b"first")
    assert not create_once(target, b"second")
    assert target.read_bytes() == b"first" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_try_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    fd = try_lock(lock, owner=f"{os.getpid()}\n".encode())
    assert fd is not None and lock.read_text() == f"{os.getpid()}\n"
    assert try_lock(lock) is None  # another open file description: refused, not waited for
    release_lock(fd)
    again = try_lock(lock)
    assert again is not None
    release_lock(again)


def test_exclusive_lock_is_held_for_the_block(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with exclusive_lock(lock):
        assert try_lock(lock) is None
    fd = try_lock(lock)
    assert fd is not None
    release_lock(fd)
