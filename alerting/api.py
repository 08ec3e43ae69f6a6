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

Built on FastAPI: ``GET /admin/alerts/openapi.json`` is the OpenAPI document (``alerts:read``, like every
read). Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}`` (type
``alerting_error``); a bad silence body is a 400 whose ``param`` names the field.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from custos.apiutil import ApiError as _ApiError
from custos.apiutil import (
    ErrorGuard,
    ErrorResponse,
    api_error_response,
    error_response,
    json_response,
    new_api,
    request_path,
)

from .matchers import matcher_text, parse_matchers
from .model import Alert, iso, parse_iso
from .promql import format_duration, parse_duration
from .rules import RuleError, load_rule_files, signature
from .service import AlertingService
from .silences import SilenceError, SilenceStore, check_silence, silence_breadth
from .state import read_json

log = logging.getLogger("custos.alerting.api")

PREFIX = "/admin/alerts"
OPENAPI_PATH = PREFIX + "/openapi.json"
MAX_BODY = 64 * 1024
INTERNAL = "Internal error in the alerting API."
_ERROR_TYPE = "alerting_error"


class ApiError(_ApiError):
    """An answer in OpenAI's error shape, of type ``alerting_error``."""

    error_type = _ERROR_TYPE


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
        self.api = create_app(self)
        self._app = ErrorGuard(self.api, internal_message=INTERNAL, log=log, what="alerting admin API")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)

    def _add_silence(self, doc: Any, subject: str, broad: bool, now: float) -> Any:
        """``broad``: the caller holds the broad-silence permission."""
        body = SilenceRequest.parse(doc)
        matchers = [m if isinstance(m, str) else m.expression() for m in body.matchers]
        field = "startsAt"
        try:
            starts = parse_iso(body.startsAt) if body.startsAt else now
            if body.endsAt:
                field = "endsAt"
                ends = parse_iso(body.endsAt)
            elif body.duration:
                field = "duration"
                ends = starts + parse_duration(body.duration)
            else:
                raise ApiError(
                    400, "Give endsAt (RFC 3339) or duration (e.g. 2h).", "invalid_request", "endsAt"
                )
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"Bad time: {exc}", "invalid_request", field) from None
        # The author is who authenticated, never what the body says (amtool sends a createdBy: ignored).
        created_by = subject
        try:
            compiled = check_silence(matchers, starts, ends, created_by)
        except SilenceError as exc:
            raise ApiError(400, str(exc), "invalid_request", exc.field) from None
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
                comment=body.comment,
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


# -- the HTTP API (FastAPI) -------------------------------------------------------------------------------
MATCHERS_MESSAGE = 'matchers must be a list like ["alertname=\\"X\\"", "gpu=\\"0\\""].'
AM_MATCHERS_MESSAGE = (
    'matchers: Alertmanager matcher objects need "name" and "value" (strings); '
    '"isRegex" and "isEqual" are booleans.'
)


def _text(value: Any) -> Any:
    """Free text as before (``str()`` of whatever JSON value was sent); null is empty."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


class AlertmanagerMatcher(BaseModel):
    """Alertmanager's v2 matcher object (what amtool sends)."""

    name: str = Field(description="the label name")
    value: Annotated[str, BeforeValidator(_text)] = Field("", description="the value, or a regex")
    isRegex: bool = False
    isEqual: bool = Field(True, description="false: the matcher negates (!= or !~)")

    def expression(self) -> str:
        if self.isEqual:
            op = "=~" if self.isRegex else "="
        else:
            op = "!~" if self.isRegex else "!="
        return matcher_text(self.name, op, self.value)


class SilenceRequest(BaseModel):
    """A new silence. Unknown fields are ignored (amtool sends ``id``, ``createdBy``, ...)."""

    model_config = ConfigDict(extra="ignore")

    matchers: list[str] | list[AlertmanagerMatcher] = Field(
        description='all must match: Custos/PromQL matcher strings such as `alertname="X"` or '
        '`gpu=~"0|1"`, or Alertmanager v2 matcher objects'
    )
    startsAt: str | None = Field(None, description="RFC 3339; default: now")
    endsAt: str | None = Field(None, description="RFC 3339; give endsAt or duration")
    duration: str | float | None = Field(
        None, description="from startsAt, e.g. 2h or 1h30m (a number: seconds); give endsAt or duration"
    )
    comment: Annotated[str, BeforeValidator(_text)] = ""
    createdBy: Any = Field(
        None, description="ignored: the author is the authenticated subject (admin-token, local)"
    )

    @classmethod
    def parse(cls, doc: Any) -> SilenceRequest:
        """The body validated; ``ApiError`` 400 naming the field (the messages of the hand-written
        checks this replaced)."""
        if not isinstance(doc, dict):
            raise ApiError(400, "The body must be a JSON object.", "invalid_request")
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = err.get("loc") or ()
            field = str(loc[0]) if loc else None
            if field == "matchers":
                given = doc.get("matchers")
                objects = isinstance(given, list) and given and all(isinstance(m, dict) for m in given)
                message = AM_MATCHERS_MESSAGE if objects else MATCHERS_MESSAGE
            elif field in ("startsAt", "endsAt", "duration"):
                message = f"Bad time: {field}: {err.get('msg', 'invalid')}"
            else:
                message = f"{field}: {err.get('msg', 'invalid')}."
            raise ApiError(400, message, "invalid_request", field) from None


