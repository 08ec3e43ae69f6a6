"""Local retention of the audit spool (``audit.retention``): which sealed segments may be pruned, and why.

Per worker: each worker process owns its chain and its spool directory (``max_bytes`` is per worker
too), so no process ever deletes another's files and nothing is coordinated on the hot path; a host
holds at most ``server.workers`` x ``max_bytes``.

A segment may be pruned only when

- it is sealed (the writer moved on to the next one: the current segment is never pruned),
- a signed checkpoint covers its last record (the writer signs one whenever it seals a segment),
- with a sink (Elasticsearch) configured, the sink acknowledged its last record,
- with ``archive_dir``, its copy (and the checkpoints up to it) is in the archive,

and only the oldest ones, in order (pruning leaves no hole, so signed pruning notes always cover the
whole head of the chain). Without a sink and with ``retention.enabled: false`` nothing is prunable:
the spool fills up to ``max_bytes`` and ``when_full`` decides, as before retention existed. With a sink,
shipped segments are always prunable when room is needed (the sink holds them).

Why a segment goes: ``room`` (the spool needs room under ``max_bytes`` for new records), ``age`` (its
newest record is older than ``max_age_days``), ``size`` (the spool is over ``retention.max_bytes``).
Each pruning writes a signed note first (``audit.type: prune``, ``from``, ``seq``, ``hash``, ``reason``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

ROOM, AGE, SIZE = "room", "age", "size"


@dataclass(frozen=True, slots=True)
class Policy:
    enabled: bool = False  # the spool's own default; the config's default is on (AuditConfig)
    max_age_s: float = 0.0  # 0: no age limit
    max_bytes: int = 0  # 0: only when room is needed under the cap
    archiving: bool = False  # archive_dir is set: only archived segments may go

    @classmethod
    def from_config(cls, cfg: Any) -> Policy:
        ret = cfg.retention
        return cls(
            enabled=ret.enabled,
            max_age_s=ret.max_age_days * 86400.0,
            max_bytes=ret.max_bytes,
            archiving=cfg.archive_dir is not None,
        )

    @property
    def periodic(self) -> bool:
        """Segments can become due with nothing written (by age)."""
        return self.enabled and self.max_age_s > 0

    def prunable(self, seg: Any, *, covered_seq: int, acked_seq: int | None) -> bool:
        """A sealed segment ``seg`` may be pruned now (reason aside). ``acked_seq``: how far the sink
        acknowledged (None: no sink configured)."""
        if acked_seq is None and not self.enabled:
            return False  # no sink, retention off: keep everything, when_full decides
        if seg.last_seq > covered_seq:
            return False  # no signed checkpoint over it yet
        if acked_seq is not None and seg.last_seq > acked_seq:
            return False  # the sink does not have it yet
        return not (self.archiving and not seg.archived)

    def due(self, seg: Any, *, total_bytes: int, now: float | None = None) -> str | None:
        """Why the policy wants this (oldest, prunable) segment gone with room left (None: not)."""
        if not self.enabled:
            return None
        if self.max_age_s > 0 and seg.mtime and (now or time.time()) - seg.mtime > self.max_age_s:
            return AGE
        if self.max_bytes > 0 and total_bytes > self.max_bytes:
            return SIZE
        return None


def describe(cfg: Any, *, shipping: bool) -> str:
    """What retention is in force, in one line (the startup log says it)."""
    ret = cfg.retention
    mib = cfg.max_bytes / 1024**2
    if not ret.enabled and not shipping:
        return (
            f"retention off: nothing is pruned; at max_bytes={mib:g} MiB per worker "
            f"when_full={cfg.when_full} applies"
        )
    parts = [f"the oldest signed segments are pruned when a worker's spool reaches max_bytes={mib:g} MiB"]
    if not ret.enabled:
        parts = [f"shipped segments are pruned when a worker's spool reaches max_bytes={mib:g} MiB"]
    else:
        if ret.max_age_days:
            parts.append(f"or once older than {ret.max_age_days:g} days")
        if ret.max_bytes:
            parts.append(f"or beyond {ret.max_bytes / 1024**2:g} MiB")
    if shipping:
        parts.append("(only once Elasticsearch has them)")
    if cfg.archive_dir is not None:
        parts.append(f"after archiving them to {cfg.archive_dir}")
    else:
        parts.append("(no archive_dir: pruned records are gone, noted in signed pruning notes)")
    comp = "gzip-compressed" if cfg.compression == "gzip" else "uncompressed"
    return f"retention: {' '.join(parts)}; sealed segments are {comp}"
