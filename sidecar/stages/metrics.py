"""Metrics stage: the first stage, so its ``on_complete`` runs last and sees what every other stage
put in the context (identity, decision, redactions, usage, errors, stream timings).

Label values are bounded (docs/metrics.md): routes are a fixed set, models and roles are capped per
process, user ids and raw paths are never labels. Label children are cached per label tuple so a
request costs a few dict lookups and lock-protected additions, not ``labels()`` resolution.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..context import RequestContext
from ..metrics.labels import BoundedLabel, ClosedLabel
from ..stage import Stage, StageEnv

if TYPE_CHECKING:
    from gpu.config import GpuConfig

    from ..metrics.config import MetricsConfig

log = logging.getLogger("custos.metrics")

_IN_FLIGHT = "metrics.in_flight"  # ctx.extras: the gauge on_request raised, lowered by on_complete


def status_class(ctx: RequestContext) -> str:
    if ctx.cancelled:
        return "cancelled"
    status = ctx.status
    if status is None:
        return "none"
    if status == 499:  # client closed the request before we answered
        return "cancelled"
    return f"{status // 100}xx"


class MetricsStage(Stage):
    name = "metrics"

    def __init__(self, config: MetricsConfig, gpu: GpuConfig) -> None:
        from ..metrics import defs  # after PROMETHEUS_MULTIPROC_DIR is settled (see defs)

        self.config = config
        self.gpu_config = gpu
        self.defs = defs
        self.model_label = BoundedLabel(config.max_models, config.models)
        self.role_label: BoundedLabel | ClosedLabel = (
            ClosedLabel(config.roles) if config.roles else BoundedLabel(config.max_roles)
        )
        cap = config.max_label_values
        self.reason_label = BoundedLabel(cap)
        self.permission_label = BoundedLabel(cap)
        self.entity_label = BoundedLabel(cap)
        self.kind_label = BoundedLabel(cap)
        # label tuple -> metric children; bounded because every label is.
        self._req: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._stream: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._tokens: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._in_flight: dict[str, Any] = {}
        self._redactions: dict[str, Any] = {}  # entity label -> counter child
        self._gpu: Any = None

    # -- lifecycle ----------------------------------------------------------------------------
    async def startup(self, app: Any) -> None:
        from gpu.collector import start_from_config

        from ..metrics.render import build_renderer, multiprocess_dir

        self._gpu = start_from_config(self.gpu_config, shared_dir=multiprocess_dir())
        extra = [self._gpu.exposition] if self._gpu is not None else []
        app.render_metrics = build_renderer(extra)

    async def shutdown(self) -> None:
        if self._gpu is not None:
            import asyncio

            await asyncio.to_thread(self._gpu.stop)
            self._gpu = None

    # -- request path -------------------------------------------------------------------------
    async def on_request(self, ctx: RequestContext) -> None:
        gauge = self._in_flight.get(ctx.route)
        if gauge is None:
            gauge = self._in_flight[ctx.route] = self.defs.IN_FLIGHT.labels(ctx.route)
        gauge.inc()
        ctx.extras[_IN_FLIGHT] = gauge

    async def on_complete(self, ctx: RequestContext) -> None:
        gauge = ctx.extras.pop(_IN_FLIGHT, None)
        if gauge is not None:
            gauge.dec()
        if not self.config.enabled:
            return
        d = self.defs
        route = ctx.route
        sc = status_class(ctx)
        status = ctx.status
        ok = status is not None and status < 400 and not ctx.cancelled
        # A model name is admitted to its own label only once the upstream served it: junk names
        # from failed requests must not use up the cap.
        model = self.model_label(ctx.model, admit=ok)
        identity = ctx.identity
        role = self.role_label(identity.roles[0] if identity is not None and identity.roles else None)
        if isinstance(self.role_label, ClosedLabel) and identity is not None and role == "other":
            role = next((r for r in identity.roles if r in self.role_label.values), "other")

        key = (route, model, sc, role)
        children = self._req.get(key)
        if children is None:
            children = self._req[key] = (
                d.REQUESTS.labels(route, model, sc, role),
                d.DURATION.labels(route, model, sc),
            )
        children[0].inc()
        children[1].observe(ctx.elapsed)

        usage = ctx.usage
        if usage.prompt_tokens or usage.completion_tokens:
            tkey = (model, role)
            tok = self._tokens.get(tkey)
            if tok is None:
                tok = self._tokens[tkey] = (
                    d.INPUT_TOKENS.labels(model, role),
                    d.OUTPUT_TOKENS.labels(model, role),
                )
            if usage.prompt_tokens:
                tok[0].inc(usage.prompt_tokens)
            if usage.completion_tokens:
                tok[1].inc(usage.completion_tokens)

        if ctx.stream and ok and ctx.error is None:  # a broken stream is no latency sample
            self._observe_stream(ctx, route, model)

        error = ctx.error
        if error is not None:
            kind = self.kind_label(error.kind)
            d.ERRORS.labels(kind).inc()
            if error.type == "upstream_error":
                d.UPSTREAM_ERRORS.labels(kind).inc()
        elif ctx.upstream_status is not None and ctx.upstream_status >= 500:
            d.UPSTREAM_ERRORS.labels(f"http_{ctx.upstream_status}").inc()

        reason = ctx.auth_failure
        if reason:
            d.AUTH_FAILURES.labels(self.reason_label(str(reason))).inc()
        decision = ctx.decision
        if decision is not None and not decision.allowed:
            d.RBAC_DENIALS.labels(self.permission_label(decision.permission)).inc()
        if ctx.redactions:
            for entity, count in ctx.redactions.items():
                if count:
                    label = self.entity_label(entity)
                    child = self._redactions.get(label)
                    if child is None:
                        child = self._redactions[label] = d.REDACTIONS.labels(label)
                    child.inc(count)

    def _observe_stream(self, ctx: RequestContext, route: str, model: str) -> None:
        first = ctx.first_token_at or ctx.first_byte_at
        if first is None:
            return
        key = (route, model)
        hist = self._stream.get(key)
        if hist is None:
            d = self.defs
            hist = self._stream[key] = (d.TTFT.labels(route, model), d.TPOT.labels(route, model))
        hist[0].observe(max(0.0, first - ctx.started))
        tokens = ctx.usage.completion_tokens
        end = ctx.finished
        if tokens and tokens > 1 and end is not None and ctx.first_token_at is not None:
            hist[1].observe(max(0.0, end - first) / (tokens - 1))


def build(metrics: MetricsConfig, env: StageEnv) -> Stage:
    return MetricsStage(metrics, env.gpu)
