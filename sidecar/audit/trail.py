"""The audit trail of one process: its chain, its spool writer and its signed checkpoints.

``open()`` runs once per worker process (in a thread: it touches the disk); ``append`` runs in the
event loop for every request and only seals the record and queues a line (no I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import orjson

from . import metrics
from .archive import Archive
from .canonical import utc_iso
from .chain import Chain
from .config import AuditConfig
from .keys import (
    KeyError_,
    key_id,
    load_or_create_signing_key,
    make_checkpoint,
    make_prune_note,
    rotate_signing_key,
)
from .record import sanitize
from .retention import Policy
from .spool import (
    SpoolWriter,
    claim_chain,
    last_checkpoint_seq,
    recover_head,
    take_clean_stop,
    unlock,
    write_clean_stop,
)

log = logging.getLogger("custos.audit")

# After a failed write, requests are refused (or wait, with when_full=block) this long; then each one
# that is let through tries the disk again and is answered only once its record is written.
RETRY_AFTER_ERROR_S = 1.0

# ``event.action`` of the records the trail writes about itself (not about a request).
ACTION_LOSS = "audit_loss"
ACTION_RESTART = "audit_restart"
_SELF = {"kind": "event", "category": ["configuration"], "dataset": "custos.audit", "module": "custos"}


def loss_record(chain_id: str, notes: list[dict[str, Any]]) -> dict[str, Any]:
    """A record in the chain that names records lost (sealed but never written, or dropped from the
    spool before they were shipped): shipped like any record, so Elasticsearch shows every loss."""
    lo = min(int(n["from"]) for n in notes)
    hi = max(int(n["to"]) for n in notes)
    count = sum(int(n["to"]) - int(n["from"]) + 1 for n in notes)
    reasons = sorted({str(n.get("reason")) for n in notes})
    now = time.time()
    return {
        "@timestamp": utc_iso(now),
        "event": {
            **_SELF,
            "id": f"custos-audit-loss-{chain_id}-{lo}-{hi}-{secrets.token_hex(3)}",
            "action": ACTION_LOSS,
            "type": ["info"],
            "outcome": "failure",
            "start": utc_iso(now),
            "end": utc_iso(now),
            "reason": f"LOST {count} audit record(s), seq {lo}-{hi}: {'; '.join(reasons)}"[:960],
        },
        "custos": {
            "loss": {
                "from": lo,
                "to": hi,
                "count": count,
                "reason": "; ".join(reasons)[:960],
                "ranges": [
                    {
                        "from": int(n["from"]),
                        "to": int(n["to"]),
                        "reason": str(n.get("reason"))[:200],
                        **({"detail": str(n["detail"])[:500]} if n.get("detail") else {}),
                    }
                    for n in notes[:64]
                ],
            }
        },
    }


def restart_record(chain_id: str, prev_seq: int, prev_hash: str, checkpoint_seq: int) -> dict[str, Any]:
    """The first record after an unclean stop (kill -9, crash, power loss): it names where the
    previous run's durable chain ended, so the restart never passes for a continuous run."""
    now = time.time()
    unsigned = max(0, prev_seq - checkpoint_seq)
    return {
        "@timestamp": utc_iso(now),
        "event": {
            **_SELF,
            "id": f"custos-audit-restart-{chain_id}-{prev_seq + 1}-{secrets.token_hex(3)}",
            "action": ACTION_RESTART,
            "type": ["info"],
            "outcome": "unknown",
            "start": utc_iso(now),
            "end": utc_iso(now),
            "reason": f"unclean stop: the previous run's chain ends at seq {prev_seq} on disk",
        },
        "custos": {
            "restart": {
                "clean": False,
                "previous_seq": prev_seq,
                "previous_hash": prev_hash,
                "checkpoint_seq": checkpoint_seq,
                "unsigned": unsigned,
                "pid": os.getpid(),
            }
        },
    }


