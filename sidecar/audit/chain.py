"""A hash chain: each record carries ``audit.chain_id``, ``audit.seq``, ``audit.prev_hash`` and
``audit.hash`` (SHA-256 over its canonical form without the hash). Sealing happens in the event loop,
in completion order, so the spool file order is the chain order."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .canonical import GENESIS

SCHEMA = 1
_OPTS = orjson.OPT_SORT_KEYS


class Chain:
    __slots__ = ("chain_id", "last_hash", "seq")

    def __init__(self, chain_id: str, seq: int = 0, last_hash: str = GENESIS) -> None:
        self.chain_id = chain_id
        self.seq = seq
        self.last_hash = last_hash

    def seal(self, record: dict[str, Any]) -> bytes:
        """Add the chain fields and return the record as one canonical JSON line."""
        seq = self.seq + 1
        audit = {"chain_id": self.chain_id, "prev_hash": self.last_hash, "schema": SCHEMA, "seq": seq}
        record["audit"] = audit
        digest = hashlib.sha256(orjson.dumps(record, option=_OPTS)).hexdigest()
        audit["hash"] = digest
        self.seq = seq
        self.last_hash = digest
        return orjson.dumps(record, option=_OPTS | orjson.OPT_APPEND_NEWLINE)
