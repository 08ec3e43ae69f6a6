"""The ``redaction:`` config section."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from custos.section import Section

from .policy import load_policy


class RedactionConfig(Section):
    enabled: bool = True
    policy_file: Path | None = Field(
        None, description="redaction policy YAML (default: built-in policy, as in policies/redaction.yaml)"
    )
    request: bool = Field(True, description="redact prompts/inputs before they reach the model")
    response: bool = Field(True, description="redact answers and streams (PII the model writes)")
    restore: bool = Field(True, description="put original values back in place of placeholders in answers")
    hash_key: SecretStr | None = Field(None, description="HMAC key of the hash operator (default: key file)")
    hash_key_file: Path | None = Field(
        None,
        description="HMAC key file, created with mode 0600 on first run (default: <state.dir>/redaction.key)",
    )
    max_holdback_chars: int = Field(
        16384, ge=64, le=1 << 20, description="streams: longest tail held back waiting for an entity to end"
    )
    max_request_chars: int = Field(
        2_000_000,
        ge=1024,
        le=1 << 30,
        description="requests: most characters of text (strings and keys) inspected in one body; more: 413",
    )
    max_strings: int = Field(
        100_000,
        ge=16,
        le=1 << 24,
        description="requests: most strings and keys inspected in one body; more: 413",
    )
    max_depth: int = Field(
        64, ge=8, le=256, description="requests: deepest nesting of objects and lists inspected; deeper: 413"
    )

    @field_validator("policy_file")
    @classmethod
    def _policy_loads(cls, value: Path | None) -> Path | None:
        # Fail at config load (exit 2 with the policy file's own file:line:col lines: a PolicyError is a
        # ValueError), not in a worker at startup.
        if value is not None:
            load_policy(value)
        return value
