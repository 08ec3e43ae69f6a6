"""The History API over the local spool (no Elasticsearch), through a real sidecar in front of the
recording upstream: isolation, audit:read, pagination, filters, redacted text, RBAC, OpenAPI, errors;
and the spool index in-process (compressed segments, tailing, the memory cap)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from sidecar.audit.query import Filter, open_source, search
from sidecar.audit.spool import chain_dirs, list_segments
from sidecar.history.index import SpoolIndex

from .conftest import chat, get, history_config, token, walk

ALICE, BOB = token("alice"), token("bob")
AUDITOR = token("carol", "auditor")
EMAIL = "alice.secret@example.com"


def _spool(sc) -> Path:
    return Path(sc.config["state"]["dir"]) / "audit" / "spool"


def test_history_over_the_spool(upstream, start_sidecar, tmp_path: Path) -> None:
    # Small segments: sealed ones are gzip-compressed, so pages read compressed segments too.
    sc = start_sidecar(upstream.url, config=history_config(tmp_path, segment_bytes=4096))
    url = sc.url
    alice_chats = [f"alice-{i}" for i in range(7)]
    for rid in alice_chats:
        assert chat(url, ALICE, rid) == 200
        time.sleep(0.002)  # distinct timestamps, so "newest first" is one order
    assert chat(url, ALICE, "alice-pii", content=f"Mail me at {EMAIL} please") == 200
    assert chat(url, ALICE, "alice-other", model="other-model") == 200
    assert chat(url, ALICE, "alice-bad", model=None) == 400  # no model: refused, still recorded
    for rid in ("bob-0", "bob-1"):
        assert chat(url, BOB, rid) == 200

    # The caller's own records, newest first; never another user's.
    status, page = get(url, ALICE, limit=100)
    assert status == 200 and page["object"] == "list" and page["source"] == "spool", page
    ids = [e["id"] for e in page["data"]]
    assert ids[:4] == ["alice-bad", "alice-other", "alice-pii", "alice-6"]
    assert set(alice_chats) <= set(ids) and not {i for i in ids if i.startswith("bob")}
    assert {e["user"] for e in page["data"]} == {"alice"}
    stamps = [e["created_at"] for e in page["data"]]
    assert stamps == sorted(stamps, reverse=True)
    first = next(e for e in page["data"] if e["id"] == "alice-6")
    assert first["model"] == "custos-tiny" and first["operation"] == "chat" and first["status"] == 200
    assert first["usage"] == {"input_tokens": 3, "output_tokens": 3}
    assert first["finish_reasons"] == ["stop"] and first["outcome"] == "success"

    # Pagination: the cursor walks every chat record exactly once, newest first.
    walked = walk(url, ALICE, 3, operation="chat")
    wanted = ["alice-bad", "alice-other", "alice-pii", *reversed(alice_chats)]
    assert [e["id"] for e in walked] == wanted
    # Filters.
    assert [e["id"] for e in get(url, ALICE, model="other-model")[1]["data"]] == ["alice-other"]
    assert [e["id"] for e in get(url, ALICE, status="4xx", operation="chat")[1]["data"]] == ["alice-bad"]
    by_id = {e["id"]: e for e in walked}
    since, until = by_id["alice-2"]["created_at"], by_id["alice-5"]["created_at"]
    window = walk(url, ALICE, 2, since=since, until=until, operation="chat")
    assert [e["id"] for e in window] == ["alice-4", "alice-3", "alice-2"]  # since inclusive, until not
    assert get(url, ALICE, since="2099-01-01T00:00:00Z")[1]["data"] == []

    # Stored text is the redacted text: the placeholder, never the address.
    status, one = get(url, ALICE, "/v1/history/alice-pii")
    assert status == 200 and one["id"] == "alice-pii"
    assert one["prompt"] and "Mail me at" in one["prompt"] and EMAIL not in str(one)
    assert one["redactions"].get("EMAIL", 0) >= 1 and one["redactions_total"] >= 1
    assert one["answer"] == "Hello there."
    status, listed = get(url, ALICE, model="custos-tiny", limit=100)
    assert EMAIL not in str(listed)

    # Isolation: bob's record is 404 for alice, exactly like one that does not exist.
    status, err = get(url, ALICE, "/v1/history/bob-0")
    status2, err2 = get(url, ALICE, "/v1/history/no-such-id")
    assert status == status2 == 404 and err["error"]["code"] == err2["error"]["code"] == "not_found"
    assert set(err["error"]) == {"message", "type", "param", "code"}
    assert [e["id"] for e in get(url, BOB, operation="chat")[1]["data"]] == ["bob-1", "bob-0"]
    status, err = get(url, ALICE, user="bob")
    assert status == 403 and err["error"]["param"] == "user" and "audit:read" in err["error"]["message"]
    assert get(url, ALICE, user="alice")[0] == 200  # naming oneself is fine

    # audit:read: another subject's history, and any record by id.
    status, page = get(url, AUDITOR, user="bob", operation="chat")
    assert status == 200 and [e["id"] for e in page["data"]] == ["bob-1", "bob-0"]
    assert get(url, AUDITOR, "/v1/history/alice-pii")[1]["user"] == "alice"

    # RBAC: a role without history:list is refused (403), and the refusal is audited.
    nohist = token("dave", "no-history")
    status, err = get(url, nohist)
    assert status == 403 and "history:list" in str(err)
    status, page = get(url, AUDITOR, user="dave", status="403")
    assert status == 200 and page["data"][0]["path"] == "/v1/history"
    assert page["data"][0]["operation"] == "history" and page["data"][0]["error"]["code"] == "403"

    # The OpenAPI document lists the endpoints.
    status, doc = get(url, ALICE, "/v1/history/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/v1/history", "/v1/history/{request_id}"} <= set(doc["paths"])
    assert "HistoryEntry" in doc["components"]["schemas"]

    # Bad parameters: 400 in the OpenAI error shape, naming the parameter.
    for params, param in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-11-30T08:00:00"}, "until"),  # no time zone
        ({"since": "2026-11-30T09:00:00Z", "until": "2026-11-30T08:00:00Z"}, "until"),
        ({"status": "4o4"}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"colour": "red"}, "colour"),
    ):
        status, err = get(url, ALICE, **params)
        assert status == 400, (params, err)
        assert err["error"]["param"] == param and err["error"]["type"] == "invalid_request_error", err
    # A cursor of another query (other filters) is refused too.
    cursor = get(url, ALICE, limit=1)[1]["next_cursor"]
    status, err = get(url, ALICE, limit=1, model="custos-tiny", cursor=cursor)
    assert status == 400 and err["error"]["param"] == "cursor"
    status, err = get(url, ALICE, "/v1/history/" + "x" * 200)
    assert status == 400 and err["error"]["param"] == "request_id"

    # Served by the sidecar: nothing of it reached the upstream.
    assert not [r for r in upstream.requests if r.path.startswith("/v1/history")]
    # The history calls are audited like every request (operation "history").
    records = search(open_source(_spool(sc)), Filter(user="alice", operation="history"))
    assert len(records) >= 10


def test_spool_index_in_process(upstream, start_sidecar, tmp_path: Path) -> None:
    """The index over a copy of a real spool with compressed segments: pages read the gzip segments,
    new lines are picked up by tailing, and the cap drops the oldest entries."""
    sc = start_sidecar(upstream.url, config=history_config(tmp_path, segment_bytes=4096))
    for i in range(12):
        assert chat(sc.url, ALICE if i % 3 else BOB, f"r-{i:02d}") == 200
    spool = _spool(sc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # sealed segments are compressed in the background
        segs = [p for c in chain_dirs(spool) for _, p in list_segments(c)]
        if sum(p.name.endswith(".gz") for p in segs) >= 2:
            break
        time.sleep(0.2)
    copy = tmp_path / "spool-copy"
    shutil.copytree(spool, copy, ignore=shutil.ignore_patterns("lock", "reserve"))
    index = SpoolIndex(copy)
    docs, _, more = index.page("alice", Filter(), 100)
    alice = [f"r-{i:02d}" for i in range(12) if i % 3]
    assert [d["event"]["id"] for d in docs] == list(reversed(alice)) and not more
    assert index.stats()["cached_bytes"] > 0  # a compressed segment was decompressed and kept
    # Page by page with the key of the last record.
    seen, key = [], None
    while True:
        docs, key, more = index.page("alice", Filter(), 3, key)
        seen += [d["event"]["id"] for d in docs]
        if not more:
            break
    assert seen == list(reversed(alice))
    assert index.find("r-00", "alice") is None and index.find("r-00", "bob")["user"]["id"] == "bob"
    assert index.find("r-00", None) is not None  # audit:read: any subject
    # Tailing: a line appended to the chain is indexed by the next query.
    chain = chain_dirs(copy)[0]
    seg = list_segments(chain)[-1][1]
    if seg.name.endswith(".gz"):
        seg = chain / ("seg-999999999999.jsonl")
    with open(seg, "ab") as f:
        f.write(
            b'{"@timestamp":"2099-01-01T00:00:00.000000Z","audit":{"chain_id":"x","seq":999},'
            b'"event":{"id":"late"},"user":{"id":"alice"},"http":{"response":{"status_code":200}}}\n'
        )
    assert index.page("alice", Filter(), 1)[0][0]["event"]["id"] == "late"
    # The cap: a small index keeps the newest entries only and says from when on it is complete.
    small = SpoolIndex(copy, max_entries=5)
    small.refresh()
    assert small.stats()["entries"] <= 5 and small.oldest is not None
