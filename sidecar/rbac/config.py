"""The ``rbac:`` config section."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from custos.section import Section


def default_policy_file() -> Path:
    """The repo's policies/rbac.yaml in a checkout, else the copy shipped inside the package."""
    repo = Path(__file__).resolve().parents[2] / "policies" / "rbac.yaml"
    if repo.exists():
        return repo
    return Path(__file__).resolve().parent / "default-policy.yaml"


class RbacConfig(Section):
    enabled: bool = Field(
        True,
        description="false: no authorization and no per-role rate limits (not for production); "
        "the failure limit has its own switch",
    )
    policy_file: Path = Field(default_factory=default_policy_file)
    reload_interval_s: float = Field(1.0, gt=0, le=3600, description="policy file mtime poll period")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of proxies whose X-Forwarded-For is believed for the client address "
        "(source_cidrs rules, the failure limit, audit); see sidecar.clientip",
    )
    redis_url: str | None = Field(
        None, description="shared rate limits across replicas, e.g. redis://host:6379/0"
    )
    redis_key_prefix: str = "custos:rl:"
    redis_timeout_s: float = Field(0.25, gt=0, description="after this the local limiter decides")
    # Failed requests per source address (stage `guard`): a token bucket per client IP, charged by
    # every request refused for authentication, authorization or validation (400/401/403/404/413/431,
    # and the guard's own 429). Checked before any token is verified.
    failure_limit_enabled: bool = Field(True, description="limit the rate of failing requests per source IP")
    failure_limit_per_minute: int = Field(60, ge=1, description="failed requests per minute per source IP")
    failure_burst: int = Field(30, ge=1, description="failed requests a source may make in a row")
    max_tracked_sources: int = Field(
        100_000, ge=100, description="source addresses tracked in memory (least recently seen evicted)"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        from ..clientip import parse_networks

        parse_networks(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value
