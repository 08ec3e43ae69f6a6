"""Audit stage: one tamper-evident record per request, written to the local spool, shipped to
Elasticsearch in the background. The last stage, so its ``on_complete`` runs first and sees what
every other stage recorded, for every request (denied, failed and cancelled ones too).

Hot path: ``on_complete`` builds the record, seals it into the chain and queues one line for the
writer thread (no I/O in the event loop). ``on_request`` is the gate for when records cannot be
written: a full spool (``when_full``: block waits for room, fail_closed answers 503) or, with
``fail_closed: true``, a failing disk. With ``fail_closed`` the completion also waits until its
record is written (and fsynced when ``fsync: always``), so a write failure stops the next requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from ..audit import metrics
from ..audit.config import AuditConfig
from ..audit.record import INPUT_CHARS, TextCapture, build_record, input_chars, prompt_text
from ..audit.spool import SpoolError
from ..audit.trail import AuditTrail
from ..config import Config
from ..context import RequestContext
from ..errors import ProxyError
from ..stage import ResponseFilter, Stage

log = logging.getLogger("custos.audit")

_REFUSED = "audit.refused"
_WRITTEN = "audit.written"


def _unavailable(message: str) -> ProxyError:
    return ProxyError(
        503,
        f"Request refused: {message}; the audit policy does not allow unaudited requests.",
        type="server_error",
        code="audit_unavailable",
        headers=[(b"retry-after", b"5")],
    )


class AuditStage(Stage):
    name = "audit"

    def __init__(self, config: AuditConfig, state_dir: Any) -> None:
        self.config = config
        self.trail = AuditTrail(config, state_dir)
        self.shipper: Any = None
        self._wait = config.fail_closed
        self._text = config.store_redacted_text
        self._warned = False
        self._gate = config.fail_closed or config.when_full in ("block", "fail_closed")

    async def startup(self, app: Any) -> None:
        await self.trail.open()
        es = self.config.elasticsearch
        if es.hosts:
            from ..audit.shipper import Shipper  # the client library loads only when shipping is on

            assert self.trail.writer is not None and self.trail.chain_dir is not None
            self.shipper = Shipper(es, self.trail.spool_dir, self.trail.chain_dir, self.trail.writer)
            await self.shipper.start()

    async def shutdown(self) -> None:
        if self.shipper is not None:
            # The last checkpoint first, so the shipper's final drain takes it along.
            written = self.trail.checkpoint(wait=True)
            if written is not None:
                with contextlib.suppress(Exception):
                    await written
            await self.shipper.stop()
        await self.trail.close()

    async def on_request(self, ctx: RequestContext) -> None:
        if ctx.body_modified and ctx.body:
            # Redaction rewrote the prompt: count the characters the client sent (the body bytes are
            # still the original ones until the forward step serializes the new JSON).
            ctx.extras[INPUT_CHARS] = input_chars(_loads(ctx.body))
        if not self._gate:
            return
        problem = self.trail.problem()
        if problem is None:
            return
        cfg = self.config
        full = self.trail.writer is not None and self.trail.writer.is_full()
        if full and cfg.when_full == "block":
            if await self.trail.wait_for_room(cfg.block_timeout_s):
                return
            problem += f" for {cfg.block_timeout_s:g}s"
        elif full and cfg.when_full == "drop_oldest":
            return
        elif not full and not cfg.fail_closed:
            return  # a disk error without fail_closed: serve, records are counted as write errors
        ctx.extras[_REFUSED] = True
        metrics.REFUSED.labels("spool_full" if full else "write_error").inc()
        log.error("audit: refusing request %s: %s", ctx.request_id, problem)
        raise _unavailable(problem)

    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None:
        if not self._text:
            return None
        capture = TextCapture(ctx.response_kind, self.config.max_text_chars)
        ctx.extras["audit.text"] = capture
        return capture

    async def _texts(self, ctx: RequestContext) -> tuple[str | None, str | None] | None:
        """Prompt and answer text, redacted with the redact stage's own session for this request
        (the answer may carry restored originals). Without the redact stage no text is stored."""
        for_log = ctx.extras.get("redact.for_log")
        if for_log is None:
            if not self._warned:
                self._warned = True
                log.warning("audit: store_redacted_text is on but the redact stage is off: no text is stored")
            return None
        capture = ctx.extras.get("audit.text")
        texts = (prompt_text(ctx, self.config.max_text_chars), capture.text() if capture else None)

        def redact() -> tuple[str | None, str | None]:
            return tuple(for_log(t) if t else t for t in texts)  # type: ignore[return-value]

        if sum(len(t) for t in texts if t) > 4096:
            return await asyncio.to_thread(redact)  # long texts: keep the event loop free
        return redact()

    async def on_response_end(self, ctx: RequestContext) -> None:
        """With ``fail_closed``, the record is written (and fsynced with ``fsync: always``) before the
        client has the complete answer; if it cannot be, the request fails with 503 instead."""
        if not self._wait or ctx.extras.get(_REFUSED):
            return
        ctx.extras[_WRITTEN] = True
        try:
            await self._write(ctx)
        except SpoolError as exc:
            log.error("audit: record of request %s was not written: %s", ctx.request_id, exc)
            metrics.REFUSED.labels("write_error").inc()
            raise _unavailable(f"its audit record cannot be written ({exc})") from None

    async def on_complete(self, ctx: RequestContext) -> None:
        if ctx.extras.get(_REFUSED) or ctx.extras.get(_WRITTEN):
            return  # refused (logged and counted), or already written before the response ended
        try:
            await self._write(ctx)
        except SpoolError as exc:
            log.error("audit: record of request %s was not written: %s", ctx.request_id, exc)

    async def _write(self, ctx: RequestContext) -> None:
        text = await self._texts(ctx) if self._text else None
        fut = self.trail.append(build_record(ctx, text=text), wait=self._wait)
        if fut is not None:
            await fut


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def build(config: Config) -> Stage | None:
    audit: AuditConfig | None = getattr(config, "audit", None)
    if audit is None or not audit.enabled:
        return None
    return AuditStage(audit, config.state.dir)
