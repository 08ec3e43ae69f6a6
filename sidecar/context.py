"""The per-request context that flows through every stage.

Stages communicate only through this object: each reads what earlier stages wrote and adds its own
results (identity, decision, redaction counts, usage, hashes) for later stages such as metrics and audit.
Everything one stage hands to another is a typed attribute whose comment names the stage that writes
it and the ones that read it; ``extras`` holds only state private to the stage that wrote it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from custos.errors import ProxyError, bad_request

from .multipart import Form, parse_form
from .sse import SSEEvents

if TYPE_CHECKING:
    from .rbac.decide import Grant  # imports this module: only its type is needed here

# Inference routes, mapped to their OpenTelemetry GenAI-style operation name (metrics, traces and
# the audit record's event.action). Their bodies must be JSON objects, except FORM_ROUTES.
INFERENCE_ROUTES: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
    "/tokenize": "tokenize",
    "/detokenize": "detokenize",
    "/v1/score": "score",
    "/v1/rerank": "rerank",
    "/pooling": "pooling",
    "/v1/audio/transcriptions": "transcription",
}
# Inference routes whose bodies are multipart/form-data uploads, not JSON, mapped to the one field
# that carries the uploaded file.
FORM_ROUTES: dict[str, str] = {"/v1/audio/transcriptions": "file"}
# vLLM serves these at the root, not under /v1/. Exactly these are proxied (and redacted) like /v1/
# routes; any other path outside /v1/ is the sidecar's own endpoint or 404.
ROOT_ROUTES: frozenset[str] = frozenset({"/tokenize", "/detokenize", "/pooling"})
KNOWN_ROUTES: frozenset[str] = frozenset({*INFERENCE_ROUTES, "/v1/models"})


def proxied(path: str) -> bool:
    """Whether ``path`` is a path the sidecar forwards upstream: its URL and body go through request
    redaction (the few /v1/ paths the sidecar serves itself are treated the same way)."""
    return path.startswith("/v1/") or path in ROOT_ROUTES


@dataclass(slots=True)
class Identity:
    subject: str
    roles: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Decision:
    allowed: bool
    permission: str
    rule: str
    reason: str = ""


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class RedactionState(Protocol):
    """The redact stage's per-request state, as the other stages may use it (the stage's own
    ``sidecar.stages.redact._State`` has more: the pseudonym session, what the caller may see)."""

    @property
    def restored(self) -> int:
        """Placeholders put back into the answer so far."""
        ...

    def for_log(self, text: str) -> str:
        """Any text of this request (e.g. the answer as the client got it, with restored values) in
        its redacted form, with the placeholders the model saw: for audit records and logs."""
        ...


class RequestContext:
    """Everything known about one request. Slots keep it cheap to build on the hot path."""

    __slots__ = (
        "_form",
        "_json",
        "_replacement",
        "auth_failure",
        "body",
        "body_modified",
        "cancelled",
        "client_ip",
        "decision",
        "error",
        "extras",
        "finish_reasons",
        "finished",
        "first_byte_at",
        "first_token_at",
        "grant",
        "headers",
        "identity",
        "input_chars",
        "method",
        "model",
        "models_hidden",
        "operation",
        "output_sha256",
        "path",
        "prompt_sha256",
        "query",
        "rate_limit_scope",
        "redaction",
        "redactions",
        "request_id",
        "response_bytes",
        "response_end_ran",
        "response_headers",
        "response_kind",
        "route",
        "sse_events",
        "started",
        "started_wall",
        "status",
        "stream",
        "trace_id",
        "upstream_headers",
        "upstream_status",
        "usage",
    )

    def __init__(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client_ip: str,
        body: bytes = b"",
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.query = query
        # Incoming headers, names lower-case, hop-by-hop headers already removed.
        self.headers = headers
        self.client_ip = client_ip
        self.body = body
        self._json: Any = _UNPARSED
        self._form: Form | None = None
        self._replacement: bytes | None = None
        self.body_modified = False
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.finished: float | None = None
        self.route = path if path in KNOWN_ROUTES else "other"
        self.operation = INFERENCE_ROUTES.get(path, "models" if path == "/v1/models" else "other")
        self.model: str | None = None
        self.stream = False
        self.identity: Identity | None = None
        self.decision: Decision | None = None
        # Extra headers the forward step sends upstream (e.g. X-Custos-Subject).
        self.upstream_headers: list[tuple[bytes, bytes]] = []
        self.redactions: dict[str, int] = {}
        self.status: int | None = None
        self.upstream_status: int | None = None
        self.response_headers: list[tuple[bytes, bytes]] = []
        # "json", "sse", "text", "empty" or "other" (forward.response_kind): how filters read the body.
        self.response_kind = "other"
        self.response_bytes = 0
        # SSE answers: each event split and parsed once, shared by the filters that read streams.
        self.sse_events: SSEEvents | None = None
        self.error: ProxyError | None = None
        self.cancelled = False
        self.usage = Usage()
        self.finish_reasons: list[str] = []
        self.first_byte_at: float | None = None
        self.prompt_sha256: str | None = None
        self.output_sha256: str | None = None
        self.trace_id: str | None = None
        # Handed from one stage to others; each None until its writer sets it.
        # authenticate (on failure) -> metrics: the reason label of custos_auth_failures_total.
        self.auth_failure: str | None = None
        # authorize -> ratelimit: the rate limits and token cap of the roles that allowed the request.
        self.grant: Grant | None = None
        # authorize (GET /v1/models filter) -> nobody yet: how many listed models the caller may not see.
        self.models_hidden: int | None = None
        # ratelimit (on refusal) -> nobody yet: "subject" or "role", the bucket that ran out (metrics
        # and audit get it as the error kind, ratelimit_<scope>).
        self.rate_limit_scope: str | None = None
        # redact -> redact's response filters, audit (for_log, stored texts): None when not redacted.
        self.redaction: RedactionState | None = None
        # observe (first streamed token) -> metrics: time to first token and time per output token.
        self.first_token_at: float | None = None
        # audit (when a stage rewrote the body) -> audit.record: prompt characters as the client sent
        # them; None: the record counts them from the body.
        self.input_chars: int | None = None
        # pipeline -> pipeline: the response-end hooks ran (they run at most once per request).
        self.response_end_ran = False
        # State private to one stage, keyed "<stage>.<what>" and read only by the stage that wrote it
        # (tracing's root span, metrics' in-flight gauge, guard's source key, audit's gate flags).
        self.extras: dict[str, Any] = {}

    # -- body helpers -------------------------------------------------------------------------
    @property
    def json(self) -> Any:
        """The request body parsed as JSON (None when the body is empty). 400 when malformed."""
        if self._json is _UNPARSED:
            if not self.body:
                self._json = None
            else:
                try:
                    self._json = orjson.loads(self.body)
                except orjson.JSONDecodeError as exc:
                    raise bad_request(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
        return self._json

    def set_json(self, value: Any) -> None:
        """Replace the JSON body; the forward step re-serializes it."""
        self._json = value
        self.body_modified = True

    @property
    def form(self) -> Form:
        """The body of a ``FORM_ROUTES`` request parsed as multipart/form-data, whole. 400 when it
        cannot be read completely (``sidecar.multipart``)."""
        if self._form is None:
            file_field = FORM_ROUTES.get(self.path, "file")
            self._form = parse_form(self.header(b"content-type"), self.body, file_field=file_field)
        return self._form

    def set_body(self, body: bytes, content_type: bytes) -> None:
        """Replace a body that is not JSON (a rebuilt form) and its Content-Type. Like ``set_json``,
        the forward step sends it; until then ``body`` keeps the client's bytes (the prompt hash)."""
        self._replacement = body
        self.headers = [h for h in self.headers if h[0] != b"content-type"]
        self.headers.append((b"content-type", content_type))

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def outgoing_body(self) -> bytes:
        if self._replacement is not None:
            self.body, self._replacement = self._replacement, None
        elif self.body_modified:
            self.body = orjson.dumps(self._json)
            self.body_modified = False
        return self.body

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started

    @property
    def outcome(self) -> str:
        """ECS-style event outcome."""
        if self.cancelled:
            return "unknown"
        if self.status is not None and self.status < 400 and self.error is None:
            return "success"
        return "failure"


class _Unparsed:
    __slots__ = ()


_UNPARSED = _Unparsed()
