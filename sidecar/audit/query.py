"""Reading the audit trail for people: find records by request id, user, time range, outcome and
status, in the local spool or in Elasticsearch, and follow the spool as it grows.

Used by ``custos audit show|search|tail``. The spool is read through the spool's own reader
(:func:`sidecar.audit.spool.iter_lines` over :func:`~sidecar.audit.spool.list_segments`), so sealed
segments that were compressed (``seg-<seq>.jsonl.gz``) read like the segment being written, and a
segment pruned while it is read is skipped. Only records are returned: checkpoints and pruning notes
live in ``checkpoints.jsonl`` and are never read here (``custos audit verify`` checks those).

Times: RFC 3339 (``2026-11-30T08:00:00Z``, ``2026-11-30T09:00:00+01:00``, ``2026-11-30``) or a
duration back from now (``90s``, ``15m``, ``1h``, ``2d``, ``1w``; also ``now``).
"""

from __future__ import annotations

import contextlib
import heapq
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .spool import chain_dirs, is_chain_dir, iter_lines, list_segments

OUTCOMES = ("success", "failure", "unknown")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class QueryError(ValueError):
    """Bad query input (a time, a status, a source): one line for the user."""


# -- filters -----------------------------------------------------------------------------------------
def parse_time(text: str, now: float | None = None) -> float:
    """Seconds since the epoch for an RFC 3339 time or a duration back from ``now``."""
    now = time.time() if now is None else now
    value = text.strip()
    if value == "now":
        return now
    m = _RELATIVE.match(value)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise QueryError(
            f"{text!r}: expected an RFC 3339 time (2026-11-30T08:00:00Z) or a duration back from now "
            "(90s, 15m, 1h, 2d, 1w)"
        ) from None
    if dt.tzinfo is None:
        if "T" in value or " " in value:
            raise QueryError(f"{text!r}: give a time zone (Z or +01:00): audit timestamps are UTC")
        dt = dt.replace(tzinfo=UTC)  # a bare date: midnight UTC
    return dt.timestamp()


def parse_statuses(text: str) -> frozenset[int]:
    """``403`` or ``401,403,429`` or a class ``4xx``."""
    codes: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if re.fullmatch(r"[1-5]xx", part, re.I):
            base = int(part[0]) * 100
            codes.update(range(base, base + 100))
        elif part.isdigit() and 100 <= int(part) <= 599:
            codes.add(int(part))
        else:
            raise QueryError(f"{part[:20]!r} is not an HTTP status code (100-599, or a class like 4xx)")
    return frozenset(codes)


def dig(doc: Any, *keys: str) -> Any:
    """``doc[k1][k2]...`` of a JSON record, None where a level is missing or not an object."""
    for k in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    return doc


