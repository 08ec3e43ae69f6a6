"""The ``audit:`` config section: spool, tamper evidence and shipping to Elasticsearch."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from custos.section import Section


class ElasticsearchConfig(Section):
    """Where the shipper sends records. Empty ``hosts`` = no shipping (the local spool is kept either way)."""

    hosts: list[str] = Field(default_factory=list, description="e.g. [https://es1:9200, https://es2:9200]")
    index_mode: Literal["daily", "data_stream"] = Field(
        "daily", description="daily indices <index>-YYYY.MM.DD (any cluster) or one data stream named <index>"
    )
    index: str = Field("custos-audit", description="daily index prefix, or the data stream name")
    checkpoint_index: str = Field("custos-checkpoints", description="signed chain checkpoints")
    api_key: SecretStr | None = Field(None, description="base64 'id:key' API key (or use username/password)")
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = Field(None, description="PEM CA bundle for https hosts")
    verify_certs: bool = True
    request_timeout_s: float = Field(30.0, gt=0)
    batch_size: int = Field(500, ge=1, le=10_000, description="records per bulk request")
    batch_max_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="bytes per bulk request")
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    setup_on_start: bool = Field(True, description="install the index template at startup if it is missing")

    @field_validator("hosts")
    @classmethod
    def _urls(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host.startswith(("http://", "https://")):
                raise ValueError(f"host {host!r} must be an http:// or https:// URL")
        return hosts

    @field_validator("index", "checkpoint_index")
    @classmethod
    def _index_name(cls, name: str) -> str:
        if not name or name != name.lower() or any(c in name for c in ' "*\\/,|<>?#:') or name[0] in "-_+.":
            raise ValueError(
                "must be a lower-case Elasticsearch index name without spaces or * \\ / , | < > ? # :"
            )
        return name

    @model_validator(mode="after")
    def _auth(self) -> ElasticsearchConfig:
        if self.api_key is not None and self.username is not None:
            raise ValueError("set either api_key or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class RetentionConfig(Section):
    """Local retention of the spool, per worker (each worker's chain on its own, like ``max_bytes``).
    Only sealed segments (not the one being written) that a signed checkpoint covers are pruned, and
    with a sink configured only once it acknowledged them (with ``archive_dir``: once archived); each
    pruning writes a signed note into ``checkpoints.jsonl`` first, so ``custos audit verify`` shows the
    gap as removed by policy."""

    enabled: bool = Field(
        True,
        description="prune the oldest prunable segments when room is needed (and per max_age_days / "
        "max_bytes); false: keep every record until shipped, then when_full applies",
    )
    max_age_days: float = Field(
        0, ge=0, description="also prune segments whose newest record is older than this; 0: no age limit"
    )
    max_bytes: int = Field(
        0, ge=0, description="also prune down to this many bytes per worker; 0: only at audit.max_bytes"
    )


class AuditConfig(Section):
    enabled: bool = True
    spool_dir: Path | None = Field(None, description="default: <state.dir>/audit/spool")
    signing_key: Path | None = Field(
        None,
        description="Ed25519 private key (PEM, 0600); default <state.dir>/audit/signing.key, made if absent",
    )
    fsync: Literal["always", "interval", "never"] = Field(
        "interval",
        description="always: every batch before it is confirmed; interval: every fsync_interval_ms",
    )
    fsync_interval_ms: int = Field(200, ge=1, le=60_000)
    max_bytes: int = Field(1024**3, ge=64 * 1024, description="cap of each worker's spool on disk")
    segment_bytes: int = Field(16 * 1024**2, ge=4096, description="spool file size before it rolls over")
    when_full: Literal["block", "drop_oldest", "fail_closed"] = Field(
        "block",
        description="after shipped files are pruned: wait for room / drop the oldest / refuse requests",
    )
    block_timeout_s: float = Field(
        30.0, gt=0, description="when_full=block: a request waits this long, then 503"
    )
    fail_closed: bool = Field(
        False, description="503 when records cannot be written (disk error, full spool)"
    )
    rotate_key_every_s: float | None = Field(
        None,
        gt=0,
        description="rotate the signing key when it is older than this (259200 = 72 h); the retired "
        "public key stays in <key dir>/keyring/ so verify proves the whole trail; null: only by hand",
    )
    store_redacted_text: bool = Field(False, description="store the prompt and answer text (after redaction)")
    max_text_chars: int = Field(32_768, ge=0, description="cap of each stored text")
    max_record_bytes: int = Field(
        16 * 1024,
        ge=4096,
        le=16 * 1024**2,
        description="cap of one serialized record, stored texts included; longer fields are cut with a "
        "marker and listed in custos.truncated",
    )
    checkpoint_every: int = Field(1000, ge=1, description="signed checkpoint every N records ...")
    checkpoint_interval_s: float = Field(
        60.0, gt=0, description="... or every T seconds, whichever comes first"
    )
    elasticsearch: ElasticsearchConfig = Field(default_factory=ElasticsearchConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    compression: Literal["gzip", "none"] = Field(
        "gzip", description="sealed spool segments are compressed (seg-<seq>.jsonl.gz); none: kept as written"
    )
    archive_dir: Path | None = Field(
        None,
        description="copy each sealed segment (and its checkpoints) here before it may be pruned; "
        "null: no archive",
    )

    def spool_path(self, state_dir: Path) -> Path:
        return Path(self.spool_dir).expanduser() if self.spool_dir else state_dir / "audit" / "spool"

    def key_path(self, state_dir: Path) -> Path:
        return (
            Path(self.signing_key).expanduser() if self.signing_key else state_dir / "audit" / "signing.key"
        )