class AuditTrail:
    def __init__(self, config: AuditConfig, state_dir: Path) -> None:
        self.config = config
        self.spool_dir = config.spool_path(state_dir)
        self.key_path = config.key_path(state_dir)
        self.chain: Chain | None = None
        self.writer: SpoolWriter | None = None
        self.chain_dir: Path | None = None
        self._lock_fd: int | None = None
        # (private key, key id) as one value: the writer thread signs with a consistent pair while a
        # rotated key is swapped in (custos keys rotate audit, audit.rotate_key_every_s).
        self._signer: tuple[Any, str] = (None, "")
        self._key_stamp: Any = None
        self._cp_seq = 0
        self._cp_task: asyncio.Task[None] | None = None
        self._unclean: tuple[int, str, int] | None = None  # (seq, hash, checkpoint seq) at an unclean start
        self._pending_losses: list[dict[str, Any]] = []  # loss notes not yet sealed into a record
        self._loss_seqs: set[int] = set()  # seqs of loss records (a lost one is not re-noted at once)

    # -- lifecycle --------------------------------------------------------------------------------
    def _open_sync(self) -> None:
        # Only the default key is made on first start; a configured one that is missing is an error.
        key = load_or_create_signing_key(self.key_path, create=self.config.signing_key is None)
        self._signer = (key, key_id(key.public_key()))
        self._key_stamp = _stamp(self.key_path)
        skip: set[str] = set()
        while True:
            chain_id, chain_dir, fd = claim_chain(self.spool_dir, skip=skip)
            try:
                seq, last_hash = recover_head(chain_dir)
                break
            except (ValueError, KeyError, TypeError) as exc:
                # The chain's last record is not a record (damaged or edited): never continue a chain
                # we cannot read; take another slot. `custos audit verify` reports the damage.
                log.error(
                    "audit: chain %s ends in an unreadable record (%s); starting another chain", chain_id, exc
                )
                unlock(fd)
                skip.add(chain_id)
        self._lock_fd = fd
        self.chain_dir = chain_dir
        self.chain = Chain(chain_id, seq, last_hash)
        self._cp_seq = last_checkpoint_seq(chain_dir)
        marker = take_clean_stop(chain_dir)
        clean = marker is not None and marker.get("seq") == seq and marker.get("hash") == last_hash
        if seq > 0 and not clean:
            # Killed, crashed or lost power: records the previous run sealed after `seq` never
            # reached the disk, and their seq numbers are used again from here. A restart record
            # makes that visible to the verifier.
            self._unclean = (seq, last_hash, self._cp_seq)
            log.warning(
                "audit: chain %s was not closed cleanly (its last durable record is seq %d, the last "
                "signed checkpoint seq %d); writing a restart record",
                chain_id,
                seq,
                self._cp_seq,
            )
        cfg = self.config
        self.writer = SpoolWriter(
            chain_dir,
            head_seq=seq,
            segment_bytes=min(cfg.segment_bytes, max(4096, cfg.max_bytes // 8)),
            max_bytes=cfg.max_bytes,
            when_full=cfg.when_full,
            fsync=cfg.fsync,
            fsync_interval_s=cfg.fsync_interval_ms / 1000,
            policy=Policy.from_config(cfg),
            compress=cfg.compression == "gzip",
            archive=Archive(cfg.archive_dir, chain_id) if cfg.archive_dir is not None else None,
        )
        log.info("audit: chain %s at seq %d, spool %s, key id %s", chain_id, seq, chain_dir, self._signer[1])

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)
        assert self.writer is not None and self.chain is not None
        self.writer.on_loss = self._after_loss
        self.writer.sign_prune = self._prune_note
        self.writer.sign_checkpoint = self._seal_checkpoint
        self.writer.start(asyncio.get_running_loop())
        if self._unclean is not None:
            prev_seq, prev_hash, cp_seq = self._unclean
            written = self.append(restart_record(self.chain.chain_id, prev_seq, prev_hash, cp_seq), wait=True)
            with contextlib.suppress(Exception):  # a failing disk is reported by the writer
                await written  # type: ignore[misc]
        if self.chain.seq > self._cp_seq:
            # Records from an earlier run (e.g. killed with -9) that no checkpoint covers yet.
            self.checkpoint()
        self._cp_task = asyncio.create_task(self._checkpoint_timer(), name="audit-checkpoints")

    async def close(self) -> None:
        if self._cp_task is not None:
            self._cp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cp_task
        if self.writer is not None:
            self.checkpoint()
            writer, chain = self.writer, self.chain
            await asyncio.to_thread(writer.stop)
            if (
                chain is not None
                and self.chain_dir is not None
                and not writer.alive()
                and writer.written_seq == chain.seq
                and not writer.failing()
            ):
                # Everything sealed is on disk: the next run continues without a restart record.
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(write_clean_stop, self.chain_dir, chain.seq, chain.last_hash)
        if self._lock_fd is not None:
            unlock(self._lock_fd)
            self._lock_fd = None

    # -- hot path ---------------------------------------------------------------------------------
    def append(self, record: dict[str, Any], wait: bool = False) -> asyncio.Future[None] | None:
        if self._pending_losses:
            self._write_losses()
        chain = self.chain
        try:
            line = chain.seal(record)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            # Not encodable as canonical JSON (a lone surrogate, an integer over 64 bits, a foreign
            # type): records from build_record are already clean; anything else is cleaned here.
            line = chain.seal(sanitize(record))  # type: ignore[union-attr]
        fut = self.writer.append(chain.seq, line, wait)  # type: ignore[union-attr]
        metrics.RECORDS.inc()
        if chain.seq - self._cp_seq >= self.config.checkpoint_every:  # type: ignore[union-attr]
            self.checkpoint()
        return fut

    def _prune_note(self, first: int, last: int, last_hash: str, reason: str = "") -> bytes:
        """Called in the writer thread (Ed25519 signing is thread-safe; the key never changes)."""
        assert self.chain is not None
        note = make_prune_note(
            *self._signer, self.chain.chain_id, first, last, last_hash, reason=reason or None
        )
        return orjson.dumps(note, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)

    def _seal_checkpoint(self, seq: int, last_hash: str) -> bytes:
        """A checkpoint over a segment the writer just sealed (writer thread), so that retention may
        prune it once its turn comes."""
        assert self.chain is not None
        cp = make_checkpoint(*self._signer, self.chain.chain_id, seq, last_hash)
        return orjson.dumps(cp, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)

    def _after_loss(self, note: dict[str, Any] | None = None) -> None:
        """Records were lost: write a loss record into the chain (it ships to Elasticsearch like any
        record) and sign the chain head now, so the gap is provable from a signed checkpoint even if
        the notes were removed. A loss record that was itself lost is noted again with the next
        record written, not at once (a disk that keeps failing must not spin)."""
        if note is not None:
            self._pending_losses.append(note)
            lo, hi = int(note["from"]), int(note["to"])
            only_notes = hi - lo < 64 and all(s in self._loss_seqs for s in range(lo, hi + 1))
            if not only_notes:
                self._write_losses()
        self.checkpoint()

    def _write_losses(self) -> None:
        chain = self.chain
        if chain is None or self.writer is None:
            return
        notes, self._pending_losses = self._pending_losses, []
        line = chain.seal(loss_record(chain.chain_id, notes))
        if len(self._loss_seqs) > 4096:
            self._loss_seqs.clear()
        self._loss_seqs.add(chain.seq)
        self.writer.append(chain.seq, line)

    def checkpoint(self, wait: bool = False) -> asyncio.Future[None] | None:
        """Sign the chain head (if it moved); with ``wait``, a future done once it is on disk."""
        chain = self.chain
        if chain is None or self.writer is None or chain.seq <= self._cp_seq:
            return None
        cp = make_checkpoint(*self._signer, chain.chain_id, chain.seq, chain.last_hash)
        line = orjson.dumps(cp, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
        fut = self.writer.append(0, line, wait)
        self._cp_seq = chain.seq
        metrics.CHECKPOINTS.inc()
        return fut

    async def _checkpoint_timer(self) -> None:
        interval = self.config.checkpoint_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                signer = await asyncio.to_thread(self._follow_key)
            except Exception:
                log.exception("audit: checking the signing key for a rotation failed; the key in force stays")
                signer = None
            if signer is not None:
                # The head under the old key first: every record stays under a checkpoint of the key
                # that saw it; later checkpoints name the new key id.
                self.checkpoint()
                self._signer = signer
                log.info("audit: now signing checkpoints with key id %s", signer[1])
            self.checkpoint()

    def _follow_key(self) -> tuple[Any, str] | None:
        """(Disk work, in a thread.) Rotate the signing key on schedule (``rotate_key_every_s``) and
        return a key that replaced the one in force (rotated here or by any process), else None."""
        every = self.config.rotate_key_every_s
        if every is not None:
            try:
                rotated = rotate_signing_key(self.key_path, older_than_s=every)
            except (OSError, KeyError_) as exc:
                log.error("audit: scheduled rotation of the signing key %s failed: %s", self.key_path, exc)
                rotated = None
            if rotated is not None:
                log.info("audit: signing key rotated on schedule: %s -> %s", *rotated)
        stamp = _stamp(self.key_path)
        if stamp == self._key_stamp:
            return None
        key = load_or_create_signing_key(self.key_path, create=False)
        kid = key_id(key.public_key())
        self._key_stamp = stamp
        return (key, kid) if kid != self._signer[1] else None

    # -- health -----------------------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why a record could not be written right now (None: it can)."""
        writer = self.writer
        if writer is None:
            return "the audit spool is not open"
        if writer.failing():
            return f"the audit spool cannot be written: {writer.error}"
        if writer.is_full():
            return f"the audit spool is full ({writer.used_bytes()} of {writer.max_bytes} bytes)"
        return None

    def clear_error(self) -> None:
        if self.writer is not None:
            self.writer.error = None

    async def wait_for_room(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the spool has room and is not failing (or a failure is old enough to try the
        disk again); False after ``timeout`` seconds."""
        writer = self.writer
        deadline = time.monotonic() + timeout
        while writer is not None and (
            writer.is_full() or (writer.failing() and writer.error_age() < RETRY_AFTER_ERROR_S)
        ):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return writer is not None


def _stamp(path: Path) -> Any:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)
