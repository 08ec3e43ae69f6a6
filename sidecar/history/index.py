"""The spool side of the History API: a small in-memory index of the audit spool, per subject.

Without Elasticsearch the History API reads the local spool (every chain under ``audit.spool_dir``,
one per worker process, so a caller's requests served by any worker are found). A page must not be a
scan of the spool, so each process keeps an index::

    subject -> [(timestamp, request id, chain, segment, offset, status, model, operation), ...]

sorted oldest first (a page walks it backwards from a cursor with ``bisect``). The filters of the API
(time range, model, status, operation) are answered from the entries alone; only the records of the
page are read, grouped by segment: a line of the segment being written is read with one seek, a
sealed segment compressed with gzip (``seg-<seq>.jsonl.gz``) is decompressed once and kept in a small
LRU cache (``cache_bytes``, default 64 MiB of uncompressed text) for the following pages.

Maintenance: built at startup (a background thread, newest segments first, up to ``max_entries``),
then kept current by tailing: before each query the new complete lines of every chain are read from
where the last query stopped (the same positions ``custos audit tail`` follows: segment + offset of
the uncompressed text, valid before and after a segment is compressed). Segments pruned by retention
drop their entries; records without a subject (401s) are not indexed.

Memory: about 250 bytes per indexed record in CPython 3.11 (measured with tracemalloc over 100 000
records: the entry tuple, its timestamp float, offset int and 32-character request id; subjects,
chain names, models and operations are interned and shared). ``max_entries`` (default 200 000, about
50 MB) bounds it: over the cap the oldest ~10 % are dropped and ``oldest`` says from when on the
index is complete; older history is then served only by Elasticsearch (``audit.elasticsearch.hosts``).
A decompressed segment in the cache costs its uncompressed size (``audit.segment_bytes``, 16 MiB by
default), at most ``cache_bytes`` in all.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ..audit.compression import is_compressed, open_segment, plain_path
from ..audit.query import Filter, dig, is_record, timestamp
from ..audit.spool import chain_dirs, iter_lines, list_segments

log = logging.getLogger("custos.history")

DEFAULT_MAX_ENTRIES = 200_000
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024

# (ts, request id, chain, segment first seq, offset of the line, status, model, operation)
Entry = tuple[float, str, str, int, int, int, str | None, str | None]
Key = tuple[float, str, str, int, int]  # the first five fields: unique, and the cursor


def _intern(value: Any) -> str | None:
    return sys.intern(value) if isinstance(value, str) else None


class SpoolIndex:
    """Thread-safe; every public method may block on disk reads (call them from a thread)."""

    def __init__(
        self,
        spool_dir: Path | str,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.max_entries = max_entries
        self.cache_bytes = cache_bytes
        self.by_subject: dict[str, list[Entry]] = {}
        self.count = 0
        self.oldest: float | None = None  # entries before this were dropped (the cap): not complete
        self._pos: dict[str, tuple[int, int]] = {}  # chain name -> (segment first seq, offset read)
        self._low: dict[str, int] = {}  # chain name -> first seq of its oldest segment seen
        self._built = False
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cached = 0

    # -- maintenance ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Build the index (first call) or read what the chains appended since the last call."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        if not self._built:
            self._build()
            self._built = True
            return
        for chain in chain_dirs(self.spool_dir):
            self._tail(chain)

    def _build(self) -> None:
        """Newest segments first, until ``max_entries``: a long spool costs what the cap allows."""
        collected: list[tuple[str, Entry]] = []
        chains = chain_dirs(self.spool_dir)
        segments: list[tuple[str, int, Path]] = []
        for chain in chains:
            segs = list_segments(chain)
            name = sys.intern(chain.name)
            if segs:
                self._low[name] = segs[0][0]
                last_first, last_path = segs[-1]
                end = 0
                with contextlib.suppress(FileNotFoundError, OSError, EOFError):
                    for after, line in iter_lines(last_path):
                        end = after
                        self._add_line(name, last_first, after - len(line) - 1, line, collected)
                self._pos[name] = (last_first, end)
                segments.extend((name, first, path) for first, path in segs[:-1])
            else:
                self._pos[name] = (0, 0)
        # Older segments, newest first over all chains, until the cap.
        for name, first, path in sorted(segments, key=lambda s: s[1], reverse=True):
            if len(collected) >= self.max_entries:
                self.oldest = min(e[0] for _, e in collected)  # older segments are not read
                break
            with contextlib.suppress(FileNotFoundError, OSError, EOFError):
                for after, line in iter_lines(path):
                    self._add_line(name, first, after - len(line) - 1, line, collected)
        for subject, entry in collected:
            self.by_subject.setdefault(subject, []).append(entry)
        for entries in self.by_subject.values():
            entries.sort()
        self.count = len(collected)
        if self.count > self.max_entries:
            self._evict()
        log.info("history: indexed %d audit records of %d chain(s)", self.count, len(chains))

    def _add_line(
        self, chain: str, first: int, offset: int, line: bytes, out: list[tuple[str, Entry]]
    ) -> None:
        if b'"user"' not in line:
            return
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not is_record(doc):
            return
        subject = dig(doc, "user", "id")
        ts = timestamp(doc)
        if not isinstance(subject, str) or ts is None:
            return
        rid = dig(doc, "event", "id")
        status = dig(doc, "http", "response", "status_code")
        entry: Entry = (
            ts,
            rid if isinstance(rid, str) else "",
            chain,
            first,
            offset,
            status if isinstance(status, int) else 0,
            _intern(dig(doc, "llm", "request", "model")),
            _intern(dig(doc, "llm", "operation", "name")),
        )
        out.append((sys.intern(subject), entry))

    def _tail(self, chain: Path) -> None:
        name = sys.intern(chain.name)
        segs = list_segments(chain)
        if not segs:
            return
        low = self._low.get(name)
        if low is not None and segs[0][0] > low:
            self._purge(name, segs[0][0])  # retention pruned segments: their records are gone
        self._low[name] = segs[0][0]
        first, offset = self._pos.get(name, (0, 0))  # a chain new since the build: read it all
        added: list[tuple[str, Entry]] = []
        for seg_first, path in segs:
            if seg_first < first:
                continue
            begin = offset if seg_first == first else 0
            end = begin
            with contextlib.suppress(FileNotFoundError, OSError, EOFError):
                for after, line in iter_lines(path, begin):
                    end = after
                    self._add_line(name, seg_first, after - len(line) - 1, line, added)
            first, offset = seg_first, end
        self._pos[name] = (first, offset)
        for subject, entry in added:
            entries = self.by_subject.setdefault(subject, [])
            if not entries or entries[-1] <= entry:
                entries.append(entry)  # the usual case: newer than everything indexed
            else:
                bisect.insort(entries, entry)
        self.count += len(added)
        if self.count > self.max_entries:
            self._evict()

    def _purge(self, chain: str, low: int) -> None:
        for subject in list(self.by_subject):
            entries = self.by_subject[subject]
            kept = [e for e in entries if e[2] != chain or e[3] >= low]
            if len(kept) != len(entries):
                self.count -= len(entries) - len(kept)
                if kept:
                    self.by_subject[subject] = kept
                else:
                    del self.by_subject[subject]
        for key in [k for k in self._cache if k[0] == chain and k[1] < low]:
            self._cached -= len(self._cache.pop(key))

    def _evict(self) -> None:
        """Drop the oldest ~10 % (by timestamp) so the index stays under ``max_entries``."""
        target = int(self.max_entries * 0.9)
        stamps = sorted(e[0] for entries in self.by_subject.values() for e in entries)
        cutoff = stamps[len(stamps) - target] if target < len(stamps) else stamps[0]
        count = 0
        for subject in list(self.by_subject):
            entries = self.by_subject[subject]
            cut = bisect.bisect_left(entries, (cutoff,))
            if cut:
                del entries[:cut]
            if entries:
                count += len(entries)
            else:
                del self.by_subject[subject]
        self.count = count
        self.oldest = cutoff

    # -- queries ----------------------------------------------------------------------------------
    def page(
        self,
        subject: str | None,
        flt: Filter,
        limit: int,
        after: Key | None = None,
    ) -> tuple[list[dict[str, Any]], Key | None, bool]:
        """Up to ``limit`` records of ``subject`` (every subject: None) matching ``flt``, newest first,
        older than ``after``; with the key of the last one and whether more follow."""
        with self._lock:
            self._refresh()
            picked: list[Entry] = []
            more = False
            for entry in self._walk(subject, after):
                if not self._matches(entry, flt):
                    continue
                if len(picked) == limit:
                    more = True
                    break
                picked.append(entry)
            docs = self._read(picked)
        # A record pruned between the refresh and the read is left out.
        found = [(e, d) for e, d in zip(picked, docs, strict=True) if d is not None]
        last: Key | None = tuple(picked[-1][:5]) if picked else None  # type: ignore[assignment]
        return [d for _, d in found], last, more

    def find(self, request_id: str, subject: str | None) -> dict[str, Any] | None:
        """The newest record with this request id (of ``subject`` only, unless None)."""
        with self._lock:
            self._refresh()
            pools = [self.by_subject.get(subject, [])] if subject is not None else self.by_subject.values()
            # One pass, no sort (an audit:read lookup looks at every subject's entries).
            hits = sorted((e for entries in pools for e in entries if e[1] == request_id), reverse=True)
            for entry in hits:
                doc = self._read([entry])[0]
                if doc is not None:
                    return doc
        return None

    def _walk(self, subject: str | None, after: Key | None) -> Iterator[Entry]:
        if subject is not None:
            entries = self.by_subject.get(subject, [])
            end = len(entries) if after is None else bisect.bisect_left(entries, after)
            for i in range(end - 1, -1, -1):
                yield entries[i]
            return
        # Every subject (an audit:read caller without ?user=): merged newest first.
        pool = sorted(
            (e for entries in self.by_subject.values() for e in entries if after is None or e < after),
            reverse=True,
        )
        yield from pool

    @staticmethod
    def _matches(entry: Entry, flt: Filter) -> bool:
        ts = entry[0]
        if flt.since is not None and ts < flt.since:
            return False
        if flt.until is not None and ts >= flt.until:
            return False
        if flt.statuses is not None and entry[5] not in flt.statuses:
            return False
        if flt.model is not None and entry[6] != flt.model:
            return False
        return flt.operation is None or entry[7] == flt.operation

    def _read(self, entries: list[Entry]) -> list[dict[str, Any] | None]:
        """The records at these positions, each segment opened (or decompressed) once."""
        out: list[dict[str, Any] | None] = [None] * len(entries)
        by_seg: dict[tuple[str, int], list[int]] = {}
        for i, e in enumerate(entries):
            by_seg.setdefault((e[2], e[3]), []).append(i)
        for (chain, first), idxs in by_seg.items():
            segs = dict(list_segments(self.spool_dir / chain))
            path = segs.get(first)
            if path is None:
                continue
            for i, line in zip(
                idxs, self._lines(chain, first, path, [entries[i][4] for i in idxs]), strict=True
            ):
                if line is None:
                    continue
                with contextlib.suppress(orjson.JSONDecodeError):
                    out[i] = orjson.loads(line)
        return out

    def _lines(self, chain: str, first: int, path: Path, offsets: list[int]) -> list[bytes | None]:
        if not is_compressed(path):
            try:
                with open(plain_path(path), "rb") as f:
                    lines = []
                    for off in offsets:
                        f.seek(off)
                        lines.append(f.readline().rstrip(b"\n") or None)
                    return lines
            except FileNotFoundError:
                pass  # compressed meanwhile: read it below
        data = self._segment_bytes(chain, first, path)
        if data is None:
            return [None] * len(offsets)
        out: list[bytes | None] = []
        for off in offsets:
            end = data.find(b"\n", off)
            out.append(data[off:end] if end > off else None)
        return out

    def _segment_bytes(self, chain: str, first: int, path: Path) -> bytes | None:
        key = (chain, first)
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
            return data
        try:
            with open_segment(path) as f:
                data = f.read()
        except (FileNotFoundError, OSError, EOFError):
            return None
        if len(data) <= self.cache_bytes:
            self._cache[key] = data
            self._cached += len(data)
            while self._cached > self.cache_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)
        return data

    def stats(self) -> dict[str, Any]:
        return {
            "entries": self.count,
            "subjects": len(self.by_subject),
            "oldest": self.oldest,
            "cached_bytes": self._cached,
        }
