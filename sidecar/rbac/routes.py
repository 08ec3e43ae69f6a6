"""The route table: which permission a request needs. Anything not listed is denied (403).

Built-in table (policy ``routes:`` entries are checked first and may add more):

| method | path                  | permission                |
|--------|-----------------------|---------------------------|
| POST   | /v1/chat/completions  | model:invoke:<model>      |
| POST   | /v1/completions       | model:invoke:<model>      |
| POST   | /v1/embeddings        | model:invoke:<model>      |
| POST   | /v1/responses         | model:invoke:<model>  (endpoints.responses, on)  |
| POST   | /tokenize, /detokenize | model:invoke:<model> (endpoints.tokenize, on; at the root) |
| POST   | /v1/score, /v1/rerank | model:invoke:<model>  (endpoints.score, on)      |
| POST   | /pooling              | model:invoke:<model>  (endpoints.pooling, off; at the root) |
| POST   | /v1/audio/transcriptions | model:invoke:<model> (endpoints.transcriptions, off; form field) |
| GET    | /v1/models            | model:list (answer filtered to invokable models) |
| GET    | /v1/models/<id>       | model:list, and <id> must be invokable (else 404) |
| POST   | /v1/load_lora_adapter, /v1/unload_lora_adapter | lora:manage (LoRA adapters at run time) |
| GET    | /metrics, /metrics/upstream | metrics:read        |
| GET    | /admin/alerts[/...]   | alerts:read               |
| POST, DELETE | /admin/alerts/silences[/<id>], POST /admin/alerts/receivers/<name>/test | alerts:manage |
| GET    | /admin/audit/recent, /admin/audit/openapi.json | audit:read |
| GET    | /v1/history[/<id>]    | history:list (other users' records: audit:read as well) |

<model> is the ``model`` the request body names (400 when it names none; for an upload, the ``model``
form field); vLLM serves /tokenize, /detokenize and /pooling at the root. An endpoint switched off in
the ``endpoints:`` config section answers 404 before any route is looked up (``sidecar.endpoints``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .policy import RouteSpec

INVOKE = "model:invoke:{model}"


def _local(method: str, path: str, permission: str) -> RouteSpec:
    # Built-in routes outside /v1/ (the sidecar's own endpoints, vLLM's root inference routes);
    # policy files may name /v1/ paths only.
    return RouteSpec.model_construct(method=method, path=path, permission=permission)


BUILTIN_ROUTES: list[RouteSpec] = [
    RouteSpec(method="POST", path="/v1/chat/completions", permission=INVOKE),
    RouteSpec(method="POST", path="/v1/completions", permission=INVOKE),
    RouteSpec(method="POST", path="/v1/embeddings", permission=INVOKE),
    # vLLM's other inference endpoints (each family can be switched off: sidecar.endpoints).
    RouteSpec(method="POST", path="/v1/responses", permission=INVOKE),
    _local(method="POST", path="/tokenize", permission=INVOKE),
    _local(method="POST", path="/detokenize", permission=INVOKE),
    RouteSpec(method="POST", path="/v1/score", permission=INVOKE),
    RouteSpec(method="POST", path="/v1/rerank", permission=INVOKE),
    _local(method="POST", path="/pooling", permission=INVOKE),
    RouteSpec(method="POST", path="/v1/audio/transcriptions", permission=INVOKE),
    RouteSpec(method="GET", path="/v1/models", permission="model:list"),
    RouteSpec(method="GET", path="/v1/models/*", permission="model:list"),
    # vLLM's (and the CPU engine's) run-time LoRA adapter routes; invoking an adapter is model:invoke.
    RouteSpec(method="POST", path="/v1/load_lora_adapter", permission="lora:manage"),
    RouteSpec(method="POST", path="/v1/unload_lora_adapter", permission="lora:manage"),
    # Served by the sidecar itself (after the same stages, so audited like every request).
    _local(method="GET", path="/metrics", permission="metrics:read"),
    _local(method="GET", path="/metrics/upstream", permission="metrics:read"),
    # The alerting admin API (alerting.api) checks alerting.admin.*_permission per action as well.
    _local(method="GET", path="/admin/alerts", permission="alerts:read"),
    _local(method="GET", path="/admin/alerts/*", permission="alerts:read"),
    _local(method="GET", path="/admin/alerts/silences/*", permission="alerts:read"),
    _local(method="POST", path="/admin/alerts/silences", permission="alerts:manage"),
    _local(method="DELETE", path="/admin/alerts/silences/*", permission="alerts:manage"),
    _local(method="POST", path="/admin/alerts/receivers/*/test", permission="alerts:manage"),
    _local(method="GET", path="/admin/audit/recent", permission="audit:read"),
    _local(method="GET", path="/admin/audit/openapi.json", permission="audit:read"),
    # The History API (sidecar.history): a caller's own records; ?user= also needs audit:read.
    _local(method="GET", path="/v1/history", permission="history:list"),
    _local(method="GET", path="/v1/history/*", permission="history:list"),
]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    permission: str
    regex: re.Pattern[str]
    builtin: bool

    @property
    def label(self) -> str:
        return f"{'builtin' if self.builtin else 'policy'} route {self.method} {self.path}"


def _compile(spec: RouteSpec, builtin: bool) -> Route:
    if builtin and spec.path == "/v1/models/*":
        # Model ids may have "/" parts (org/name); the authorize stage validates the id first.
        return Route(spec.method, spec.path, spec.permission, re.compile(r"^/v1/models/.+\Z"), builtin)
    rx = re.compile("^" + "[^/]+".join(re.escape(p) for p in spec.path.split("*")) + r"\Z")
    return Route(spec.method, spec.path, spec.permission, rx, builtin)


class RouteTable:
    def __init__(self, policy_routes: list[RouteSpec]) -> None:
        self.routes = [_compile(r, False) for r in policy_routes] + [
            _compile(r, True) for r in BUILTIN_ROUTES
        ]

    def match(self, method: str, path: str) -> Route | None:
        # A handful of routes: a scan is cheaper than anything cleverer.
        for route in self.routes:
            if route.method in (method, "*") and (route.path == path or route.regex.match(path)):
                return route
        return None
