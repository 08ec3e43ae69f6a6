"""The request path as a chain of stages (see ``sidecar.stage`` for the contract).

``STAGES`` lists each stage's builder by import path, in request order, with the name of the config
section it is built from. A builder takes that section and the ``StageEnv`` (never the whole
``Config``) and returns a ``Stage`` or ``None`` (switched off). Adding a stage is one line here; no
other stage changes.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from custos.errors import ProxyError

from .config import Config
from .context import RequestContext
from .forward import Receive, ResponseEnd, Send, UpstreamClient
from .stage import ResponseFilter, Stage, StageEnv

log = logging.getLogger("custos.pipeline")

# A builder's import path ("module:function") and the ``Config`` section it gets (None: no section).
StageEntry = tuple[str, str | None]

STAGES: list[StageEntry] = [
    ("sidecar.stages.metrics:build", "metrics"),
    ("sidecar.stages.tracing:build", "tracing"),
    ("sidecar.stages.guard:build", "rbac"),
    ("sidecar.stages.authenticate:build", "auth"),
    ("sidecar.stages.parse:build", None),
    ("sidecar.stages.authorize:build", "rbac"),
    ("sidecar.stages.ratelimit:build", "rbac"),
    ("sidecar.stages.redact:build", "redaction"),
    ("sidecar.stages.observe:build", None),
    ("sidecar.stages.audit:build", "audit"),
    ("sidecar.stages.alerting:build", "alerting"),
]

StageSpan = Callable[[RequestContext, str], AbstractContextManager[Any]]
# Answers an admitted request instead of the upstream (local endpoints such as /metrics).
Terminal = Callable[[RequestContext, Send, Receive], Awaitable[None]]


def _no_span(ctx: RequestContext, name: str) -> AbstractContextManager[Any]:
    return nullcontext()


def build_stages(config: Config, entries: list[StageEntry] | None = None) -> list[Stage]:
    """The stages of ``entries`` (default ``STAGES``) that ``config`` switches on, in that order."""
    env = StageEnv.from_config(config)
    stages: list[Stage] = []
    for ref, section in STAGES if entries is None else entries:
        module_name, _, attr = ref.partition(":")
        builder = getattr(importlib.import_module(module_name), attr or "build")
        stage = builder(None if section is None else getattr(config, section), env)
        if stage is not None:
            stages.append(stage)
    return stages


class Pipeline:
    def __init__(self, stages: list[Stage], upstream: UpstreamClient) -> None:
        self.stages = stages
        self.upstream = upstream
        # Built once: which stages take part in each phase (most stages use only one or two).
        self._request_stages = [s for s in stages if type(s).on_request is not Stage.on_request]
        self._filter_stages = [s for s in stages if type(s).response_filter is not Stage.response_filter]
        self._complete_stages = [s for s in reversed(stages) if type(s).on_complete is not Stage.on_complete]
        self._end_stages = [s for s in stages if type(s).on_response_end is not Stage.on_response_end]
        # None when no stage needs the hook, so the forward step skips it at no cost.
        self.response_end: ResponseEnd | None = self._response_end if self._end_stages else None
        # A tracing stage may install a span factory at startup to get one child span per stage.
        self.stage_span: StageSpan = _no_span

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def filters_for(self, ctx: RequestContext) -> list[ResponseFilter]:
        filters = []
        for stage in self._filter_stages:
            f = stage.response_filter(ctx)
            if f is not None:
                filters.append(f)
        return filters

    async def run(
        self, ctx: RequestContext, send: Send, receive: Receive, terminal: Terminal | None = None
    ) -> None:
        """Run the stages, then ``terminal`` (default: forward upstream), which answers the client."""
        span = self.stage_span
        try:
            for stage in self._request_stages:
                if span is _no_span:
                    await stage.on_request(ctx)
                else:
                    with span(ctx, stage.name):
                        await stage.on_request(ctx)
            with span(ctx, "upstream" if terminal is None else "local"):
                if terminal is None:
                    await self.upstream.forward(ctx, send, receive, self.filters_for, self.response_end)
                else:
                    await terminal(ctx, send, receive)
        except ProxyError as exc:
            ctx.error = exc
            if ctx.status is None:  # nothing sent to the client yet
                await self.send_error(ctx, exc, send)
        except asyncio.CancelledError:
            ctx.cancelled = True
            raise
        except Exception:
            log.exception("internal error on request %s", ctx.request_id)
            ctx.error = ProxyError(
                500, "Internal error in the Custos sidecar.", type="server_error", code="internal"
            )
            if ctx.status is None:
                ctx.status = 500
                await send_error(send, ctx.error)
        finally:
            await self.complete(ctx)

    async def _response_end(self, ctx: RequestContext) -> None:
        # At most once per request: an error they raise is answered without running them again.
        if ctx.response_end_ran:
            return
        ctx.response_end_ran = True
        for stage in self._end_stages:
            await stage.on_response_end(ctx)

    async def send_error(self, ctx: RequestContext, exc: ProxyError, send: Send) -> None:
        """Answer with ``exc``, after the response-end hooks (which may replace it, e.g. with 503)."""
        ctx.error = exc
        ctx.status = exc.status
        ctx.response_bytes = len(exc.body())  # the record, written first, names the answer's size
        if self.response_end is not None:
            try:
                await self.response_end(ctx)
            except ProxyError as replaced:
                ctx.error = exc = replaced
                ctx.status = replaced.status
                ctx.response_bytes = len(exc.body())
        await send_error(send, exc)

    async def reject(self, ctx: RequestContext, exc: ProxyError, send: Send) -> None:
        """End a request that was refused before the stages ran (e.g. a body over the limit)."""
        try:
            await self.send_error(ctx, exc, send)
        finally:
            await self.complete(ctx)

    async def complete(self, ctx: RequestContext) -> None:
        """Run every stage's ``on_complete``; one failing stage never stops the others."""
        ctx.finished = time.perf_counter()
        for stage in self._complete_stages:
            try:
                await stage.on_complete(ctx)
            except Exception:
                log.exception("stage %s failed in on_complete for request %s", stage.name, ctx.request_id)


async def send_error(send: Send, exc: ProxyError) -> None:
    body = exc.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(exc.headers)
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
