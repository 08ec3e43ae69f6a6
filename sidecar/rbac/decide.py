"""One authorization decision, shared by the authorize stage and ``custos policy explain``."""

from __future__ import annotations

from dataclasses import dataclass

from ..context import Decision
from .policy import CompiledRole, Policy, RateLimit
from .routes import RouteTable

MODEL_ROUTE = "/v1/models/*"


@dataclass(frozen=True, slots=True)
class Grant:
    """What the allowing roles permit, merged most-permissive-wins (for later stages)."""

    role: str  # the deciding role: the first allowing role in policy order
    max_tokens: int | None
    per_subject: RateLimit | None
    per_role: RateLimit | None


@dataclass(slots=True)
class Outcome:
    decision: Decision
    grant: Grant | None = None
    # Why it failed, when it did: "route" (no route rule), "model_missing", "denied", "hidden_model".
    failure: str = ""
    model: str | None = None


def merge_grant(roles: list[CompiledRole]) -> Grant:
    caps = [r.max_tokens for r in roles]
    cap = None if any(c is None for c in caps) else max(c for c in caps if c is not None)
    limits = [r.rate_limit for r in roles]
    per_subject = None
    if all(rl is not None and rl.per_subject_rpm for rl in limits):
        per_subject = max(limits, key=lambda rl: rl.per_subject_rpm)  # type: ignore[union-attr,return-value]
    first = roles[0]
    per_role = first.rate_limit if first.rate_limit is not None and first.rate_limit.per_role_rpm else None
    return Grant(role=first.name, max_tokens=cap, per_subject=per_subject, per_role=per_role)


def decide(
    policy: Policy,
    routes: RouteTable,
    roles: tuple[str, ...],
    method: str,
    path: str,
    model: str | None,
    client_ip: str | None,
) -> Outcome:
    route = routes.match(method, path)
    if route is None:
        return Outcome(
            Decision(False, f"{method} {path}", "default-deny", f"no route rule for {method} {path}"),
            failure="route",
        )
    if route.builtin and route.path == MODEL_ROUTE:
        model = path.removeprefix("/v1/models/")
    permission = route.permission
    per_model = "{model}" in permission
    if per_model:
        if not model:
            return Outcome(
                Decision(False, permission, "default-deny", "the request names no model"),
                failure="model_missing",
            )
        permission = permission.replace("{model}", model)
    verdict = policy.evaluate(roles, permission, model=model if per_model else None, client_ip=client_ip)
    if not verdict.allowed:
        return Outcome(
            Decision(False, permission, verdict.rule, verdict.reason), failure="denied", model=model
        )
    out = Outcome(
        Decision(True, permission, f"{route.label}; {verdict.rule}"), merge_grant(verdict.roles), model=model
    )
    if route.builtin and route.path == MODEL_ROUTE and model is not None:
        if not policy.evaluate(roles, f"model:invoke:{model}", model=model, client_ip=client_ip).allowed:
            out.failure = "hidden_model"
    return out
