"""Tracing stage: one OpenTelemetry span per proxied request, a child span per stage and one for the
upstream call, GenAI semantic-convention attributes, W3C trace context in and out.

- The client's ``traceparent`` (and ``tracestate``) continues the trace; the upstream gets a
  ``traceparent`` naming our upstream span, so vLLM's spans hang below ours.
- ``ctx.trace_id`` (32 hex) is set for the audit record: from our span when spans are made, or
  straight from the client's ``traceparent`` when no exporter is configured (then the header passes
  upstream untouched).
- Spans are made only with ``tracing.exporter`` set; export happens in the SDK's batch thread.
- Prompt and completion text never go on spans (a compliance proxy must not leak them into traces).

Place it right after ``metrics`` in ``STAGES``; the span factory creates the request span on first
use (the metrics stage's ``on_request`` already runs inside it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..context import RequestContext
from ..stage import Stage, StageEnv
from ..tracing.setup import parse_traceparent

if TYPE_CHECKING:
    from ..tracing.config import TracingConfig

log = logging.getLogger("custos.tracing")

_ROOT = "tracing.root"  # ctx.extras: this request's server span (made on first use)
_TRACE_HEADERS = (b"traceparent", b"tracestate")


class _Root:
    __slots__ = ("context", "span")

    def __init__(self, span: Any, context: Any) -> None:
        self.span = span
        self.context = context


class TracingStage(Stage):
    name = "tracing"

    def __init__(
        self, config: TracingConfig, upstream_url: str, *, exporter: Any = None, batch: bool = True
    ) -> None:
        self.config = config
        self.provider: Any = None
        self.tracer: Any = None
        up = urlsplit(upstream_url)
        self._upstream_host = up.hostname or ""
        self._upstream_port = up.port or (443 if up.scheme == "https" else 80)
        if self.config.exporter != "none" or exporter is not None:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            from ..tracing.setup import make_provider

            self._trace = trace
            self._propagator = TraceContextTextMapPropagator()
            self.provider = make_provider(self.config, exporter, batch=batch)
            self.tracer = self.provider.get_tracer("custos.sidecar", _version())

    # -- lifecycle ----------------------------------------------------------------------------
    async def startup(self, app: Any) -> None:
        if self.tracer is not None:
            app.pipeline.stage_span = self.stage_span
            log.info(
                "tracing: exporting spans (%s) with sampler %s ratio %s",
                self.config.exporter,
                self.config.sampler,
                self.config.sample_ratio,
            )

    async def shutdown(self) -> None:
        if self.provider is not None:
            # Flushes the last batch over the network: not on the event loop.
            await asyncio.to_thread(self.provider.shutdown)

    # -- spans --------------------------------------------------------------------------------
    def _root(self, ctx: RequestContext) -> _Root:
        root = ctx.extras.get(_ROOT)
        if root is not None:
            return root
        trace = self._trace
        carrier = {}
        for name, value in ctx.headers:
            if name in _TRACE_HEADERS:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        parent = self._propagator.extract(carrier) if carrier else None
        if ctx.operation == "metrics":
            # Scrapes (Prometheus, the alert engine of a sidecar in front) every few seconds would
            # flood the trace store with one-span traces: they are counted and audited, not traced.
            span: Any = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
            root = ctx.extras[_ROOT] = _Root(span, trace.set_span_in_context(span))
            return root
        span = self.tracer.start_span(
            f"{ctx.method} {ctx.route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            start_time=int(ctx.started_wall * 1e9),
            attributes={
                "http.request.method": ctx.method,
                "http.route": ctx.route,
                "url.path": ctx.path,
                "custos.request_id": ctx.request_id,
                "gen_ai.operation.name": ctx.operation,
            },
        )
        root = ctx.extras[_ROOT] = _Root(span, trace.set_span_in_context(span))
        sc = span.get_span_context()
        if sc.trace_id:
            ctx.trace_id = format(sc.trace_id, "032x")
        if carrier:
            # We forward our own context upstream instead of the client's (see _upstream_span).
            ctx.headers = [(n, v) for n, v in ctx.headers if n not in _TRACE_HEADERS]
        return root

    def stage_span(self, ctx: RequestContext, name: str) -> AbstractContextManager[Any]:
        root = self._root(ctx)
        if name == "upstream":
            return self._upstream_span(ctx, root)
        if not self.config.stage_spans or not root.span.is_recording():
            return nullcontext()
        return self._span(ctx, root, f"custos.{name}", {"custos.stage": name})

    @contextmanager
    def _span(self, ctx: RequestContext, root: _Root, name: str, attrs: dict[str, Any]) -> Iterator[Any]:
        span = self.tracer.start_span(name, context=root.context, attributes=attrs)
        try:
            yield span
        except BaseException as exc:
            _mark_error(span, exc)
            raise
        finally:
            span.end()

    @contextmanager
    def _upstream_span(self, ctx: RequestContext, root: _Root) -> Iterator[Any]:
        trace = self._trace
        model = ctx.model
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": ctx.operation,
            "server.address": self._upstream_host,
            "server.port": self._upstream_port,
            "http.request.method": ctx.method,
            "url.path": ctx.path,
        }
        if model:
            attrs["gen_ai.request.model"] = model
        span = self.tracer.start_span(
            f"{ctx.operation} {model}" if model else f"{ctx.operation} upstream",
            context=root.context,
            kind=trace.SpanKind.CLIENT,
            attributes=attrs,
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        for key, value in carrier.items():
            ctx.upstream_headers.append((key.encode("latin-1"), value.encode("latin-1")))
        try:
            yield span
        except BaseException as exc:
            _mark_error(span, exc)
            raise
        finally:
            if span.is_recording():
                if ctx.upstream_status is not None:
                    span.set_attribute("http.response.status_code", ctx.upstream_status)
                    if ctx.upstream_status >= 500:
                        span.set_attribute("error.type", str(ctx.upstream_status))
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                if ctx.error is not None and ctx.error.type == "upstream_error":
                    span.set_attribute("error.type", ctx.error.kind)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, ctx.error.message))
                _genai_response(span, ctx)
            span.end()

    # -- request path -------------------------------------------------------------------------
    async def on_request(self, ctx: RequestContext) -> None:
        if self.tracer is not None:
            self._root(ctx)
        elif self.config.enabled:
            ctx.trace_id = parse_traceparent(ctx.header(b"traceparent"))

    async def on_complete(self, ctx: RequestContext) -> None:
        if self.tracer is None:
            if self.config.enabled and ctx.trace_id is None:
                ctx.trace_id = parse_traceparent(ctx.header(b"traceparent"))
            return
        root = self._root(ctx)  # requests rejected before the pipeline (413) get a span too
        span = root.span
        if span.is_recording():
            self._finish(span, ctx)
        span.end()

    def _finish(self, span: Any, ctx: RequestContext) -> None:
        trace = self._trace
        attrs: dict[str, Any] = {"custos.outcome": ctx.outcome, "custos.stream": ctx.stream}
        if ctx.status is not None:
            attrs["http.response.status_code"] = ctx.status
        if ctx.model:
            attrs["gen_ai.request.model"] = ctx.model
            try:
                body = ctx.json  # already parsed by the parse stage when a model was read
            except Exception:
                body = None
            if isinstance(body, dict):
                for key, attr in (
                    ("max_tokens", "gen_ai.request.max_tokens"),
                    ("max_completion_tokens", "gen_ai.request.max_tokens"),
                    ("max_output_tokens", "gen_ai.request.max_tokens"),  # the Responses API
                    ("temperature", "gen_ai.request.temperature"),
                    ("top_p", "gen_ai.request.top_p"),
                    ("seed", "gen_ai.request.seed"),
                ):
                    value = body.get(key)
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        attrs[attr] = value
        identity = ctx.identity
        if identity is not None:
            attrs["custos.roles"] = list(identity.roles)
            if self.config.record_subject:
                attrs["enduser.id"] = identity.subject
        decision = ctx.decision
        if decision is not None:
            attrs["custos.decision.allowed"] = decision.allowed
            attrs["custos.decision.permission"] = decision.permission
            attrs["custos.decision.rule"] = decision.rule
        if ctx.redactions:
            attrs["custos.redactions"] = sum(ctx.redactions.values())
            attrs["custos.redaction.entity_types"] = sorted(ctx.redactions)
        span.set_attributes(attrs)
        _genai_response(span, ctx)
        if ctx.cancelled:
            span.set_attribute("error.type", "cancelled")
        elif ctx.error is not None:
            span.set_attribute("error.type", ctx.error.kind)
            if ctx.error.status >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR, ctx.error.message))
        elif ctx.status is not None and ctx.status >= 500:
            span.set_attribute("error.type", str(ctx.status))
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        if ctx.model:
            span.update_name(f"{ctx.method} {ctx.route} {ctx.model}")


def _genai_response(span: Any, ctx: RequestContext) -> None:
    usage = ctx.usage
    if usage.prompt_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    if usage.completion_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    if ctx.finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", list(ctx.finish_reasons))


def _mark_error(span: Any, exc: BaseException) -> None:
    from opentelemetry import trace

    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute("error.type", "cancelled")
        return
    kind = getattr(exc, "kind", None) or type(exc).__qualname__
    span.set_attribute("error.type", kind)
    status = getattr(exc, "status", 500)
    if not isinstance(status, int) or status >= 500:
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))


def _version() -> str:
    from .. import __version__

    return __version__


def build(tracing: TracingConfig, env: StageEnv) -> Stage | None:
    if not tracing.enabled:
        return None
    return TracingStage(tracing, env.upstream_url)
