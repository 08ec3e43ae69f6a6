"""Guard stage: a source that keeps failing is refused before any expensive work.

Runs first in the request path after metrics and tracing, before ``authenticate``. Each source address
(``ctx.client_ip``, resolved once by the app core; IPv6 sources by their /64, since one host holds a
whole /64) has a token bucket of ``rbac.failure_burst`` tokens refilled at
``rbac.failure_limit_per_minute``. Every request the sidecar itself refuses for authentication,
authorization, validation or slowness (400, 401, 403, 404, 408, 413, 414, 431, and this stage's own
429) takes a token in ``on_complete``; answers from the upstream and successful requests take none.
While a source's bucket is empty, ``on_request`` answers 429 ``too_many_failures`` with
``Retry-After`` from a dictionary lookup: no JWT verification, no body parsing, nothing forwarded.
A source that keeps sending while refused keeps its bucket empty (down to ``-burst``), so a flood
stays refused until it stops.

State: a bounded LRU table in memory (``rbac.max_tracked_sources``; only failing sources enter it).
With ``rbac.redis_url`` the buckets are shared by every replica (each replica still answers refusals
from its own table, filled from the shared bucket whenever it charges a failure); if Redis is
unreachable this replica counts on its own.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import Counter

from custos.errors import ProxyError

from ..context import RequestContext
from ..rbac.config import RbacConfig
from ..rbac.limiter import RedisLimiter
from ..stage import Stage, StageEnv

REFUSED = Counter("custos_guard_refused_total", "Requests refused because their source failed too often")
BLOCKS = Counter("custos_guard_blocks_total", "Times a source address was blocked for failing too often")

# Statuses that count as a failure when the sidecar itself answered with them.
FAILURE_STATUSES = frozenset({400, 401, 403, 404, 408, 413, 414, 431})
CODE = "too_many_failures"
_KEY = "guard.source"  # ctx.extras: the source's bucket key, worked out once per request


def source_key(client_ip: str) -> str:
    """The bucket a client address falls into: IPv4 as is, IPv6 by its /64, anything else (a unix
    socket peer, an empty address) as a clipped string."""
    try:
        addr = ipaddress.ip_address(client_ip)
    except ValueError:
        return "?" + client_ip[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def failed(ctx: RequestContext) -> bool:
    """Whether ``ctx`` is a request the sidecar refused for something the client did."""
    if ctx.cancelled or ctx.upstream_status is not None:
        return False
    if ctx.status in FAILURE_STATUSES:
        return True
    return ctx.status == 429 and ctx.error is not None and ctx.error.code == CODE


class GuardStage(Stage):
    name = "guard"

    def __init__(
        self,
        per_minute: int,
        burst: int,
        max_sources: int,
        shared: RedisLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_sources = max_sources
        self.shared = shared
        self.clock = clock
        # source -> [tokens, last refill, blocked until]; least recently seen first.
        self.sources: OrderedDict[str, list[float]] = OrderedDict()

    async def shutdown(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    async def on_request(self, ctx: RequestContext) -> None:
        key = ctx.extras[_KEY] = source_key(ctx.client_ip)
        entry = self.sources.get(key)
        if entry is None:
            return
        self.sources.move_to_end(key)
        wait = entry[2] - self.clock()
        if wait > 0:
            REFUSED.inc()
            retry = max(1, math.ceil(wait))
            raise ProxyError(
                429,
                f"Too many failed requests from your address; retry in {retry} s.",
                type="rate_limit_error",
                code=CODE,
                headers=[(b"retry-after", str(retry).encode())],
            )

    async def on_complete(self, ctx: RequestContext) -> None:
        if not failed(ctx):
            return
        key = ctx.extras.get(_KEY) or source_key(ctx.client_ip)
        tokens = None
        if self.shared is not None:
            tokens = await self.shared.charge("fail:" + key, self.rate, self.burst)
        self.charge(key, tokens)

    def charge(self, key: str, shared_tokens: float | None = None) -> float:
        """Take a token from ``key``'s bucket (or record what the shared bucket holds after its
        charge); block the source while it has less than one. Returns the tokens left."""
        now = self.clock()
        entry = self.sources.get(key)
        if entry is None:
            if len(self.sources) >= self.max_sources:
                self.sources.popitem(last=False)
            entry = self.sources[key] = [float(self.burst), now, 0.0]
        else:
            self.sources.move_to_end(key)
        if shared_tokens is None:
            tokens = min(float(self.burst), entry[0] + (now - entry[1]) * self.rate)
            tokens = max(-float(self.burst), tokens - 1.0)
        else:
            tokens = shared_tokens
        entry[0], entry[1] = tokens, now
        if tokens < 1.0:
            if entry[2] <= now:
                BLOCKS.inc()
            entry[2] = now + (1.0 - tokens) / self.rate
        return tokens


def build(rbac: RbacConfig, env: StageEnv) -> Stage | None:
    if not rbac.failure_limit_enabled:
        return None
    shared = None
    if rbac.redis_url:
        shared = RedisLimiter(rbac.redis_url, rbac.redis_key_prefix, rbac.redis_timeout_s)
    return GuardStage(rbac.failure_limit_per_minute, rbac.failure_burst, rbac.max_tracked_sources, shared)
