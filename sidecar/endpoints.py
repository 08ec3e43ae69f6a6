"""Which of the upstream's optional endpoints the sidecar serves (the ``endpoints:`` config section).

Chat, completions, embeddings and the model list are always served. The endpoints below are served
only when their family is switched on; a request for a switched-off one gets 404 (``not enabled on
this server``) before its body is read, audited like every refusal. Routes and permissions:
``sidecar.rbac.routes``; request redaction: ``sidecar.redaction.walk``.
"""

from __future__ import annotations

from pydantic import Field

from custos.errors import ProxyError
from custos.section import Section


class EndpointsConfig(Section):
    responses: bool = Field(
        True,
        description="POST /v1/responses: text in, text out like chat, with the same request and answer "
        "redaction; on, as clients move to the Responses API",
    )
    tokenize: bool = Field(
        True,
        description="POST /tokenize and /detokenize: run the tokenizer only (no generation); the "
        "prompt is redacted like chat, the answer is token ids and token strings; on",
    )
    score: bool = Field(
        True,
        description="POST /v1/score and /v1/rerank: text in (redacted), relevance numbers out, "
        "rerank documents echoed back redacted; on",
    )
    pooling: bool = Field(
        False,
        description="POST /pooling: raw pooler output (hidden states, per-token vectors, base64 data) "
        "that answer redaction cannot read as text, for any pooling task; off unless a deployment "
        "needs it",
    )
    transcriptions: bool = Field(
        False,
        description="POST /v1/audio/transcriptions: an audio upload reaches the model as it is (no "
        "detector hears spoken personal data, and a voice is biometric data); only the text fields "
        "are redacted; off unless a deployment needs it",
    )


# Each optional route, by the family that switches it.
FAMILIES: dict[str, str] = {
    "/v1/responses": "responses",
    "/tokenize": "tokenize",
    "/detokenize": "tokenize",
    "/v1/score": "score",
    "/v1/rerank": "score",
    "/pooling": "pooling",
    "/v1/audio/transcriptions": "transcriptions",
}


def disabled_paths(config: EndpointsConfig) -> frozenset[str]:
    return frozenset(path for path, family in FAMILIES.items() if not getattr(config, family))


def not_enabled(path: str) -> ProxyError:
    # The client learns that the endpoint is off, not how this server is configured; operators find
    # the switch (endpoints.<family>) in docs/api.md and in the audit record's path.
    return ProxyError(404, f"The endpoint {path} is not enabled on this server.", code="endpoint_not_enabled")
