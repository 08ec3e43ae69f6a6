"""Token buckets in-process and shared through a real redis-server, including Redis going away."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.stack import mint_token
from sidecar.rbac.limiter import LocalLimiter, RedisLimiter
from tests.identity.support import Redis, bearer, chat, launch, start_nginx, start_redis


@pytest.fixture
def redis() -> Iterator[Redis]:
    r = start_redis()
    yield r
    r.process.stop()


def test_local_bucket_refills_at_the_rate() -> None:
    lim = LocalLimiter()
    rate, burst = 1.0, 3  # 60 per minute, bucket of 3
    assert [lim.take("k", rate, burst, now=100.0).allowed for _ in range(4)] == [True, True, True, False]
    denied = lim.take("k", rate, burst, now=100.0)
    assert not denied.allowed and 0.9 < denied.retry_after_s <= 1.0
    assert lim.take("k", rate, burst, now=101.0).allowed  # one token back after a second
    assert not lim.take("k", rate, burst, now=101.0).allowed
    assert lim.take("other", rate, burst, now=101.0).allowed  # keys are independent
    out = [lim.take("k", rate, burst, now=200.0) for _ in range(4)]  # refilled, never past burst
    assert [o.allowed for o in out] == [True, True, True, False]
    assert out[0].remaining == 2


def test_local_limiter_memory_is_bounded() -> None:
    lim = LocalLimiter(max_keys=100)
    for i in range(1000):
        lim.take(f"k{i}", 1.0, 1, now=float(i))
    assert len(lim._buckets) <= 100


async def test_redis_buckets_are_shared_between_replicas(redis: Redis) -> None:
    a = RedisLimiter(redis.url, "t:", 1.0)
    b = RedisLimiter(redis.url, "t:", 1.0)
    try:
        results = []
        for i in range(6):
            lim = a if i % 2 == 0 else b
            results.append((await lim.take("s:alice", 0.01, 4)).allowed)
        assert results == [True, True, True, True, False, False]
        assert (await b.take("s:bob", 0.01, 4)).allowed
    finally:
        await a.close()
        await b.close()


async def test_redis_outage_falls_back_to_local_limits(redis: Redis) -> None:
    lim = RedisLimiter(redis.url, "t:", 0.2)
    try:
        assert (await lim.take("s:x", 0.01, 2)).allowed
        redis.process.kill9()
        # Still limited, per replica, with no exception reaching the request.
        got = [(await lim.take("s:y", 0.01, 2)).allowed for _ in range(3)]
        assert got == [True, True, False]
    finally:
        await lim.close()


def test_two_sidecars_share_limits_through_redis(tmp_path: Path, redis: Redis) -> None:
    nginx = start_nginx(tmp_path, ["m"])
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "roles:\n  - name: r\n    permissions: [model:read]\n"
        "    constraints: {rate_limit: {per_subject_rpm: 4, per_role_rpm: 6}}\n"
    )
    extra = {"rbac": {"policy_file": str(policy), "redis_url": redis.url}}
    s1 = launch(tmp_path / "one", nginx.url, extra, name="rl1")
    s2 = launch(tmp_path / "two", nginx.url, extra, name="rl2")
    try:
        alice = bearer(mint_token("alice", ["r"]))
        codes = [
            httpx.post(s.url + "/v1/chat/completions", json=chat("m"), headers=alice).status_code
            for s in (s1, s2, s1, s2, s1)
        ]
        assert codes == [200, 200, 200, 200, 429]  # 4 per minute across both replicas
        bob = bearer(mint_token("bob", ["r"]))
        codes = [
            httpx.post(s.url + "/v1/chat/completions", json=chat("m"), headers=bob).status_code
            for s in (s2, s1, s2)
        ]
        assert codes == [200, 200, 429]  # the role's bucket (6) is spent: 4 alice + 2 bob
        r = httpx.post(s2.url + "/v1/chat/completions", json=chat("m"), headers=bob)
        assert "your role" in r.json()["error"]["message"] and "'r'" not in r.text  # no role names
        redis.process.kill9()
        carol = bearer(mint_token("carol", ["r"]))
        r = httpx.post(s1.url + "/v1/chat/completions", json=chat("m"), headers=carol)
        assert r.status_code == 200  # Redis gone: answered, limited locally, not a 500
        assert "limiting per replica" in s1.process.log()
    finally:
        s1.stop()
        s2.stop()
        nginx.process.stop()
