"""The audit trail of one process: its chain, its spool writer and its signed checkpoints.

``open()`` runs once per worker process (in a thread: it touches the disk); ``append`` runs in the
event loop for every request and only seals the record and queues a line (no I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import orjson

from . import metrics
from .chain import Chain
from .config import AuditConfig
from .keys import key_id, load_or_create_signing_key, make_checkpoint, make_prune_note
from .record import sanitize
from .spool import SpoolWriter, claim_chain, last_checkpoint_seq, recover_head, unlock

log = logging.getLogger("custos.audit")

# After a failed write, requests are refused (or wait, with when_full=block) this long; then each one
# that is let through tries the disk again and is answered only once its record is written.
RETRY_AFTER_ERROR_S = 1.0


class AuditTrail:
    def __init__(self, config: AuditConfig, state_dir: Path) -> None:
        self.config = config
        self.spool_dir = config.spool_path(state_dir)
        self.key_path = config.key_path(state_dir)
        self.chain: Chain | None = None
        self.writer: SpoolWriter | None = None
        self.chain_dir: Path | None = None
        self._lock_fd: int | None = None
        self._key: Any = None
        self._kid = ""
        self._cp_seq = 0
        self._cp_task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def _open_sync(self) -> None:
        self._key = load_or_create_signing_key(self.key_path)
        self._kid = key_id(self._key.public_key())
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
        cfg = self.config
        self.writer = SpoolWriter(
            chain_dir,
            head_seq=seq,
            segment_bytes=min(cfg.segment_bytes, max(4096, cfg.max_bytes // 8)),
            max_bytes=cfg.max_bytes,
            when_full=cfg.when_full,
            fsync=cfg.fsync,
            fsync_interval_s=cfg.fsync_interval_ms / 1000,
        )
        log.info("audit: chain %s at seq %d, spool %s, key id %s", chain_id, seq, chain_dir, self._kid)

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)
        assert self.writer is not None and self.chain is not None
        self.writer.on_loss = self._after_loss
        self.writer.sign_prune = self._prune_note
        self.writer.start(asyncio.get_running_loop())
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
            await asyncio.to_thread(self.writer.stop)
        if self._lock_fd is not None:
            unlock(self._lock_fd)
            self._lock_fd = None

    # -- hot path ---------------------------------------------------------------------------------
    def append(self, record: dict[str, Any], wait: bool = False) -> asyncio.Future[None] | None:
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

    def _prune_note(self, first: int, last: int, last_hash: str) -> bytes:
        """Called in the writer thread (Ed25519 signing is thread-safe; the key never changes)."""
        assert self.chain is not None
        note = make_prune_note(self._key, self._kid, self.chain.chain_id, first, last, last_hash)
        return orjson.dumps(note, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)

    def _after_loss(self) -> None:
        """Records were lost: sign the chain head now, so the gap is provable from a signed
        checkpoint even if the loss note were removed."""
        self.checkpoint()

    def checkpoint(self, wait: bool = False) -> asyncio.Future[None] | None:
        """Sign the chain head (if it moved); with ``wait``, a future done once it is on disk."""
        chain = self.chain
        if chain is None or self.writer is None or chain.seq <= self._cp_seq:
            return None
        cp = make_checkpoint(self._key, self._kid, chain.chain_id, chain.seq, chain.last_hash)
        line = orjson.dumps(cp, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
        fut = self.writer.append(0, line, wait)
        self._cp_seq = chain.seq
        metrics.CHECKPOINTS.inc()
        return fut

    async def _checkpoint_timer(self) -> None:
        interval = self.config.checkpoint_interval_s
        while True:
            await asyncio.sleep(interval)
            self.checkpoint()

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
