"""OpenAI request validation for the CPU engine: every problem becomes a 400 naming the parameter.

Unknown fields are accepted and ignored (as vLLM and OpenAI do), so newer SDKs keep working; known
fields are checked for type and range. vLLM's extra sampling fields (top_k, min_p, ignore_eos,
min_tokens, stop_token_ids, repetition_penalty, skip_special_tokens, include_stop_str_in_output)
work the same here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from custos.errors import ProxyError, bad_request

from .sampling import SamplingParams


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    best_of: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 16:
            raise ValueError("at most 16 stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty strings")
        return value


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)  # how many alternatives per token, as in OpenAI
    echo: bool = False
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's and vLLM's default for completions


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False  # top_logprobs says how many alternatives
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    echo: bool = False


# Pydantic names the member of a union it tried in the error's location; these are not parameters.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


# OpenAI's ``include`` values; only the output text's logprobs mean anything for a text-only engine.
ResponseIncludable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]


class ResponseTextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: dict[str, Any] | None = None


class ResponsesRequest(_Common):
    """``POST /v1/responses``: OpenAI's Responses API for text in, text out (no tools, nothing stored)."""

    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    store: bool | None = True
    previous_response_id: str | None = None
    conversation: Any = None
    prompt: Any = None
    background: bool | None = False
    text: ResponseTextConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool | None = True
    truncation: Literal["auto", "disabled"] | None = "disabled"
    include: list[ResponseIncludable] | None = None
    reasoning: dict[str, Any] | None = None
    n: Literal[1] = 1  # one output message per response

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # OpenAI's limits: 16 pairs, keys up to 64 characters (values: 512, checked above).
        if value and len(value) > 16:
            raise ValueError("at most 16 key-value pairs")
        if value and any(len(key) > 64 for key in value):
            raise ValueError("keys must be at most 64 characters")
        return value

    @property
    def wants_logprobs(self) -> bool:
        return "message.output_text.logprobs" in (self.include or [])


class TokenizeRequest(BaseModel):
    """vLLM's ``POST /tokenize`` for a prompt."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatRequest(BaseModel):
    """vLLM's ``POST /tokenize`` for chat messages: the prompt the chat template makes of them."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    return_token_strs: bool | None = False
    chat_template_kwargs: dict[str, Any] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    tokens: list[int]


class _PoolingCommon(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    user: str | None = None
    add_special_tokens: bool = True


class PoolingRequest(_PoolingCommon):
    """``POST /pooling`` and ``POST /v1/embeddings``: one vector per input."""

    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


class ScoreRequest(_PoolingCommon):
    """``POST /v1/score``: text_1 against text_2, paired 1:1, 1:N or N:N."""

    text_1: str | list[str]
    text_2: str | list[str]


class RerankRequest(_PoolingCommon):
    """``POST /v1/rerank``: documents ordered by their score against the query."""

    query: str
    documents: list[str]
    top_n: int | None = Field(None, ge=0)
    return_documents: bool = True


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate ``body`` into ``model``, or raise a 400 naming the first bad parameter."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_body")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]
        param = _dotted(loc) or None
        message = error["msg"]
        if error["type"] == "missing":
            message = "Field required"
        raise bad_request(
            f"{param}: {message}" if param else message, param=param, code="invalid_parameter"
        ) from None
    if isinstance(request, _Common):
        _check_unsupported(request)
    if isinstance(request, ResponsesRequest):
        _check_responses_request(request)
    return request


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _check_unsupported(request: _Common) -> None:
    if isinstance(request, ChatCompletionRequest) and request.top_logprobs and not request.logprobs:
        raise bad_request("top_logprobs: needs logprobs set to true.", param="top_logprobs")
    if request.best_of is not None and request.best_of != request.n:
        raise bad_request(
            "best_of: only best_of equal to n is supported.", param="best_of", code="unsupported_parameter"
        )
    if request.stream_options is not None and not request.stream:
        raise bad_request("stream_options: only allowed when stream is true.", param="stream_options")
    if isinstance(request, CompletionRequest):
        if request.suffix:
            raise bad_request("suffix: not supported.", param="suffix", code="unsupported_parameter")
    if isinstance(request, ChatCompletionRequest):
        if request.tools and request.tool_choice not in (None, "none"):
            raise bad_request(
                "tools: tool calling is not supported by the CPU engine.",
                param="tools",
                code="unsupported_parameter",
            )
        fmt = (request.response_format or {}).get("type", "text")
        if fmt != "text":
            raise bad_request(
                f"response_format: type {fmt!r} is not supported by the CPU engine.",
                param="response_format",
                code="unsupported_parameter",
            )


