"""One validated YAML file with environment overrides.

``load_config(path)`` reads the YAML file (or nothing: the defaults serve the embedded setup), applies
``CUSTOS_<SECTION>__<FIELD>=value`` environment overrides (values parsed as YAML scalars, so
``CUSTOS_SERVER__PORT=9090`` is an int) and validates everything into typed models. Any problem raises
``ConfigError`` naming the place (file, line and column, or the environment variable), the field, the
value and what is wrong.

Each feature owns its section model in its own module; this file only assembles them.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator

from alerting.config import AlertingConfig
from custos.errors import ConfigError
from custos.section import Section
from custos.yamlfile import FileError, Problem, YamlDocument, read_yaml
from gpu.config import GpuConfig
from inference.config import InferenceConfig

from .audit.config import AuditConfig
from .auth.config import AuthConfig
from .cpus import usable_cpus
from .endpoints import EndpointsConfig
from .metrics.config import MetricsConfig
from .rbac.config import RbacConfig
from .redaction.config import RedactionConfig
from .tls import TLSConfig
from .tracing.config import TracingConfig

ENV_PREFIX = "CUSTOS_"
ENV_CONFIG_PATH = "CUSTOS_CONFIG"
# Variables with the prefix that are not config overrides.
_ENV_NOT_OVERRIDES = {"CUSTOS_CONFIG", "CUSTOS_CACHE", "CUSTOS_VENV", "CUSTOS_PYTHON"}


class ServerConfig(Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="uvicorn worker processes; 'auto': one per usable core (affinity and cgroup quota)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="larger bodies get 413")
    body_timeout_s: float = Field(
        60.0, gt=0, description="the whole request body must arrive within this time, else 408"
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, le=1024 * 1024, description="request line + headers; larger heads get 431"
    )
    max_headers: int = Field(100, ge=8, le=10_000, description="header fields per request; more get 431")
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request head must be complete this long after its first byte, else 408"
    )
    admin_enabled: bool = True
    tls: TLSConfig = Field(default_factory=TLSConfig)

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: Any) -> Any:
        return min(64, usable_cpus()) if value == "auto" else value


class UpstreamConfig(Section):
    url: HttpUrl = HttpUrl("http://127.0.0.1:8000")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0, description="max wait between bytes from upstream")
    max_connections: int = Field(256, ge=1)
    keepalive_timeout_s: float = Field(60.0, gt=0)
    ready_timeout_s: float = Field(2.0, gt=0, description="timeout of the /ready upstream check")
    # Credentials and TLS towards the upstream (the caller's own Authorization never goes there).
    api_key: SecretStr | None = Field(
        None, description="sent upstream as 'Authorization: Bearer <key>' (vLLM --api-key)"
    )
    api_key_file: Path | None = Field(None, description="file holding the upstream API key (first line)")
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra headers sent with every upstream request"
    )
    ca_bundle: Path | None = Field(
        None, description="PEM CA bundle that signs an https upstream's certificate"
    )
    client_cert: Path | None = Field(None, description="PEM client certificate (chain) for mutual TLS")
    client_key: Path | None = Field(None, description="PEM private key of client_cert")
    verify_tls: bool = Field(True, description="verify an https upstream's certificate and host name")

    @field_validator("api_key_file", "ca_bundle", "client_cert", "client_key")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            value = value.expanduser()
            if not value.is_file():
                raise ValueError(f"file {str(value)!r} does not exist or is not a file")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name) or "\n" in text or "\r" in text:
                raise ValueError(f"header {name!r} is not a valid header name/value")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"header {name!r} is set by the sidecar itself")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> UpstreamConfig:
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set api_key or api_key_file, not both")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self

    def bearer(self) -> str | None:
        """The upstream API key, read once at startup (a file is read when the client is built)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            key = self.api_key_file.read_text(encoding="utf-8").strip().splitlines()
            return key[0].strip() if key else None
        return None

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: HttpUrl) -> HttpUrl:
        if value.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value


class StateConfig(Section):
    dir: Path = Field(
        default_factory=lambda: Path(
            os.environ.get("CUSTOS_STATE_DIR", "~/.local/state/custos")
        ).expanduser(),
        description="keys, audit spool, alert state",
    )

    @field_validator("dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()


class Config(Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    endpoints: EndpointsConfig = Field(default_factory=EndpointsConfig)
    # Feature sections (one line each; the models live in the feature's own module):
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rbac: RbacConfig = Field(default_factory=RbacConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def env_overrides(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _ENV_NOT_OVERRIDES or "__" not in key:
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        node = overrides
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = _parse_scalar(raw)
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_environment(problem: Problem, overrides: dict[str, Any], source: str) -> Problem:
    """A problem with a value that an environment variable set names the variable, not the file."""
    node: Any = overrides
    for i, part in enumerate(problem.loc if problem.file == source else ()):
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
        if not isinstance(node, dict):
            variable = ENV_PREFIX + "__".join(str(p).upper() for p in problem.loc[: i + 1])
            return replace(problem, file=variable, line=None, col=None)
    return problem


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(ENV_CONFIG_PATH) or None
    overrides = env_overrides(environ)
    doc = YamlDocument.from_data({}, "environment")
    try:
        if path is not None:
            doc = read_yaml(path, what="config file")
        if overrides and isinstance(doc.data, dict | None):
            doc = replace(doc, data=_merge(doc.data or {}, overrides))
        return doc.validate(Config)
    except FileError as exc:
        problems = [_from_environment(p, overrides, doc.source) for p in exc.problems]
        raise ConfigError("\n".join(map(str, problems))) from None
