"""Answers of vLLM's pooling routes (``/pooling``, ``/v1/embeddings``, ``/v1/score``, ``/v1/rerank``).

The CPU engine serves a causal LM, not an embedding model: a text's vector is the mean of the last
hidden layer over its tokens (L2-normalized for embeddings, scores and reranking). That makes these
routes good for local testing of the API shape and of the clients that use it, not for retrieval
quality: use a real embedding or reranker model on vLLM for that.
"""

from __future__ import annotations

import base64
import math
import struct
import time
import uuid
from typing import Any

from custos.errors import bad_request

from .protocol import PoolingRequest, RerankRequest, ScoreRequest

# At most this many texts per request (OpenAI's limit for embedding inputs).
MAX_POOLING_INPUTS = 2048

Vector = list[float]


def normalize(vector: Vector) -> Vector:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else list(vector)


def cosine(a: Vector, b: Vector) -> float:
    """Cosine similarity, clamped to [-1, 1] (rounding can step just outside)."""
    dot = sum(x * y for x, y in zip(normalize(a), normalize(b), strict=True))
    return max(-1.0, min(1.0, dot))


def encode(vector: Vector, encoding_format: str) -> Vector | str:
    """The vector as floats, or as base64 of little-endian float32 (what the openai SDK decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def check_dimensions(request: PoolingRequest, hidden_size: int) -> None:
    """This model has no Matryoshka training: only its own width can be asked for (as vLLM refuses)."""
    if request.dimensions is not None and request.dimensions != hidden_size:
        raise bad_request(
            f"dimensions: this model does not support changing the output dimensions (its vectors "
            f"have {hidden_size}).",
            param="dimensions",
            code="unsupported_parameter",
        )


def score_pairs(count_1: int, count_2: int) -> list[tuple[int, int]]:
    """vLLM's pairings of text_1 with text_2: 1:1, 1:N (text_1 against each) or N:N (zipped)."""
    if count_1 > 1 and count_1 != count_2:
        raise bad_request(
            f"text_1: input lengths must be either 1:1, 1:N or N:N (got {count_1}:{count_2}).",
            param="text_1",
        )
    return [(0 if count_1 == 1 else i, i) for i in range(count_2)]


# What each route pools, as (value, field) groups; called before any forward pass, so a bad request
# costs none.


def pooling_inputs(request: PoolingRequest, hidden_size: int) -> list[tuple[Any, str]]:
    check_dimensions(request, hidden_size)
    return [(request.input, "input")]


def score_inputs(request: ScoreRequest) -> list[tuple[Any, str]]:
    score_pairs(_count(request.text_1), _count(request.text_2))
    return [(request.text_1, "text_1"), (request.text_2, "text_2")]


def rerank_inputs(request: RerankRequest) -> list[tuple[Any, str]]:
    return [(request.query, "query"), (request.documents, "documents")]


def _count(value: str | list[str]) -> int:
    return 1 if isinstance(value, str) else len(value)


def usage(prompt_tokens: int) -> dict[str, Any]:
    """vLLM's UsageInfo for pooling answers (nothing is generated)."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


def _envelope(prefix: str, model: str, data: list[dict[str, Any]], prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": usage(prompt_tokens),
    }


# The answers take the vectors grouped as the route's inputs were (e.g. [query], [documents]).


def pooling_answer(
    request: PoolingRequest, groups: list[list[Vector]], model: str, prompt_tokens: int
) -> dict:
    data = [
        {"index": i, "object": "pooling", "data": encode(v, request.encoding_format)}
        for i, v in enumerate(groups[0])
    ]
    return _envelope("pool", model, data, prompt_tokens)


def embedding_answer(
    request: PoolingRequest, groups: list[list[Vector]], model: str, prompt_tokens: int
) -> dict:
    data = [
        {"index": i, "object": "embedding", "embedding": encode(normalize(v), request.encoding_format)}
        for i, v in enumerate(groups[0])
    ]
    return _envelope("embd", model, data, prompt_tokens)


def score_answer(request: ScoreRequest, groups: list[list[Vector]], model: str, prompt_tokens: int) -> dict:
    left, right = groups
    pairs = score_pairs(len(left), len(right))
    data = [
        {"index": i, "object": "score", "score": cosine(left[a], right[b])} for i, (a, b) in enumerate(pairs)
    ]
    return _envelope("score", model, data, prompt_tokens)


def rerank_answer(request: RerankRequest, groups: list[list[Vector]], model: str, prompt_tokens: int) -> dict:
    [query], documents = groups
    results = []
    for i, vector in enumerate(documents):
        result: dict[str, Any] = {"index": i}
        if request.return_documents:
            result["document"] = {"text": request.documents[i]}
        result["relevance_score"] = cosine(query, vector)
        results.append(result)
    results.sort(key=lambda r: r["relevance_score"], reverse=True)  # stable: ties keep input order
    if request.top_n:  # 0 or absent: every document, as vLLM
        results = results[: request.top_n]
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        "results": results,
    }
