"""The sidecar's request metrics (names, types, labels: docs/metrics.md).

Import this module only after ``PROMETHEUS_MULTIPROC_DIR`` is settled: prometheus-client picks the
value storage (in-memory or shared mmap files) when a metric is created.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .. import __version__

# Buckets suited to LLM calls: milliseconds for denied/cached calls up to minutes for long generations.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 60)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)

REQUESTS = Counter(
    "custos_requests",
    "Requests through the sidecar by route, model, status class (2xx..5xx, cancelled) and role",
    ["route", "model", "status_class", "role"],
)
DURATION = Histogram(
    "custos_request_duration_seconds",
    "End-to-end request latency through the sidecar (last byte sent)",
    ["route", "model", "status_class"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "custos_time_to_first_token_seconds",
    "Streams: time from request arrival to the first content token sent to the client",
    ["route", "model"],
    buckets=TTFT_BUCKETS,
)
TPOT = Histogram(
    "custos_time_per_output_token_seconds",
    "Streams: mean time between output tokens after the first one",
    ["route", "model"],
    buckets=TPOT_BUCKETS,
)
IN_FLIGHT = Gauge(
    "custos_requests_in_flight",
    "Requests being processed now (summed over live worker processes)",
    ["route"],
    multiprocess_mode="livesum",
)
INPUT_TOKENS = Counter(
    "custos_input_tokens", "Prompt tokens (from the upstream's usage block)", ["model", "role"]
)
OUTPUT_TOKENS = Counter(
    "custos_output_tokens",
    "Completion tokens (usage block, or counted from the stream when the upstream sends none)",
    ["model", "role"],
)
UPSTREAM_ERRORS = Counter(
    "custos_upstream_errors",
    "Upstream failures by kind (upstream_unreachable, upstream_timeout, upstream_error, http_5xx codes)",
    ["kind"],
)
ERRORS = Counter(
    "custos_errors", "Requests the sidecar ended with an error, by error kind (bounded set)", ["kind"]
)
AUTH_FAILURES = Counter("custos_auth_failures", "Authentication failures by reason", ["reason"])
RBAC_DENIALS = Counter("custos_rbac_denials", "Requests denied by RBAC, by permission", ["permission"])
REDACTIONS = Counter("custos_redactions", "PII entities redacted, by entity type", ["entity_type"])
BUILD_INFO = Gauge(
    "custos_build_info", "Always 1; the sidecar's version as a label", ["version"], multiprocess_mode="max"
)
BUILD_INFO.labels(__version__).set(1)
