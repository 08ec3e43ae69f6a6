"""Observe stage: hashes the prompt and the exact output bytes, counts tokens, reads finish reasons.

It must be the last stage with a response filter, so the hash covers exactly what the client gets.
Later stages (metrics, audit) read the results from the context.
"""

from __future__ import annotations

import hashlib
import time

import orjson

from ..context import RequestContext
from ..sse import NOT_JSON, SSEReader, TokenRun, shared_events
from ..stage import ResponseFilter, Stage, StageEnv

# Responses API events that carry the final ``response`` (with usage and status).
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ObserveFilter(ResponseFilter):
    """Streams are read through the response's shared parse (``RequestContext.sse_events``): each
    event was split and parsed once, by the first filter that read it, or taken in a run of token
    events recognized by their bytes (``sse.TokenRun``), which is counted without a parse."""

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
            for item in self.sse.items(chunk):
                if type(item) is TokenRun:
                    # Token events of one shape (no usage, not finishing): one token each.
                    if item.shape.key == "content":
                        self._token(item.count)
                elif item.doc is not NOT_JSON:
                    self._read_event(item.doc)
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
            if doc.get("object") == "response":
                self._read_response(doc)
                return
            for choice in doc.get("choices") or ():
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    self.ctx.finish_reasons.append(str(choice["finish_reason"]))

    def _read_event(self, doc: object) -> None:
        # Runs once per streamed token: the common case (a chunk with one choice and no usage) takes
        # no call beyond the dict lookups.
        if not isinstance(doc, dict):
            return
        kind = doc.get("type")
        if kind is not None:  # a typed event (the Responses API)
            self._read_typed_event(kind, doc)
            return
        if doc.get("usage") is not None:
            self._read_usage(doc)
        for choice in doc.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                if self.streamed_tokens == 0:
                    self.ctx.first_token_at = time.perf_counter()
                self.streamed_tokens += 1
            finish = choice.get("finish_reason")
            if finish:
                self.ctx.finish_reasons.append(str(finish))

    def _token(self, count: int = 1) -> None:
        if self.streamed_tokens == 0:
            self.ctx.first_token_at = time.perf_counter()
        self.streamed_tokens += count

    def _read_typed_event(self, kind: object, doc: dict) -> None:
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            if doc.get("delta"):
                self._token()
        elif kind in _FINAL_EVENTS:
            response = doc.get("response")
            if isinstance(response, dict):
                self._read_usage(response)
                self._read_response(response)

    def _read_response(self, response: dict) -> None:
        """A Responses API ``response`` object: its end state as a chat-style finish reason."""
        status = response.get("status")
        if status == "completed":
            self.ctx.finish_reasons.append("stop")
        elif status == "incomplete":
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            finish = "length" if reason == "max_output_tokens" else str(reason or status)
            self.ctx.finish_reasons.append(finish)
        elif isinstance(status, str) and status in ("failed", "cancelled"):
            self.ctx.finish_reasons.append(status)

    def _read_usage(self, doc: dict) -> None:
        usage = doc.get("usage")
        if isinstance(usage, dict):
            # Chat and completions name them prompt/completion tokens, the Responses API input/output.
            prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
            completion = usage.get("completion_tokens", usage.get("output_tokens"))
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


def build(section: None, env: StageEnv) -> Stage:
    return ObserveStage()
