"""HTTP reads of a sidecar's own endpoints for ``custos top``, and why one could not be read."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from custos.errors import UsageError

# name -> (path, permission the built-in route table asks for)
ENDPOINTS: dict[str, tuple[str, str]] = {
    "metrics": ("/metrics", "metrics:read"),
    "upstream": ("/metrics/upstream", "metrics:read"),
    "alerts": ("/admin/alerts", "alerts:read"),
    "rules": ("/admin/alerts/rules", "alerts:read"),
    "denials": ("/admin/audit/recent?status=401,403,429&limit=50", "audit:read"),
}
_NOT_SERVED = {
    "metrics": "this server has no /metrics: is it a Custos sidecar?",
    "upstream": "this sidecar does not relay the engine's metrics (/metrics/upstream)",
    "alerts": "alerting is off on this sidecar (no /admin/alerts)",
    "rules": "alerting is off on this sidecar (no /admin/alerts/rules)",
    "denials": "this sidecar does not serve /admin/audit/recent (audit off, or an older version)",
}


@dataclass
class Reply:
    status: int | None  # None: no HTTP answer at all
    body: bytes = b""
    error: str = ""  # why there was no answer

    @property
    def ok(self) -> bool:
        return self.status == 200

    def json(self) -> object:
        return json.loads(self.body)

    def message(self) -> str:
        """The error message of an OpenAI-shaped error body, else a short piece of the body."""
        try:
            doc = json.loads(self.body)
            msg = doc.get("error", {}).get("message") if isinstance(doc, dict) else None
            if msg:
                return str(msg)
        except (ValueError, AttributeError):
            pass
        return self.body[:120].decode("utf-8", "replace").strip()


def check_url(url: str) -> str:
    """The base URL without a trailing slash; ``UsageError`` naming what is wrong."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"--url: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url: {url!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise UsageError(f"--url: {url!r}: give the sidecar's base URL, without a query or fragment")
    return url.rstrip("/")


class Client:
    def __init__(self, base_url: str, token: str | None, timeout_s: float = 3.0) -> None:
        self.base_url = base_url
        self.token = token
        self.timeout_s = timeout_s

    def get(self, name: str) -> Reply:
        path = ENDPOINTS[name][0]
        req = urllib.request.Request(self.base_url + path, headers={"User-Agent": "custos-top"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return Reply(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except OSError:
                body = b""
            return Reply(exc.code, body)
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
            return Reply(None, error=text)
        except TimeoutError:
            return Reply(None, error=f"no answer within {self.timeout_s:g} s")
        except (OSError, ValueError) as exc:
            return Reply(None, error=str(exc) or type(exc).__name__)


def why_not(name: str, reply: Reply, has_token: bool) -> str | None:
    """Why the pane fed by endpoint ``name`` cannot show it, in words; None when it can."""
    if reply.ok:
        return None
    path, permission = ENDPOINTS[name]
    if reply.status is None:
        return f"no answer from the sidecar ({reply.error})"
    if reply.status == 401:
        if not has_token:
            return "needs a token (--token, --token-file or CUSTOS_TOKEN)"
        return f"the sidecar refused the token (401: {reply.message()})"
    if reply.status == 403:
        return f"your token lacks {permission}"
    if reply.status == 404:
        return _NOT_SERVED[name]
    if reply.status == 429:
        return f"rate limited by the sidecar (429: {reply.message()})"
    return f"{path.split('?')[0]} answered HTTP {reply.status}: {reply.message()}"
