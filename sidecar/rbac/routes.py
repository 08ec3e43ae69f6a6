"""The route table: which permission a request needs. Anything not listed is denied (403).

Built-in table (policy ``routes:`` entries are checked first and may add more):

| method | path                  | permission                |
|--------|-----------------------|---------------------------|
| POST   | /v1/chat/completions  | model:invoke:<model>      |
| POST   | /v1/completions       | model:invoke:<model>      |
| POST   | /v1/embeddings        | model:invoke:<model>      |
| GET    | /v1/models            | model:list (answer filtered to invokable models) |
| GET    | /v1/models/<id>       | model:list, and <id> must be invokable (else 404) |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .policy import RouteSpec

INVOKE = "model:invoke:{model}"
BUILTIN_ROUTES: list[RouteSpec] = [
    RouteSpec(method="POST", path="/v1/chat/completions", permission=INVOKE),
    RouteSpec(method="POST", path="/v1/completions", permission=INVOKE),
    RouteSpec(method="POST", path="/v1/embeddings", permission=INVOKE),
    RouteSpec(method="GET", path="/v1/models", permission="model:list"),
    RouteSpec(method="GET", path="/v1/models/*", permission="model:list"),
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
    rx = re.compile("^" + "[^/]+".join(re.escape(p) for p in spec.path.split("*")) + "$")
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
