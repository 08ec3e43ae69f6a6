"""OpenTelemetry plumbing: tracer provider, sampler, exporter (built once per process).

A private ``TracerProvider`` (not the global one) so the sidecar's settings never fight with a
library that configures OpenTelemetry globally, and tests can run several in one process.
"""

from __future__ import annotations

import re
from typing import Any

from .. import __version__
from .config import TracingConfig

TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def parse_traceparent(value: bytes | None) -> str | None:
    """The trace id (32 hex) of a valid W3C traceparent header, else None."""
    if not value:
        return None
    m = TRACEPARENT.match(value.strip().lower())
    if m is None or m.group(1) == b"ff" or m.group(2) == _ZERO_TRACE or m.group(3) == _ZERO_SPAN:
        return None
    return m.group(2).decode()


def make_sampler(config: TracingConfig) -> Any:
    from opentelemetry.sdk.trace import sampling

    ratio = sampling.TraceIdRatioBased(config.sample_ratio)
    return {
        "parentbased_ratio": sampling.ParentBased(ratio),
        "ratio": ratio,
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
    }[config.sampler]


def make_exporter(config: TracingConfig) -> Any:
    # Unset endpoint/headers: the exporter reads the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT /
    # _HEADERS variables, else the OTLP defaults (localhost:4318/v1/traces, localhost:4317).
    endpoint = config.endpoint
    headers = dict(config.headers) or None
    if config.exporter == "otlp_http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=config.timeout_s)
    if config.exporter == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(
            endpoint=endpoint, insecure=config.insecure, headers=headers, timeout=config.timeout_s
        )
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ValueError(f"no exporter for tracing.exporter={config.exporter!r}")


def make_provider(config: TracingConfig, exporter: Any = None, *, batch: bool = True) -> Any:
    """A provider exporting to ``exporter`` (default: the configured one). Export runs in the
    batch processor's own thread, never on the event loop."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create(
        {"service.name": config.service_name, "service.version": __version__, **config.resource_attributes}
    )
    provider = TracerProvider(resource=resource, sampler=make_sampler(config))
    exporter = exporter if exporter is not None else make_exporter(config)
    if batch:
        processor: Any = BatchSpanProcessor(
            exporter, max_queue_size=config.max_queue_size, schedule_delay_millis=config.schedule_delay_ms
        )
    else:
        processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return provider
