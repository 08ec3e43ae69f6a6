"""Reading what reached Elasticsearch (with the official client) and driving load for the ES tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan


def audit_config(url: str, prefix: str, **extra: Any) -> dict[str, Any]:
    es = {
        "hosts": [url],
        "index": prefix,
        "checkpoint_index": f"{prefix}-checkpoints",
        "backoff_initial_s": 0.2,
        "backoff_max_s": 2.0,
    }
    es.update(extra.pop("elasticsearch", {}))
    return {"audit": {"checkpoint_every": 20, "checkpoint_interval_s": 2, "elasticsearch": es, **extra}}


def es_docs(url: str, prefix: str) -> list[dict[str, Any]]:
    client = Elasticsearch(url, request_timeout=30)
    try:
        client.indices.refresh(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
        hits = scan(client, index=f"{prefix}-2*", query={"query": {"match_all": {}}}, ignore_unavailable=True)
        return [{"_id": h["_id"], "_index": h["_index"], **h["_source"]} for h in hits]
    finally:
        client.close()


def wait_es_ids(url: str, prefix: str, expected: set[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Waits until every expected event id is in Elasticsearch; returns all record documents."""
    deadline = time.monotonic() + timeout
    docs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            docs = es_docs(url, prefix)
        except Exception:
            docs = []
        if expected <= {d["event"]["id"] for d in docs}:
            time.sleep(1.0)  # anything extra (a duplicate) would show up now too
            return es_docs(url, prefix)
        time.sleep(0.5)
    missing = expected - {d["event"]["id"] for d in docs}
    raise AssertionError(f"{len(missing)} record(s) never reached Elasticsearch, e.g. {sorted(missing)[:5]}")


@dataclass
class Load:
    """A few client threads sending chat requests with known request ids until stopped."""

    url: str
    headers: dict[str, str]
    tag: str
    threads: int = 3
    results: list[tuple[str, int, float]] = field(default_factory=list)  # (id, status, finished at)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for t in range(self.threads):
            w = threading.Thread(target=self._run, args=(t,), daemon=True)
            w.start()
            self._workers.append(w)
        return self

    def _run(self, t: int) -> None:
        i = 0
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                rid = f"{self.tag}-{t}-{i}"
                i += 1
                try:
                    r = client.post(
                        "/v1/chat/completions",
                        headers={"x-request-id": rid},
                        json={
                            "model": "custos-tiny",
                            "max_tokens": 4,
                            "messages": [{"role": "user", "content": f"load {rid}"}],
                        },
                    )
                    self.results.append((rid, r.status_code, time.time()))
                except httpx.HTTPError:
                    self.results.append((rid, -1, time.time()))
                    time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(60)

    def ok_ids(self, before: float | None = None) -> set[str]:
        return {rid for rid, status, at in self.results if status == 200 and (before is None or at < before)}
