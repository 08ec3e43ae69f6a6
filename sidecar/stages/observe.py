"""Observe stage: hashes the prompt and the exact output bytes, counts tokens, reads finish reasons.

It must be the last stage with a response filter, so the hash covers exactly what the client gets.
Later stages (metrics, audit) read the results from the context.
"""

from __future__ import annotations

import hashlib
import time

import orjson

from ..config import Config
from ..context import RequestContext
from ..sse import NOT_JSON, SSEReader, shared_events
from ..stage import ResponseFilter, Stage


class ObserveFilter(ResponseFilter):
    """Streams are read through the response's shared parse (``RequestContext.sse_events``): each
    event was split and parsed once, by the first filter that read it."""

    __slots__ = ("ctx", "digest", "sse", "streamed_tokens")

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.digest = hashlib.sha256()
        self.sse = SSEReader(shared_events(ctx)) if ctx.response_kind == "sse" else None
        self.streamed_tokens = 0

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        self.digest.update(chunk)
        if self.sse is not None:
            for event in self.sse.feed(chunk):
                if event.doc is not NOT_JSON:
                    self._read_event(event.doc)
        elif self.ctx.response_kind == "json":
            self._read_json(chunk)
        return chunk

    def flush(self) -> bytes:
        ctx = self.ctx
        ctx.output_sha256 = self.digest.hexdigest()
        if self.sse is not None and ctx.usage.completion_tokens is None and self.streamed_tokens:
            # No usage block in the stream: every content delta carries one token (vLLM and our
            # CPU engine emit one token per event), which is the standard fallback count.
            ctx.usage.completion_tokens = self.streamed_tokens
        return b""

    def _read_json(self, body: bytes) -> None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict):
            self._read_usage(doc)
            for choice in doc.get("choices") or ():
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    self.ctx.finish_reasons.append(str(choice["finish_reason"]))

    def _read_event(self, doc: object) -> None:
        if not isinstance(doc, dict):
            return
        self._read_usage(doc)
        for choice in doc.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                if self.streamed_tokens == 0:
                    self.ctx.extras["observe.first_token_at"] = time.perf_counter()
                self.streamed_tokens += 1
            if choice.get("finish_reason"):
                self.ctx.finish_reasons.append(str(choice["finish_reason"]))

    def _read_usage(self, doc: dict) -> None:
        usage = doc.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int):
                self.ctx.usage.prompt_tokens = prompt
            if isinstance(completion, int):
                self.ctx.usage.completion_tokens = completion


class ObserveStage(Stage):
    name = "observe"

    async def on_request(self, ctx: RequestContext) -> None:
        # The prompt hash covers the body as the client sent it, before any redaction.
        if ctx.body:
            ctx.prompt_sha256 = hashlib.sha256(ctx.body).hexdigest()

    def response_filter(self, ctx: RequestContext) -> ResponseFilter:
        return ObserveFilter(ctx)


def build(config: Config) -> Stage:
    return ObserveStage()