class AlertDoc(BaseModel):
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str = Field(description="pending, firing, suppressed (silenced or inhibited) or resolved")
    activeAt: str | None
    firedAt: str | None
    resolvedAt: str | None
    value: float | None
    suppressedBy: str = Field(description="why a firing alert is suppressed (silence or inhibition)")
    receivers: list[str]


class AlertList(BaseModel):
    alerts: list[AlertDoc]


class RuleDoc(BaseModel):
    """A rule as in its rule file, with its health (the rule file's fields pass through)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="alerting or recording")
    health: str = Field(description="ok, err or unknown")
    lastError: str
    lastEvaluation: str | None
    active: int = Field(description="pending and firing alerts of the rule")


class RuleGroup(BaseModel):
    name: str
    file: str | None
    source: str | None
    interval: float
    rules: list[RuleDoc]


class RuleGroups(BaseModel):
    groups: list[RuleGroup] = Field(description="empty in a worker that does not run the engine")


class EngineStatus(BaseModel):
    """Only ``engine`` in a worker that does not run the engine."""

    engine: str
    lastEvaluation: str | None = None
    evaluationInterval: float | None = None
    series: int | None = None
    groups: int | None = None
    rules: int | None = None
    aggregationGroups: int | None = None
    receivers: dict[str, list[str]] | None = Field(None, description="receiver -> integrations")
    targets: list[dict[str, str]] | None = Field(None, description="scraped targets: job, url")


class SilenceState(BaseModel):
    state: str = Field(description="pending, active or expired")


class SilenceDoc(BaseModel):
    id: str
    matchers: list[str]
    startsAt: str
    endsAt: str
    createdBy: str
    comment: str
    updatedAt: str
    status: SilenceState


class SilenceList(BaseModel):
    silences: list[SilenceDoc]


class SilenceCreated(BaseModel):
    silenceID: str
    silence: SilenceDoc


class ReceiverTest(BaseModel):
    receiver: str
    delivered: dict[str, bool] = Field(description="integration -> delivered (502 unless all were)")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "a bad request body (error.param names the field)",
        401: "no valid token",
        403: "the permission is missing (error.message names it), or the silence is too broad",
        404: "no such silence or receiver",
        409: "the receiver has no integrations: nothing was sent",
        413: "the body is too large",
    }
    return {s: {"model": ErrorResponse, "description": what[s]} for s in (401, 403, *statuses)}


def _body_schemas() -> dict[str, Any]:
    schema = SilenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "SilenceRequest": schema}


async def _reader(request: Request) -> Caller:
    owner = request.app.state.owner
    return await owner.authorize(request.scope, owner.admin.read_permission)


async def _manager(request: Request) -> Caller:
    owner = request.app.state.owner
    return await owner.authorize(request.scope, owner.admin.manage_permission)


# Module level: the route signatures are resolved in this module's namespace (postponed annotations).
Reader = Annotated[Caller, Depends(_reader)]
Manager = Annotated[Caller, Depends(_manager)]


def create_app(owner: AlertsAPI) -> FastAPI:
    """The FastAPI app of ``owner`` (its service, silences, authorizer and admin settings)."""
    api = new_api(
        "Custos alerting admin API",
        __doc__,
        openapi_url=None,  # served below, behind alerts:read like every read
        internal_message=INTERNAL,
        log=log,
        what="alerting admin API",
        redirect_slashes=False,
    )
    api.state.owner = owner
    admin = owner.admin

    @api.exception_handler(StarletteHTTPException)
    async def _unrouted(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # As before: every GET is authorized first (an unknown path is a 404 only for readers); other
        # methods are 405 on the listing paths, else 404; all with code not_found.
        method = request.method
        if exc.status_code not in (404, 405):
            return error_response(exc.status_code, str(exc.detail), "http_error", type=_ERROR_TYPE)
        rel = request.scope["path"][len(PREFIX) :] or "/"
        status = 404
        if method == "GET":
            try:
                await owner.authorize(request.scope, admin.read_permission)
            except ApiError as err:
                return api_error_response(err)
        elif rel in ("/", "/rules", "/status", "/silences"):
            status = 405
        return error_response(
            status, f"No route for {method} {request_path(request)}.", "not_found", type=_ERROR_TYPE
        )

    @api.get(PREFIX, response_model=AlertList, responses=_errors(), operation_id="listAlerts")
    async def alerts(caller: Reader) -> Response:
        """Alerts: pending, firing (suppressed when silenced or inhibited) and resolved."""
        now = time.time()
        if owner.service is None:  # reads the state file
            return json_response({"alerts": await asyncio.to_thread(owner.alert_list, now)})
        return json_response({"alerts": owner.alert_list(now)})

    @api.get(PREFIX + "/rules", response_model=RuleGroups, responses=_errors(), operation_id="listRules")
    async def rules(caller: Reader) -> Response:
        """Rule groups and rules, with their health and last error."""
        return json_response({"groups": owner.rule_list()})

    @api.get(PREFIX + "/status", response_model=EngineStatus, responses=_errors(), operation_id="status")
    async def status(caller: Reader) -> Response:
        """The engine: last evaluation, series, rules, receivers and scraped targets."""
        return json_response(owner.status(time.time()))

    @api.get(
        PREFIX + "/silences", response_model=SilenceList, responses=_errors(), operation_id="listSilences"
    )
    async def silences(caller: Reader) -> Response:
        now = time.time()
        found = await asyncio.to_thread(owner.silences.list)
        return json_response({"silences": [s.to_json(now) for s in found]})

    @api.post(
        PREFIX + "/silences",
        response_model=SilenceCreated,
        responses=_errors(400, 413),
        operation_id="createSilence",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SilenceRequest"}}},
            }
        },
    )
    async def create_silence(request: Request, caller: Manager) -> Response:
        """A silence; broad or overlong ones need ``alerting.admin.broad_silence_permission``."""
        now = time.time()
        # Read here, after the authorization (not by FastAPI before it), then validated as a
        # SilenceRequest: a caller without the permission gets 401/403 whatever the body.
        doc = await _read_json(request.receive)
        # Policy evaluated here, on the loop; disk (lock, write, fsync) goes to a thread.
        broad = caller.may(admin.broad_silence_permission)
        silence = await asyncio.to_thread(owner._add_silence, doc, caller.subject, broad, now)
        return json_response({"silenceID": silence.id, "silence": silence.to_json(now)})

    @api.get(
        PREFIX + "/silences/{silence_id:path}",
        response_model=SilenceDoc,
        responses=_errors(404),
        operation_id="getSilence",
    )
    async def get_silence(silence_id: str, caller: Reader) -> Response:
        s = await asyncio.to_thread(owner.silences.get, silence_id)
        if s is None:
            raise ApiError(404, "No such silence.", "not_found")
        return json_response(s.to_json(time.time()))

    @api.delete(
        PREFIX + "/silences/{silence_id:path}",
        response_model=SilenceDoc,
        responses=_errors(404),
        operation_id="expireSilence",
    )
    async def expire_silence(silence_id: str, caller: Manager) -> Response:
        """Expire a silence (it stays listed, as expired)."""
        now = time.time()
        try:
            s = await asyncio.to_thread(owner.silences.expire, silence_id, now)
        except SilenceError as exc:
            raise ApiError(404, str(exc), "not_found") from None
        return json_response(s.to_json(now))

    @api.post(
        PREFIX + "/receivers/{name:path}/test",
        response_model=ReceiverTest,
        responses={
            **_errors(404, 409),
            502: {"model": ReceiverTest, "description": "an integration failed to deliver"},
        },
        operation_id="testReceiver",
    )
    async def test_receiver(name: str, caller: Manager) -> Response:
        """Send a test notification through a receiver of this process."""
        svc = owner.service
        if svc is None or name not in {r.name for r in svc.config.receivers}:
            raise ApiError(404, f"No receiver named {name!r} in this process.", "not_found")
        from .receivers import send_test

        if {i.kind for i in svc.notifier.integrations(name)} <= {"log"}:
            # Only logged is not delivered: say so instead of a 200.
            raise ApiError(
                409,
                f"Receiver {name!r} has no integrations (its notifications are only logged): "
                "nothing was sent.",
                "no_integrations",
            )
        results = await send_test(svc.notifier, name)
        return json_response({"receiver": name, "delivered": results}, 200 if all(results.values()) else 502)

    base_openapi = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            doc = base_openapi()
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(_body_schemas())
            # Bad input is a 400 in OpenAI's shape (ErrorResponse), never FastAPI's 422.
            for operations in doc.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        return api.openapi_schema  # type: ignore[return-value]

    api.openapi = openapi  # type: ignore[method-assign]

    @api.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_document(caller: Reader) -> Response:
        return json_response(api.openapi())

    return api
