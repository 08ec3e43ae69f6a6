"""Token-bucket rate limits: in-process, or shared by every replica through Redis.

A bucket holds up to ``burst`` tokens and refills at ``rpm / 60`` tokens per second; a request takes
one token or is refused with the time until the next token. With Redis the bucket lives in one hash
per key, updated atomically by a Lua script using Redis' own clock (replica clocks may differ). If
Redis is unreachable the local limiter decides, so limits still hold per replica, and it is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prometheus_client import Counter

log = logging.getLogger("custos.ratelimit")

REDIS_ERRORS = Counter("custos_ratelimit_redis_errors_total", "Rate-limit calls that fell back to local")


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    remaining: int
    retry_after_s: float


class LocalLimiter:
    """In-process buckets: {key: [tokens, last_refill]}; idle buckets are swept now and then."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, list[float]] = {}
        self._max_keys = max_keys

    def take(self, key: str, rate_per_s: float, burst: int, now: float | None = None) -> Outcome:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._sweep(now)
            bucket = self._buckets[key] = [float(burst), now]
        tokens = min(float(burst), bucket[0] + (now - bucket[1]) * rate_per_s)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return Outcome(True, int(bucket[0]), 0.0)
        bucket[0] = tokens
        return Outcome(False, 0, (1.0 - tokens) / rate_per_s)

    def _sweep(self, now: float) -> None:
        # A bucket idle long enough to be full again carries no state worth keeping.
        full_after = 3600.0
        self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < full_after}
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()


# Both scripts: KEYS[1] bucket hash; ARGV: rate per second, burst, ttl seconds. The bucket is refilled
# to now first (Redis' clock, so every replica agrees), then taken from and stored.
_REFILL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
"""
_STORE = """
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
"""

# A take: returns {allowed, tokens*1000, retry ms}.
_LUA = (
    _REFILL
    + """
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
"""
    + _STORE
    + "return {allowed, math.floor(tokens * 1000), math.ceil(retry * 1000)}\n"
)

# A charge always takes a token, down to a floor of -burst (a source that keeps failing while refused
# stays refused). Returns tokens*1000.
_CHARGE_LUA = (
    _REFILL + "tokens = math.max(-burst, tokens - 1)\n" + _STORE + "return math.floor(tokens * 1000)\n"
)


class RedisLimiter:
    def __init__(self, url: str, prefix: str, timeout_s: float) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.prefix = prefix
        self.script = self.client.register_script(_LUA)
        self.charge_script = self.client.register_script(_CHARGE_LUA)
        self.local = LocalLimiter()
        self._warned_at = 0.0

    async def take(self, key: str, rate_per_s: float, burst: int) -> Outcome:
        ttl = int(burst / rate_per_s) + 60
        try:
            allowed, tokens_milli, retry_ms = await self.script(
                keys=[self.prefix + key], args=[repr(rate_per_s), burst, ttl]
            )
        except Exception as exc:
            self._unreachable(exc)
            return self.local.take(key, rate_per_s, burst)
        return Outcome(bool(allowed), int(tokens_milli) // 1000, int(retry_ms) / 1000)

    async def charge(self, key: str, rate_per_s: float, burst: int) -> float | None:
        """Take one token unconditionally (floor -burst); the tokens left, or None when Redis is
        unreachable (the caller decides locally)."""
        ttl = int(2 * burst / rate_per_s) + 60
        try:
            milli = await self.charge_script(keys=[self.prefix + key], args=[repr(rate_per_s), burst, ttl])
        except Exception as exc:
            self._unreachable(exc)
            return None
        return int(milli) / 1000

    def _unreachable(self, exc: Exception) -> None:
        REDIS_ERRORS.inc()
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.warning(
                "rate limit store unreachable (%s: %s); limiting per replica until it is back",
                type(exc).__name__,
                exc,
            )

    async def close(self) -> None:
        await self.client.aclose()
