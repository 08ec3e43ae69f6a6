"""Authorize stage: the route table names the permission a request needs, the RBAC policy decides.

Runs after ``parse`` (it needs ``ctx.model``). Deny by default: a request no route rule covers, or
that no role of the caller grants, gets 403. The decision goes into ``ctx.decision`` for metrics and
audit; the constraints of the allowing roles go into ``ctx.grant`` for rate limiting.
``GET /v1/models`` is answered with only the models the caller may invoke.

Against a hostile client:
- model names (body ``model``, the id of ``GET /v1/models/<id>``) must be well formed (400
  ``invalid_model``) before any policy glob sees them;
- a role's ``max_tokens`` caps the whole request: max_tokens (or max_completion_tokens) x max(n,
  best_of) x the number of prompts on chat and completions, max_output_tokens on /v1/responses (403
  ``max_tokens_exceeded``); without a limit in the request the cap is shared out and set. ``n``,
  ``best_of`` and the token fields must be integers >= 1 (400 naming the field);
- refusals tell the client what it asked for that was refused, never the role, rule, constraint or
  source address behind it (those stay in ``ctx.decision`` for audit and metrics).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from custos.errors import ConfigError, ProxyError, bad_request, forbidden

from ..context import Decision, RequestContext
from ..rbac.config import RbacConfig
from ..rbac.decide import Grant, Outcome, decide
from ..rbac.permissions import model_name_error
from ..rbac.policy import Policy, PolicyError
from ..rbac.routes import RouteTable
from ..rbac.store import PolicyStore
from ..stage import ResponseFilter, Stage, StageEnv

log = logging.getLogger("custos.rbac")

_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True, slots=True)
class _Budget:
    """How a generating route bounds its output: the fields that limit one sequence (the first is
    set when the request names none), and whether ``n`` and ``best_of`` multiply it."""

    fields: tuple[str, ...]
    sequences: bool


_BUDGETS: dict[str, _Budget] = {
    "/v1/chat/completions": _Budget(_TOKEN_FIELDS, True),
    "/v1/completions": _Budget(_TOKEN_FIELDS, True),
    "/v1/responses": _Budget(("max_output_tokens",), False),
}
_MODEL_PREFIX = "/v1/models/"
_MAX_DECISIONS = 4096  # remembered decisions (see AuthorizeStage._decisions)


def _public_card(card: dict) -> dict:
    """A model card without host details: vLLM names the weights' directory in ``root`` (and a
    LoRA adapter's in ``parent``); a caller learns the model's name, not where the host keeps it."""
    for key in ("root", "parent"):
        value = card.get(key)
        if isinstance(value, str) and ("/" in value or "\\" in value) and model_name_error(value) is not None:
            card[key] = card.get("id") if key == "root" else None
    return card


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
        if isinstance(doc, dict) and doc.get("object") == "model" and self.ctx.path != "/v1/models":
            # One model's card (GET /v1/models/<id>, already authorized): only its paths go.
            return orjson.dumps(_public_card(doc))
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            return b'{"object":"list","data":[]}'
        roles = self.ctx.identity.roles if self.ctx.identity else ()
        kept = []
        for entry in doc["data"]:
            model = entry.get("id") if isinstance(entry, dict) else None
            if (
                isinstance(model, str)
                and model_name_error(model) is None  # a name no client may send is not listed
                and self.policy.evaluate(
                    roles, f"model:invoke:{model}", model=model, client_ip=self.ctx.client_ip
                ).allowed
            ):
                kept.append(_public_card(entry))
        self.ctx.models_hidden = len(doc["data"]) - len(kept)
        doc["data"] = kept
        return orjson.dumps(doc)


class AuthorizeStage(Stage):
    name = "authorize"

    def __init__(self, store: PolicyStore) -> None:
        self.store = store
        # Decisions of the policy in force, by (roles, method, path, model, client address): a
        # decision depends on nothing else, and evaluating the roles' grants and globs again costs
        # ~15 us per request. Emptied when a reload puts another policy (or route table) in force,
        # and when full (a client varying models or paths cannot make it grow).
        self._decisions: dict[tuple[object, ...], Outcome] = {}
        self._decided_by: tuple[Policy, RouteTable] | None = None

    async def startup(self, app: object) -> None:
        await self.store.start()

    async def shutdown(self) -> None:
        await self.store.stop()

    async def on_request(self, ctx: RequestContext) -> None:
        # Names are checked before any policy evaluation: only well-formed names ever reach a glob.
        if ctx.model is not None:
            _check_model(ctx, ctx.model, "'model'")
        if ctx.method == "GET" and ctx.path.startswith(_MODEL_PREFIX):
            _check_model(ctx, ctx.path[len(_MODEL_PREFIX) :], "The model id in the path")
        roles = ctx.identity.roles if ctx.identity else ()
        out = self._decide(roles, ctx.method, ctx.path, ctx.model, ctx.client_ip)
        # The full reason (rule, role, constraint, source address) stays here, for audit and metrics
        # only: the client learns what it asked for that was refused, nothing about the policy.
        ctx.decision = out.decision
        if out.failure == "route":
            raise forbidden(
                f"{ctx.method} {_clip(ctx.path)} is not an allowed route.", code="route_not_allowed"
            )
        if out.failure == "model_missing":
            raise bad_request("'model' is required.", param="model", code="missing_model")
        if out.failure == "denied":
            raise forbidden(f"Permission {_clip(out.decision.permission)} denied.", code="permission_denied")
        grant = out.grant
        assert grant is not None
        ctx.grant = grant
        if out.failure == "hidden_model":
            # As if it did not exist: the model list hides it too.
            raise ProxyError(
                404, f"The model '{out.model}' does not exist.", code="model_not_found", param="model"
            )
        budget = _BUDGETS.get(ctx.path)
        if budget is not None and ctx.method == "POST":
            self._check_budget(ctx, grant, out.decision.permission, budget)

    def _decide(
        self, roles: tuple[str, ...], method: str, path: str, model: str | None, client_ip: str | None
    ) -> Outcome:
        store = self.store
        policy, routes = store.policy, store.routes
        if self._decided_by is None or self._decided_by[0] is not policy or self._decided_by[1] is not routes:
            self._decisions.clear()
            self._decided_by = (policy, routes)
        key = (roles, method, path, model, client_ip)
        out = self._decisions.get(key)
        if out is None:
            out = decide(policy, routes, roles, method, path, model, client_ip)
            if len(self._decisions) >= _MAX_DECISIONS:
                self._decisions.clear()
            self._decisions[key] = out  # shared by later requests: nothing changes an Outcome
        return out

    def _check_budget(self, ctx: RequestContext, grant: Grant, permission: str, budget: _Budget) -> None:
        """Validate the output-size fields, and hold the whole request to the role's token cap:
        max_tokens x max(n, best_of) x number of prompts (max_output_tokens on /v1/responses)."""
        body = ctx.json
        if not isinstance(body, dict):
            return
        limits = {f: _positive_int(body, f) for f in budget.fields}
        n = (_positive_int(body, "n") or 1) if budget.sequences else 1
        best_of = (_positive_int(body, "best_of") or 1) if budget.sequences else 1
        cap = grant.max_tokens
        if cap is None:
            return
        prompts = _prompt_count(body) if ctx.path == "/v1/completions" else 1
        seqs_name, seqs = ("best_of", best_of) if best_of > n else ("n", n)
        factors = f"{seqs_name} {seqs} × {prompts} prompt{'s' if prompts > 1 else ''}"
        asked = [(f, v) for f, v in limits.items() if v is not None]
        if not asked:
            # No limit asked for: the cap, shared by every sequence, becomes the limit.
            per_seq = cap // (seqs * prompts)
            if per_seq < 1:
                self._deny(
                    ctx,
                    grant,
                    permission,
                    f"{seqs * prompts} sequences ({factors}) exceed the cap of {cap} tokens",
                    f"This request asks for {seqs * prompts} sequences ({factors}); the limit of {cap} "
                    "tokens per request does not allow one token each.",
                )
            body[budget.fields[0]] = per_seq
            ctx.set_json(body)
            return
        field, per_seq = max(asked, key=lambda fv: fv[1])
        total = per_seq * seqs * prompts
        if total > cap:
            how = f"{field} {per_seq} × {factors}" if budget.sequences else f"{field} {per_seq}"
            self._deny(
                ctx,
                grant,
                permission,
                f"{total} tokens ({how}) exceed the cap of {cap}",
                f"This request may generate up to {total} tokens ({how}), more than the limit of {cap} "
                "tokens per request.",
            )

    @staticmethod
    def _deny(ctx: RequestContext, grant: Grant, permission: str, reason: str, message: str) -> None:
        ctx.decision = Decision(False, permission, f"role:{grant.role} constraint:max_tokens", reason)
        raise forbidden(message, code="max_tokens_exceeded")

    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None:
        if (
            (ctx.path == "/v1/models" or ctx.path.startswith("/v1/models/"))
            and ctx.method == "GET"
            and ctx.response_kind == "json"
            and ctx.upstream_status == 200
            and ctx.decision is not None
            and ctx.decision.allowed
        ):
            return ModelListFilter(ctx, self.store.policy)
        return None


def _check_model(ctx: RequestContext, name: str, what: str) -> None:
    err = model_name_error(name)
    if err is not None:
        ctx.decision = Decision(False, "model:invoke:<invalid name>", "invalid-model", f"model name {err}")
        raise bad_request(f"{what} is not a valid model name: it {err}.", param="model", code="invalid_model")


def _positive_int(body: dict, field: str) -> int | None:
    """``body[field]`` as an int >= 1, None when absent or null; 400 naming the field otherwise."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"'{field}' must be an integer of at least 1.", param=field, code="invalid_value")
    return value


def _prompt_count(body: dict) -> int:
    """How many prompts a /v1/completions body holds: one string or one token-id list is one prompt;
    a list of strings or of token-id lists is that many."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return len(prompt)
    return 1


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def build(rbac: RbacConfig, env: StageEnv) -> Stage | None:
    if not rbac.enabled:
        log.warning("RBAC is disabled (rbac.enabled: false): every authenticated request is allowed")
        return None
    try:
        store = PolicyStore(rbac.policy_file, rbac.reload_interval_s)
    except PolicyError as exc:
        # At startup a bad policy is fatal (there is no previous one to keep): one clear error, exit 2.
        raise ConfigError("rbac.policy_file: invalid policy:\n  " + "\n  ".join(exc.errors)) from None
    return AuthorizeStage(store)
