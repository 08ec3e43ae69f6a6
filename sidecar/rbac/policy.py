"""The RBAC policy: file format, validation with file:line:col errors, and the compiled decision table.

File format (``policies/rbac.yaml``)::

    version: 1
    aliases:                      # seed-style permissions -> what they grant
      model:read: [model:list, "model:invoke:*"]
    routes:                       # extra routes, checked before the built-in table
      - {method: GET, path: /v1/history, permission: history:list}
    roles:
      - name: analyst
        permissions: [model:read, history:list]
        inherits: [viewer]
        constraints:
          models: [deepseek-7b, "llama-*"]
          max_tokens: 1024
          source_cidrs: [10.0.0.0/8]
          rate_limit: {per_subject_rpm: 60, per_role_rpm: 600, burst: 10}
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from custos.yamlfile import FileError, Problem, YamlDocument, parse_yaml, read_yaml

from ..clientip import parse_address
from .permissions import compile_grant, glob_re, grant_error

# Seed-style permissions operators already write, and the route permissions they stand for.
BUILTIN_ALIASES: dict[str, list[str]] = {
    "model:read": ["model:list", "model:invoke:*"],
}
_ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")


class PolicyError(FileError):
    """One or more problems in a policy file, each as ``file:line:col: field: problem``."""

    @property
    def errors(self) -> list[str]:
        return [str(p) for p in self.problems]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Strict):
    per_subject_rpm: int | None = Field(None, ge=1, description="requests per minute per subject")
    per_role_rpm: int | None = Field(
        None, ge=1, description="requests per minute for all subjects of the role"
    )
    burst: int | None = Field(None, ge=1, description="bucket size; default = the per-minute rate")


class Constraints(_Strict):
    models: list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    source_cidrs: list[str] | None = None
    rate_limit: RateLimit | None = None

    @field_validator("source_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        for cidr in value or ():
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (CIDR)") from None
        return value


class RoleSpec(_Strict):
    name: str
    description: str = ""
    permissions: list[str] = Field(default_factory=list)
    inherits: list[str] = Field(default_factory=list)
    constraints: Constraints = Field(default_factory=Constraints)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROLE_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid role name")
        return value


class RouteSpec(_Strict):
    method: str = "*"
    path: str
    permission: str

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        value = value.upper()
        if value != "*" and not value.isalpha():
            raise ValueError(f"{value!r} is not an HTTP method")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/v1/"):
            raise ValueError("route paths start with /v1/ (only those are proxied)")
        return value

    @field_validator("permission")
    @classmethod
    def _perm(cls, value: str) -> str:
        err = grant_error(value.replace("{model}", "x"))
        if err or "*" in value:
            raise ValueError(err or "a route names one permission, without wildcards")
        return value


class PolicyFile(_Strict):
    version: Literal[1] = 1
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    routes: list[RouteSpec] = Field(default_factory=list)
    roles: list[RoleSpec]

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, grants in value.items():
            for perm in (name, *grants):
                err = grant_error(perm)
                if err:
                    raise ValueError(err)
        return value


# -- loading --------------------------------------------------------------------------------------
def parse_policy(text: str, source: str) -> PolicyFile:
    return _checked(parse_yaml(text, source, unique_keys=True, error=PolicyError))


def _checked(doc: YamlDocument) -> PolicyFile:
    """The validated policy, after the checks between entries that the models cannot make alone."""
    policy = doc.validate(PolicyFile)
    problems: list[Problem] = []
    for i, role in enumerate(policy.roles):
        for j, perm in enumerate(role.permissions):
            err = grant_error(perm)
            if err:  # checked here rather than in the model, to point at the exact list item
                problems.append(doc.problem(("roles", i, "permissions", j), err))
    seen: dict[str, int | None] = {}
    for i, role in enumerate(policy.roles):
        where = doc.problem(("roles", i, "name"), "")
        if role.name in seen:
            first = f" (first defined at line {seen[role.name]})" if seen[role.name] else ""
            problems.append(replace(where, message=f"duplicate role {role.name!r}{first}"))
        seen.setdefault(role.name, where.line)
    for i, role in enumerate(policy.roles):
        for j, parent in enumerate(role.inherits):
            if parent not in seen:
                message = f"role {role.name!r} inherits unknown role {parent!r}"
                problems.append(doc.problem(("roles", i, "inherits", j), message))
    if not problems:
        cycle = _find_cycle({r.name: r.inherits for r in policy.roles})
        if cycle:
            problems.append(doc.problem(("roles",), f"roles inherit in a cycle: {' -> '.join(cycle)}"))
    doc.fail(problems)
    return policy


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if state.get(node) == 1:
            return [*trail[trail.index(node) :], node]
        if state.get(node) == 2:
            return None
        state[node] = 1
        for nxt in graph.get(node, ()):
            found = visit(nxt, [*trail, node])
            if found:
                return found
        state[node] = 2
        return None

    for name in graph:
        found = visit(name, [])
        if found:
            return found
    return None


def load_policy_file(path: Path) -> Policy:
    doc = read_yaml(path, what="policy file", unique_keys=True, error=PolicyError)
    return Policy(_checked(doc), doc.source)


# -- compiled policy -----------------------------------------------------------------------------
@dataclass(slots=True)
class CompiledRole:
    name: str
    grants: list[tuple[str, re.Pattern[str]]]
    models: re.Pattern[str] | None
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None
    max_tokens: int | None
    rate_limit: RateLimit | None


@dataclass(slots=True)
class Verdict:
    """The outcome for one permission and one caller (before request-body checks)."""

    allowed: bool
    rule: str
    reason: str
    roles: list[CompiledRole] = field(default_factory=list)  # the roles that allow it, policy order


class Policy:
    def __init__(self, spec: PolicyFile, source: str = "<memory>") -> None:
        self.spec = spec
        self.source = source
        aliases = {**BUILTIN_ALIASES, **spec.aliases}
        by_name = {r.name: r for r in spec.roles}
        self.roles: dict[str, CompiledRole] = {}
        for role in spec.roles:
            grants: dict[str, str] = {}  # pattern -> how it is shown in decisions
            for name in self._lineage(role.name, by_name):
                via = "" if name == role.name else f" (inherited from {name})"
                for perm in by_name[name].permissions:
                    grants.setdefault(perm, perm + via)
                    for g in aliases.get(perm, ()):
                        grants.setdefault(g, f"{perm}={g}{via}")
            c = role.constraints
            self.roles[role.name] = CompiledRole(
                name=role.name,
                grants=[(shown, compile_grant(g)) for g, shown in grants.items()],
                models=glob_re(c.models) if c.models is not None else None,
                networks=[ipaddress.ip_network(n, strict=False) for n in c.source_cidrs]
                if c.source_cidrs is not None
                else None,
                max_tokens=c.max_tokens,
                rate_limit=c.rate_limit,
            )
        self.order = {name: i for i, name in enumerate(self.roles)}
        self.routes = spec.routes
        self._memo: dict[tuple[str, str], str | None] = {}

    @staticmethod
    def _lineage(name: str, by_name: dict[str, RoleSpec]) -> list[str]:
        out: list[str] = []
        stack = [name]
        while stack:
            n = stack.pop()
            if n not in out:
                out.append(n)
                stack.extend(reversed(by_name[n].inherits))
        return out

    def grant_for(self, role: CompiledRole, permission: str) -> str | None:
        """The first grant of ``role`` that covers ``permission`` (memoized; the set of permissions
        is bounded by routes x models, and the memo is capped anyway)."""
        key = (role.name, permission)
        memo = self._memo
        if key in memo:
            return memo[key]
        found = next((g for g, rx in role.grants if rx.match(permission)), None)
        if len(memo) > 8192:
            memo.clear()
        memo[key] = found
        return found

    def evaluate(
        self, roles: tuple[str, ...], permission: str, *, model: str | None, client_ip: str | None
    ) -> Verdict:
        known = sorted((r for r in roles if r in self.roles), key=self.order.__getitem__)
        allowed: list[CompiledRole] = []
        first_rule = ""
        denial = ""
        deny_rule = ""
        ip: Any = _UNSET  # parsed only when a role has a source-address rule
        for name in known:
            role = self.roles[name]
            grant = self.grant_for(role, permission)
            if grant is None:
                continue
            if model is not None and role.models is not None and not role.models.match(model):
                deny_rule = deny_rule or f"role:{name} constraint:models"
                denial = denial or f"role {name!r} may not use model {model!r}"
                continue
            if role.networks is not None:
                if ip is _UNSET:
                    ip = _parse_ip(client_ip)
                allowed_here = ip is not None and any(ip in n for n in role.networks)
            else:
                allowed_here = True
            if not allowed_here:
                deny_rule = deny_rule or f"role:{name} constraint:source_cidrs"
                denial = denial or f"role {name!r} is not allowed from source address {client_ip or '?'}"
                continue
            if not allowed:
                first_rule = f"role:{name} grant:{grant}"
            allowed.append(role)
        if allowed:
            return Verdict(True, first_rule, "", allowed)
        if deny_rule:
            return Verdict(False, deny_rule, denial)
        if not roles:
            reason = f"the caller has no role; {permission} is denied by default"
        elif not known:
            reason = f"none of the caller's roles ({', '.join(roles)}) is defined in the policy"
        else:
            reason = f"no role of the caller grants {permission}"
        return Verdict(False, "default-deny", reason)


_UNSET = object()


def _parse_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return parse_address(value) if value else None
