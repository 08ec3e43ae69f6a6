"""OpenAI request validation for the CPU engine: every problem becomes a 400 naming the parameter.

Unknown fields are accepted and ignored (as vLLM and OpenAI do), so newer SDKs keep working; known
fields are checked for type and range. vLLM's extra sampling fields (top_k, min_p, ignore_eos,
min_tokens, stop_token_ids, repetition_penalty, skip_special_tokens, include_stop_str_in_output)
work the same here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sidecar.errors import ProxyError, bad_request

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


def parse(model: type[_Common], body: Any) -> Any:
    """Validate ``body`` into ``model``, or raise a 400 naming the first bad parameter."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_body")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [p for p in error["loc"] if not (isinstance(p, str) and "[" in p)]
        param = _dotted(loc) or None
        message = error["msg"]
        if error["type"] == "missing":
            message = "Field required"
        raise bad_request(
            f"{param}: {message}" if param else message, param=param, code="invalid_parameter"
        ) from None
    _check_unsupported(request)
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
    return getattr(request, "logprobs", None)


def flatten_content(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages with plain-string content (text parts joined), which every chat template understands."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                kind = part.get("type")
                if kind in ("text", "input_text") and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                else:
                    raise bad_request(
                        f"messages[{i}].content[{j}]: only text parts are supported by this model "
                        f"(got type {kind!r}).",
                        param=f"messages[{i}].content",
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
