"""Rate-limit stage: per-subject and per-role requests-per-minute from the RBAC policy.

Reads the limits of the allowing roles from ``ctx.grant`` (set by ``authorize``).
Over the limit: 429 with ``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math

from custos.errors import ProxyError

from ..context import RequestContext
from ..rbac.config import RbacConfig
from ..rbac.limiter import LocalLimiter, Outcome, RedisLimiter
from ..rbac.policy import RateLimit
from ..stage import Stage, StageEnv


class RateLimitStage(Stage):
    name = "ratelimit"

    def __init__(self, limiter: LocalLimiter | RedisLimiter) -> None:
        self.limiter = limiter
        self.shared = isinstance(limiter, RedisLimiter)

    async def shutdown(self) -> None:
        if isinstance(self.limiter, RedisLimiter):
            await self.limiter.close()

    async def _take(self, key: str, rpm: int, burst: int | None) -> Outcome:
        rate = rpm / 60.0
        size = burst or rpm
        if self.shared:
            return await self.limiter.take(key, rate, size)  # type: ignore[misc]
        return self.limiter.take(key, rate, size)  # type: ignore[return-value]

    async def on_request(self, ctx: RequestContext) -> None:
        grant = ctx.grant
        if grant is None or ctx.identity is None:
            return
        checks: list[tuple[str, str, RateLimit, int]] = []
        if grant.per_subject is not None:
            rl = grant.per_subject
            checks.append(("subject", f"s:{ctx.identity.subject}", rl, rl.per_subject_rpm))
        if grant.per_role is not None:
            rl = grant.per_role
            checks.append(("role", f"r:{grant.role}", rl, rl.per_role_rpm))
        for scope, key, rl, rpm in checks:
            out = await self._take(key, rpm, rl.burst)
            if not out.allowed:
                ctx.rate_limit_scope = scope
                retry = max(1, math.ceil(out.retry_after_s))
                # Which role's bucket ran out stays in the context and audit; the client is not told.
                who = "you" if scope == "subject" else "your role"
                raise ProxyError(
                    429,
                    f"Rate limit of {rpm} requests per minute reached for {who}; retry in {retry} s.",
                    type="rate_limit_error",
                    code="rate_limit_exceeded",
                    kind=f"ratelimit_{scope}",
                    headers=[
                        (b"retry-after", str(retry).encode()),
                        (b"x-ratelimit-limit-requests", str(rpm).encode()),
                        (b"x-ratelimit-remaining-requests", b"0"),
                    ],
                )


def build(rbac: RbacConfig, env: StageEnv) -> Stage | None:
    if not rbac.enabled:
        return None
    if rbac.redis_url:
        return RateLimitStage(RedisLimiter(rbac.redis_url, rbac.redis_key_prefix, rbac.redis_timeout_s))
    return RateLimitStage(LocalLimiter())
