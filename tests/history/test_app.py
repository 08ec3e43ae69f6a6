"""The History API's FastAPI app in-process, with a fake source: error shapes and the identity checks
that a real sidecar never lets through (no identity), without starting a process."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from sidecar.context import Identity
from sidecar.history.api import create_app, mount_history


class FakeSource:
    kind = "spool"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def page(self, subject, flt, limit, after):
        self.calls.append((subject, flt.model, limit, after))
        doc = {"@timestamp": "2026-11-30T08:00:00.000000Z", "event": {"id": "r1"}, "user": {"id": subject}}
        return [doc], ["k"], True

    def find(self, request_id, subject):
        return None


def _get(app, path: str, identity: Identity | None) -> httpx.Response:
    async def call(scope, receive, send):
        scope["custos.identity"] = identity
        await app(scope, receive, send)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=call)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            return await client.get(path)

    return asyncio.run(run())


def test_app_errors_and_identity() -> None:
    source = FakeSource()
    app = create_app(source, with_text=False, may_read_audit=lambda scope, roles: "auditor" in roles)
    alice = Identity("alice", ("chatter",))
    r = _get(app, "/v1/history", None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth_required"
    r = _get(app, "/v1/history?limit=5&model=m", alice)
    assert r.status_code == 200 and r.json()["data"][0]["user"] == "alice" and r.json()["has_more"] is True
    assert source.calls[-1] == ("alice", "m", 5, None)
    cursor = r.json()["next_cursor"]
    assert _get(app, f"/v1/history?limit=5&model=m&cursor={cursor}", alice).status_code == 200
    assert source.calls[-1] == ("alice", "m", 5, ["k"])
    # Another user's cursor (or another query's) is refused.
    bob = Identity("bob", ("chatter",))
    r = _get(app, f"/v1/history?limit=5&model=m&cursor={cursor}", bob)
    assert r.status_code == 400 and r.json()["error"]["param"] == "cursor"
    assert _get(app, "/v1/history?user=bob", alice).status_code == 403
    assert _get(app, "/v1/history?user=bob", Identity("carol", ("auditor",))).status_code == 200
    r = _get(app, "/v1/history/r1", alice)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert _get(app, "/v1/history/a/b", alice).status_code == 404


def test_mount_history_mounts_on_the_prefix(tmp_path) -> None:
    from sidecar.audit.config import AuditConfig

    class App:
        def __init__(self) -> None:
            self.mounts: dict[str, Any] = {}

        def mount(self, prefix: str, app: Any, *, operation: str = "admin") -> None:
            self.mounts[prefix] = (app, operation)

    app = App()
    api = mount_history(app, AuditConfig(), tmp_path)
    assert app.mounts == {"/v1/history": (api, "history")}
    r = _get(api, "/v1/history", Identity("alice", ()))
    assert r.status_code == 200 and r.json() == {
        "object": "list",
        "data": [],
        "has_more": False,
        "next_cursor": None,
        "source": "spool",
    }