def _check_responses_request(request: ResponsesRequest) -> None:
    def unsupported(param: str, why: str) -> ProxyError:
        return bad_request(f"{param}: {why}", param=param, code="unsupported_parameter")

    if request.previous_response_id is not None:
        raise unsupported(
            "previous_response_id",
            "responses are not stored by this engine (store is accepted and ignored); "
            "send the earlier turns in input.",
        )
    if request.conversation is not None:
        raise unsupported("conversation", "conversations are not stored by this engine; send them in input.")
    if request.background:
        raise unsupported(
            "background", "background responses need stored responses, which this engine does not keep."
        )
    if request.prompt is not None:
        raise unsupported("prompt", "prompt templates are not supported.")
    if request.tools:
        raise unsupported("tools", "tool calling is not supported by the CPU engine.")
    if request.tool_choice not in ("auto", "none"):
        raise unsupported("tool_choice", "tool calling is not supported by the CPU engine.")
    fmt = ((request.text.format if request.text else None) or {}).get("type", "text")
    if fmt != "text":
        raise unsupported("text.format", f"type {fmt!r} is not supported by the CPU engine.")


RESPONSE_ROLES = ("user", "system", "developer", "assistant")
RESPONSE_TEXT_PARTS = ("input_text", "output_text")


def response_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """The chat messages a Responses request stands for: ``instructions`` first (a system message),
    then ``input`` (a string is one user message). Only message items with text parts are accepted."""
    items = [{"role": "user", "content": request.input}] if isinstance(request.input, str) else request.input
    if not items:
        raise bad_request("input: must not be empty.", param="input")
    messages = [_input_message(i, item) for i, item in enumerate(items)]
    out = flatten_content(messages, field="input", text_parts=RESPONSE_TEXT_PARTS)
    if request.instructions:
        out.insert(0, {"role": "system", "content": request.instructions})
    return out


def _input_message(index: int, item: dict[str, Any]) -> ChatMessage:
    kind = item.get("type", "message")
    if kind != "message":
        raise bad_request(
            f"input[{index}].type: items of type {kind!r} are not supported by the CPU engine "
            "(only messages with text).",
            param=f"input[{index}].type",
            code="unsupported_parameter",
        )
    role = item.get("role")
    if role not in RESPONSE_ROLES:
        raise bad_request(
            f"input[{index}].role: must be one of {', '.join(RESPONSE_ROLES)} (got {role!r}).",
            param=f"input[{index}].role",
        )
    content = item.get("content")
    parts_ok = isinstance(content, list) and all(isinstance(part, dict) for part in content)
    if not (isinstance(content, str) or parts_ok):
        raise bad_request(
            f"input[{index}].content: must be a string or a list of content parts.",
            param=f"input[{index}].content",
        )
    return ChatMessage(role=role, content=content)


def sampling_params(request: _Common, max_tokens: int, vocab_size: int) -> SamplingParams:
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    bias: dict[int, float] = {}
    for key, value in (request.logit_bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise bad_request(f"logit_bias: key {key!r} is not a token id.", param="logit_bias") from None
        if not 0 <= token < vocab_size:
            raise bad_request(
                f"logit_bias: token id {token} is out of the vocabulary (0..{vocab_size - 1}).",
                param="logit_bias",
            )
        bias[token] = value
    for token in request.stop_token_ids or []:
        if not 0 <= token < vocab_size:
            raise bad_request(
                f"stop_token_ids: token id {token} is out of the vocabulary.", param="stop_token_ids"
            )
    temperature = 1.0 if request.temperature is None else request.temperature
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=request.top_k or 0,
        min_p=request.min_p or 0.0,
        seed=request.seed,
        stop=stops,
        stop_token_ids=list(request.stop_token_ids or []),
        ignore_eos=request.ignore_eos,
        min_tokens=min(request.min_tokens, max_tokens),
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        repetition_penalty=request.repetition_penalty,
        logit_bias=bias,
        skip_special_tokens=request.skip_special_tokens,
        include_stop_str_in_output=request.include_stop_str_in_output,
        logprobs=requested_logprobs(request),
    )


def requested_logprobs(request: _Common) -> int | None:
    """None: no logprobs; k: the chosen token's logprob plus the k most likely alternatives."""
    if isinstance(request, ChatCompletionRequest):
        return (request.top_logprobs or 0) if request.logprobs else None
    if isinstance(request, ResponsesRequest):
        return (request.top_logprobs or 0) if request.wants_logprobs else None
    return getattr(request, "logprobs", None)


CHAT_TEXT_PARTS = ("text", "input_text")


def flatten_content(
    messages: list[ChatMessage], field: str = "messages", text_parts: tuple[str, ...] = CHAT_TEXT_PARTS
) -> list[dict[str, Any]]:
    """Messages with plain-string content (text parts joined), which every chat template understands.

    ``field`` names the request field the messages came from (in errors); ``text_parts`` are the
    part types that carry text there.
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                kind = part.get("type")
                if kind in text_parts and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                else:
                    raise bad_request(
                        f"{field}[{i}].content[{j}]: only text parts are supported by this model "
                        f"(got type {kind!r}).",
                        param=f"{field}[{i}].content",
                    )
            content = "\n".join(texts)
        entry = message.model_dump(exclude_none=True)
        entry["content"] = content or ""
        out.append(entry)
    return out


def model_not_found(name: str) -> ProxyError:
    return ProxyError(
        404,
        f"The model `{name}` does not exist.",
        type="NotFoundError",
        code="model_not_found",
        param="model",
    )