def timestamp(doc: dict[str, Any]) -> float | None:
    ts = doc.get("@timestamp")
    if not isinstance(ts, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(ts[:-1] + "+00:00" if ts.endswith("Z") else ts).timestamp()
    return None


@dataclass
class Filter:
    request_id: str | None = None
    user: str | None = None
    since: float | None = None  # inclusive, seconds since the epoch
    until: float | None = None  # exclusive
    outcome: str | None = None
    statuses: frozenset[int] | None = None
    model: str | None = None  # llm.request.model, exact
    operation: str | None = None  # llm.operation.name (chat, text_completion, history, ...), exact

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise QueryError(f"outcome {self.outcome!r}: expected one of {', '.join(OUTCOMES)}")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise QueryError("the time range is empty: --until must be later than --since")

    def matches(self, doc: dict[str, Any]) -> bool:
        if self.request_id is not None and dig(doc, "event", "id") != self.request_id:
            return False
        if self.user is not None and dig(doc, "user", "id") != self.user:
            return False
        if self.outcome is not None and dig(doc, "event", "outcome") != self.outcome:
            return False
        if self.statuses is not None and dig(doc, "http", "response", "status_code") not in self.statuses:
            return False
        if self.model is not None and dig(doc, "llm", "request", "model") != self.model:
            return False
        if self.operation is not None and dig(doc, "llm", "operation", "name") != self.operation:
            return False
        if self.since is not None or self.until is not None:
            ts = timestamp(doc)
            if ts is None:
                return False
            if self.since is not None and ts < self.since:
                return False
            if self.until is not None and ts >= self.until:
                return False
        return True

    def es_query(self) -> dict[str, Any]:
        """The same filter as an Elasticsearch query (``keyword`` fields of the audit template)."""
        must: list[dict[str, Any]] = []
        if self.request_id is not None:
            must.append({"term": {"event.id": self.request_id}})
        if self.user is not None:
            must.append({"term": {"user.id": self.user}})
        if self.outcome is not None:
            must.append({"term": {"event.outcome": self.outcome}})
        if self.statuses is not None:
            must.append({"terms": {"http.response.status_code": sorted(self.statuses)}})
        if self.model is not None:
            must.append({"term": {"llm.request.model": self.model}})
        if self.operation is not None:
            must.append({"term": {"llm.operation.name": self.operation}})
        if self.since is not None or self.until is not None:
            rng: dict[str, Any] = {"format": "strict_date_optional_time"}
            if self.since is not None:
                rng["gte"] = _iso(self.since)
            if self.until is not None:
                rng["lt"] = _iso(self.until)
            must.append({"range": {"@timestamp": rng}})
        # Checkpoints are stored in their own index, but a pattern may match it too.
        must_not = [{"terms": {"audit.type": ["checkpoint", "prune"]}}]
        return {"bool": {"filter": must, "must_not": must_not}}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the spool ---------------------------------------------------------------------------------------
@dataclass
class Source:
    """Where records are read from: chain directories of a spool, or one JSON-lines export file."""

    path: Path
    chains: list[Path] = field(default_factory=list)
    file: Path | None = None

    def describe(self) -> str:
        return str(self.path)


def open_source(path: Path) -> Source:
    """A spool directory, one chain directory, or a JSON-lines export (``QueryError`` otherwise)."""
    path = path.expanduser()
    if not path.exists():
        raise QueryError(f"{path}: no such file or directory")
    if path.is_file():
        return Source(path, file=path)
    chains = [path] if is_chain_dir(path) else chain_dirs(path)
    if not chains:
        raise QueryError(f"{path}: no audit chains there (is it the spool directory, audit.spool_dir?)")
    return Source(path, chains=chains)


def _is_record(doc: Any) -> bool:
    audit = dig(doc, "audit")
    return isinstance(audit, dict) and audit.get("type") not in ("checkpoint", "prune")


is_record = _is_record  # public: the History API's spool index (sidecar/history) reads with it


def _records_of(path: Path) -> Iterator[dict[str, Any]]:
    """Records of one segment or export file, in file order; a file pruned meanwhile reads as empty,
    an unreadable line is skipped (``custos audit verify`` reports it)."""
    try:
        for _pos, line in iter_lines(path):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if _is_record(doc):
                yield doc
    except FileNotFoundError:
        return


def _chain_records(chain_dir: Path) -> Iterator[dict[str, Any]]:
    for _first, seg in list_segments(chain_dir):
        yield from _records_of(seg)


def _sort_key(doc: dict[str, Any]) -> str:
    ts = doc.get("@timestamp")
    return ts if isinstance(ts, str) else ""


def iter_records(source: Source) -> Iterator[dict[str, Any]]:
    """Every record, oldest first (the chains, one per worker, merged by ``@timestamp``)."""
    if source.file is not None:
        yield from sorted(_records_of(source.file), key=_sort_key)
        return
    # Each chain is in time order (records are sealed in order); merge them.
    yield from heapq.merge(*(_chain_records(c) for c in source.chains), key=_sort_key)


def search(source: Source, flt: Filter, limit: int | None = None) -> list[dict[str, Any]]:
    """Matching records, oldest first; with ``limit`` only the newest ``limit`` of them."""
    matches = (doc for doc in iter_records(source) if flt.matches(doc))
    if limit is None:
        return sorted(matches, key=_sort_key)
    # @timestamp is when a request started: a long one is sealed after shorter later ones, so the
    # merged stream is nearly, not strictly, in time order; pick the newest by timestamp.
    return sorted(heapq.nlargest(limit, matches, key=_sort_key), key=_sort_key)


Position = dict[Path, tuple[int, int]]  # chain dir -> (first seq of its segment, offset in it)


def end_positions(source: Source) -> Position:
    """Where each chain ends now: where :func:`follow` starts. Taken before the last records are
    shown (``tail -n N -f``), so nothing written in between is missed."""
    if source.file is not None:
        raise QueryError("following needs a spool directory, not an export file")
    pos: Position = {}
    for chain in source.chains:
        segs = list_segments(chain)
        if not segs:
            pos[chain] = (0, 0)
            continue
        first, path = segs[-1]
        end = 0
        with contextlib.suppress(FileNotFoundError):
            for after, _line in iter_lines(path):
                end = after
        pos[chain] = (first, end)
    return pos


def record_key(doc: dict[str, Any]) -> tuple[Any, Any]:
    audit = dig(doc, "audit") or {}
    return audit.get("chain_id"), audit.get("seq")


def follow(
    source: Source,
    flt: Filter,
    *,
    start: Position | None = None,
    seen: set[tuple[Any, Any]] | None = None,
    poll_s: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any]]:
    """Records appended to the spool after ``start`` (default: now), as they are written
    (``tail -f``): new lines of each chain's segments, segments opened after a rotation (also once
    the sealed one was compressed), and chains of workers that start later. A torn last line is read
    once it is complete. Records in ``seen`` ((chain id, seq), already shown) are skipped."""
    pos = dict(start) if start is not None else end_positions(source)
    seen = seen or set()
    spool = source.path if not is_chain_dir(source.path) else None
    while not stop():
        found = False
        if spool is not None:
            for chain in chain_dirs(spool):
                if chain not in pos:
                    pos[chain] = (0, 0)  # a worker that started after us: all of its records are new
        for chain, (first, offset) in list(pos.items()):
            for seg_first, path in list_segments(chain):
                if seg_first < first:
                    continue
                begin = offset if seg_first == first else 0
                end = begin
                try:
                    for after, line in iter_lines(path, begin):
                        end = after
                        try:
                            doc = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            continue
                        if _is_record(doc) and flt.matches(doc) and record_key(doc) not in seen:
                            found = True
                            yield doc
                except FileNotFoundError:
                    continue
                first, offset = seg_first, end
            pos[chain] = (first, offset)
        if not found:
            sleep(poll_s)


