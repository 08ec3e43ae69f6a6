"""OpenAI's Responses API (``POST /v1/responses``) on the CPU engine, shaped as vLLM serves it.

The prompt is ``instructions`` + ``input`` through the model's chat template (the chat route's code
path); generation is the engine's, as for chat. Nothing is stored (``store`` is accepted, answered
as false). A streamed answer is OpenAI's typed events (``event: <type>`` / ``data: <json>``, each
with an increasing ``sequence_number``, no ``[DONE]``); it ends with ``response.completed``, or
``response.incomplete`` when ``max_output_tokens`` cut the text, or ``response.failed`` when the
engine failed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .engine import Failure, RequestSink, Sequence
from .protocol import ResponsesRequest
from .sampling import SamplingParams
from .sse import EventStream

if TYPE_CHECKING:
    from .server import EngineServer


def final_status(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


@dataclass
class ResponseDraft:
    """What a Responses answer holds before anything is generated: ids, echo fields, prompt size."""

    request: ResponsesRequest
    params: SamplingParams
    model: str
    input_tokens: int
    id: str = field(default_factory=lambda: "resp_" + uuid.uuid4().hex)
    message_id: str = field(default_factory=lambda: "msg_" + uuid.uuid4().hex)
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The ``response`` object, with the request's settings echoed as OpenAI and vLLM do."""
        req = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": req.instructions,
            "max_output_tokens": self.params.max_tokens,
            "max_tool_calls": None,
            "metadata": req.metadata,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": None,
            "prompt": None,
            "reasoning": req.reasoning,
            "service_tier": "auto",
            "store": False,  # nothing is stored, whatever the request asked
            "temperature": self.params.temperature,
            "text": {
                "format": {"type": "text"},
                **(req.text.model_dump(exclude_none=True) if req.text else {}),
            },
            "tool_choice": req.tool_choice,
            "tools": [],
            "top_logprobs": self.params.logprobs,
            "top_p": self.params.top_p,
            "truncation": req.truncation or "disabled",
            "usage": usage,
            "user": req.user,
        }

    def message(self, status: str, text: str | None, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
        """The one output item: the assistant's message (no content yet when ``text`` is None)."""
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [] if text is None else [text_part(text, logprobs)],
        }

    def usage(self, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + output_tokens,
        }

    def finished(
        self, text: str, finish_reason: str | None, output_tokens: int, logprobs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The whole answer once generation ended."""
        message = self.message("completed", text, logprobs)
        return self.response(final_status(finish_reason), [message], self.usage(output_tokens))


def text_part(text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


class ResponsesStream(EventStream):
    """The Responses API's typed SSE events for one generated message."""

    def __init__(
        self, server: EngineServer, sequences: list[Sequence], sink: RequestSink, draft: ResponseDraft
    ) -> None:
        super().__init__(server, sequences, sink)
        self.draft = draft
        self.sequence_number = 0

    def _event(self, kind: str, **fields: Any) -> bytes:
        doc = {"type": kind, "sequence_number": self.sequence_number, **fields}
        self.sequence_number += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"

    def _logprobs(self, entries: Any) -> list[dict[str, Any]]:
        return self.server.format_logprobs(entries, chat=True)["content"] if entries else []

    async def _events(self) -> AsyncIterator[bytes]:
        draft = self.draft
        where = {"item_id": draft.message_id, "output_index": 0, "content_index": 0}
        yield self._event("response.created", response=draft.response("in_progress", []))
        yield self._event("response.in_progress", response=draft.response("in_progress", []))
        yield self._event(
            "response.output_item.added", output_index=0, item=draft.message("in_progress", None, [])
        )
        yield self._event("response.content_part.added", **where, part=text_part("", []))
        pieces: list[str] = []
        logprobs: list[dict[str, Any]] = []
        while True:
            item = await self._next()
            if isinstance(item, Failure):
                yield self._failed(item.message, "".join(pieces), logprobs)
                return
            new_logprobs = self._logprobs(item.logprobs)
            logprobs += new_logprobs
            if item.text:
                pieces.append(item.text)
                yield self._event(
                    "response.output_text.delta", **where, delta=item.text, logprobs=new_logprobs
                )
            if item.finish_reason:
                break
        text = "".join(pieces)
        yield self._event("response.output_text.done", **where, text=text, logprobs=logprobs)
        yield self._event("response.content_part.done", **where, part=text_part(text, logprobs))
        yield self._event(
            "response.output_item.done", output_index=0, item=draft.message("completed", text, logprobs)
        )
        final = draft.finished(text, item.finish_reason, item.completion_tokens, logprobs)
        yield self._event(f"response.{final['status']}", response=final)

    def _failed(self, message: str, text: str, logprobs: list[dict[str, Any]]) -> bytes:
        """The engine failed mid-answer: OpenAI's ``response.failed``, with the text so far."""
        partial = self.draft.message("incomplete", text, logprobs)
        error = {"code": "server_error", "message": message}
        return self._event("response.failed", response=self.draft.response("failed", [partial], error=error))
