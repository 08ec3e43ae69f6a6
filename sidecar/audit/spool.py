"""The local write-ahead spool: every record is appended here before anything ships it.

Layout under the spool directory (one sub-directory per chain, i.e. per worker process)::

    instance                    id of this installation (made once), prefix of every chain id
    <chain_id>/lock             flock held by the process that owns (writes) the chain
    <chain_id>/seg-<first seq>.jsonl   records, one canonical JSON line each, in chain order
                                (sealed ones compressed: .jsonl.gz; see compression.py)
    <chain_id>/checkpoints.jsonl       signed checkpoints
    <chain_id>/shipped.json     how far Elasticsearch has acknowledged (records and checkpoints)
    <chain_id>/dead-letter.jsonl       records Elasticsearch rejected for good, with the reason
    <chain_id>/dropped.jsonl    ranges lost: dropped by when_full=drop_oldest, or never written (write
                                error, disk full, over the cap) -- the verifier reports them
    <chain_id>/reserve          64 KiB kept free for those notes and a checkpoint on a full disk
    <chain_id>/clean-stop       written at a clean shutdown (last seq and hash), removed at startup:
                                without it the next run writes a restart record into the chain

Worker processes each take the first free chain slot ``<instance>-w<N>`` (an exclusive ``flock``),
so every process has its own chain and file; a restarted process continues the chain of the slot it
gets, after cutting a torn last line left by ``kill -9``. Writes happen in one thread per process:
records are queued from the event loop (no I/O there), written in batches with ``os.write`` (so a
killed process loses nothing the kernel accepted) and fsynced per the ``fsync`` policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from custos import statefiles

from . import compression, metrics
from .canonical import GENESIS
from .retention import ROOM, Policy

log = logging.getLogger("custos.audit")

_SEG_RE = re.compile(r"^seg-(\d{12})\.jsonl(?:\.gz)?$")
CHECKPOINTS = "checkpoints.jsonl"
SHIPPED = "shipped.json"
DEAD_LETTER = "dead-letter.jsonl"
DROPPED = "dropped.jsonl"
RESERVE = "reserve"
RESERVE_BYTES = 64 * 1024
CLEAN_STOP = "clean-stop"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def segment_name(first_seq: int) -> str:
    return f"seg-{first_seq:012d}.jsonl"


def list_segments(chain_dir: Path) -> list[tuple[int, Path]]:
    found: dict[int, Path] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(chain_dir):
            m = _SEG_RE.match(entry.name)
            if m:
                # Both forms exist only between compressing a sealed segment and removing its plain
                # file: both are complete, the compressed one is kept.
                first = int(m.group(1))
                if first not in found or compression.is_compressed(Path(entry.name)):
                    found[first] = Path(entry.path)
    return sorted(found.items())


def is_chain_dir(path: Path) -> bool:
    return path.is_dir() and (
        bool(list_segments(path)) or (path / CHECKPOINTS).exists() or (path / "lock").exists()
    )


def chain_dirs(spool_dir: Path) -> list[Path]:
    if not spool_dir.is_dir():
        return []
    return sorted(p for p in spool_dir.iterdir() if is_chain_dir(p))


def instance_id(spool_dir: Path) -> str:
    """A stable id per installation; chain ids start with it so chains of two sidecars never clash."""
    path = spool_dir / "instance"
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
    spool_dir.mkdir(parents=True, exist_ok=True)
    host = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:40].strip("-") or "host"
    value = f"{host}-{secrets.token_hex(4)}"
    # First writer wins when several workers start at once.
    if not statefiles.create_once(path, f"{value}\n".encode(), mode=0o666, sync=False):
        value = path.read_text().strip()
    return value


def try_lock(chain_dir: Path) -> int | None:
    """An exclusive non-blocking flock on the chain's lock file: the fd, or None if someone holds it."""
    chain_dir.mkdir(parents=True, exist_ok=True)
    return statefiles.try_lock(chain_dir / "lock", owner=f"{os.getpid()}\n".encode())


unlock = statefiles.release_lock


