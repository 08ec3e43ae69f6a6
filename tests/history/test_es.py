"""The History API served from a real Elasticsearch node (the audit trail ships there): isolation,
audit:read, pagination (search_after), filters and redacted text. Slow: one sidecar, one test."""

from __future__ import annotations

import time
from pathlib import Path

from tests.audit.es_helpers import audit_config, wait_es_ids

from .conftest import chat, get, history_config, token, walk

ALICE, BOB = token("es-alice"), token("es-bob")
AUDITOR = token("es-carol", "auditor")
EMAIL = "es.alice@example.com"


def test_history_from_elasticsearch(
    upstream, start_sidecar, elasticsearch, es_index_prefix, tmp_path: Path
) -> None:
    cfg = history_config(tmp_path)
    cfg["audit"].update(audit_config(elasticsearch.url, es_index_prefix)["audit"])
    sc = start_sidecar(upstream.url, config=cfg)
    url = sc.url
    chats = [f"es-a-{i}" for i in range(5)]
    for rid in chats:
        assert chat(url, ALICE, rid) == 200
        time.sleep(0.005)  # distinct milliseconds (Elasticsearch dates)
    assert chat(url, ALICE, "es-a-pii", content=f"write to {EMAIL}") == 200
    assert chat(url, ALICE, "es-a-other", model="other-model") == 200
    assert chat(url, BOB, "es-b-0") == 200
    wait_es_ids(elasticsearch.url, es_index_prefix, {*chats, "es-a-pii", "es-a-other", "es-b-0"})

    status, page = get(url, ALICE, operation="chat", limit=100)
    assert status == 200 and page["source"] == "elasticsearch", page
    assert [e["id"] for e in page["data"]] == ["es-a-other", "es-a-pii", *reversed(chats)]
    # search_after pages: every record once, newest first.
    assert [e["id"] for e in walk(url, ALICE, 2, operation="chat")] == [e["id"] for e in page["data"]]
    assert [e["id"] for e in get(url, ALICE, model="other-model")[1]["data"]] == ["es-a-other"]
    assert get(url, ALICE, status="5xx")[1]["data"] == []
    by_id = {e["id"]: e for e in page["data"]}
    window = walk(url, ALICE, 5, since=by_id["es-a-1"]["created_at"], until=by_id["es-a-3"]["created_at"])
    assert [e["id"] for e in window] == ["es-a-2", "es-a-1"]

    one = get(url, ALICE, "/v1/history/es-a-pii")[1]
    assert "write to" in one["prompt"] and EMAIL not in str(one) and one["redactions_total"] >= 1

    # Isolation and audit:read.
    assert get(url, ALICE, "/v1/history/es-b-0")[0] == 404
    assert get(url, ALICE, user="es-bob")[0] == 403
    status, page = get(url, AUDITOR, user="es-bob", operation="chat")
    assert status == 200 and [e["id"] for e in page["data"]] == ["es-b-0"]
    assert get(url, AUDITOR, "/v1/history/es-a-0")[1]["user"] == "es-alice"
