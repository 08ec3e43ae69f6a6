"""Audit stage: one tamper-evident record per request, written to the local spool, shipped to
Elasticsearch in the background. The last stage, so its ``on_complete`` runs first and sees what
every other stage recorded, for every request (denied, failed and cancelled ones too).

Hot path: ``on_complete`` builds the record, seals it into the chain and queues one line for the
writer thread (no I/O in the event loop). The gate in ``on_request`` admits a request only when its
record can be written: a full spool (``when_full``: block waits for room, fail_closed answers 503,
drop_oldest makes room) and a failing disk (full, quota, I/O error: 503, or a wait with ``block``, for
``RETRY_AFTER_ERROR_S``; after that each request admitted tries the disk again and is answered only
once its record is written). Requests ended before the gate (no credentials, bad body) pass the
same gate in ``on_response_end``, without waiting: an unauthenticated flood cannot fill the spool
past its cap nor hold connections. Each admitted request reserves room for its record until it is
queued, so concurrent requests cannot overshoot ``max_bytes`` either.

In every mode the record is written (handed to the kernel with ``os.write``; fsynced first with
``fsync: always``) in ``on_response_end``, before the client has the answer's last byte: a process
killed at any moment never leaves an answered request without its record. ``fail_closed`` decides
what happens when that write fails: 503 (or an error event ending the stream) instead of the answer;
without it the answer goes out and the loss is counted, logged and written into the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson

from custos.errors import ProxyError

from ..audit import metrics
from ..audit.config import AuditConfig
from ..audit.record import TextCapture, build_record, fallback_record, input_chars, prompt_text
from ..audit.retention import describe as describe_retention
from ..audit.spool import SpoolError
from ..audit.trail import RETRY_AFTER_ERROR_S, AuditTrail
from ..context import RequestContext
from ..stage import ResponseFilter, Stage, StageEnv

log = logging.getLogger("custos.audit")

# This stage's own per-request state, in ctx.extras (no other stage reads it).
_REFUSED = "audit.refused"
_WRITTEN = "audit.written"
_GATED = "audit.gated"  # the gate ran for this request
_MUST_WAIT = "audit.must_wait"  # admitted while the disk was failing: written before the answer
_RESERVED = "audit.reserved"  # bytes reserved in the spool for this request's record
_BEST_EFFORT = "audit.best_effort"  # a metrics scrape let through a closed gate: never waits
_COUNT = "audit.count"  # the response's _ByteCount (what the client gets, and the captured text)


class _ByteCount(ResponseFilter):
    """Counts the bytes the client gets (the audit stage's filter is the last one), so a record
    written before the answer's last byte names its full size; it may also capture the text."""

    __slots__ = ("capture", "n")

    def __init__(self, capture: TextCapture | None) -> None:
        self.n = 0
        self.capture = capture

    def feed(self, chunk: bytes) -> bytes:
        self.n += len(chunk)
        if self.capture is not None:
            self.capture.feed(chunk)
        return chunk


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
        self._max_record = config.max_record_bytes
        self._refusals = 0  # refusals since the last ERROR line (a flood logs one line a second)
        self._refusal_logged = 0.0

    async def startup(self, app: Any) -> None:
        await self.trail.open()
        from ..audit.recent import mount_recent

        # GET /admin/audit/recent (audit:read): the newest records of this host's spool, for `custos top`.
        mount_recent(app, self.trail.spool_dir)
        from ..history import mount_history  # GET /v1/history (history:list): callers' own records

        mount_history(app, self.config, self.trail.spool_dir)
        es = self.config.elasticsearch
        if not es.hosts:
            log.warning(
                "audit: no sink configured (audit.elasticsearch.hosts is empty): records stay in the "
                "local spool; %s",
                describe_retention(self.config, shipping=False),
            )
        else:
            log.info("audit: %s", describe_retention(self.config, shipping=True))
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
            ctx.input_chars = input_chars(_loads(ctx.body))
        await self._admit(ctx, early=False)

    async def _admit(self, ctx: RequestContext, *, early: bool) -> None:
        """The gate: admit the request (reserving room for its record) or raise 503. ``early``: the
        request was already ended by an earlier stage (e.g. 401); it never waits for room."""
        ctx.extras[_GATED] = True
        trail, cfg = self.trail, self.config
        problem = trail.problem()
        if problem is not None and ctx.operation == "metrics" and ctx.method in ("GET", "HEAD"):
            # A scrape is answered even now, so the refusal and loss counters stay readable: its
            # record goes into the headroom the gate keeps under max_bytes (or is counted lost).
            ctx.extras[_BEST_EFFORT] = True
            return
        if problem is not None:
            writer = trail.writer
            reason = "spool_full"
            if writer is None:
                reason = "write_error"
            elif writer.failing():
                reason = "write_error"
                if writer.error_age() >= RETRY_AFTER_ERROR_S:
                    problem = None  # try the disk again, with this request's record
                elif cfg.when_full == "block" and not early:
                    if await trail.wait_for_room(cfg.block_timeout_s):
                        problem = None
                    else:
                        problem += f" for {cfg.block_timeout_s:g}s"
                if problem is None:
                    ctx.extras[_MUST_WAIT] = writer.failing()
            elif cfg.when_full == "drop_oldest":
                problem = None  # the writer drops the oldest unshipped file
            elif cfg.when_full == "block" and not early:
                if await trail.wait_for_room(cfg.block_timeout_s):
                    problem = None
                    ctx.extras[_MUST_WAIT] = writer.failing()
                else:
                    problem += f" for {cfg.block_timeout_s:g}s"
            if problem is not None:
                ctx.extras[_REFUSED] = True
                metrics.REFUSED.labels(reason).inc()
                self._log_refusal(ctx, problem)
                raise _unavailable(problem)
        if trail.writer is not None:
            trail.writer.reserve(self._max_record)
            ctx.extras[_RESERVED] = self._max_record

    def _log_refusal(self, ctx: RequestContext, problem: str) -> None:
        self._refusals += 1
        now = time.monotonic()
        if now - self._refusal_logged >= 1.0:
            more = f" (and {self._refusals - 1} more since the last message)" if self._refusals > 1 else ""
            log.error("audit: refusing request %s: %s%s", ctx.request_id, problem, more)
            self._refusal_logged = now
            self._refusals = 0

    def _release(self, ctx: RequestContext) -> None:
        reserved = ctx.extras.pop(_RESERVED, 0)
        if reserved and self.trail.writer is not None:
            self.trail.writer.release(reserved)

    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None:
        capture = None
        if self._text:
            # With the context it reads the stream parse the other stream filters share.
            capture = TextCapture(ctx.response_kind, self.config.max_text_chars, ctx)
        counter = _ByteCount(capture)
        ctx.extras[_COUNT] = counter
        return counter

    async def _texts(self, ctx: RequestContext) -> tuple[str | None, str | None] | None:
        """Prompt and answer text, redacted with the redact stage's own session for this request
        (the answer may carry restored originals). Without the redact stage no text is stored."""
        redaction = ctx.redaction
        if redaction is None:
            if not self._warned:
                self._warned = True
                log.warning("audit: store_redacted_text is on but the redact stage is off: no text is stored")
            return None
        for_log = redaction.for_log
        counter: _ByteCount | None = ctx.extras.get(_COUNT)
        capture = counter.capture if counter is not None else None
        texts = (prompt_text(ctx, self.config.max_text_chars), capture.text() if capture else None)

        def redact() -> tuple[str | None, str | None]:
            return tuple(for_log(t) if t else t for t in texts)  # type: ignore[return-value]

        if sum(len(t) for t in texts if t) > 4096:
            return await asyncio.to_thread(redact)  # long texts: keep the event loop free
        return redact()

    async def on_response_end(self, ctx: RequestContext) -> None:
        """Requests ended before the gate pass it here (503 instead of their answer when the record
        cannot be written). Then the record is written -- handed to the kernel, and fsynced with
        ``fsync: always`` -- before the client has the complete answer, in every mode. If it cannot
        be: with ``fail_closed`` (or while the disk is failing) the request fails with 503 instead;
        otherwise the answer goes out and the loss is counted, logged and noted in the chain."""
        if not ctx.extras.get(_GATED):
            await self._admit(ctx, early=True)
        if ctx.extras.get(_REFUSED) or ctx.extras.get(_BEST_EFFORT):
            return  # refused (no record), or a scrape through a closed gate (best effort, at the end)
        strict = self._wait or bool(ctx.extras.get(_MUST_WAIT))
        try:
            await self._write(ctx, wait=True)
        except SpoolError as exc:
            log.error("audit: record of request %s was not written: %s", ctx.request_id, exc)
            if strict:
                metrics.REFUSED.labels("write_error").inc()
                raise _unavailable(f"its audit record cannot be written ({exc})") from None
        finally:
            self._release(ctx)

    async def on_complete(self, ctx: RequestContext) -> None:
        try:
            if ctx.extras.get(_REFUSED) or ctx.extras.get(_WRITTEN):
                return  # refused (logged and counted), or already written before the response ended
            await self._write(ctx)
        except SpoolError as exc:
            log.error("audit: record of request %s was not written: %s", ctx.request_id, exc)
        finally:
            self._release(ctx)

    async def _write(self, ctx: RequestContext, wait: bool = False) -> None:
        counter = ctx.extras.get(_COUNT)
        sent = ctx.response_bytes
        try:
            text = await self._texts(ctx) if self._text else None
            if wait and counter is not None and counter.n > sent:
                # Before the last byte: the record names what the filters let through (the
                # forward step counts the bytes only as it sends them).
                ctx.response_bytes = counter.n
            record = build_record(ctx, text=text, max_bytes=self._max_record)
        except Exception:  # a bug must not cost the request its record
            log.exception(
                "audit: cannot build the record of request %s; writing a minimal one", ctx.request_id
            )
            record = fallback_record(ctx, self._max_record)
        finally:
            ctx.response_bytes = sent
        wait = (wait or self._wait or bool(ctx.extras.get(_MUST_WAIT))) and not ctx.extras.get(_BEST_EFFORT)
        fut = self.trail.append(record, wait=wait)
        ctx.extras[_WRITTEN] = True  # sealed and queued: on_complete must not write it again
        self._release(ctx)  # queued: the writer counts it from here
        if fut is not None:
            await fut


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def build(audit: AuditConfig, env: StageEnv) -> Stage | None:
    if not audit.enabled:
        return None
    return AuditStage(audit, env.state_dir)
