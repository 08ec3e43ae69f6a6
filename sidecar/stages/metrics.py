"""Metrics stage: request count and latency on the sidecar's /metrics (prometheus-client)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from ..config import Config
from ..context import RequestContext
from ..stage import Stage

# Buckets suited to LLM calls: milliseconds for cached/denied calls up to minutes for long generations.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)

REQUESTS = Counter("custos_requests_total", "Requests through the sidecar", ["route", "status_class"])
LATENCY = Histogram(
    "custos_request_duration_seconds", "End-to-end request latency through the sidecar", ["route"],
    buckets=LATENCY_BUCKETS,
)


class MetricsStage(Stage):
    name = "metrics"

    async def on_complete(self, ctx: RequestContext) -> None:
        status = ctx.status
        status_class = "cancelled" if ctx.cancelled else f"{status // 100}xx" if status else "none"
        REQUESTS.labels(ctx.route, status_class).inc()
        LATENCY.labels(ctx.route).observe(ctx.elapsed)


def build(config: Config) -> Stage:
    return MetricsStage()
