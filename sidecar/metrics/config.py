"""The ``metrics:`` config section."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from custos.section import Section


class MetricsConfig(Section):
    require_token: bool = Field(
        True,
        description="/metrics and /metrics/upstream need a Bearer token whose roles grant metrics:read "
        "(Prometheus: authorization.credentials_file); false serves them to anyone who reaches the port",
    )
    enabled: bool = Field(
        True, description="count requests on /metrics (the endpoint itself is always served)"
    )
    max_models: int = Field(
        20,
        ge=1,
        le=1000,
        description="distinct model label values per process; later models count as 'other'",
    )
    models: list[str] = Field(
        default_factory=list,
        description="models that always get their own label value (the cap does not apply to them)",
    )
    roles: list[str] = Field(
        default_factory=list,
        description="role label values; empty: the identity's first role, capped by max_roles",
    )
    max_roles: int = Field(20, ge=1, le=1000, description="distinct role label values when 'roles' is empty")
    max_label_values: int = Field(
        64,
        ge=1,
        le=10000,
        description="cap for the other label sets (auth reasons, permissions, entity types)",
    )
    multiprocess_dir: Path | None = Field(
        None,
        description="prometheus-client multiprocess directory used when server.workers > 1; "
        "emptied at start. Default: a fresh temporary directory per `custos serve`",
    )
