"""The CPU engine's OpenAI-compatible HTTP server (Starlette on uvicorn), shaped like ``vllm serve``.

Routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (JSON or SSE streams ending with
``data: [DONE]``, vLLM's chunk shapes), ``/v1/responses`` (OpenAI's Responses API, text only, nothing
stored; JSON or typed SSE events), vLLM's ``/tokenize`` and ``/detokenize``, the pooling routes
``/pooling``, ``/v1/embeddings``, ``/v1/score`` (also ``/score``) and ``/v1/rerank`` (also ``/rerank``,
``/v2/rerank``) (mean of the last hidden layer: for testing the API shape, see ``pooling.py``),
``/health``, ``/version``, ``/metrics``, and vLLM's ``/v1/load_lora_adapter`` /
``/v1/unload_lora_adapter``: LoRA adapters are served beside the base model and selected per request by
``model``. A client that goes away aborts its sequences (stream or not), which frees their batch slots
at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from custos.errors import ProxyError, bad_request, error_body

from .engine import AdapterError, Delta, Engine, EngineError, Failure, RequestSink, Sequence, TokenLogprob
from .pooling import (
    MAX_POOLING_INPUTS,
    Vector,
    embedding_answer,
    pooling_answer,
    pooling_inputs,
    rerank_answer,
    rerank_inputs,
    score_answer,
    score_inputs,
)
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    PoolingRequest,
    RerankRequest,
    ResponsesRequest,
    ScoreRequest,
    TokenizeChatRequest,
    TokenizeRequest,
    flatten_content,
    model_not_found,
    parse,
    response_messages,
    sampling_params,
)
from .responses import ResponseDraft, ResponsesStream
from .sse import ClientGone, EventStream, unless_client_leaves

log = logging.getLogger("custos.inference.server")

# Prompts longer than this many characters are tokenized in a thread, off the event loop.
_INLINE_TOKENIZE_CHARS = 4096


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers)


def _error(exc: ProxyError) -> Response:
    headers = {k.decode(): v.decode() for k, v in exc.headers}
    return Response(
        exc.body(), status_code=exc.status, media_type="application/json", headers=headers or None
    )


class EngineServer:
    def __init__(self, engine: Engine, model_name: str, model_root: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self.model_root = model_root
        self.created = int(time.time())
        tok = engine.tokenizer
        text_config = engine.model.config.get_text_config()
        self.vocab_size = int(getattr(text_config, "vocab_size", 0) or len(tok))
        self.hidden_size = int(getattr(text_config, "hidden_size", 0))
        self.has_chat_template = bool(getattr(tok, "chat_template", None))
        self._token_texts: dict[int, str] = {}

    # ---- helpers ---------------------------------------------------------------------------
    def _check_model(self, requested: str | None) -> str | None:
        """The LoRA adapter the request selects (None: the base model), or 404."""
        try:
            return self.engine.resolve_model(requested)
        except KeyError:
            raise model_not_found(str(requested)) from None

    def _max_tokens(self, requested: int | None, prompt_len: int, param: str = "max_tokens") -> int:
        limit = self.engine.max_model_len
        if prompt_len >= limit:
            raise bad_request(
                f"This model's maximum context length is {limit} tokens. However, your prompt has "
                f"{prompt_len} tokens. Please reduce the length of the messages or prompt.",
                code="context_length_exceeded",
            )
        if requested is None:
            return limit - prompt_len
        if prompt_len + requested > limit:
            raise bad_request(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the "
                f"completion). Please reduce the prompt or {param}.",
                param=param,
                code="context_length_exceeded",
            )
        return requested

    async def _tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        tok = self.engine.tokenizer

        def run() -> list[int]:
            return list(tok(text, add_special_tokens=add_special_tokens)["input_ids"])

        if len(text) <= _INLINE_TOKENIZE_CHARS:
            return run()
        return await asyncio.to_thread(run)

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"The request body is not valid JSON: {exc}", code="invalid_json") from None

    def _check_capacity(self) -> None:
        if not self.engine.alive:
            raise ProxyError(
                503,
                f"The engine is not running: {self.engine.failed}",
                type="ServiceUnavailable",
                code="engine_failed",
            )
        if self.engine.queue_full():
            raise ProxyError(
                503,
                "The engine's queue is full; retry later.",
                type="ServiceUnavailable",
                code="queue_full",
                headers=[(b"retry-after", b"1")],
            )

    # ---- routes ----------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        if not self.engine.alive:
            return _json({"status": "failed", "reason": self.engine.failed}, status=503)
        return Response(b"", status_code=200)

    async def version(self, request: Request) -> Response:
        from custos import __version__

        return _json({"version": __version__, "engine": "custos-transformers"})

    async def metrics(self, request: Request) -> Response:
        body = generate_latest(self.engine.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def models(self, request: Request) -> Response:
        cards = [self._card(None)] + [self._card(name) for name in self.engine.servable_adapters()]
        return _json({"object": "list", "data": cards})

    async def model(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            adapter = self.engine.resolve_model(name)
        except KeyError:
            return _error(model_not_found(name))
        return _json(self._card(adapter))

    def _card(self, adapter: str | None) -> dict[str, Any]:
        if adapter is not None:
            # vLLM names the adapter's directory in root; we name the adapter (no host paths), and its
            # parent is the base model's served name.
            return {
                "id": adapter,
                "object": "model",
                "created": self.created,
                "owned_by": "custos",
                "root": adapter,
                "parent": self.model_name,
                "max_model_len": self.engine.max_model_len,
                "permission": [],
            }
        return {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "custos",
            # vLLM names the weights' directory here; a filesystem path tells a caller about the
            # host, so the card names the served model instead.
            "root": self.model_name,
            "parent": None,
            "max_model_len": self.engine.max_model_len,
            "permission": [],
        }

    async def completions(self, request: Request) -> Response:
        try:
            req: CompletionRequest = parse(CompletionRequest, await self._body(request))
            adapter = self._check_model(req.model)
            self._check_capacity()
            prompts = await self._token_prompts(req.prompt, "prompt")
            groups = [(ids, text) for ids, text in prompts]
            max_tokens = [self._max_tokens(req.max_tokens, len(ids)) for ids, _ in groups]
            params = [sampling_params(req, m, self.vocab_size) for m in max_tokens]
        except ProxyError as exc:
            return _error(exc)
        return await self._generate(request, req, groups, params, chat=False, adapter=adapter)

    async def chat_completions(self, request: Request) -> Response:
        try:
            req: ChatCompletionRequest = parse(ChatCompletionRequest, await self._body(request))
            adapter = self._check_model(req.model)
            self._check_capacity()
            ids, text = await self._chat_prompt(
                flatten_content(req.messages),
                add_generation_prompt=req.add_generation_prompt,
                continue_final_message=req.continue_final_message,
                template_kwargs=req.chat_template_kwargs,
            )
            requested = req.max_completion_tokens or req.max_tokens
            params = [sampling_params(req, self._max_tokens(requested, len(ids)), self.vocab_size)]
        except ProxyError as exc:
            return _error(exc)
        return await self._generate(request, req, [(ids, text)], params, chat=True, adapter=adapter)

    async def responses(self, request: Request) -> Response:
        try:
            req: ResponsesRequest = parse(ResponsesRequest, await self._body(request))
            adapter = self._check_model(req.model)
            self._check_capacity()
            ids, text = await self._responses_prompt(req)
            max_tokens = self._max_tokens(req.max_output_tokens, len(ids), param="max_output_tokens")
            params = sampling_params(req, max_tokens, self.vocab_size)
        except ProxyError as exc:
            return _error(exc)
        sink, sequences = self._submit([(ids, text)], [params], 1, adapter)
        draft = ResponseDraft(req, params, adapter or self.model_name, len(ids))
        if req.stream:
            return ResponsesStream(self, sequences, sink, draft)
        outputs = await self._outputs(request, sequences, sink)
        if isinstance(outputs, Response):
            return outputs
        done = outputs.finish[0]
        logprobs = self.format_logprobs(outputs.logprobs[0], chat=True)["content"]
        return _json(
            draft.finished(
                outputs.texts[0], done.finish_reason if done else None, outputs.completion_tokens[0], logprobs
            )
        )

    async def _responses_prompt(self, req: ResponsesRequest) -> tuple[list[int], str]:
        """The chat prompt of instructions + input. With ``truncation: "auto"`` the oldest input messages
        are dropped (never the instructions) until the prompt leaves room for the answer, as OpenAI does."""
        messages = response_messages(req)
        first = 1 if req.instructions else 0
        while True:
            ids, text = await self._chat_prompt(messages, param="input")
            if (
                req.truncation != "auto"
                or len(messages) - first <= 1
                or self._fits(len(ids), req.max_output_tokens)
            ):
                return ids, text
            del messages[first]

    def _fits(self, prompt_len: int, requested: int | None) -> bool:
        try:
            self._max_tokens(requested, prompt_len)
        except ProxyError:
            return False
        return True

    # ---- vLLM's tokenizer routes -------------------------------------------------------------
    async def tokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            chat = isinstance(body, dict) and "messages" in body
            req = parse(TokenizeChatRequest if chat else TokenizeRequest, body)
            self._check_model(req.model)
            if chat:
                ids, text = await self._chat_prompt(
                    flatten_content(req.messages),
                    add_generation_prompt=req.add_generation_prompt,
                    continue_final_message=req.continue_final_message,
                    template_kwargs=req.chat_template_kwargs,
                )
                if req.add_special_tokens:
                    ids = await self._tokenize(text, add_special_tokens=True)
            else:
                ids = await self._tokenize(req.prompt, add_special_tokens=req.add_special_tokens)
        except ProxyError as exc:
            return _error(exc)
        strs = self.engine.tokenizer.convert_ids_to_tokens(ids) if req.return_token_strs else None
        return _json(
            {"count": len(ids), "max_model_len": self.engine.max_model_len, "tokens": ids, "token_strs": strs}
        )

    async def detokenize(self, request: Request) -> Response:
        try:
            req: DetokenizeRequest = parse(DetokenizeRequest, await self._body(request))
            self._check_model(req.model)
            self._check_token_ids(req.tokens, "tokens")
        except ProxyError as exc:
            return _error(exc)
        text = await asyncio.to_thread(self.engine.tokenizer.decode, req.tokens)
        return _json({"prompt": text})

    # ---- pooling: /pooling, /v1/embeddings, /v1/score, /v1/rerank ------------------------------
    async def pooling(self, request: Request) -> Response:
        return await self._pooling_route(
            request, PoolingRequest, lambda req: pooling_inputs(req, self.hidden_size), pooling_answer
        )

    async def embeddings(self, request: Request) -> Response:
        return await self._pooling_route(
            request, PoolingRequest, lambda req: pooling_inputs(req, self.hidden_size), embedding_answer
        )

    async def score(self, request: Request) -> Response:
        return await self._pooling_route(request, ScoreRequest, score_inputs, score_answer)

    async def rerank(self, request: Request) -> Response:
        return await self._pooling_route(request, RerankRequest, rerank_inputs, rerank_answer)

    async def _pooling_route(
        self,
        request: Request,
        model: type[Any],
        inputs: Callable[[Any], list[tuple[Any, str]]],
        answer: Callable[[Any, list[list[Vector]], str, int], dict[str, Any]],
    ) -> Response:
        """Parse, tokenize every input group, pool each text, and shape the answer."""
        try:
            req = parse(model, await self._body(request))
            adapter = self._check_model(req.model)
            self._check_capacity()
            groups = [
                await self._pooling_prompts(value, param, req.add_special_tokens)
                for value, param in inputs(req)
            ]
        except ProxyError as exc:
            return _error(exc)
        vectors = await self._pooled(request, [ids for group in groups for ids in group], adapter)
        if isinstance(vectors, Response):
            return vectors
        grouped: list[list[Vector]] = []
        for group in groups:
            grouped.append(vectors[: len(group)])
            vectors = vectors[len(group) :]
        prompt_tokens = sum(len(ids) for group in groups for ids in group)
        return _json(answer(req, grouped, adapter or self.model_name, prompt_tokens))

    async def _pooling_prompts(self, value: Any, param: str, add_special_tokens: bool) -> list[list[int]]:
        prompts = await self._token_prompts(
            value, param, add_special_tokens=add_special_tokens, max_items=MAX_POOLING_INPUTS
        )
        limit = self.engine.max_model_len
        for ids, _ in prompts:
            if len(ids) > limit:
                raise bad_request(
                    f"{param}: This model's maximum context length is {limit} tokens. However, you "
                    f"requested {len(ids)} tokens in the input. Please reduce the length of the input.",
                    param=param,
                    code="context_length_exceeded",
                )
        return [ids for ids, _ in prompts]

    async def _pooled(
        self, request: Request, prompts: list[list[int]], adapter: str | None
    ) -> list[Vector] | Response:
        """Each prompt's vector (one forward pass each, on the scheduler thread), or the error answer."""

        async def run() -> list[Vector]:
            # One pass per text: generation steps run in between, so a big request stalls nobody long.
            return [await self.engine.mean_hidden_state(ids, adapter) for ids in prompts]

        try:
            return await unless_client_leaves(request.receive, run())
        except ClientGone:
            return Response(status_code=499)
        except asyncio.CancelledError:  # shutting down past the grace period
            return _error(_shutting_down())
        except KeyError:  # the adapter was unloaded meanwhile
            return _error(model_not_found(str(adapter)))
        except EngineError as exc:
            return _error(
                ProxyError(
                    503, f"The engine is not running: {exc}", type="ServiceUnavailable", code="engine_failed"
                )
            )

    async def _chat_prompt(
        self,
        messages: list[dict[str, Any]],
        *,
        param: str = "messages",
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: dict[str, Any] | None = None,
    ) -> tuple[list[int], str]:
        """The prompt the model's chat template makes of ``messages``: (token ids, text)."""
        if not self.has_chat_template:
            raise bad_request(
                "This model has no chat template; use /v1/completions.", code="no_chat_template"
            )
        try:
            text = self.engine.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=add_generation_prompt and not continue_final_message,
                continue_final_message=continue_final_message,
                **(template_kwargs or {}),
            )
        except Exception as exc:  # a template error is the request's problem (e.g. roles out of order)
            raise bad_request(f"{param}: the chat template rejected them: {exc}", param=param) from None
        # The template already holds any BOS the model wants.
        return await self._tokenize(text, add_special_tokens=False), text

    async def _token_prompts(
        self,
        prompt: str | list[str] | list[int] | list[list[int]],
        param: str,
        *,
        add_special_tokens: bool = True,
        max_items: int | None = None,
    ) -> list[tuple[list[int], str | None]]:
        """(token ids, text) per prompt: a string, a list of strings, token ids or lists of token ids."""
        if isinstance(prompt, str):
            items: list[Any] = [prompt]
        elif prompt and all(isinstance(p, int) for p in prompt):
            items = [prompt]
        else:
            items = list(prompt)
        if not items:
            raise bad_request(f"{param}: must not be empty.", param=param)
        if max_items is not None and len(items) > max_items:
            raise bad_request(f"{param}: at most {max_items} inputs per request.", param=param)
        out: list[tuple[list[int], str | None]] = []
        for item in items:
            if isinstance(item, str):
                ids = await self._tokenize(item, add_special_tokens=add_special_tokens)
                if not ids:
                    raise bad_request(f"{param}: must not be empty.", param=param)
                out.append((ids, item))
            else:
                if not item:
                    raise bad_request(f"{param}: a token id list must not be empty.", param=param)
                self._check_token_ids(item, param)
                out.append((list(item), None))
        return out

    def _check_token_ids(self, ids: list[int], param: str) -> None:
        if any(not 0 <= t < self.vocab_size for t in ids):
            raise bad_request(f"{param}: token ids must be in 0..{self.vocab_size - 1}.", param=param)

    # ---- LoRA adapters at run time (vLLM's routes and answers) ---------------------------------
    async def load_lora_adapter(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            name, path = _lora_fields(body, need_path=True)
            await self.engine.load_adapter(name, Path(path))
        except ProxyError as exc:
            return _error(exc)
        except AdapterError as exc:
            return _adapter_error(exc)
        return Response(
            f"Success: LoRA adapter '{name}' added successfully.".encode(), media_type="text/plain"
        )

    async def unload_lora_adapter(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            name, _ = _lora_fields(body, need_path=False)
            await self.engine.unload_adapter(name)
        except ProxyError as exc:
            return _error(exc)
        except AdapterError as exc:
            return _adapter_error(exc)
        return Response(
            f"Success: LoRA adapter '{name}' removed successfully.".encode(), media_type="text/plain"
        )

    # ---- logprobs ----------------------------------------------------------------------------
    def _token_text(self, token: int) -> str:
        text = self._token_texts.get(token)
        if text is None:
            text = self.engine.tokenizer.decode([token])
            if len(self._token_texts) < 200_000:
                self._token_texts[token] = text
        return text

    def format_logprobs(self, entries: list[TokenLogprob], chat: bool, offset: int = 0) -> dict[str, Any]:
        """OpenAI's logprobs object: chat's ``content`` list, or the legacy completions columns."""
        if chat:
            content = []
            for token, logprob, alternatives in entries:
                text = self._token_text(token)
                content.append(
                    {
                        "token": text,
                        "logprob": logprob,
                        "bytes": list(text.encode()),
                        "top_logprobs": [
                            {"token": (t := self._token_text(a)), "logprob": lp, "bytes": list(t.encode())}
                            for a, lp in alternatives
                        ],
                    }
                )
            return {"content": content}
        tokens, token_logprobs, top, offsets = [], [], [], []
        for token, logprob, alternatives in entries:
            text = self._token_text(token)
            tokens.append(text)
            token_logprobs.append(logprob)
            # vLLM's shape: the alternatives plus the chosen token.
            top.append({**{self._token_text(a): lp for a, lp in alternatives}, text: logprob})
            offsets.append(offset)
            offset += len(text)
        return {
            "text_offset": offsets,
            "token_logprobs": token_logprobs,
            "tokens": tokens,
            "top_logprobs": top,
        }

    # ---- generation ------------------------------------------------------------------------
    async def _generate(
        self,
        request: Request,
        req: Any,
        prompts: list[tuple[list[int], str | None]],
        params: list[Any],
        *,
        chat: bool,
        adapter: str | None = None,
    ) -> Response:
        sink, sequences = self._submit(prompts, params, req.n, adapter)
        prompt_tokens = sum(len(ids) for ids, _ in prompts)
        prefix = "chatcmpl-" if chat else "cmpl-"
        meta = {
            "id": prefix + uuid.uuid4().hex,
            "created": int(time.time()),
            "model": adapter or self.model_name,
        }
        echo: list[str | None] = [text if req.echo else None for _, text in prompts]
        if chat:  # vLLM echoes the last message when it is the assistant's (continue_final_message)
            last = req.messages[-1]
            echo = [flatten_content([last])[0]["content"] if req.echo and last.role == "assistant" else None]
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            continuous = bool(req.stream_options and req.stream_options.continuous_usage_stats)
            return SSEResponse(
                self,
                sequences,
                sink,
                meta,
                chat=chat,
                n=req.n,
                prompt_tokens=prompt_tokens,
                include_usage=include_usage,
                continuous=continuous,
                echo=echo,
            )
        return await self._collect(
            request, sequences, sink, meta, chat=chat, prompt_tokens=prompt_tokens, n=req.n, echo=echo
        )

    def _submit(
        self,
        prompts: list[tuple[list[int], str | None]],
        params: list[Any],
        n: int,
        adapter: str | None,
    ) -> tuple[RequestSink, list[Sequence]]:
        """Queue ``n`` sequences per prompt in the engine; their output arrives in the sink."""
        sink = RequestSink(asyncio.get_running_loop())
        sequences = [
            Sequence(index=p * n + i, prompt_ids=ids, params=params[p], sink=sink, adapter=adapter)
            for p, (ids, _) in enumerate(prompts)
            for i in range(n)
        ]
        self.engine.submit(sequences)
        return sink, sequences

    async def _outputs(
        self, request: Request, sequences: list[Sequence], sink: RequestSink
    ) -> Outputs | Response:
        """Every sequence's whole output; or the error answer (engine failure, client gone, shutdown)."""
        try:
            return await unless_client_leaves(request.receive, _gather(sequences, sink))
        except ProxyError as exc:
            return _error(exc)
        except ClientGone:  # free the batch slots now
            self.engine.abort(sequences)
            return Response(status_code=499)
        except asyncio.CancelledError:  # shutting down past the grace period
            self.engine.abort(sequences)
            return _error(_shutting_down())

    async def _collect(
        self,
        request: Request,
        sequences: list[Sequence],
        sink: RequestSink,
        meta: dict,
        *,
        chat: bool,
        prompt_tokens: int,
        n: int,
        echo: list[str | None],
    ) -> Response:
        outputs = await self._outputs(request, sequences, sink)
        if isinstance(outputs, Response):
            return outputs
        texts, finish, logprobs = outputs.texts, outputs.finish, outputs.logprobs
        choices = []
        for i, text in enumerate(texts):
            done = finish[i]
            prefix = echo[i // n] if i // n < len(echo) and echo[i // n] else ""
            choice: dict[str, Any] = {"index": i}
            if chat:
                choice["message"] = {"role": "assistant", "content": prefix + text, "tool_calls": []}
            else:
                choice["text"] = prefix + text
            wanted = sequences[i].params.logprobs is not None
            choice["logprobs"] = self.format_logprobs(logprobs[i], chat, len(prefix)) if wanted else None
            choice["finish_reason"] = done.finish_reason if done else None
            choice["stop_reason"] = done.stop_reason if done else None
            choices.append(choice)
        total = sum(outputs.completion_tokens)
        doc = {
            **meta,
            "object": "chat.completion" if chat else "text_completion",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + total,
                "completion_tokens": total,
            },
        }
        # Keep vLLM's key order: id, object, created, model.
        doc = {"id": doc.pop("id"), "object": doc.pop("object"), **doc}
        return _json(doc)


def _lora_fields(body: Any, *, need_path: bool) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_body")
    name, path = body.get("lora_name"), body.get("lora_path")
    if need_path and not (isinstance(name, str) and name and isinstance(path, str) and path):
        raise bad_request("Both 'lora_name' and 'lora_path' must be provided.", param="lora_name")
    if not need_path and not (isinstance(name, str) and name):
        raise bad_request("'lora_name' needs to be provided to unload a LoRA adapter.", param="lora_name")
    return name, path or ""


def _adapter_error(exc: AdapterError) -> Response:
    kind = "NotFoundError" if exc.status == 404 else "BadRequestError"
    return _error(ProxyError(exc.status, str(exc), type=kind, code="lora_adapter_error"))


@dataclass
class Outputs:
    """Everything a request's sequences produced, by sequence index."""

    texts: list[str]
    finish: list[Delta | None]  # the final delta (finish_reason, stop_reason) of each sequence
    completion_tokens: list[int]
    logprobs: list[list[TokenLogprob]]


async def _gather(sequences: list[Sequence], sink: RequestSink) -> Outputs:
    count = len(sequences)
    out = Outputs([""] * count, [None] * count, [0] * count, [[] for _ in sequences])
    remaining = count
    while remaining:
        item = await sink.queue.get()
        if isinstance(item, Failure):
            raise ProxyError(500, item.message, type="InternalServerError", code="engine_error")
        out.texts[item.index] += item.text
        out.completion_tokens[item.index] = item.completion_tokens
        if item.logprobs:
            out.logprobs[item.index].extend(item.logprobs)
        if item.finish_reason:
            out.finish[item.index] = item
            remaining -= 1
    return out


def _shutting_down() -> ProxyError:
    return ProxyError(503, "The engine is shutting down.", type="ServiceUnavailable", code="shutting_down")


class SSEResponse(EventStream):
    """Server-sent events, one per produced piece of text, ending with ``data: [DONE]``."""

    def __init__(
        self,
        server: EngineServer,
        sequences: list[Sequence],
        sink: RequestSink,
        meta: dict,
        *,
        chat: bool,
        n: int,
        prompt_tokens: int,
        include_usage: bool,
        continuous: bool,
        echo: list[str | None],
    ) -> None:
        super().__init__(server, sequences, sink)
        self.meta = meta
        self.chat = chat
        self.n = n
        self.prompt_tokens = prompt_tokens
        self.include_usage = include_usage
        self.continuous = continuous
        self.echo = echo
        self.object = "chat.completion.chunk" if chat else "text_completion"

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        doc: dict[str, Any] = {
            "id": self.meta["id"],
            "object": self.object,
            "created": self.meta["created"],
            "model": self.meta["model"],
            "choices": choices,
        }
        if usage is not None:
            doc["usage"] = usage
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    def _usage(self, completion: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens": completion,
        }

    async def _events(self) -> AsyncIterator[bytes]:
        count = len(self.sequences)
        tokens = [0] * count
        if self.chat:
            for i in range(count):
                yield self._chunk(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
        for i in range(count):
            echo = self.echo[i // self.n] if i // self.n < len(self.echo) else None
            if echo:
                key = {"delta": {"content": echo}} if self.chat else {"text": echo}
                yield self._chunk([{"index": i, **key, "logprobs": None, "finish_reason": None}])
        remaining = count
        offsets = [len(e or "") for e in self.echo for _ in range(self.n)]
        while remaining:
            item = await self._next()
            if isinstance(item, Failure):
                yield b"data: " + error_body(item.message, "InternalServerError", "engine_error") + b"\n\n"
                break
            tokens[item.index] = item.completion_tokens
            choice: dict[str, Any] = {"index": item.index}
            if self.chat:
                choice["delta"] = {"content": item.text} if item.text or item.finish_reason else {}
            else:
                choice["text"] = item.text
            if item.logprobs is not None:
                choice["logprobs"] = self.server.format_logprobs(
                    item.logprobs, self.chat, offsets[item.index]
                )
            else:
                choice["logprobs"] = None
            offsets[item.index] += len(item.text)
            choice["finish_reason"] = item.finish_reason
            choice["stop_reason"] = item.stop_reason
            usage = self._usage(sum(tokens)) if self.continuous else None
            yield self._chunk([choice], usage)
            if item.finish_reason:
                remaining -= 1
        else:
            if self.include_usage:
                yield self._chunk([], self._usage(sum(tokens)))
        yield b"data: [DONE]\n\n"


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        return _error(
            ProxyError(
                405,
                f"Method {request.method} is not allowed on {request.url.path}.",
                code="method_not_allowed",
            )
        )
    return _error(ProxyError(404, f"No route for {request.method} {request.url.path}.", code="not_found"))


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return _error(
        ProxyError(500, "Internal error in the engine.", type="InternalServerError", code="internal_error")
    )


def create_app(engine: Engine, model_name: str, model_root: str) -> Starlette:
    server = EngineServer(engine, model_name, model_root)
    routes = [
        Route("/health", server.health, methods=["GET"]),
        Route("/version", server.version, methods=["GET"]),
        Route("/metrics", server.metrics, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{name:path}", server.model, methods=["GET"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/responses", server.responses, methods=["POST"]),
        Route("/tokenize", server.tokenize, methods=["POST"]),
        Route("/detokenize", server.detokenize, methods=["POST"]),
        Route("/pooling", server.pooling, methods=["POST"]),
        Route("/v1/embeddings", server.embeddings, methods=["POST"]),
        *(Route(path, server.score, methods=["POST"]) for path in ("/v1/score", "/score")),
        *(Route(path, server.rerank, methods=["POST"]) for path in ("/v1/rerank", "/rerank", "/v2/rerank")),
        Route("/v1/load_lora_adapter", server.load_lora_adapter, methods=["POST"]),
        Route("/v1/unload_lora_adapter", server.unload_lora_adapter, methods=["POST"]),
    ]

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.start()
        log.info(
            "serving %s (pid %d); batches up to %d tokens / %d sequences",
            model_name,
            os.getpid(),
            engine.max_batch_tokens,
            engine.max_batch_size,
        )
        yield
        engine.stop()

    from contextlib import asynccontextmanager

    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _not_found, Exception: _internal},
        lifespan=asynccontextmanager(lifespan),
    )
