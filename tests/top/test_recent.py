"""``GET /admin/audit/recent`` (sidecar/audit/recent.py): the ASGI app in-process over the spool a
real sidecar wrote, and end to end through a sidecar (RBAC: ``audit:read``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.stack import mint_token
from sidecar.audit.recent import RecentRecords, mount_recent, read_recent
from sidecar.audit.spool import chain_dirs, list_segments
from tests.top.conftest import http, operator_token, send_traffic


def _call(app: RecentRecords, query: str = "", method: str = "GET", path: str = "/admin/audit/recent"):
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(), "headers": []}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert dict(start["headers"])[b"content-length"] == str(len(body)).encode()
    return start["status"], json.loads(body)


def _spool(sidecar) -> Path:
    return Path(sidecar.config["state"]["dir"]) / "audit" / "spool"


def _wait_records(spool: Path, n: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if len(read_recent(spool, limit=500)["records"]) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} audit records in {spool}")


def test_recent_records_in_process_over_a_real_spool(top_sidecar, tmp_path: Path) -> None:
    sent = send_traffic(top_sidecar, n_ok=3)
    assert sent == {"ok": 3, "401": 401, "403": 403}
    _wait_records(_spool(top_sidecar), 5)
    # A copy, so the running sidecar's writer cannot change what we assert on.
    spool = tmp_path / "spool-copy"
    shutil.copytree(_spool(top_sidecar), spool, ignore=shutil.ignore_patterns("lock", "reserve"))
    app = RecentRecords(spool)

    status, doc = _call(app)
    assert status == 200 and doc["chains"] == 1 and doc["complete"] is True
    records = doc["records"]
    assert len(records) == 5
    stamps = [r["timestamp"] for r in records]
    assert stamps == sorted(stamps, reverse=True), "newest first"
    assert set(records[0]) == {
        "timestamp", "request_id", "user_id", "roles", "status", "method", "path", "outcome", "reason",
        "error_type", "source_ip",
    }  # fmt: skip
    # The newest is the 403: the viewer invoking a model, with the RBAC reason.
    denied = records[0]
    assert denied["status"] == 403 and denied["user_id"] == "mallory" and denied["roles"] == ["viewer"]
    assert denied["path"] == "/v1/chat/completions" and "model:invoke" in denied["reason"]
    assert denied["outcome"] == "failure" and denied["error_type"] == "permission_denied"
    unauth = records[1]
    assert unauth["status"] == 401 and unauth["user_id"] is None
    assert unauth["error_type"] == "auth_missing_token" and "Bearer" in unauth["reason"]
    assert all(r["status"] == 200 and r["user_id"] == "app-bob" for r in records[2:])

    # Filters and limits.
    assert [r["status"] for r in _call(app, "status=401,403")[1]["records"]] == [403, 401]
    assert [r["status"] for r in _call(app, "status=429")[1]["records"]] == []
    assert {r["outcome"] for r in _call(app, "outcome=success")[1]["records"]} == {"success"}
    assert len(_call(app, "outcome=failure")[1]["records"]) == 2
    assert [r["status"] for r in _call(app, "limit=1")[1]["records"]] == [403]
    for bad, param in (
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("outcome=maybe", "outcome"),
        ("status=4o1", "status"),
        ("status=", "status"),
        ("since=1", "since"),
    ):
        status, err = _call(app, bad)
        assert status == 400 and err["error"]["param"] == param, (bad, err)
    assert _call(app, method="POST")[0] == 405
    assert _call(app, path="/admin/audit/other")[0] == 404
    # Its OpenAPI document: the three query parameters, the answer's model, 400 in OpenAI's shape.
    status, api_doc = _call(app, path="/admin/audit/openapi.json")
    assert status == 200 and set(api_doc["paths"]) == {"/admin/audit/recent"}
    get = api_doc["paths"]["/admin/audit/recent"]["get"]
    assert [p["name"] for p in get["parameters"]] == ["limit", "outcome", "status"]
    assert get["parameters"][0]["schema"]["maximum"] == 500
    assert set(api_doc["components"]["schemas"]["RecentRecord"]["properties"]) == set(records[0])
    assert set(get["responses"]) == {"200", "400"}
    assert _call(app, method="POST", path="/admin/audit/openapi.json")[0] == 404

    # A torn last line (a writer killed mid-line) is skipped, not returned half.
    seg = list_segments(chain_dirs(spool)[0])[-1][1]
    with open(seg, "ab") as f:
        f.write(b'{"@timestamp":"2099-01-01T00:00:00.000000Z","http":{"response":{"status_code":4')
    assert _call(app)[1]["records"][0]["status"] == 403

    # Bounded reads: with a tiny scan budget only the newest records are seen, and it says so.
    small = RecentRecords(spool, max_scan_bytes=2048)
    status, doc = _call(small, "status=200")
    assert status == 200 and doc["complete"] is False and len(doc["records"]) < 3

    # Several chains (one per worker process) are merged by time.
    second = spool / (chain_dirs(spool)[0].name.rsplit("-w", 1)[0] + "-w1")
    second.mkdir()
    line = json.dumps(
        {
            "@timestamp": "2099-01-01T00:00:00.000000Z",
            "event": {"id": "from-w1", "outcome": "failure", "reason": "rate limit"},
            "http": {"response": {"status_code": 429}},
            "user": {"id": "burst", "roles": []},
            "url": {"path": "/v1/completions"},
            "error": {"type": "ratelimit_subject", "message": "Rate limit exceeded"},
        }
    )
    (second / "seg-000000000001.jsonl").write_text(line + "\n")
    status, doc = _call(app, "status=401,403,429")
    assert doc["chains"] == 2
    assert (doc["records"][0]["status"], doc["records"][0]["request_id"]) == (429, "from-w1")
    assert [r["status"] for r in doc["records"]] == [429, 403, 401]


def test_recent_records_end_to_end_needs_audit_read(top_sidecar) -> None:
    """Through the sidecar: the audit stage mounts the app at /admin/audit (its startup)."""
    send_traffic(top_sidecar, n_ok=1)
    _wait_records(_spool(top_sidecar), 3)
    status, doc = http(top_sidecar.url + "/admin/audit/recent?status=401,403&limit=10", operator_token())
    assert status == 200, doc
    assert [r["status"] for r in doc["records"]][:2] == [403, 401]
    assert doc["records"][0]["user_id"] == "mallory"
    # Without audit:read: 403 from RBAC, and that denial is itself audited and listed next time.
    status, _ = http(top_sidecar.url + "/admin/audit/recent", mint_token("grafana", ["metrics-only"]))
    assert status == 403
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, doc = http(top_sidecar.url + "/admin/audit/recent?status=403&limit=1", operator_token())
        if doc["records"] and doc["records"][0]["user_id"] == "grafana":
            break
        time.sleep(0.2)
    assert doc["records"][0]["path"] == "/admin/audit/recent"
    assert "audit:read" in doc["records"][0]["reason"]
    # The OpenAPI document needs audit:read as well (built-in route GET /admin/audit/openapi.json).
    status, api_doc = http(top_sidecar.url + "/admin/audit/openapi.json", operator_token())
    assert status == 200 and "/admin/audit/recent" in api_doc["paths"], api_doc
    status, _ = http(top_sidecar.url + "/admin/audit/openapi.json", mint_token("grafana", ["metrics-only"]))
    assert status == 403


def test_mount_recent_mounts_on_the_prefix(tmp_path: Path) -> None:
    class App:
        def __init__(self) -> None:
            self.mounts: dict[str, Any] = {}

        def mount(self, prefix: str, app: Any) -> None:
            self.mounts[prefix] = app

    app = App()
    recent = mount_recent(app, tmp_path)
    assert app.mounts == {"/admin/audit": recent}
    status, doc = _call(recent)
    assert status == 200 and doc == {"records": [], "chains": 0, "complete": True, "last_verification": None}
