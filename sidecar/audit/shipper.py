"""Ships spooled records (and checkpoints) to Elasticsearch: at least once, never duplicated.

- The official client's ``async_streaming_bulk`` helper, ``op_type=create`` and ``_id = event.id``: a
  retry of something Elasticsearch already has answers 409, which counts as done once the stored
  record's ``audit.hash`` matches (a different record under the same client-chosen request id is
  stored under ``<event.id>:<chain>:<seq>`` instead, so nothing is lost or overwritten).
- Per-item handling: mapping/parse errors go to the chain's dead-letter file with the reason (no
  endless retry); 429/5xx/connection problems are retried with exponential backoff and full jitter.
- The acknowledged position (seq, file, offset) is persisted after every batch, so a restart, even
  after ``kill -9``, resumes where Elasticsearch's acknowledgements stopped.
- It runs as a background task; requests never wait for it. Chains left by dead processes (more
  workers before a restart) are shipped too, under their lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch, Elasticsearch
from elasticsearch.helpers import async_streaming_bulk
from elasticsearch.serializer import OrjsonSerializer

from . import metrics
from .compression import segment_size
from .config import ElasticsearchConfig
from .es import client_options, mask_userinfo, record_index, setup
from .spool import (
    CHECKPOINTS,
    DEAD_LETTER,
    SpoolWriter,
    chain_dirs,
    iter_lines,
    list_segments,
    read_shipped,
    try_lock,
    unlock,
    write_shipped,
)

log = logging.getLogger("custos.audit.shipper")
# The transport logs every request at INFO; our own log says what matters (failures, dead letters).
logging.getLogger("elastic_transport").setLevel(logging.ERROR)

PERMANENT_ERRORS = frozenset(
    {
        "mapper_parsing_exception",
        "document_parsing_exception",
        "strict_dynamic_mapping_exception",
        "illegal_argument_exception",
        "parse_exception",
        "json_parse_exception",
        "x_content_parse_exception",
    }
)


@dataclass(slots=True)
class Item:
    seq: int
    doc: dict[str, Any]
    index: str
    id: str


class ChainCursor:
    """Reads a chain's spool in order; ``mark`` moves the acknowledged position. The read
    position may run one batch ahead of the acknowledged one (the next batch is read while the
    current one is in flight); after a restart reading resumes from the acknowledged position."""

    def __init__(self, chain_dir: Path) -> None:
        self.chain_dir = chain_dir
        self.state = read_shipped(chain_dir)
        self._pos = (self.state["seq"], self.state["segment"], self.state["offset"])  # read position
        self._cp_pos = self.state["checkpoints_offset"]
        self.backlog_bytes = 0
        self.unreadable: list[dict[str, Any]] = []

    @property
    def acked_seq(self) -> int:
        return self.state["seq"]

    def oldest_unshipped_ts(self) -> float | None:
        """``@timestamp`` of the first record Elasticsearch has not acknowledged (runs in a thread)."""
        segment, offset = self.state["segment"], self.state["offset"]
        for first, path in list_segments(self.chain_dir):
            if first < segment:
                continue
            with contextlib.suppress(OSError, ValueError):
                for _pos, line in iter_lines(path, offset if first == segment else 0):
                    return _ts(orjson.loads(line))
        return None

    def read(self, limit: int, max_bytes: int) -> Batch:
        """The next records (up to ``limit``) and new checkpoints (runs in a thread)."""
        records = self._read_records(limit, max_bytes)
        cps = self._read_checkpoints()
        return Batch(records, cps, self._pos, self._cp_pos)

    def _read_records(self, limit: int, max_bytes: int) -> list[tuple[int, dict[str, Any]]]:
        seq, seg, offset = self._pos
        segments = list_segments(self.chain_dir)
        if not segments:
            return []
        firsts = [f for f, _p in segments]
        if seg not in firsts:
            # First run, or the segment was pruned/dropped: start at the segment holding seq + 1.
            cands = [f for f in firsts if f <= seq + 1]
            seg = cands[-1] if cands else firsts[0]
            offset = 0
        out: list[tuple[int, dict[str, Any]]] = []
        size = 0
        idx = firsts.index(seg)
        backlog = 0
        while idx < len(segments):
            _first, path = segments[idx]
            try:
                backlog += max(0, segment_size(path) - offset)
                if len(out) < limit and size < max_bytes:
                    for pos, line in iter_lines(path, offset):
                        offset = pos
                        try:
                            doc = orjson.loads(line)
                            rseq = int(doc["audit"]["seq"])
                        except (ValueError, KeyError, TypeError):
                            # Not a record (damaged or edited file): set aside, never retried.
                            self.unreadable.append(
                                {
                                    "file": str(path),
                                    "end_offset": pos,
                                    "line": line.decode("utf-8", "replace"),
                                }
                            )
                            continue
                        if rseq <= seq:
                            continue  # already acknowledged (resume from a segment start)
                        out.append((rseq, doc))
                        size += len(line)
                        seq = rseq
                        if len(out) >= limit or size >= max_bytes:
                            break
            except FileNotFoundError:
                pass  # dropped under our feet: continue with the next one
            if (len(out) >= limit or size >= max_bytes) or idx + 1 >= len(segments):
                if idx + 1 < len(segments):
                    for _f, p in segments[idx + 1 :]:
                        with contextlib.suppress(FileNotFoundError):
                            backlog += segment_size(p)
                break
            idx += 1
            seg, offset = segments[idx][0], 0
        self.backlog_bytes = max(0, backlog - size)
        self._pos = (seq, segments[idx][0] if idx < len(segments) else seg, offset)
        return out

    def mark(self, batch: Batch) -> dict[str, Any]:
        """Elasticsearch has the batch: move the acknowledged position; returns what to persist."""
        seq, seg, offset = batch.pos
        self.state.update(seq=seq, segment=seg, offset=offset, checkpoints_offset=batch.cp_pos)
        return dict(self.state)

    def _read_checkpoints(self) -> list[dict[str, Any]]:
        path = self.chain_dir / CHECKPOINTS
        out = []
        if path.exists():
            pos = self._cp_pos
            for pos, line in iter_lines(path, self._cp_pos):  # noqa: B007
                out.append(orjson.loads(line))
            self._cp_pos = pos
        return out


def _checkpoint_id(cp: dict[str, Any]) -> str:
    audit = cp["audit"]
    if audit.get("type") == "prune":
        return f"{audit['chain_id']}:prune:{audit.get('from')}-{audit['seq']}"
    return f"{audit['chain_id']}:{audit['seq']}"


@dataclass(slots=True)
class Batch:
    records: list[tuple[int, dict[str, Any]]]
    checkpoints: list[dict[str, Any]]
    pos: tuple[int, int, int]  # read position after these records
    cp_pos: int


def _ts(doc: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(doc["@timestamp"].replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError, AttributeError):
        return None


class Shipper:
    def __init__(self, cfg: ElasticsearchConfig, spool_dir: Path, own_dir: Path, writer: SpoolWriter) -> None:
        self.cfg = cfg
        self.spool_dir = spool_dir
        self.own_dir = own_dir
        self.writer = writer
        self.client: AsyncElasticsearch | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gauge_task: asyncio.Task[None] | None = None
        self._lag_from: float | None = None  # @timestamp of the oldest record not yet acknowledged
        self._ready = False  # templates installed (or not wanted)
        self._attempt = 0
        self._prefetch: asyncio.Future[Batch] | None = None
        self._persist: asyncio.Future[None] | None = None
        self.cursor = ChainCursor(own_dir)
        writer.shipping = True
        writer.acked_seq = self.cursor.acked_seq

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.writer.on_written.append(lambda: loop.call_soon_threadsafe(self._written))
        if self.backlog() > 0:  # left from an earlier run: the lag counts from its oldest record
            self._lag_from = await asyncio.to_thread(self.cursor.oldest_unshipped_ts)
        self._update_lag()
        self.client = AsyncElasticsearch(**client_options(self.cfg), serializer=OrjsonSerializer())
        self._task = asyncio.create_task(self._run(), name="audit-shipper")
        self._gauge_task = asyncio.create_task(self._refresh_gauges(), name="audit-shipper-gauges")

    def _written(self) -> None:
        """After each spool write (event loop): wake the shipper and keep the gauges current, also
        while Elasticsearch has never answered (the shipper may be sleeping in a long backoff)."""
        self._wake.set()
        if self._lag_from is None and self.backlog() > 0:
            self._lag_from = time.time()  # the oldest unshipped record was written just now
        self._update_lag()

    async def _refresh_gauges(self) -> None:
        """The lag grows while nothing is written or acknowledged: refresh it every second."""
        while True:
            await asyncio.sleep(1.0)
            self._update_lag()

    async def stop(self, drain_s: float = 5.0) -> None:
        """Ship what is left for up to ``drain_s`` seconds, then stop (the spool keeps the rest)."""
        if self._task is not None:
            self._idle.clear()  # set again once a full pass finds nothing left to send
            self._wake.set()
            try:
                await asyncio.wait_for(self._idle.wait(), drain_s)
            except TimeoutError:
                log.warning(
                    "audit shipper: stopping with %d record(s) not yet shipped; they stay in the "
                    "spool and ship on the next start",
                    self.backlog(),
                )
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._gauge_task is not None:
            self._gauge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauge_task
        for pending in (self._prefetch, self._persist):
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending  # a read or a position write in a thread; let it finish
        if self.client is not None:
            await self.client.close()

    def backlog(self) -> int:
        return max(0, self.writer.written_seq - self.cursor.acked_seq)

    # -- main loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        last_orphan_scan = 0.0
        while True:
            try:
                if not self._ready:
                    await self._setup()
                moved = await self._ship_chain(self.cursor, self.own_dir)
                if time.monotonic() - last_orphan_scan > 10:
                    last_orphan_scan = time.monotonic()
                    await self._ship_orphans()
                self._attempt = 0
                if not moved:
                    self._idle.set()
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
            except asyncio.CancelledError:
                raise
            except _Retry as exc:
                await self._backoff(exc.reason)
            except Exception:
                log.exception("audit shipper: unexpected error; retrying")
                await self._backoff("internal")

    async def _backoff(self, reason: str) -> None:
        metrics.SHIP_FAILURES.labels(reason).inc()
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * (2 ** min(self._attempt, 16)))
        self._attempt += 1
        delay = cap / 2 + random.uniform(0, cap / 2)  # equal jitter: spread retries, never zero
        self._update_lag()
        await asyncio.sleep(delay)

    async def _setup(self) -> None:
        if not self.cfg.setup_on_start:
            self._ready = True
            return

        def run() -> list[str]:
            client = Elasticsearch(**client_options(self.cfg))
            try:
                if client.indices.exists_index_template(name=self.cfg.index):
                    return []
                return setup(client, self.cfg)
            finally:
                client.close()

        try:
            done = await asyncio.to_thread(run)
        except Exception as exc:
            log.warning(
                "audit shipper: Elasticsearch at %s not reachable for setup yet: %s",
                mask_userinfo(", ".join(self.cfg.hosts)),
                _short(exc),
            )
            raise _Retry("unavailable") from None
        for line in done:
            log.info("audit: Elasticsearch setup: %s", line)
        self._ready = True

    async def _ship_chain(self, cursor: ChainCursor, chain_dir: Path, *, own: bool = True) -> bool:
        limit, max_bytes = self.cfg.batch_size, self.cfg.batch_max_bytes
        if own and self._prefetch is not None:
            read, self._prefetch = self._prefetch, None
            got = await read
        else:
            got = await asyncio.to_thread(cursor.read, limit, max_bytes)
        batch, checkpoints = got.records, got.checkpoints
        if cursor.unreadable:
            bad, cursor.unreadable = cursor.unreadable, []
            await asyncio.to_thread(_dead_letter_lines, chain_dir, bad)
        if own and len(batch) >= limit:
            # More is waiting: read the next batch while this one is in flight.
            self._prefetch = asyncio.ensure_future(asyncio.to_thread(cursor.read, limit, max_bytes))
        if own:
            metrics.BACKLOG_BYTES.set(cursor.backlog_bytes)
            self._lag_from = _ts(batch[0][1]) if batch else None
            self._update_lag()
        if not batch and not checkpoints:
            return False
        items = [
            Item(seq, doc, record_index(self.cfg, doc["@timestamp"]), str(doc["event"]["id"]))
            for seq, doc in batch
        ]
        cp_items = [Item(0, cp, self.cfg.checkpoint_index, _checkpoint_id(cp)) for cp in checkpoints]
        await self._send_all(items + cp_items, chain_dir)
        state = cursor.mark(got)
        # Persisting the position (write + fsync) overlaps the next bulk request; writes stay in
        # order. A crash before it lands only re-sends one batch, which 409s into "already there".
        self._persist = asyncio.ensure_future(self._persist_after(self._persist, chain_dir, state))
        if not own:
            await self._persist
        if own:
            self.writer.acked_seq = cursor.acked_seq
            self.writer.prune_shipped()
            metrics.BACKLOG_RECORDS.set(self.backlog())
            self._lag_from = None
            self._update_lag()
        return True

    @staticmethod
    async def _persist_after(
        prev: asyncio.Future[None] | None, chain_dir: Path, state: dict[str, Any]
    ) -> None:
        if prev is not None:
            with contextlib.suppress(Exception):
                await prev
        await asyncio.to_thread(write_shipped, chain_dir, state)

    def _update_lag(self) -> None:
        start = self._lag_from
        metrics.BACKLOG_RECORDS.set(self.backlog())
        metrics.SHIP_LAG.set(max(0.0, time.time() - start) if start else 0.0)

    async def _send_all(self, items: list[Item], chain_dir: Path) -> None:
        """Returns once every item is in Elasticsearch or dead-lettered; retries the rest meanwhile."""
        pending = items
        attempt = 0
        while pending:
            retry, conflicts, dead = await self._bulk(pending)
            if conflicts:
                retry += await self._resolve_conflicts(conflicts)
            if dead:
                await asyncio.to_thread(_dead_letter, chain_dir, dead)
            if not retry:
                return
            pending = [item for item, _why in retry]
            reason = retry[0][1]
            metrics.SHIP_FAILURES.labels(reason).inc(len(pending))
            cap = min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * (2 ** min(attempt, 16)))
            attempt += 1
            if attempt in (1, 5) or attempt % 20 == 0:
                log.warning(
                    "audit shipper: %d record(s) not accepted yet (%s); retrying with backoff",
                    len(pending),
                    reason,
                )
            self._update_lag()
            await asyncio.sleep(cap / 2 + random.uniform(0, cap / 2))

    async def _bulk(
        self, items: list[Item]
    ) -> tuple[list[tuple[Item, str]], list[Item], list[tuple[Item, int, Any]]]:
        actions = [
            {"_op_type": "create", "_index": it.index, "_id": it.id, "_source": it.doc} for it in items
        ]
        retry: list[tuple[Item, str]] = []
        conflicts: list[Item] = []
        dead: list[tuple[Item, int, Any]] = []
        results: list[dict[str, Any]] = []
        try:
            async for _ok, result in async_streaming_bulk(
                self.client,
                actions,
                chunk_size=len(actions) or 1,
                max_chunk_bytes=self.cfg.batch_max_bytes * 2,
                raise_on_error=False,
                raise_on_exception=False,
                max_retries=0,
                yield_ok=True,
            ):
                results.append(result)
        except Exception as exc:  # connection refused, timeout, TLS: the whole batch waits
            log.debug("audit shipper: bulk failed: %s", exc)
            done = len(results)
            self._classify(items[:done], results, retry, conflicts, dead)
            return retry + [(it, "unavailable") for it in items[done:]], conflicts, dead
        self._classify(items, results, retry, conflicts, dead)
        return retry, conflicts, dead

    def _classify(
        self,
        items: list[Item],
        results: list[dict[str, Any]],
        retry: list[tuple[Item, str]],
        conflicts: list[Item],
        dead: list[tuple[Item, int, Any]],
    ) -> None:
        ok = 0
        for item, result in zip(items, results, strict=False):
            info = next(iter(result.values()))
            status = info.get("status")
            error = info.get("error")
            etype = error.get("type") if isinstance(error, dict) else None
            if isinstance(status, int) and 200 <= status < 300:
                ok += 1
            elif status == 409:
                conflicts.append(item)
            elif etype in PERMANENT_ERRORS or (status == 400 and etype is not None):
                dead.append((item, status, error))
            else:
                why = (
                    "throttled"
                    if status == 429
                    else f"http_{status}"
                    if isinstance(status, int)
                    else "unavailable"
                )
                retry.append((item, why))
        if ok:
            metrics.SHIPPED.labels("created").inc(ok)

    async def _resolve_conflicts(self, items: list[Item]) -> list[tuple[Item, str]]:
        """409: the id exists. Same hash = this very record (a retry): done. Otherwise the client reused
        a request id: store this record under an id of its own (deterministic, so retries are safe)."""
        assert self.client is not None
        try:
            resp = await self.client.mget(docs=[{"_index": it.index, "_id": it.id} for it in items])
        except Exception:
            return [(it, "unavailable") for it in items]
        retry: list[tuple[Item, str]] = []
        again: list[Item] = []
        same = 0
        for item, found in zip(items, resp["docs"], strict=False):
            stored = (found.get("_source") or {}) if found.get("found") else None
            if stored is None:
                retry.append((item, "conflict_vanished"))
            elif (stored.get("audit") or {}).get("hash") == item.doc["audit"]["hash"]:
                same += 1
            elif item.seq and ":" not in item.id:
                chain = item.doc["audit"]["chain_id"]
                log.warning(
                    "audit shipper: request id %s was used twice; storing chain %s seq %d as %s:%s:%d",
                    item.id,
                    chain,
                    item.seq,
                    item.id,
                    chain,
                    item.seq,
                )
                again.append(Item(item.seq, item.doc, item.index, f"{item.id}:{chain}:{item.seq}"))
            else:
                retry.append((item, "conflict"))  # unreachable in practice; keep it visible
        if same:
            metrics.SHIPPED.labels("already_present").inc(same)
        if again:
            retry_more, conflicts, dead = await self._bulk(again)
            retry += retry_more + [(it, "conflict") for it in conflicts]
            if dead:
                await asyncio.to_thread(_dead_letter, self.own_dir, dead)
        return retry

    async def _ship_orphans(self) -> None:
        """Ship chains whose owner process is gone (their lock is free), holding the lock meanwhile."""
        for chain_dir in await asyncio.to_thread(chain_dirs, self.spool_dir):
            if chain_dir == self.own_dir:
                continue
            fd = await asyncio.to_thread(try_lock, chain_dir)
            if fd is None:
                continue  # a live process owns it and ships it itself
            try:
                cursor = ChainCursor(chain_dir)
                while await self._ship_chain(cursor, chain_dir, own=False):
                    pass
            finally:
                unlock(fd)


class _Retry(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _short(exc: BaseException) -> str:
    text = mask_userinfo(str(exc))
    return text if len(text) < 300 else text[:300] + "..."


class _MaskCredentials(logging.Filter):
    """Every audit log line (and traceback) with URL credentials masked: hosts may be configured as
    ``https://user:password@es:9200``, and exception texts repeat them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "@" in message:
            record.msg, record.args = mask_userinfo(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_userinfo(logging.Formatter().formatException(record.exc_info))
        return True


log.addFilter(_MaskCredentials())


def _dead_letter_lines(chain_dir: Path, bad: list[dict[str, Any]]) -> None:
    with open(chain_dir / DEAD_LETTER, "ab") as f:
        for entry in bad:
            log.error(
                "audit shipper: unreadable line in %s (ends at byte %d): not shipped; run "
                "`custos audit verify`",
                entry["file"],
                entry["end_offset"],
            )
            f.write(orjson.dumps({"at": time.time(), "reason": "unreadable spool line", **entry}) + b"\n")
    metrics.DEAD_LETTERS.inc(len(bad))


def _dead_letter(chain_dir: Path, dead: list[tuple[Item, int, Any]]) -> None:
    with open(chain_dir / DEAD_LETTER, "ab") as f:
        for item, status, error in dead:
            reason = error.get("reason") if isinstance(error, dict) else str(error)
            log.error(
                "audit shipper: Elasticsearch rejected record seq %d (%s) for good: %s; written to %s",
                item.seq,
                item.id,
                reason,
                chain_dir / DEAD_LETTER,
            )
            entry = {
                "at": time.time(),
                "index": item.index,
                "id": item.id,
                "status": status,
                "error": error,
                "reason": reason,
                "record": item.doc,
            }
            f.write(orjson.dumps(entry, default=str) + b"\n")
        f.flush()
    metrics.DEAD_LETTERS.inc(len(dead))
