"""Permissions are ``resource:action[:target]``: ``model:invoke:deepseek-7b``, ``model:list``,
``audit:read``. Grants may use wildcards: ``*`` alone grants everything; a ``*`` segment at the end
covers the rest (``model:*`` covers ``model:invoke:x``); ``*`` inside the target is a glob
(``model:invoke:llama-*``). A grant without a target (``model:invoke``) covers every target.
Targets may contain ``:`` (``model:invoke:llama3:8b``).

Globs in targets and in ``models:`` constraints never cross ``/`` unless the policy says so: ``*``
matches within one path segment (``org/*`` covers ``org/a`` but not ``org/a/b``; ``allowed-*`` does not
cover ``allowed-x/secret``), ``**`` matches across segments. A target or model pattern that is ``*``
alone still means every target or model.

Model names are checked before any of this (``model_name_error``): only names of the shape below
reach a glob, so ``..`` segments, control characters and whitespace never do.
"""

from __future__ import annotations

import re

_SEGMENT = r"(?:\*|[a-z][a-z0-9_.-]*)"
GRANT_RE = re.compile(rf"^(?:\*|{_SEGMENT}(?::{_SEGMENT}(?::[^\s]+)?)?)$")
REQUIRED_RE = re.compile(r"^[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*(?::[^\s]+)?$")


# Up to four "/"-separated segments of [A-Za-z0-9._:@+-], each starting with a letter or digit.
_NAME_PART = r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}"
MODEL_NAME_RE = re.compile(rf"{_NAME_PART}(?:/{_NAME_PART}){{0,3}}")


def model_name_error(name: object) -> str | None:
    """Why ``name`` is not an acceptable model name, or None. Never echoes the name."""
    if not isinstance(name, str):
        return "must be a string"
    if not MODEL_NAME_RE.fullmatch(name):
        return (
            "must be 1-4 '/'-separated parts of letters, digits and . _ : @ + - "
            "(each part starting with a letter or digit, at most 128 characters)"
        )
    if ".." in name:
        return "must not contain '..'"
    return None


def _glob(pattern: str) -> str:
    """A ``*`` glob as a regex: ``*`` stays within a ``/`` segment, ``**`` crosses segments; neither
    matches whitespace or line breaks."""
    if pattern in ("*", "**"):
        return ".*"
    return r"\S*".join(r"[^/\s]*".join(re.escape(p) for p in part.split("*")) for part in pattern.split("**"))


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
            out.append(_glob(part))
    pattern = ":".join(out)
    if len(parts) == 2 and parts[1] != "*":
        pattern += "(?::.+)?"  # no target: every target of this action
    return re.compile(rf"^{pattern}\Z", re.S)


def glob_re(patterns: list[str]) -> re.Pattern[str]:
    """One regex for a list of ``*`` globs (model names)."""
    alts = [_glob(pat) for pat in patterns]
    return re.compile("^(?:" + "|".join(alts) + r")\Z", re.S)
