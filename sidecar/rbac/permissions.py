"""Permissions are ``resource:action[:target]``: ``model:invoke:deepseek-7b``, ``model:list``,
``audit:read``. Grants may use wildcards: ``*`` alone grants everything; a ``*`` segment at the end
covers the rest (``model:*`` covers ``model:invoke:x``); ``*`` inside the target is a glob
(``model:invoke:llama-*``). A grant without a target (``model:invoke``) covers every target.
Targets may contain ``:`` (``model:invoke:llama3:8b``).
"""

from __future__ import annotations

import re

_SEGMENT = r"(?:\*|[a-z][a-z0-9_.-]*)"
GRANT_RE = re.compile(rf"^(?:\*|{_SEGMENT}(?::{_SEGMENT}(?::[^\s]+)?)?)$")
REQUIRED_RE = re.compile(r"^[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*(?::[^\s]+)?$")


def grant_error(grant: str) -> str | None:
    """Why ``grant`` is not a valid permission pattern, or None."""
    if not isinstance(grant, str) or not grant:
        return "a permission must be a non-empty string"
    if not GRANT_RE.match(grant):
        return (
            f"{grant!r} is not resource:action[:target] (lower-case resource and action, "
            "'*' wildcards, no spaces)"
        )
    parts = grant.split(":", 2)
    if len(parts) == 1 and grant != "*":
        return f"{grant!r} has no action; write {grant}:* for every action"
    return None


def compile_grant(grant: str) -> re.Pattern[str]:
    parts = grant.split(":", 2)
    if grant == "*":
        return re.compile(r".*", re.S)
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if i < 2:
            if part == "*":
                out.append(".*" if last else "[^:]+")
            else:
                out.append(re.escape(part))
        else:
            out.append(".*".join(re.escape(p) for p in part.split("*")))
    pattern = ":".join(out)
    if len(parts) == 2 and parts[1] != "*":
        pattern += "(?::.+)?"  # no target: every target of this action
    return re.compile(f"^{pattern}$", re.S)


def glob_re(patterns: list[str]) -> re.Pattern[str]:
    """One regex for a list of ``*`` globs (model names)."""
    alts = [".*".join(re.escape(p) for p in pat.split("*")) for pat in patterns]
    return re.compile("^(?:" + "|".join(alts) + ")$", re.S)
