"""Admin HTTP API, mounted by the sidecar at ``/admin/alerts`` (RBAC-protected).

    GET    /admin/alerts                  alerts: pending, firing, resolved; silenced/inhibited marked
    GET    /admin/alerts/rules            rule groups, rules, health, last error
    GET    /admin/alerts/status           engine status (leader, last evaluation, series, receivers)
    GET    /admin/alerts/silences         silences
    POST   /admin/alerts/silences         {"matchers": [...], "endsAt"|"duration", "comment"}
    DELETE /admin/alerts/silences/{id}    expire a silence
    POST   /admin/alerts/receivers/{name}/test   send a test notification through that receiver

Reads need ``alerts:read`` (or ``alerts:manage``), changes ``alerts:manage``. With the identity stage on,
the sidecar's pipeline authenticates the caller, checks the route's permission and writes the audit
record (also of 401s and 403s); this API then checks the action's permission for that identity. Without
it, ``alerting.admin.token`` is required, and with no token configured only loopback clients are served
(the embedded single-machine setup).

A silence's ``createdBy`` is the authenticated subject (``admin-token`` / ``local`` without identity);
a ``createdBy`` in the body is ignored. Broad silences also need ``alerting.admin.broad_silence_permission``
(``alerts:silence-broad``): one that matches alerts of any name or every rule's alerts, one that may cover
every alert of a protected rule (``protected_alerts``: the security and audit-trail rules), or one longer
than ``max_silence_duration`` (7d; 400). See ``silences.silence_breadth``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import orjson

from .matchers import parse_matchers
from .model import Alert, iso, parse_iso
from .promql import format_duration, parse_duration
from .rules import RuleError, load_rule_files, signature
from .service import AlertingService
from .silences import SilenceError, SilenceStore, check_silence, silence_breadth
from .state import read_json

log = logging.getLogger("custos.alerting.api")

PREFIX = "/admin/alerts"
MAX_BODY = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class Caller:
    """Who is calling, and which of the API's permissions they hold (checked once, on demand)."""

    __slots__ = ("_may", "subject")

    def __init__(self, subject: str, may: Callable[[str], bool]) -> None:
        self.subject = subject
        self._may = may

    def may(self, permission: str) -> bool:
        return self._may(permission)


def _everything(permission: str) -> bool:
    return True


Authorizer = Callable[[dict[str, Any], str], Awaitable[Caller]]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def make_authorizer(app: Any, admin: Any) -> Authorizer:
    """Returns ``authorize(scope, permission) -> Caller``; raises ``ApiError`` 401/403.

    With the identity stage on, the sidecar's pipeline has already authenticated the caller (and the
    authorize stage checked the route's permission): ``scope["custos.identity"]`` is used as it is and
    the per-action permission is evaluated for its roles from ``scope["custos.client_ip"]``. Without
    the identity stage: ``alerting.admin.token``, or loopback clients only. Refusals name the missing
    permission, never roles, policy rules or addresses (those are in the audit record)."""
    pipeline = getattr(app, "pipeline", None)
    authn = pipeline.stage("authenticate") if pipeline is not None else None
    authz = pipeline.stage("authorize") if pipeline is not None else None
    verifier = getattr(authn, "verifier", None)

    def bearer(scope: dict[str, Any]) -> str | None:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                text = value.decode("latin-1")
                if text[:7].lower() == "bearer ":
                    return text[7:].strip()
        return None

    def client_ip(scope: dict[str, Any]) -> str:
        resolved = scope.get("custos.client_ip")  # the pipeline's (X-Forwarded-For from trusted proxies)
        return resolved if resolved else (scope.get("client") or ("", 0))[0]

    def policy_check(roles: tuple[str, ...], ip: str) -> Callable[[str], bool]:
        store = getattr(authz, "store", None)
        if store is None:  # rbac off: every authenticated caller may do everything
            return _everything
        policy = store.policy  # one policy for the whole request, even if it reloads meanwhile
        seen: dict[str, bool] = {}

        def may(permission: str) -> bool:
            if permission not in seen:
                seen[permission] = policy.evaluate(roles, permission, model=None, client_ip=ip).allowed
            return seen[permission]

        return may

    async def authorize(scope: dict[str, Any], permission: str) -> Caller:
        ip = client_ip(scope)
        if verifier is not None:
            identity = scope.get("custos.identity")
            if identity is None:
                # Not behind the sidecar's pipeline (mounted elsewhere): verify the token here.
                token = bearer(scope)
                if token is None:
                    raise ApiError(401, "A Bearer token is required.", "missing_token")
                try:
                    identity = await verifier.verify(token)
                except Exception as exc:
                    raise ApiError(401, getattr(exc, "message", "Invalid token."), "invalid_token") from None
            may = policy_check(tuple(identity.roles), ip)
            allowed = may(permission) or (
                permission == admin.read_permission and may(admin.manage_permission)
            )
            if not allowed:
                raise ApiError(403, f"Permission {permission} denied.", "permission_denied")
            return Caller(identity.subject, may)
        token = bearer(scope)
        if admin.token:
            if token is None or not hmac.compare_digest(token.encode(), admin.token.encode()):
                raise ApiError(
                    401, "A valid admin Bearer token is required (alerting.admin.token).", "invalid_token"
                )
            return Caller("admin-token", _everything)
        if ip not in _LOOPBACK:
            raise ApiError(
                403,
                "The alerting admin API serves only loopback clients unless "
                "alerting.admin.token or the identity stage is configured.",
                "permission_denied",
            )
        return Caller("local", _everything)

    return authorize


