"""Authorize stage: the route table names the permission a request needs, the RBAC policy decides.

Runs after ``parse`` (it needs ``ctx.model``). Deny by default: a request no route rule covers, or
that no role of the caller grants, gets 403. The decision goes into ``ctx.decision`` for metrics and
audit; the constraints of the allowing roles go into ``ctx.extras["rbac.grant"]`` for rate limiting.
``GET /v1/models`` is answered with only the models the caller may invoke.
"""

from __future__ import annotations

import ipaddress
import logging

import orjson

from ..config import Config, ConfigError
from ..context import INFERENCE_ROUTES, Decision, RequestContext
from ..errors import ProxyError, bad_request, forbidden
from ..rbac.decide import Grant, decide
from ..rbac.policy import Policy, PolicyError
from ..rbac.store import PolicyStore
from ..stage import ResponseFilter, Stage

log = logging.getLogger("custos.rbac")

_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


class ModelListFilter(ResponseFilter):
    """Keeps only the models the caller may invoke in an OpenAI ``/v1/models`` answer."""

    __slots__ = ("buf", "ctx", "policy")

    def __init__(self, ctx: RequestContext, policy: Policy) -> None:
        self.ctx = ctx
        self.policy = policy
        self.buf = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        self.buf += chunk
        return b""

    def flush(self) -> bytes:
        body = bytes(self.buf)
        self.buf.clear()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            # We cannot tell which models it names: show nothing rather than everything.
            return b'{"object":"list","data":[]}'
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            return b'{"object":"list","data":[]}'
        roles = self.ctx.identity.roles if self.ctx.identity else ()
        kept = []
        for entry in doc["data"]:
            model = entry.get("id") if isinstance(entry, dict) else None
            if (
                isinstance(model, str)
                and self.policy.evaluate(
                    roles, f"model:invoke:{model}", model=model, client_ip=self.ctx.client_ip
                ).allowed
            ):
                kept.append(entry)
        self.ctx.extras["rbac.models_hidden"] = len(doc["data"]) - len(kept)
        doc["data"] = kept
        return orjson.dumps(doc)


class AuthorizeStage(Stage):
    name = "authorize"

    def __init__(self, store: PolicyStore, trusted_proxies: list[str]) -> None:
        self.store = store
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]

    async def startup(self, app: object) -> None:
        await self.store.start()

    async def shutdown(self) -> None:
        await self.store.stop()

    def client_ip(self, ctx: RequestContext) -> str:
        """The peer address; behind trusted proxies, the right-most untrusted X-Forwarded-For hop."""
        ip = ctx.client_ip
        if not self.trusted or not _in(ip, self.trusted):
            return ip
        xff = ctx.header(b"x-forwarded-for")
        if not xff:
            return ip
        for hop in reversed([h.strip() for h in xff.decode("latin-1").split(",")]):
            if not _in(hop, self.trusted):
                return hop
        return ip

    async def on_request(self, ctx: RequestContext) -> None:
        store = self.store
        roles = ctx.identity.roles if ctx.identity else ()
        out = decide(store.policy, store.routes, roles, ctx.method, ctx.path, ctx.model, self.client_ip(ctx))
        ctx.decision = out.decision
        if out.failure == "route":
            raise forbidden(
                f"{ctx.method} {ctx.path} is not an allowed route (deny by default).",
                code="route_not_allowed",
            )
        if out.failure == "model_missing":
            raise bad_request("'model' is required.", param="model", code="missing_model")
        if out.failure == "denied":
            raise forbidden(f"Permission {out.decision.permission} denied: {out.decision.reason}.")
        grant = out.grant
        assert grant is not None
        ctx.extras["rbac.grant"] = grant
        if out.failure == "hidden_model":
            # As if it did not exist: the model list hides it too.
            raise ProxyError(
                404, f"The model '{out.model}' does not exist.", code="model_not_found", param="model"
            )
        if grant.max_tokens is not None and ctx.path in INFERENCE_ROUTES and ctx.path != "/v1/embeddings":
            self._cap_tokens(ctx, grant, out.decision.permission)

    def _cap_tokens(self, ctx: RequestContext, grant: Grant, permission: str) -> None:
        body = ctx.json
        cap = grant.max_tokens
        asked = [body.get(f) for f in _TOKEN_FIELDS if body.get(f) is not None]
        for value in asked:
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad_request("'max_tokens' must be an integer.", param="max_tokens")
            if value > cap:  # type: ignore[operator]
                ctx.decision = Decision(
                    False,
                    permission,
                    f"role:{grant.role} constraint:max_tokens",
                    f"max_tokens {value} exceeds the cap of {cap}",
                )
                raise forbidden(
                    f"max_tokens {value} exceeds the cap of {cap} for your role.", code="max_tokens_exceeded"
                )
        if not asked:
            # No limit asked for: the cap becomes the limit, so the answer cannot run past it.
            body["max_tokens"] = cap
            ctx.set_json(body)

    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None:
        if (
            ctx.path == "/v1/models"
            and ctx.method == "GET"
            and ctx.response_kind == "json"
            and ctx.upstream_status == 200
            and ctx.decision is not None
            and ctx.decision.allowed
        ):
            return ModelListFilter(ctx, self.store.policy)
        return None


def _in(ip: str, networks: list) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in n for n in networks)


def build(config: Config) -> Stage | None:
    rbac = config.rbac
    if not rbac.enabled:
        log.warning("RBAC is disabled (rbac.enabled: false): every authenticated request is allowed")
        return None
    try:
        store = PolicyStore(rbac.policy_file, rbac.reload_interval_s)
    except PolicyError as exc:
        # At startup a bad policy is fatal (there is no previous one to keep): one clear error, exit 2.
        raise ConfigError("rbac.policy_file: invalid policy:\n  " + "\n  ".join(exc.errors)) from None
    return AuthorizeStage(store, rbac.trusted_proxies)
