"""The redaction policy: an operator per entity type, custom detectors, who may see restored values.

``load_policy(path)`` validates a YAML file and reports every problem as ``file:line:col: field: reason``.
Without a file the built-in defaults below apply; ``policies/redaction.yaml`` spells them out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from custos.regex import UserRegexError
from custos.yamlfile import FileError, parse_yaml, read_yaml

from .detectors import (
    BUILTIN,
    ENTITY_TYPES,
    NAMES_ADDRESSES,
    Detector,
    Scanner,
    compile_custom_pattern,
    scoped_flags,
)
from .validators import VALIDATORS

OperatorName = Literal["mask", "placeholder", "hash", "drop", "keep", "replace"]
OPERATORS: tuple[str, ...] = ("mask", "placeholder", "hash", "drop", "keep", "replace")
RestoreRule = bool | list[str]
# The allow list is compared with every entity found: bounded like everything else a file can make us hold.
MAX_ALLOWED = 100_000
MAX_ALLOWED_LENGTH = 256


def _allowed_value(value: str) -> str:
    if not value.strip():
        raise ValueError("an empty value")
    if len(value) > MAX_ALLOWED_LENGTH:
        raise ValueError(f"longer than {MAX_ALLOWED_LENGTH} characters")
    return value


AllowedValue = Annotated[str, AfterValidator(_allowed_value)]


class PolicyError(FileError):
    """Policy file problems, phrased for a human: ``file:line:col: field: reason``, one per line."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntityRule(_Model):
    """What happens to one entity type. ``operator`` applies to prompts (and ``custos redact``);
    ``response`` to PII the model itself writes into an answer (defaults to ``operator``)."""

    operator: OperatorName = "placeholder"
    response: OperatorName | None = None
    enabled: bool = True
    keep_first: int = Field(3, ge=0, le=64, description="mask: characters kept at the start")
    keep_last: int = Field(4, ge=0, le=64, description="mask: characters kept at the end")
    mask_char: str = Field("*", min_length=1, max_length=1)
    hash_length: int = Field(12, ge=4, le=64, description="hash: hex characters of the HMAC kept")
    text: str = Field("[REDACTED]", description="replace: the fixed replacement")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # ``EMAIL: mask`` is short for ``EMAIL: {operator: mask}``.
        return {"operator": data} if isinstance(data, str) else data

    @property
    def response_operator(self) -> str:
        return self.response or self.operator


class CustomDetector(EntityRule):
    name: str = Field(description="entity type name, upper case, e.g. EMPLOYEE_ID")
    pattern: str
    validator: str | None = None
    context: list[str] = Field(default_factory=list, description="words that must appear shortly before")
    context_window: int = Field(40, ge=1, le=1000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,39}", value):
            raise ValueError("must be upper case letters, digits and _ (e.g. EMPLOYEE_ID)")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str, info: ValidationInfo) -> str:
        # RE2 syntax, as Prometheus: linear-time matching, so no pattern can stall the sidecar.
        compiled, _ = compile_custom_pattern(value, f"custom detector {info.data.get('name', '')}".rstrip())
        if compiled.match(""):
            raise ValueError("matches the empty string")
        return value

    @field_validator("validator")
    @classmethod
    def _validator(cls, value: str | None) -> str | None:
        if value is not None and value not in VALIDATORS:
            raise ValueError(f"unknown validator {value!r} (known: {', '.join(sorted(VALIDATORS))})")
        return value


class RestorePolicy(_Model):
    """Whether the caller gets the original values back in place of placeholders in the answer.

    Each rule is ``true`` (every type), ``false`` (none) or a list of entity types. A caller with
    several roles gets the union of what the listed roles allow; roles not listed fall back to
    ``default``. ``anonymous`` is for requests without an identity (identity stage off)."""

    default: RestoreRule = True
    anonymous: RestoreRule | None = None
    roles: dict[str, RestoreRule] = Field(default_factory=dict)


def _default_entities() -> dict[str, EntityRule]:
    # Prompts: reversible placeholders for everything, so the model never sees the values and the
    # caller still gets them back. Answers: the seed's phone mask (138****5678) for numbers the model
    # writes itself.
    rules = {t: EntityRule() for t in ENTITY_TYPES}
    for t in ("CN_PHONE", "CN_LANDLINE", "PHONE", "CN_ID", "CN_BANK_CARD", "CREDIT_CARD", "US_SSN", "IBAN"):
        rules[t] = EntityRule(operator="placeholder", response="mask")
    rules["EMAIL"] = EntityRule(operator="placeholder", response="mask", keep_first=1, keep_last=0)
    # Names, addresses and WeChat IDs: redacted in prompts (the model never sees the caller's); not
    # looked for in answers by default, where the model can only write back what it was given (our
    # placeholders, restored as allowed) or names it knows, and where this tier would scan every
    # streamed delta. `response: mask` (or any operator but keep) looks for them in answers too.
    rules["PERSON"] = EntityRule(operator="placeholder", response="keep", keep_first=1, keep_last=0)
    rules["ADDRESS"] = EntityRule(operator="placeholder", response="keep", keep_first=3, keep_last=0)
    rules["WECHAT"] = EntityRule(operator="placeholder", response="keep")
    return rules


