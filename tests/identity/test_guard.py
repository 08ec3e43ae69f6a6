"""The failure guard: per-source buckets of failed requests, keyed by ctx.client_ip, bounded memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from custos.errors import ProxyError, unauthorized
from sidecar.config import Config
from sidecar.context import RequestContext
from sidecar.rbac.limiter import RedisLimiter
from sidecar.stage import Stage, StageEnv
from sidecar.stages import guard
from sidecar.stages.guard import GuardStage, failed, source_key
from tests.identity.support import Redis, start_redis


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ctx_from(ip: str) -> RequestContext:
    return RequestContext(
        request_id="r", method="POST", path="/v1/chat/completions", query=b"", headers=[], client_ip=ip
    )


async def attempt(stage: GuardStage, ip: str, status: int = 401) -> int:
    """One request from ``ip`` that ends with ``status`` unless the guard refuses it first."""
    ctx = ctx_from(ip)
    try:
        await stage.on_request(ctx)
        ctx.status = status
        if status >= 400:
            ctx.error = unauthorized("bad token") if status == 401 else ProxyError(status, "x")
    except ProxyError as exc:
        ctx.error, ctx.status = exc, exc.status
    await stage.on_complete(ctx)
    return ctx.status


async def test_a_failing_source_is_refused_after_the_burst_and_others_are_not() -> None:
    clock = Clock()
    stage = GuardStage(per_minute=60, burst=5, max_sources=1000, clock=clock)
    codes = [await attempt(stage, "198.51.100.7") for _ in range(8)]
    assert codes == [401] * 5 + [429] * 3
    # Another source, and a valid request from it, are not affected.
    assert await attempt(stage, "203.0.113.9", 200) == 200
    assert await attempt(stage, "203.0.113.9") == 401
    # The refused source's requests are refused before anything else runs, even valid ones.
    ctx = ctx_from("198.51.100.7")
    with pytest.raises(ProxyError) as info:
        await stage.on_request(ctx)
    err = info.value
    assert err.status == 429 and err.code == "too_many_failures"
    assert dict(err.headers)[b"retry-after"].isdigit() and int(dict(err.headers)[b"retry-after"]) >= 1
    assert "198.51.100.7" not in err.message


async def test_successes_cost_nothing_and_the_bucket_refills() -> None:
    clock = Clock()
    stage = GuardStage(per_minute=60, burst=3, max_sources=1000, clock=clock)
    assert [await attempt(stage, "192.0.2.1", 200) for _ in range(50)] == [200] * 50
    assert "192.0.2.1" not in stage.sources  # valid traffic never enters the table
    assert [await attempt(stage, "192.0.2.1") for _ in range(4)] == [401, 401, 401, 429]
    clock.now += 2.0  # the 429 took a token too: two seconds bring back one
    assert await attempt(stage, "192.0.2.1") == 401
    assert await attempt(stage, "192.0.2.1") == 429


async def test_a_flood_while_refused_stays_refused() -> None:
    clock = Clock()
    stage = GuardStage(per_minute=60, burst=3, max_sources=1000, clock=clock)
    for _ in range(3):
        await attempt(stage, "192.0.2.2")
    # Ten a second for twenty seconds, ten times the refill rate: every 429 takes a token too, so not
    # one request gets through while the flood goes on.
    for _ in range(200):
        clock.now += 0.1
        assert await attempt(stage, "192.0.2.2") == 429
    clock.now += 4.1  # quiet for (burst + 1) / rate seconds: the bucket is back above one
    assert await attempt(stage, "192.0.2.2") == 401


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),  # one /64: one host
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:192.0.2.1", "192.0.2.1", True),
        ("192.0.2.1", "192.0.2.2", False),
    ],
)
def test_source_keys(a: str, b: str, same: bool) -> None:
    assert (source_key(a) == source_key(b)) is same


def test_which_requests_count_as_failures() -> None:
    def make(status: int, *, upstream: int | None = None, error: ProxyError | None = None, cancelled=False):
        ctx = ctx_from("192.0.2.1")
        ctx.status, ctx.upstream_status, ctx.error, ctx.cancelled = status, upstream, error, cancelled
        return ctx

    for status in (400, 401, 403, 404, 408, 413, 414, 431):
        assert failed(make(status, error=ProxyError(status, "x")))
    assert failed(make(429, error=ProxyError(429, "x", code="too_many_failures")))
    assert not failed(make(429, error=ProxyError(429, "x", code="rate_limit_exceeded")))  # a quota, not abuse
    assert not failed(make(200))
    assert not failed(make(400, upstream=400))  # the upstream's answer, not a refusal of ours
    assert not failed(make(502, error=ProxyError(502, "x")))
    assert not failed(make(401, cancelled=True))


async def test_memory_is_bounded_least_recently_seen_evicted() -> None:
    stage = GuardStage(per_minute=60, burst=1, max_sources=100, clock=Clock())
    await attempt(stage, "10.0.0.1")
    for i in range(2, 400):
        await attempt(stage, f"10.0.{i // 256}.{i % 256}")
        if i % 10 == 0:
            await attempt(stage, "10.0.0.1")  # seen again and again: kept
    assert len(stage.sources) <= 100
    assert await attempt(stage, "10.0.0.1") == 429


def test_config_switches_and_defaults() -> None:
    def build(cfg: Config) -> Stage | None:
        return guard.build(cfg.rbac, StageEnv.from_config(cfg))

    stage = build(Config())
    assert isinstance(stage, GuardStage) and stage.burst == 30 and stage.rate == 1.0
    assert build(Config.model_validate({"rbac": {"failure_limit_enabled": False}})) is None
    cfg = Config.model_validate(
        {"rbac": {"failure_limit_per_minute": 6, "failure_burst": 2, "max_tracked_sources": 500}}
    )
    stage = build(cfg)
    assert stage.rate == 0.1 and stage.burst == 2 and stage.max_sources == 500


@pytest.fixture
def redis() -> Iterator[Redis]:
    r = start_redis()
    yield r
    r.process.stop()


async def test_replicas_share_failure_buckets_through_redis(redis: Redis) -> None:
    a = GuardStage(60, 4, 1000, RedisLimiter(redis.url, "t:", 1.0))
    b = GuardStage(60, 4, 1000, RedisLimiter(redis.url, "t:", 1.0))
    try:
        codes = [await attempt(s, "198.51.100.9") for s in (a, b, a, b)]
        assert codes == [401] * 4
        # b charged the last token of the shared bucket: b refuses the source now; a learns it from
        # Redis with its next charge (one failure more at most per replica).
        assert await attempt(b, "198.51.100.9") == 429
        assert await attempt(a, "198.51.100.9") == 401
        assert await attempt(a, "198.51.100.9") == 429
        assert await attempt(b, "203.0.113.1") == 401  # other sources unaffected
        redis.process.kill9()
        # Redis gone: each replica still limits on its own, no exception reaches the request.
        assert [await attempt(a, "192.0.2.50") for _ in range(5)] == [401] * 4 + [429]
    finally:
        await a.shutdown()
        await b.shutdown()
