"""The ``rbac:`` config section."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from ..section import Section


def default_policy_file() -> Path:
    """The repo's policies/rbac.yaml in a checkout, else the copy shipped inside the package."""
    repo = Path(__file__).resolve().parents[2] / "policies" / "rbac.yaml"
    if repo.exists():
        return repo
    return Path(__file__).resolve().parent / "default-policy.yaml"


class RbacConfig(Section):
    enabled: bool = Field(True, description="false: no authorization and no rate limits (not for production)")
    policy_file: Path = Field(default_factory=default_policy_file)
    reload_interval_s: float = Field(1.0, gt=0, le=3600, description="policy file mtime poll period")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of proxies whose X-Forwarded-For is believed for the source-IP rule",
    )
    redis_url: str | None = Field(
        None, description="shared rate limits across replicas, e.g. redis://host:6379/0"
    )
    redis_key_prefix: str = "custos:rl:"
    redis_timeout_s: float = Field(0.25, gt=0, description="after this the local limiter decides")

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value
