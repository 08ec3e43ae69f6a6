"""Canonical serialization and the record hash.

Canonical form: JSON with keys sorted at every level, no whitespace, UTF-8, integers only for numbers
(durations in ns, counts), times as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The same bytes come out whether the
record is fresh, read back from the spool or fetched from Elasticsearch's ``_source``, so anyone can
recompute the hash.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS = "0" * 64
_OPTS = orjson.OPT_SORT_KEYS


def canonical(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=_OPTS)


def record_hash(doc: dict[str, Any]) -> str:
    """SHA-256 over the canonical record without its own ``audit.hash``."""
    audit = doc.get("audit")
    if isinstance(audit, dict) and "hash" in audit:
        audit = dict(audit)
        del audit["hash"]
        doc = {**doc, "audit": audit}
    return hashlib.sha256(canonical(doc)).hexdigest()


# (second, its "YYYY-MM-DDTHH:MM:SS" form): records of the same second share the formatted part.
# One tuple, replaced whole: the writer thread formats times too.
_LAST_SECOND: tuple[int, str] = (-1, "")


def utc_iso(ts: float) -> str:
    """Fixed-width RFC 3339 UTC time with microseconds (as ``datetime.fromtimestamp`` rounds them:
    half to even). Three per record: the seconds part is formatted once per second."""
    global _LAST_SECOND
    if ts < 0:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    frac, whole = math.modf(ts)
    sec, us = int(whole), round(frac * 1e6)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    last = _LAST_SECOND
    if last[0] != sec:
        last = _LAST_SECOND = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{last[1]}.{us:06d}Z"