# -- Elasticsearch -----------------------------------------------------------------------------------
def search_es(client: Any, index: str, flt: Filter, limit: int | None) -> list[dict[str, Any]]:
    """Matching records from Elasticsearch, oldest first (the newest ``limit`` with a limit)."""
    query = flt.es_query()
    if limit is not None:
        resp = client.search(
            index=index,
            query=query,
            size=limit,
            sort=[{"@timestamp": {"order": "desc", "unmapped_type": "date"}}],
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        docs = [h["_source"] for h in resp["hits"]["hits"]]
        return sorted(docs, key=_sort_key)
    from elasticsearch.helpers import scan

    docs = [h["_source"] for h in scan(client, index=index, query={"query": query}, size=2000)]
    return sorted(docs, key=_sort_key)


# Newest first, with tie-breakers that make the order total (a client may reuse a request id; two
# chains may stamp the same millisecond): the keys of ``search_after`` pages.
ES_PAGE_SORT: list[dict[str, Any]] = [
    {"@timestamp": {"order": "desc", "unmapped_type": "date"}},
    {"event.id": {"order": "desc", "unmapped_type": "keyword"}},
    {"audit.chain_id": {"order": "desc", "unmapped_type": "keyword"}},
    {"audit.seq": {"order": "desc", "unmapped_type": "long"}},
]


def search_es_page(
    client: Any, index: str, flt: Filter, size: int, search_after: list[Any] | None = None
) -> list[tuple[dict[str, Any], list[Any]]]:
    """One page of matching records, newest first (``ES_PAGE_SORT``), each with its sort values (pass
    the last one's as ``search_after`` for the next page). Used by the History API (sidecar/history);
    a page costs one search, however deep it is."""
    kwargs: dict[str, Any] = {}
    if search_after is not None:
        kwargs["search_after"] = search_after
    resp = client.search(
        index=index,
        query=flt.es_query(),
        size=size,
        sort=ES_PAGE_SORT,
        ignore_unavailable=True,
        allow_no_indices=True,
        track_total_hits=False,
        **kwargs,
    )
    return [(h["_source"], list(h["sort"])) for h in resp["hits"]["hits"]]


# -- presentation ------------------------------------------------------------------------------------
COLUMNS = ("TIME", "REQUEST ID", "USER", "STATUS", "OUTCOME", "METHOD", "PATH", "DETAIL")


def row(doc: dict[str, Any]) -> tuple[str, ...]:
    """One table row: when, which request, who, how it ended, and why (deny reason, error, model)."""
    status = dig(doc, "http", "response", "status_code")
    detail = (
        dig(doc, "event", "reason")
        or dig(doc, "llm", "authz", "reason")
        or dig(doc, "error", "message")
        or dig(doc, "llm", "request", "model")
        or ""
    )
    action = dig(doc, "event", "action")
    if action in ("audit_loss", "audit_restart"):
        detail = f"[{action}] {detail}".strip()
    ts = doc.get("@timestamp")
    if isinstance(ts, str) and len(ts) > 24 and ts.endswith("Z") and "." in ts:
        ts = ts[:23] + "Z"  # milliseconds are enough to read; --json has the stored value
    return (
        str(ts or "-"),
        str(dig(doc, "event", "id") or "-"),
        str(dig(doc, "user", "id") or "-"),
        str(status) if isinstance(status, int) else "-",
        str(dig(doc, "event", "outcome") or "-"),
        str(dig(doc, "http", "request", "method") or "-"),
        str(dig(doc, "url", "path") or "-"),
        _one_line(str(detail)),
    )


def _one_line(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


_CAPS = (24, 36, 32, 6, 7, 7, 40, 80)
FOLLOW_WIDTHS = [24, 12, 12, 6, 7, 6, 24, 80]  # ``tail -f`` before any record was seen


def column_widths(docs: Iterable[dict[str, Any]]) -> list[int]:
    widths = [len(c) for c in COLUMNS]
    for r in (row(d) for d in docs):
        widths = [min(max(w, len(v)), cap) for w, v, cap in zip(widths, r, _CAPS, strict=True)]
    return widths


def table(docs: Iterable[dict[str, Any]], header: bool = True, widths: list[int] | None = None) -> list[str]:
    """Rows under a header; ``widths`` fixed (``tail -f``: columns stay put as records arrive)."""
    docs = list(docs)
    widths = widths or column_widths(docs)
    out = [_fmt(COLUMNS, widths)] if header else []
    out += [_fmt(row(d), widths) for d in docs]
    return out


def _fmt(values: tuple[str, ...], widths: list[int]) -> str:
    cells = [v if len(v) <= w else v[: w - 1] + "…" for v, w in zip(values, widths, strict=True)]
    return "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)) + "  " + cells[-1]


def details(doc: dict[str, Any]) -> list[str]:
    """A record in full, one ``field: value`` line per leaf (dotted ECS names), for ``show``."""
    lines: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key in sorted(node):
                walk(node[key], f"{prefix}.{key}" if prefix else key)
        elif node is None or node == [] or node == {}:
            return
        else:
            value = ", ".join(map(str, node)) if isinstance(node, list) else str(node)
            lines.append(f"{prefix}: {value}")

    walk(doc, "")
    width = max((len(line.split(": ", 1)[0]) for line in lines), default=0)
    return [f"{k.ljust(width)}  {v}" for k, _, v in (line.partition(": ") for line in lines)]


def json_line(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()