def claim_chain(
    spool_dir: Path, max_slots: int = 1024, skip: set[str] | None = None
) -> tuple[str, Path, int]:
    """The first free chain slot of this installation: (chain id, directory, lock fd)."""
    inst = instance_id(spool_dir)
    for slot in range(max_slots):
        chain_id = f"{inst}-w{slot}"
        if skip and chain_id in skip:
            continue
        fd = try_lock(spool_dir / chain_id)
        if fd is not None:
            return chain_id, spool_dir / chain_id, fd
    raise RuntimeError(f"no free audit chain slot under {spool_dir} ({max_slots} in use)")


def iter_lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """Complete lines of a file from ``offset``: (offset after the line, line without newline).
    A torn last line (no newline yet, or left by a killed writer) is not returned. A compressed
    segment is read transparently (offsets are those of the uncompressed lines)."""
    with compression.open_segment(path) as f:
        f.seek(offset)
        pos = offset
        for line in f:
            if not line.endswith(b"\n"):
                return
            pos += len(line)
            yield pos, line[:-1]


def read_shipped(chain_dir: Path) -> dict[str, Any]:
    try:
        state = orjson.loads((chain_dir / SHIPPED).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        state = {}
    return {
        "seq": int(state.get("seq", 0)),
        "segment": int(state.get("segment", 0)),
        "offset": int(state.get("offset", 0)),
        "checkpoints_offset": int(state.get("checkpoints_offset", 0)),
    }


def write_shipped(chain_dir: Path, state: dict[str, Any]) -> None:
    statefiles.write_atomic(chain_dir / SHIPPED, orjson.dumps(state))


def recover_head(chain_dir: Path) -> tuple[int, str]:
    """(last seq, last hash) of the chain on disk, cutting a torn last line first."""
    for _first, path in reversed(list_segments(chain_dir)):
        if compression.is_compressed(path):  # sealed: complete lines only
            tail_line = b""
            for _pos, tail_line in iter_lines(path):  # noqa: B007
                pass
            if not tail_line:
                continue
            doc = orjson.loads(tail_line)
            return int(doc["audit"]["seq"]), str(doc["audit"]["hash"])
        size = path.stat().st_size
        if size == 0:
            continue
        with open(path, "r+b") as f:
            # Read the tail backwards until we hold the last complete line.
            chunk = 1 << 16
            tail = b""
            pos = size
            while pos > 0:
                step = min(chunk, pos)
                pos -= step
                f.seek(pos)
                tail = f.read(step) + tail
                if tail.count(b"\n") >= 2 or (pos == 0 and b"\n" in tail):
                    break
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n") + 1
                new_size = pos + cut
                log.warning("audit: cutting a torn last record (%d bytes) in %s", size - new_size, path)
                f.truncate(new_size)
                tail = tail[:cut]
            lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        if not lines or not lines[-1]:
            continue
        doc = orjson.loads(lines[-1])
        return int(doc["audit"]["seq"]), str(doc["audit"]["hash"])
    # No record on disk: fall back to the last checkpoint (all segments pruned is not possible:
    # the current segment is never pruned, but a fresh copy of only checkpoints may exist).
    last = None
    cp_path = chain_dir / CHECKPOINTS
    if cp_path.exists():
        for _pos, line in iter_lines(cp_path):
            last = line
    if last:
        cp = orjson.loads(last)["audit"]
        return int(cp["seq"]), str(cp["hash"])
    return 0, GENESIS


def last_record_hash(path: Path) -> str:
    """``audit.hash`` of the last complete record in a segment file ('' if none)."""
    if compression.is_compressed(path) or not path.exists():
        tail_line = b""
        for _pos, tail_line in iter_lines(path):  # noqa: B007
            pass
        return str(orjson.loads(tail_line)["audit"]["hash"]) if tail_line else ""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        pos, tail = size, b""
        while pos > 0 and tail.count(b"\n") < 2:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
    lines = [x for x in tail.split(b"\n") if x]
    if not tail.endswith(b"\n") and lines:
        lines.pop()  # a torn last line
    return str(orjson.loads(lines[-1])["audit"]["hash"]) if lines else ""


def record_hash_at(path: Path, seq: int) -> str:
    """``audit.hash`` of the record with ``seq`` in a segment file ('' if it is not there)."""
    with contextlib.suppress(FileNotFoundError):
        for _pos, line in iter_lines(path):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                audit = orjson.loads(line)["audit"]
                if audit["seq"] == seq:
                    return str(audit["hash"])
    return ""


def write_clean_stop(chain_dir: Path, seq: int, last_hash: str) -> None:
    """The chain was closed cleanly at ``seq``: every record sealed is on disk (fsynced)."""
    marker = orjson.dumps({"seq": seq, "hash": last_hash, "at": time.time()})
    statefiles.write_atomic(chain_dir / CLEAN_STOP, marker, sync_dir=True)


def take_clean_stop(chain_dir: Path) -> dict[str, Any] | None:
    """The clean-shutdown marker of the previous run (None if it did not stop cleanly); removed, so
    that a run that dies is never taken for a clean one."""
    path = chain_dir / CLEAN_STOP
    try:
        marker = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError:
        marker = None
    path.unlink(missing_ok=True)
    compression.fsync_dir(chain_dir)
    return marker if isinstance(marker, dict) else None


def last_checkpoint_seq(chain_dir: Path) -> int:
    last = 0
    cp_path = chain_dir / CHECKPOINTS
    if cp_path.exists():
        for _pos, line in iter_lines(cp_path):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                last = int(orjson.loads(line)["audit"]["seq"])
    return last


@dataclass(slots=True)
class Segment:
    first_seq: int
    path: Path
    size: int  # on disk (compressed once sealed, with compression on)
    last_seq: int  # 0 when empty
    mtime: float = 0.0  # time of its newest record (retention by age)
    archived: bool = False  # copied to archive_dir


class SpoolError(Exception):
    pass


class SpoolFull(SpoolError):
    """Records that would have taken the spool past ``max_bytes`` (they were not written)."""


class SpoolWriter:
    """The writer thread of one chain. ``append`` is called from the event loop and never blocks."""

    def __init__(
        self,
        chain_dir: Path,
        *,
        head_seq: int,
        segment_bytes: int,
        max_bytes: int,
        when_full: str,
        fsync: str,
        fsync_interval_s: float,
        policy: Policy | None = None,
        compress: bool = False,
        archive: Any = None,
    ) -> None:
        self.chain_dir = chain_dir
        self.policy = policy or Policy()
        self.compress = compress
        self.archive = archive  # an archive.Archive, or None
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.fsync_mode = fsync
        self.fsync_interval_s = fsync_interval_s
        self.acked_seq = 0  # set by the shipper: records up to here are in Elasticsearch
        self.shipping = False  # without a shipper nothing is ever prunable
        self.segments: list[Segment] = []
        _clean_partial_compression(chain_dir)
        for first, path in list_segments(chain_dir):
            st = path.stat()
            self.segments.append(Segment(first, path, st.st_size, 0, mtime=st.st_mtime))
        for i, seg in enumerate(self.segments[:-1]):
            seg.last_seq = self.segments[i + 1].first_seq - 1
        if self.segments:
            self.segments[-1].last_seq = head_seq
        self.written_seq = head_seq
        if archive is not None:
            for seg in self.segments[:-1]:
                seg.archived = archive.has(seg.path)
        # Sealed segments are prunable only under a signed checkpoint; the writer signs one over
        # each segment it seals (``sign_checkpoint``), the trail signs the others.
        self.covered_seq = last_checkpoint_seq(chain_dir)
        self.sign_checkpoint: Any = None  # (seq, hash) -> a signed checkpoint line (writer thread)
        self.disk_bytes = sum(s.size for s in self.segments)
        self._seg_lock = threading.RLock()  # segments and disk_bytes: writer and sealer threads
        self._kick = False  # the sealer compressed or archived something: look at retention again
        self._next_retention = 0.0
        self._prune_logged = 0.0
        self._pruned_since_log = 0
        self._seal_wake = threading.Event()
        self._seal_stop = False
        self._seal_error_logged = 0.0
        self._sealer = threading.Thread(
            target=self._seal_loop, name=f"audit-sealer-{chain_dir.name}", daemon=True
        )
        self.queued_bytes = 0
        self.prunable_bytes = 0
        self.error: BaseException | None = None  # the last write error; None once a write succeeds
        self.error_at = 0.0
        self.reserved_bytes = 0  # event loop side: records admitted but not yet queued
        self.lost = 0  # records that never reached the spool (counted, logged, noted)
        self.on_loss: Any = None  # called in the event loop after a loss (the trail checkpoints)
        # (first, last, hash of last) -> a signed pruning note line, made in the writer thread
        self.sign_prune: Any = None
        self._notes: list[dict[str, Any]] = []  # loss notes not yet on disk
        self._fd: int | None = None
        self._good_size = 0
        self._cp_fd: int | None = None
        self._items: list[tuple[int, bytes]] = []  # (seq or 0 for a checkpoint line, line)
        self._future: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._dirty = False
        self._last_fsync = time.monotonic()
        self.on_written: list[Any] = []  # callbacks (in the writer thread) after each batch
        self._thread = threading.Thread(target=self._run, name=f"audit-writer-{chain_dir.name}", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._update_prunable()
        self._thread.start()
        if self.compress or self.archive is not None:
            self._seal_wake.set()  # segments sealed by an earlier run
            self._sealer.start()

    # -- event loop side ------------------------------------------------------------------------
    def append(self, seq: int, line: bytes, wait: bool = False) -> asyncio.Future[None] | None:
        """Queue one line (seq 0: a checkpoint). With ``wait``, a future done once it is written
        (and fsynced when fsync=always); one future is shared by every line of a batch."""
        with self._cond:
            self._items.append((seq, line))
            self.queued_bytes += len(line)
            fut = None
            if wait:
                fut = self._future
                if fut is None:
                    fut = self._future = self._loop.create_future()  # type: ignore[union-attr]
            if len(self._items) == 1:
                self._cond.notify()
        return fut

    def used_bytes(self) -> int:
        return self.disk_bytes + self.queued_bytes

    def is_full(self) -> bool:
        """No room for one more record under ``max_bytes`` (after what shipping made prunable),
        counting the records queued and those admitted but not yet queued (``reserve``)."""
        reserve = min(64 * 1024, self.max_bytes // 16)
        return self.used_bytes() + self.reserved_bytes - self.prunable_bytes + reserve > self.max_bytes

    def reserve(self, nbytes: int) -> None:
        """Room for the record of a request just admitted (event loop only); ``release`` once queued."""
        self.reserved_bytes += nbytes

    def release(self, nbytes: int) -> None:
        self.reserved_bytes = max(0, self.reserved_bytes - nbytes)

    def failing(self) -> bool:
        """The last write failed (disk full, I/O error); cleared by the next write that succeeds."""
        return self.error is not None

    def error_age(self) -> float:
        return time.monotonic() - self.error_at

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        self._seal_stop = True
        self._seal_wake.set()
        if self._sealer.is_alive():
            self._sealer.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- writer thread --------------------------------------------------------------------------
    def _run(self) -> None:
        self._make_reserve()
        while True:
            with self._cond:
                while not self._items and not self._stopping and not self._retention_due():
                    if self._dirty and self.fsync_mode == "interval":
                        remaining = self.fsync_interval_s - (time.monotonic() - self._last_fsync)
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                    else:
                        self._cond.wait(RETENTION_CHECK_S if self.policy.periodic else None)
                items, self._items = self._items, []
                fut, self._future = self._future, None
                stopping = self._stopping
            err: BaseException | None = None
            records = [(seq, line) for seq, line in items if seq]
            cps = [line for seq, line in items if not seq]
            try:
                if records:
                    err = self._write(records)
                if self._dirty and (
                    self.fsync_mode == "always"
                    or stopping
                    or (
                        self.fsync_mode == "interval"
                        and time.monotonic() - self._last_fsync >= self.fsync_interval_s
                    )
                ):
                    self._sync()
                if records and err is None and self.error is not None:
                    log.warning("audit: the spool %s can be written again", self.chain_dir)
                    self.error = None
                    self._make_reserve()
            except Exception as exc:  # disk full, I/O error: reported, never silent
                err = exc
                self.error = exc
                self.error_at = time.monotonic()
                metrics.WRITE_ERRORS.inc()
                log.error("audit: cannot write to the spool %s: %s", self.chain_dir, exc)
                self._undo(records, exc)
            finally:
                with self._cond:
                    self.queued_bytes -= sum(len(line) for _s, line in items)
            # Checkpoints and loss notes go to their own files, also after a failed record write
            # (the reserve file gives them room on a full disk).
            try:
                if cps:
                    self._with_reserve(functools.partial(self._write_checkpoints, cps))
                    if self.fsync_mode == "always" or stopping:
                        self._sync()
                self._flush_notes()
            except Exception as exc:
                log.error("audit: cannot write checkpoints or loss notes in %s: %s", self.chain_dir, exc)
                if err is None and cps:
                    err = exc
            try:
                self._apply_retention()
            except Exception as exc:  # retention never stops the writer; it tries again later
                log.error("audit: retention in %s failed: %s", self.chain_dir, exc)
            if fut is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(_settle, fut, err)
            if items:
                for cb in self.on_written:
                    cb()
            if stopping and not self._items:
                self._close()
                return

    def _write(self, records: list[tuple[int, bytes]]) -> BaseException | None:
        """Append records to the current segment (rolling over as needed). A record that would take
        the spool past ``max_bytes`` after making room is not written: it and the rest of the batch
        are lost (counted and noted) and a ``SpoolFull`` is returned for whoever waits on the batch."""
        run: list[bytes] = []
        run_bytes = 0
        over: list[int] = []
        for i, (seq, line) in enumerate(records):
            if self.disk_bytes + run_bytes + len(line) > self.max_bytes:
                self._flush_run(run)
                run, run_bytes = [], 0
                self._make_room(len(line))
                if self.disk_bytes + len(line) > self.max_bytes:
                    over = [s for s, _line in records[i:]]
                    break
            cur = self.segments[-1] if self.segments else None
            if self._fd is None or cur is None or cur.size >= self.segment_bytes:
                self._flush_run(run)
                run, run_bytes = [], 0
                self._open_segment(seq, rotate=cur is not None and cur.size >= self.segment_bytes)
                cur = self.segments[-1]
            run.append(line)
            run_bytes += len(line)
            cur.size += len(line)
            cur.last_seq = seq
        self._flush_run(run)
        metrics.SPOOL_BYTES.set(self.disk_bytes)
        self._dirty = True
        self._update_prunable()
        if over:
            why = f"spool full (max_bytes={self.max_bytes})"
            self._lose(over, why)
            return SpoolFull(f"the audit spool is full ({self.disk_bytes} of {self.max_bytes} bytes)")
        return None

    def _write_checkpoints(self, cps: list[bytes]) -> None:
        if self._cp_fd is None:
            self._cp_fd = os.open(self.chain_dir / CHECKPOINTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _write_all(self._cp_fd, b"".join(cps))
        self._dirty = True
        for line in cps:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                audit = orjson.loads(line)["audit"]
                if audit.get("type") == "checkpoint":
                    self.covered_seq = max(self.covered_seq, int(audit["seq"]))

    def _undo(self, records: list[tuple[int, bytes]], exc: BaseException) -> None:
        """After a failed write: cut a half-written line so later lines start on a line boundary,
        and count, log and note the lost records (the verifier reports them as missing)."""
        seqs = [s for s, _line in records if s > self.written_seq]
        with contextlib.suppress(Exception):
            if self._fd is not None and self.segments:
                os.ftruncate(self._fd, self._good_size)
                self.segments[-1].size = self._good_size
                self.segments[-1].last_seq = self.written_seq
        if seqs:
            self._lose(seqs, "write error", detail=str(exc))

    def _lose(self, seqs: list[int], reason: str, detail: str = "") -> None:
        """Records sealed into the chain that will never be on disk: counted, logged, noted, and the
        trail is told (it signs a checkpoint over the chain head, so the gap is provable)."""
        self.lost += len(seqs)
        metrics.LOST.inc(len(seqs))
        log.error(
            "audit: LOST %d audit record(s), seq %d-%d of chain %s: %s%s",
            len(seqs),
            seqs[0],
            seqs[-1],
            self.chain_dir.name,
            reason,
            f" ({detail})" if detail else "",
        )
        note: dict[str, Any] = {"from": seqs[0], "to": seqs[-1], "at": time.time(), "reason": reason}
        if detail:
            note["detail"] = detail[:500]
        self._notes.append(note)
        self._tell_loss(note)

    def _tell_loss(self, note: dict[str, Any]) -> None:
        """The trail writes the loss into the chain as a record of its own (shipped like any other)
        and signs the chain head, in the event loop."""
        if self.on_loss is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed at shutdown
                self._loop.call_soon_threadsafe(self.on_loss, dict(note))

    def _flush_notes(self) -> None:
        if not self._notes:
            return
        data = b"".join(orjson.dumps(n) + b"\n" for n in self._notes)

        def write() -> None:
            fd = os.open(self.chain_dir / DROPPED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

        self._with_reserve(write)
        self._notes.clear()

    def _with_reserve(self, write: Any) -> None:
        """Run ``write``; on a full disk, give up the reserve file and try once more."""
        try:
            write()
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            reserve = self.chain_dir / RESERVE
            if not reserve.exists():
                raise
            reserve.unlink()
            log.warning("audit: disk full: used the reserve in %s for loss notes and checkpoints", reserve)
            write()

    def _make_reserve(self) -> None:
        """Best effort: keep RESERVE_BYTES of real (not sparse) blocks for notes on a full disk."""
        path = self.chain_dir / RESERVE
        with contextlib.suppress(OSError):
            if path.exists() and path.stat().st_size >= RESERVE_BYTES:
                return
            statefiles.write_atomic(path, bytes(RESERVE_BYTES), mode=0o600)

    def _flush_run(self, run: list[bytes]) -> None:
        """Write lines into the current segment (the caller made sure they fit under the cap)."""
        if run and self._fd is not None:
            data = b"".join(run)
            _write_all(self._fd, data)
            with self._seg_lock:
                self.disk_bytes += len(data)
            self._good_size = self.segments[-1].size
            self.written_seq = self.segments[-1].last_seq

    def _open_segment(self, first_seq: int, rotate: bool) -> None:
        if self._fd is not None:
            if rotate:
                os.fsync(self._fd)  # a closed segment is always durable
            os.close(self._fd)
            self._fd = None
        if rotate and self.segments:
            self._seal(self.segments[-1])
        if self.segments and not rotate and not compression.is_compressed(self.segments[-1].path):
            cur = self.segments[-1]  # continue the last segment after a restart
        else:
            cur = Segment(first_seq, self.chain_dir / segment_name(first_seq), 0, 0)
            self.segments.append(cur)
        self._fd = os.open(cur.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        cur.size = self._good_size = os.fstat(self._fd).st_size

    def _sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
        if self._cp_fd is not None:
            os.fsync(self._cp_fd)
        self._dirty = False
        self._last_fsync = time.monotonic()

    def _prunable(self, seg: Segment) -> bool:
        return self.policy.prunable(
            seg, covered_seq=self.covered_seq, acked_seq=self.acked_seq if self.shipping else None
        )

    def _update_prunable(self) -> None:
        """Bytes of the oldest sealed segments that may go (in order: pruning leaves no hole), and
        the fill gauge: the share of max_bytes held by what cannot be pruned."""
        total = 0
        for seg in list(self.segments)[:-1]:  # a snapshot: no lock, the event loop calls this too
            if not self._prunable(seg):
                break
            total += seg.size
        self.prunable_bytes = total
        metrics.SPOOL_FILL.set(round(max(0, self.disk_bytes - total) / self.max_bytes, 4))

    def _make_room(self, incoming: int) -> None:
        """Over the cap: first prune segments Elasticsearch already has; then, with drop_oldest,
        drop the oldest unshipped ones (counted and logged loudly). block/fail_closed keep all:
        they stop new requests before the cap (``is_full``), so this only absorbs in-flight ones."""
        acked = self.acked_seq if self.shipping else 0
        while len(self.segments) > 1 and self.disk_bytes + incoming > self.max_bytes:
            oldest = self.segments[0]
            if self._prunable(oldest):
                if not self._prune(oldest, ROOM):
                    break
                continue
            if self.when_full != "drop_oldest":
                break  # block/fail_closed: keep what is not prunable (unshipped, unarchived)
            if oldest.last_seq > acked:
                lost_from = max(oldest.first_seq, acked + 1)
                lost = oldest.last_seq - lost_from + 1
                metrics.DROPPED.inc(lost)
                log.error(
                    "audit: SPOOL FULL (max_bytes=%d): DROPPED %d unshipped records, seq %d-%d of chain %s "
                    "(audit.when_full=drop_oldest)",
                    self.max_bytes,
                    lost,
                    lost_from,
                    oldest.last_seq,
                    self.chain_dir.name,
                )
                if lost_from > oldest.first_seq:
                    # Its shipped head is pruned, not lost: a signed note says so (the verifier
                    # then counts only what never reached Elasticsearch).
                    self._note_prune(oldest, last=lost_from - 1)
                note = {
                    "from": lost_from,
                    "to": oldest.last_seq,
                    "at": time.time(),
                    "reason": "spool full (when_full=drop_oldest)",
                }
                with open(self.chain_dir / DROPPED, "ab") as f:
                    f.write(orjson.dumps(note) + b"\n")
                self._tell_loss(note)
            elif oldest.last_seq:
                self._note_prune(oldest)
            self._remove_oldest(oldest)
        metrics.SPOOL_BYTES.set(self.disk_bytes)

    def _remove_oldest(self, seg: Segment) -> None:
        with self._seg_lock:
            for path in compression.candidates(seg.path):
                path.unlink(missing_ok=True)
            if self.segments and self.segments[0] is seg:
                self.segments.pop(0)
                self.disk_bytes -= seg.size

    def _prune(self, seg: Segment, reason: str) -> bool:
        """Prune the oldest segment under the retention policy: the signed note first (fsynced), then
        the file. Without its note nothing is deleted (False)."""
        with self._seg_lock:
            if seg.last_seq and not self._note_prune(seg, reason=reason):
                return False
            self._remove_oldest(seg)
        if seg.last_seq:
            metrics.PRUNED.labels(reason).inc(seg.last_seq - seg.first_seq + 1)
            self._pruned_since_log += seg.last_seq - seg.first_seq + 1
        now = time.monotonic()
        if now - self._prune_logged >= 60:
            log.info(
                "audit: retention pruned %d record(s) of chain %s (now from seq %d; reason %s; signed "
                "pruning notes in %s)",
                self._pruned_since_log,
                self.chain_dir.name,
                self.segments[0].first_seq if self.segments else 0,
                reason,
                CHECKPOINTS,
            )
            self._prune_logged, self._pruned_since_log = now, 0
        return True

    def _retention_due(self) -> bool:
        return self._kick or (self.policy.periodic and time.monotonic() >= self._next_retention)

    def _apply_retention(self) -> None:
        """Prune the oldest prunable segments the policy wants gone (age, retention.max_bytes), also
        with room left under max_bytes. Runs in the writer thread after each batch and periodically."""
        self._kick = False
        self._next_retention = time.monotonic() + RETENTION_CHECK_S
        pol = self.policy
        if not pol.enabled or not (pol.max_age_s or pol.max_bytes):
            return
        pruned = False
        while len(self.segments) > 1:
            oldest = self.segments[0]
            if not self._prunable(oldest):
                break
            why = pol.due(oldest, total_bytes=self.disk_bytes)
            if why is None or not self._prune(oldest, why):
                break
            pruned = True
        if pruned:
            self._update_prunable()
            metrics.SPOOL_BYTES.set(self.disk_bytes)

    def _seal(self, seg: Segment) -> None:
        """The writer moved on from ``seg``: sign a checkpoint over its last record (so retention may
        prune it) and hand it to the sealer thread (compression, archive)."""
        seg.mtime = time.time()
        if seg.last_seq and seg.last_seq > self.covered_seq and self.sign_checkpoint is not None:
            try:
                line = self.sign_checkpoint(seg.last_seq, last_record_hash(seg.path))
                self._with_reserve(functools.partial(self._write_checkpoints, [line]))
                metrics.CHECKPOINTS.inc()
            except Exception as exc:  # the trail's next checkpoint covers it instead
                log.error("audit: cannot sign the sealed segment %s: %s", seg.path, exc)
        self._seal_wake.set()

    # -- sealer thread: compression and archive of sealed segments ------------------------------------
    def _seal_loop(self) -> None:
        while not self._seal_stop:
            self._seal_wake.wait(RETENTION_CHECK_S)
            self._seal_wake.clear()
            with self._seg_lock:
                sealed = list(self.segments[:-1])
            did = False
            for seg in sealed:
                if self._seal_stop:
                    return
                try:
                    did = self._finish(seg) or did
                except Exception as exc:  # retried every RETENTION_CHECK_S; archive errors counted
                    if self.archive is not None and not seg.archived:
                        metrics.ARCHIVE_ERRORS.inc()
                    now = time.monotonic()
                    if now - self._seal_error_logged >= 60:
                        self._seal_error_logged = now
                        log.error(
                            "audit: cannot %s sealed segment %s: %s (retried; not pruned until then)",
                            "archive" if self.archive is not None else "compress",
                            seg.path,
                            exc,
                        )
                    break
            if did:
                self._update_prunable()
                with self._cond:
                    self._kick = True
                    self._cond.notify()

    def _finish(self, seg: Segment) -> bool:
        did = False
        if self.compress and not compression.is_compressed(seg.path):
            tmp = compression.compress_segment(seg.path)
            with self._seg_lock:
                if not any(s is seg for s in self.segments):  # pruned meanwhile
                    tmp.unlink(missing_ok=True)
                    return False
                plain, dst = seg.path, compression.compressed_path(seg.path)
                os.replace(tmp, dst)
                compression.fsync_dir(self.chain_dir)
                size = dst.stat().st_size
                self.disk_bytes -= seg.size - size
                seg.size, seg.path = size, dst
                plain.unlink(missing_ok=True)
            metrics.SPOOL_BYTES.set(self.disk_bytes)
            did = True
        if self.archive is not None and not seg.archived:
            self.archive.put_segment(seg.path)
            self.archive.put_notes(self.chain_dir, seg.last_seq)
            seg.archived = True
            did = True
        return did

    def _note_prune(self, seg: Segment, last: int | None = None, reason: str = "") -> bool:
        """A signed note for a shipped segment about to be deleted, on disk before it goes: the
        verifier accepts a chain starting after seq 1 only with notes covering what came before.
        ``last``: only the segment's records up to that seq were shipped (the rest is dropped)."""
        if self.sign_prune is None:
            return False
        try:
            if last is None:
                last = seg.last_seq
                last_hash = last_record_hash(seg.path)
            else:
                last_hash = record_hash_at(seg.path, last)
            if reason:
                line = self.sign_prune(seg.first_seq, last, last_hash, reason=reason)
            else:
                line = self.sign_prune(seg.first_seq, last, last_hash)
            self._with_reserve(functools.partial(self._write_checkpoints, [line]))
            if self._cp_fd is not None:
                os.fsync(self._cp_fd)
            return True
        except Exception as exc:  # the space matters more; the verifier will report the gap
            log.error(
                "audit: cannot note the pruning of %s (seq %d-%d): %s",
                seg.path,
                seg.first_seq,
                last if last is not None else seg.last_seq,
                exc,
            )
            return False

    def prune_shipped(self) -> None:
        """Called after an ack: make room early when the cap is near (keeps the local copy otherwise)."""
        with self._cond:
            self._update_prunable()

    def _close(self) -> None:
        for fd in (self._fd, self._cp_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                os.close(fd)
        self._fd = self._cp_fd = None


RETENTION_CHECK_S = 30.0  # retention by age, and retries of a failed compression or archive copy


def _clean_partial_compression(chain_dir: Path) -> None:
    """At start: drop temporary files of a compression cut short, and the plain form of a segment
    whose compressed form was completed (renamed) before the plain one was removed."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(chain_dir):
            if entry.name.startswith(".seg-") and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            elif _SEG_RE.match(entry.name) and compression.is_compressed(Path(entry.name)):
                with contextlib.suppress(OSError):
                    compression.plain_path(Path(entry.path)).unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _settle(fut: asyncio.Future[None], err: BaseException | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(SpoolError(f"audit record not written: {err}"))
