"""The ``auth:`` config section: which keys the sidecar trusts and how it reads claims."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, field_validator, model_validator

from custos.section import Section

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512"
]


class KeyConfig(Section):
    """One static key: a PEM public key (or certificate) or an HMAC secret, read from a file."""

    kid: str | None = Field(None, description="key id; tokens naming another kid do not use this key")
    path: Path = Field(description="PEM public key / X.509 certificate, or the raw secret for HS*")
    type: Literal["public_key", "secret"] = "public_key"
    algorithms: list[Algorithm] = Field(default_factory=list, description="allow-list; empty = by key type")
    issuer: str | None = Field(None, description="tokens verified by this key must carry this iss")

    @model_validator(mode="after")
    def _algorithms_fit_type(self) -> KeyConfig:
        for alg in self.algorithms:
            if self.type == "secret" and alg not in HMAC_ALGORITHMS:
                raise ValueError(f"algorithm {alg} needs a public key, but this key is a secret")
            if self.type == "public_key" and alg in HMAC_ALGORITHMS:
                # Algorithm confusion: a public key must never be used as an HMAC secret.
                raise ValueError(f"algorithm {alg} is for secrets only, not for public keys")
        return self


class JwksConfig(Section):
    """A JSON Web Key Set fetched from the identity provider (Keycloak, Okta, Azure AD, Auth0...)."""

    url: HttpUrl
    algorithms: list[Algorithm] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    issuer: str | None = Field(None, description="tokens verified by this set's keys must carry this iss")
    refresh_interval_s: float = Field(300.0, ge=5, description="periodic background refresh")
    min_refresh_interval_s: float = Field(
        10.0, ge=0, description="an unknown kid triggers a refetch at most this often"
    )
    timeout_s: float = Field(5.0, gt=0)

    @field_validator("algorithms")
    @classmethod
    def _no_hmac(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a in HMAC_ALGORITHMS]
        if bad:
            raise ValueError(f"{bad[0]} is not allowed for JWKS keys (HMAC secrets never come from a URL)")
        return value


class AuthConfig(Section):
    enabled: bool = Field(True, description="false: every request gets the anonymous identity")
    anonymous_roles: list[str] = Field(default_factory=list, description="roles of callers when disabled")
    dev_key: bool = Field(True, description="trust the local dev key in the state directory (custos token)")
    dev_key_algorithm: Literal["EdDSA", "ES256"] = "EdDSA"
    dev_key_overlap_s: float = Field(
        86400.0, ge=0, description="after a rotation, tokens of the retired dev key are accepted this long"
    )
    dev_key_rotate_every_s: float | None = Field(
        None,
        gt=0,
        description="rotate the dev key when it is older than this (e.g. 259200 = 72 h); null: only by hand",
    )
    dev_key_check_interval_s: float = Field(
        5.0, gt=0, le=3600, description="how often a running sidecar looks for a rotated dev key"
    )
    keys: list[KeyConfig] = Field(default_factory=list)
    jwks: list[JwksConfig] = Field(default_factory=list)
    issuer: list[str] = Field(default_factory=list, description="accepted iss values; empty = not checked")
    audience: list[str] = Field(default_factory=list, description="accepted aud values; empty = not checked")
    leeway_s: float = Field(30.0, ge=0, le=600, description="clock skew allowed on exp, nbf, iat")
    max_token_bytes: int = Field(8192, ge=256, le=65536, description="longer tokens are rejected unparsed")
    subject_claim: str = "sub"
    roles_claim: str = Field("roles", description="dotted path, e.g. realm_access.roles or groups")
    role_mapping: dict[str, list[str]] = Field(
        default_factory=dict, description="IdP group -> Custos roles; unmapped groups pass through as-is"
    )
    map_unmapped: bool = Field(True, description="false: groups missing from role_mapping are dropped")
    cache_size: int = Field(10000, ge=0, description="verified tokens kept (LRU); 0 disables the cache")

    @field_validator("issuer", "audience", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value
