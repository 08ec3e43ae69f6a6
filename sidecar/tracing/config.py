"""The ``tracing:`` config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from custos.section import Section


class TracingConfig(Section):
    enabled: bool = Field(
        True,
        description="off: no tracing at all. On: the client's W3C traceparent gives the audit record's "
        "trace id; spans are made only when an exporter is set",
    )
    exporter: Literal["none", "otlp_http", "otlp_grpc", "console"] = Field(
        "none", description="where spans go; 'none' (default) makes no spans"
    )
    endpoint: str | None = Field(
        None,
        description="OTLP endpoint; unset: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
        "$OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318/v1/traces (http), localhost:4317 (grpc)",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra OTLP request headers (auth)")
    insecure: bool = Field(True, description="gRPC: plaintext instead of TLS")
    timeout_s: float = Field(10.0, gt=0, description="OTLP export timeout")
    sampler: Literal["parentbased_ratio", "ratio", "always_on", "always_off"] = Field(
        "parentbased_ratio", description="parentbased_*: follow the client's sampled flag when it sends one"
    )
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="fraction of new traces kept")
    service_name: str = Field("custos-sidecar", description="resource attribute service.name")
    resource_attributes: dict[str, str] = Field(default_factory=dict, description="extra resource attributes")
    stage_spans: bool = Field(True, description="one child span per stage and one for the upstream call")
    record_subject: bool = Field(
        False, description="put the authenticated subject (user id) on spans as enduser.id"
    )
    max_queue_size: int = Field(2048, ge=1, description="spans buffered for export; beyond: dropped")
    schedule_delay_ms: int = Field(1000, ge=1, description="batch export interval")
