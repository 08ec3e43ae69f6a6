"""The stage contract. A stage is one module with one job in the request path.

Lifecycle of a request through a pipeline of stages ``[s1, s2, ..., sn]``:

1. ``on_request(ctx)`` for s1..sn in order. A stage may enrich ``ctx`` or raise ``ProxyError`` to
   end the request (deny, reject). Later stages' ``on_request`` then do not run.
2. The request is forwarded upstream (``sidecar.forward``).
3. ``response_filter(ctx)`` is asked of s1..sn once the upstream status and headers are known; every
   filter returned sees the response body in that order: filter i's output is filter i+1's input, and
   the last filter's output is exactly what the client receives. Filters that only observe return
   their input unchanged.
3b. ``on_response_end(ctx)`` for s1..sn once the whole response is known but before the client has all
   of it: a JSON body or an error before anything is sent (a ``ProxyError`` raised here replaces the
   response), a stream before its final chunk (a ``ProxyError`` here ends the stream with an error
   event). For guarantees that must hold before the client has the answer, such as an audit record
   written durably (``audit.fail_closed``).
4. ``on_complete(ctx)`` for sn..s1 (reverse order, like unwinding middleware) — always, also for
   denied, failed and cancelled requests. Exceptions here are logged, never shown to the client.

``startup(app)``/``shutdown()`` run once per process for background work (key refresh, shipping,
sampling). Nothing in a stage blocks the event loop: disk, fsync and NVML work go to threads.

Data between stages: a stage hands results to later stages (and to its own response filters) only
through typed attributes of ``RequestContext`` (``ctx.grant``, ``ctx.redaction``, ``ctx.auth_failure``,
...); each attribute's comment in ``sidecar.context`` names its writer and its readers. A new hand-off
is a new attribute there, never a string key. ``ctx.extras`` is for state private to one stage.

Building: each stage module has ``build(section, env) -> Stage | None``. ``section`` is the stage's own
config section, the one its ``sidecar.pipeline.STAGES`` entry names (``None`` for stages without
one); ``env`` is the ``StageEnv``, the few process-wide settings a stage may need beyond its section.
A builder never sees the whole ``Config``. ``None`` switches the stage off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from gpu.config import GpuConfig

    from .config import Config
    from .context import RequestContext


@dataclass(frozen=True, slots=True)
class StageEnv:
    """What a stage builder may use beyond its own config section; add a field only for something a
    stage cannot do without, never the whole ``Config``."""

    # state.dir: dev keys (authenticate), the hash key (redact), the spool (audit), alert state (alerting).
    state_dir: Path
    # upstream.url: span attributes (tracing), the upstream's /metrics scrape target (alerting).
    upstream_url: str
    # The gpu section: the metrics stage starts the GPU sampler, whose series /metrics includes.
    gpu: GpuConfig

    @classmethod
    def from_config(cls, config: Config) -> StageEnv:
        return cls(state_dir=config.state.dir, upstream_url=str(config.upstream.url), gpu=config.gpu)


class ResponseFilter:
    """Sees the response body as it passes. JSON bodies arrive as one ``feed``; SSE bodies chunk by
    chunk as the upstream sends them. A filter may hold bytes back (to finish an entity that is split
    across chunks) and must release them in ``flush``."""

    __slots__ = ()

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def flush(self) -> bytes:
        return b""


class Stage:
    name: ClassVar[str] = "stage"

    async def startup(self, app: Any) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def on_request(self, ctx: RequestContext) -> None:
        return None

    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None:
        return None

    async def on_response_end(self, ctx: RequestContext) -> None:
        return None

    async def on_complete(self, ctx: RequestContext) -> None:
        return None
