"""Rates and quantiles ``custos top`` computes between two scrapes agree with the in-process PromQL
(which is checked against promtool), including counter resets."""

from __future__ import annotations

import random

from alerting.promql import _bucket_quantile
from sidecar.top import series as S

TEXT = """# TYPE custos_requests_total counter
custos_requests_total{route="/v1/chat/completions",status_class="2xx"} {a}
custos_requests_total{route="/v1/chat/completions",status_class="5xx"} {b}
# TYPE custos_request_duration_seconds histogram
custos_request_duration_seconds_bucket{route="/v1/chat/completions",le="0.1"} {c1}
custos_request_duration_seconds_bucket{route="/v1/chat/completions",le="0.5"} {c2}
custos_request_duration_seconds_bucket{route="/v1/chat/completions",le="+Inf"} {c3}
custos_request_duration_seconds_count{route="/v1/chat/completions"} {c3}
custos_request_duration_seconds_sum{route="/v1/chat/completions"} 1
"""


def _scrape(t: float, **v: float) -> S.Scrape:
    text = TEXT
    for k, val in v.items():
        text = text.replace("{" + k + "}", str(val))
    return S.Scrape.parse(t, text)


def test_rates_increases_and_resets() -> None:
    old = _scrape(100.0, a=10, b=2, c1=5, c2=8, c3=10)
    new = _scrape(110.0, a=30, b=1, c1=15, c2=26, c3=30)  # the 5xx counter was reset (restart): 2 -> 1
    inc = S.increase(new, old, "custos_requests_total", ("status_class",))
    assert inc == {("2xx",): 20.0, ("5xx",): 1.0}
    assert S.rate(new, old, "custos_requests_total") == {(): 2.1}
    assert S.rate(new, None, "custos_requests_total") is None
    assert S.increase(new, None, "custos_requests_total") == {(): 31.0}  # since the start
    buckets = S.histogram(new, old, "custos_request_duration_seconds")[()]
    assert buckets == [(0.1, 10.0), (0.5, 18.0), (float("inf"), 20.0)]
    # 10 of 20 at most 0.1 s, 8 in (0.1, 0.5]: p75 (rank 15) interpolates 5/8 into that bucket;
    # p95 (rank 19) falls in +Inf, reported as the highest finite bound.
    assert S.bucket_quantile(0.5, buckets) == 0.1
    assert abs(S.bucket_quantile(0.75, buckets) - 0.35) < 1e-12
    assert S.bucket_quantile(0.95, buckets) == 0.5
    assert S.bucket_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_quantiles_match_promql() -> None:
    rng = random.Random(7)
    bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf")]
    for _ in range(200):
        counts, total = [], 0.0
        for b in bounds:
            total += rng.choice([0, 0, 1, 3, 10])
            counts.append((b, total))
        if total == 0:
            continue
        for q in (0.5, 0.9, 0.95, 0.99):
            assert S.bucket_quantile(q, counts) == _bucket_quantile(q, counts), (q, counts)