class Policy(_Model):
    version: Literal[1] = 1
    default: EntityRule = Field(default_factory=EntityRule, description="for types without an entry")
    entities: dict[str, EntityRule] = Field(default_factory=_default_entities)
    custom: list[CustomDetector] = Field(default_factory=list)
    restore: RestorePolicy = Field(default_factory=RestorePolicy)
    allow: list[AllowedValue] = Field(
        default_factory=list,
        max_length=MAX_ALLOWED,
        description="values never redacted, whatever type finds them (a product or place a name rule "
        "takes for a person); compared whole, look-alike characters folded",
    )
    placeholder_format: str = "<{type}_{n}>"
    hash_format: str = "<{type}:{hash}>"

    @field_validator("entities", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        # Entries in the file override the defaults type by type; unlisted types keep theirs.
        if isinstance(value, dict):
            merged: dict[str, Any] = dict(_default_entities())
            merged.update(value)
            return merged
        return value

    @field_validator("placeholder_format")
    @classmethod
    def _placeholder_format(cls, value: str) -> str:
        if "{type}" not in value or "{n}" not in value:
            raise ValueError("must contain {type} and {n}, e.g. <{type}_{n}>")
        if value.index("{type}") > value.index("{n}") or value[0] not in "<[{(" or value.startswith("{type}"):
            raise ValueError("must start with a bracket and put {type} before {n}, e.g. <{type}_{n}>")
        return value

    @field_validator("hash_format")
    @classmethod
    def _hash_format(cls, value: str) -> str:
        if "{hash}" not in value:
            raise ValueError("must contain {hash}, e.g. <{type}:{hash}>")
        return value

    @model_validator(mode="after")
    def _known_types(self) -> Policy:
        custom = {c.name for c in self.custom}
        known = set(ENTITY_TYPES) | custom
        for name in self.entities:
            if name not in known:
                raise ValueError(
                    f"entities: unknown entity type {name!r} (built-in: {', '.join(ENTITY_TYPES)}; "
                    "custom types are declared under custom:)"
                )
        for rule in [self.restore.default, self.restore.anonymous, *self.restore.roles.values()]:
            if isinstance(rule, list):
                for name in rule:
                    if name not in known:
                        raise ValueError(f"restore: unknown entity type {name!r}")
        if self.custom:
            try:
                Scanner(
                    [
                        Detector(c.name.lower(), c.name, scoped_flags(c.pattern), builtin=False)
                        for c in self.custom
                    ]
                )
            except UserRegexError as exc:
                raise ValueError(f"custom: the patterns cannot be combined: {exc}") from None
        seen: set[str] = set()
        builtin_names = {d.name for d in (*BUILTIN, *NAMES_ADDRESSES)}
        for c in self.custom:
            if c.name in seen:
                raise ValueError(f"custom: detector {c.name!r} is declared twice")
            if c.name in ENTITY_TYPES or c.name.lower() in builtin_names:
                raise ValueError(f"custom: {c.name!r} is a built-in type; pick another name")
            seen.add(c.name)
        return self

    def rule(self, type_: str) -> EntityRule:
        rule = self.entities.get(type_)
        if rule is not None:
            return rule
        for c in self.custom:
            if c.name == type_:
                return c
        return self.default

    def restore_types(self, roles: tuple[str, ...] | None) -> frozenset[str] | bool:
        """True (all), False (none) or the entity types this caller may see restored."""
        r = self.restore
        if roles is None:
            rules: list[RestoreRule] = [r.anonymous if r.anonymous is not None else r.default]
        else:
            rules = [r.roles[role] for role in roles if role in r.roles] or [r.default]
        if any(rule is True for rule in rules):
            return True
        types = {t for rule in rules if isinstance(rule, list) for t in rule}
        return frozenset(types) if types else False


# -- loading -------------------------------------------------------------------------------------
def _describe(err: ErrorDetails) -> str | None:
    # The list of operators reads better than pydantic's literal message.
    if err["type"] == "literal_error" and err["loc"][-1:] in (("operator",), ("response",)):
        return f"{err['input']!r} is not an operator (one of: {', '.join(OPERATORS)})"
    return None


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    return parse_yaml(text, source, error=PolicyError).validate(Policy, describe=_describe)


def load_policy(path: str | Path | None) -> Policy:
    if path is None:
        return Policy()
    doc = read_yaml(path, what="redaction policy file", error=PolicyError)
    return doc.validate(Policy, describe=_describe)