class AlertsAPI:
    def __init__(
        self,
        service: AlertingService | None,
        silences: SilenceStore,
        authorize: Authorizer,
        admin: Any,
        state_dir: Any = None,
        *,
        rule_files: list[str] | None = None,
        external_labels: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.silences = silences
        self.authorize = authorize
        self.admin = admin
        self.state_dir = state_dir
        # Used only in workers without the engine (the engine's own rules otherwise).
        self.rule_files = rule_files or None
        self.external_labels = dict(external_labels or {})
        self._rule_cache: tuple[Any, list[Any]] | None = None
        self._protected = parse_matchers(getattr(admin, "protected_alerts", None) or [])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            status, body = await self.handle(scope, receive)
        except ApiError as exc:
            status = exc.status
            body = {
                "error": {"message": exc.message, "type": "alerting_error", "code": exc.code, "param": None}
            }
        except Exception:
            log.exception("alerting admin API failed")
            status = 500
            body = {
                "error": {
                    "message": "Internal error in the alerting API.",
                    "type": "server_error",
                    "code": "internal",
                    "param": None,
                }
            }
        data = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def handle(self, scope: dict[str, Any], receive: Any) -> tuple[int, Any]:
        path = scope["path"][len(PREFIX) :].rstrip("/") or "/"
        method = scope["method"]
        now = time.time()
        if method == "GET":
            await self.authorize(scope, self.admin.read_permission)
            if path == "/":
                if self.service is None:  # reads the state file
                    return 200, {"alerts": await asyncio.to_thread(self.alert_list, now)}
                return 200, {"alerts": self.alert_list(now)}
            if path == "/rules":
                return 200, {"groups": self.rule_list()}
            if path == "/status":
                return 200, self.status(now)
            if path == "/silences":
                silences = await asyncio.to_thread(self.silences.list)
                return 200, {"silences": [s.to_json(now) for s in silences]}
            if path.startswith("/silences/"):
                s = await asyncio.to_thread(self.silences.get, path.removeprefix("/silences/"))
                if s is None:
                    raise ApiError(404, "No such silence.", "not_found")
                return 200, s.to_json(now)
        elif method == "POST" and path == "/silences":
            caller = await self.authorize(scope, self.admin.manage_permission)
            doc = await _read_json(receive)
            # Policy evaluated here, on the loop; disk (lock, write, fsync) goes to a thread.
            broad = caller.may(self.admin.broad_silence_permission)
            silence = await asyncio.to_thread(self._add_silence, doc, caller.subject, broad, now)
            return 200, {"silenceID": silence.id, "silence": silence.to_json(now)}
        elif method == "POST" and path.startswith("/receivers/") and path.endswith("/test"):
            await self.authorize(scope, self.admin.manage_permission)
            name = path.removeprefix("/receivers/").removesuffix("/test")
            if self.service is None or name not in {r.name for r in self.service.config.receivers}:
                raise ApiError(404, f"No receiver named {name!r} in this process.", "not_found")
            from .receivers import send_test

            if {i.kind for i in self.service.notifier.integrations(name)} <= {"log"}:
                # Only logged is not delivered: say so instead of a 200.
                raise ApiError(
                    409,
                    f"Receiver {name!r} has no integrations (its notifications are only logged): "
                    "nothing was sent.",
                    "no_integrations",
                )
            results = await send_test(self.service.notifier, name)
            return (200 if all(results.values()) else 502), {"receiver": name, "delivered": results}
        elif method == "DELETE" and path.startswith("/silences/"):
            await self.authorize(scope, self.admin.manage_permission)
            try:
                s = await asyncio.to_thread(self.silences.expire, path.removeprefix("/silences/"), now)
            except SilenceError as exc:
                raise ApiError(404, str(exc), "not_found") from None
            return 200, s.to_json(now)
        else:
            raise ApiError(
                405 if path in ("/", "/rules", "/status", "/silences") else 404,
                f"No route for {method} {scope['path']}.",
                "not_found",
            )
        raise ApiError(404, f"No route for {method} {scope['path']}.", "not_found")

    def _add_silence(self, doc: Any, subject: str, broad: bool, now: float) -> Any:
        """``broad``: the caller holds the broad-silence permission."""
        if not isinstance(doc, dict):
            raise ApiError(400, "The body must be a JSON object.", "invalid_request")
        matchers = doc.get("matchers")
        if isinstance(matchers, list) and matchers and all(isinstance(m, dict) for m in matchers):
            # Alertmanager's v2 shape: {"name", "value", "isRegex", "isEqual"}.
            matchers = [_am_matcher(m) for m in matchers]
        if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
            raise ApiError(
                400, 'matchers must be a list like ["alertname=\\"X\\"", "gpu=\\"0\\""].', "invalid_request"
            )
        try:
            starts = parse_iso(doc["startsAt"]) if doc.get("startsAt") else now
            if doc.get("endsAt"):
                ends = parse_iso(doc["endsAt"])
            elif doc.get("duration"):
                ends = starts + parse_duration(doc["duration"])
            else:
                raise ApiError(400, "Give endsAt (RFC 3339) or duration (e.g. 2h).", "invalid_request")
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"Bad time: {exc}", "invalid_request") from None
        # The author is who authenticated, never what the body says (amtool sends a createdBy: ignored).
        created_by = subject
        try:
            compiled = check_silence(matchers, starts, ends, created_by)
        except SilenceError as exc:
            raise ApiError(400, str(exc), "invalid_request") from None
        broad_perm = self.admin.broad_silence_permission
        cap = parse_duration(self.admin.max_silence_duration or 0)
        if cap and ends - max(starts, now) > cap and not broad:
            raise ApiError(
                400,
                f"A silence may last at most {self.admin.max_silence_duration} "
                f"(alerting.admin.max_silence_duration); this one lasts "
                f"{format_duration(ends - max(starts, now))}. Longer silences need the permission "
                f"{broad_perm}.",
                "silence_too_long",
            )
        why = silence_breadth(compiled, *self._rules(), protected=self._protected)
        if why is not None and not broad:
            raise ApiError(
                403,
                f"This silence is too broad: {why}. Name the alerts to silence more narrowly, "
                f"or ask for the permission {broad_perm}, which allows broad silences.",
                "silence_too_broad",
            )
        try:
            return self.silences.add(
                matchers,
                ends,
                created_by=created_by,
                comment=str(doc.get("comment", "")),
                starts_at=starts,
                now=now,
            )
        except SilenceError as exc:
            raise ApiError(400, str(exc), "invalid_request") from None

    def _rules(self) -> tuple[list[Any], dict[str, str]]:
        """The rule groups in force and the external labels, for the breadth check."""
        if self.service is not None:
            return self.service.groups, self.service.engine.external_labels
        # Another worker runs the engine: read the same rule files it does.
        sig = signature(self.rule_files)
        if self._rule_cache is None or self._rule_cache[0] != sig:
            try:
                self._rule_cache = (sig, load_rule_files(self.rule_files))
            except RuleError:
                if self._rule_cache is None:
                    raise
        return self._rule_cache[1], self.external_labels

    # -- views ----------------------------------------------------------------------------------------
    def alert_list(self, now: float) -> list[dict[str, Any]]:
        if self.service is None:
            # Not the engine's process: serve the state the engine last wrote.
            data = read_json(self.state_dir / "alerts.json", {}) if self.state_dir else {}
            records = data.get("alerts", [])
            return [_alert_doc(r, None, []) for r in records]
        svc = self.service
        firing = [a for a in svc.dispatcher.alerts.values() if not a.resolved(now)]
        out = []
        for st in svc.engine.alert_states():
            alert = Alert({**svc.engine.external_labels, **st.labels})
            reason = svc.dispatcher.muted_reason(alert, now, firing) if st.state == "firing" else None
            receivers = sorted({r.receiver for r in svc.dispatcher.root.match(alert.labels)})
            out.append(_alert_doc(asdict(st), reason, receivers))
        return sorted(out, key=lambda d: (d["labels"].get("alertname", ""), d["activeAt"]))

    def rule_list(self) -> list[dict[str, Any]]:
        if self.service is None:
            return []
        svc = self.service
        out = []
        for g in svc.groups:
            rules = []
            for r in g.rules:
                h = svc.engine.health.get((g.name, r.id))
                active = svc.engine.active.get((g.name, r.id), {})
                rules.append(
                    {
                        **r.to_dict(),
                        "type": "alerting" if r.kind == "alert" else "recording",
                        "health": h.health if h else "unknown",
                        "lastError": h.last_error if h else "",
                        "lastEvaluation": iso(h.last_eval) if h and h.last_eval else None,
                        "active": sum(1 for s in active.values() if s.state in ("pending", "firing")),
                    }
                )
            out.append(
                {
                    "name": g.name,
                    "file": g.source_file,
                    "source": g.source,
                    "interval": g.interval_s or svc.interval_s,
                    "rules": rules,
                }
            )
        return out

    def status(self, now: float) -> dict[str, Any]:
        svc = self.service
        if svc is None:
            return {"engine": "not in this process (another worker holds the engine lock)"}
        return {
            "engine": "running",
            "lastEvaluation": iso(svc.last_eval) if svc.last_eval else None,
            "evaluationInterval": svc.interval_s,
            "series": svc.store.series_count(),
            "groups": len(svc.groups),
            "rules": sum(len(g.rules) for g in svc.groups),
            "aggregationGroups": len(svc.dispatcher.groups),
            "receivers": {
                name: [i.name for i in svc.notifier.integrations(name)]
                for name in [r.name for r in svc.config.receivers]
            },
            "targets": [{"job": t.job, "url": t.url} for t in svc.targets],
        }


def _alert_doc(r: dict[str, Any], reason: str | None, receivers: list[str]) -> dict[str, Any]:
    state = {"inactive": "resolved"}.get(r["state"], r["state"])
    if reason and state == "firing":
        state = "suppressed"
    return {
        "labels": r["labels"],
        "annotations": r["annotations"],
        "state": state,
        "activeAt": iso(r["active_at"]),
        "firedAt": iso(r.get("fired_at")) if r.get("fired_at") else None,
        "resolvedAt": iso(r.get("resolved_at")) if r.get("resolved_at") else None,
        "value": r.get("value"),
        "suppressedBy": reason or "",
        "receivers": receivers,
    }


def _am_matcher(m: dict[str, Any]) -> str:
    op = (
        ("=~" if m.get("isRegex") else "=")
        if m.get("isEqual", True)
        else ("!~" if m.get("isRegex") else "!=")
    )
    value = str(m.get("value", "")).replace("\\", "\\\\").replace('"', '\\"')
    return f'{m.get("name")}{op}"{value}"'


async def _read_json(receive: Any) -> Any:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "Client went away.", "client_closed")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"Body larger than {MAX_BODY} bytes.", "request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Body is not valid JSON: {exc}", "invalid_json") from None
