"""Elasticsearch side of the audit trail: client options, index template, ILM policy, setup.

Explicit mappings, ``dynamic: false`` at the top: a field we do not know is kept in ``_source`` but
never creates a mapping by surprise; ``llm.redactions.<TYPE>`` counts are mapped as ``long`` by a
dynamic template. Daily indices (``<index>-YYYY.MM.DD``, picked from the record's own ``@timestamp``
so a retry always targets the same index) work on every cluster; ``data_stream`` mode needs a cluster
with data streams (the default distribution).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .config import ElasticsearchConfig

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def mask_userinfo(text: str) -> str:
    """URLs in ``text`` with their credentials masked: ``https://u:pw@es:9200`` -> ``https://***@es:9200``."""
    return _USERINFO.sub(r"\1***@", text)


# Templates and the ILM policy are named after the configured index names, so several
# installations (or test runs) can share one cluster.

_KW = {"type": "keyword", "ignore_above": 1024}
_LONG = {"type": "long"}
_DATE = {"type": "date"}
_BOOL = {"type": "boolean"}
_TEXT = {"type": "text"}


def _obj(**props: Any) -> dict[str, Any]:
    return {"properties": props}


RECORD_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "dynamic_templates": [
        {"redaction_counts": {"path_match": "llm.redactions.*", "mapping": {"type": "long"}}},
    ],
    "properties": {
        "@timestamp": _DATE,
        "event": _obj(
            id=_KW,
            kind=_KW,
            category=_KW,
            type=_KW,
            dataset=_KW,
            module=_KW,
            action=_KW,
            outcome=_KW,
            duration=_LONG,
            start=_DATE,
            end=_DATE,
            reason=_KW,
        ),
        "user": _obj(id=_KW, roles=_KW),
        "source": _obj(ip={"type": "ip"}),
        "http": _obj(
            request=_obj(method=_KW, body=_obj(bytes=_LONG)),
            response=_obj(status_code=_LONG, body=_obj(bytes=_LONG)),
        ),
        "url": _obj(path=_KW),
        "trace": _obj(id=_KW),
        "error": _obj(type=_KW, code=_KW, message=_TEXT),
        "llm": _obj(
            operation=_obj(name=_KW),
            request=_obj(model=_KW, stream=_BOOL, input_chars=_LONG),
            usage=_obj(input_tokens=_LONG, output_tokens=_LONG),
            response=_obj(finish_reasons=_KW),
            redactions={"type": "object", "dynamic": True},
            redactions_total=_LONG,
            authz=_obj(decision=_KW, rule=_KW, permission=_KW, reason=_KW),
            prompt=_obj(sha256=_KW, text=_TEXT),
            output=_obj(sha256=_KW, text=_TEXT),
            cancelled=_BOOL,
        ),
        "audit": _obj(chain_id=_KW, seq=_LONG, prev_hash=_KW, hash=_KW, schema=_LONG),
        "custos": _obj(
            truncated=_KW,
            record_error=_KW,
            # Records the trail writes about itself: losses and unclean restarts.
            loss=_obj(count=_LONG, reason=_KW, to=_LONG, **{"from": _LONG}),
            restart=_obj(
                clean=_BOOL, previous_seq=_LONG, previous_hash=_KW, checkpoint_seq=_LONG, unsigned=_LONG
            ),
        ),
    },
}

CHECKPOINT_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "audit": _obj(chain_id=_KW, seq=_LONG, hash=_KW, key_id=_KW, type=_KW, **{"from": _LONG}),
        "signature": {"type": "keyword", "index": False, "doc_values": False},
    },
}

# Data streams roll over; daily indices are simply deleted when old. Both keep a year by default.
ILM_POLICY_DATA_STREAM: dict[str, Any] = {
    "policy": {
        "_meta": {"description": "Custos audit trail: roll over daily or at 50 GB, keep 365 days"},
        "phases": {
            "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}},
            "warm": {"min_age": "7d", "actions": {"forcemerge": {"max_num_segments": 1}}},
            "delete": {"min_age": "365d", "actions": {"delete": {}}},
        },
    }
}
ILM_POLICY_DAILY: dict[str, Any] = {
    "policy": {
        "_meta": {"description": "Custos audit trail (daily indices): keep 365 days"},
        "phases": {
            "hot": {"actions": {}},
            "warm": {"min_age": "7d", "actions": {"forcemerge": {"max_num_segments": 1}}},
            "delete": {"min_age": "365d", "actions": {"delete": {}}},
        },
    }
}


def index_template(cfg: ElasticsearchConfig, *, ilm: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {"index": {"number_of_shards": 1, "refresh_interval": "5s"}}
    if ilm:
        settings["index"]["lifecycle"] = {"name": cfg.index}
    body: dict[str, Any] = {
        "priority": 500,  # above the built-in logs-*-* template of the default distribution
        "template": {"settings": settings, "mappings": RECORD_MAPPINGS},
        "_meta": {"managed_by": "custos", "description": "Custos tamper-evident audit records (ECS)"},
    }
    if cfg.index_mode == "data_stream":
        body["index_patterns"] = [cfg.index]
        body["data_stream"] = {}
    else:
        body["index_patterns"] = [f"{cfg.index}-*"]
    return body


def checkpoint_template(cfg: ElasticsearchConfig) -> dict[str, Any]:
    return {
        "index_patterns": [cfg.checkpoint_index],
        "priority": 501,
        "template": {"settings": {"index": {"number_of_shards": 1}}, "mappings": CHECKPOINT_MAPPINGS},
        "_meta": {"managed_by": "custos", "description": "Custos signed audit checkpoints"},
    }


def record_index(cfg: ElasticsearchConfig, timestamp: str) -> str:
    if cfg.index_mode == "data_stream":
        return cfg.index
    return f"{cfg.index}-{timestamp[0:4]}.{timestamp[5:7]}.{timestamp[8:10]}"


def search_pattern(cfg: ElasticsearchConfig) -> str:
    return cfg.index if cfg.index_mode == "data_stream" else f"{cfg.index}-*"


def client_options(cfg: ElasticsearchConfig) -> dict[str, Any]:
    """Keyword arguments for ``Elasticsearch``/``AsyncElasticsearch``. The shipper does its own retries."""
    opts: dict[str, Any] = {
        "hosts": list(cfg.hosts),
        "request_timeout": cfg.request_timeout_s,
        "max_retries": 0,
        "retry_on_timeout": False,
        "verify_certs": cfg.verify_certs,
        # A node that failed is retried on the shipper's own backoff, not parked for minutes.
        "max_dead_node_backoff": cfg.backoff_max_s,
    }
    if cfg.ca_certs is not None:
        opts["ca_certs"] = str(cfg.ca_certs)
    if not cfg.verify_certs:
        opts["ssl_show_warn"] = False
    if cfg.api_key is not None:
        opts["api_key"] = cfg.api_key.get_secret_value()
    elif cfg.username is not None and cfg.password is not None:
        opts["basic_auth"] = (cfg.username, cfg.password.get_secret_value())
    return opts


def has_ilm(client: Any) -> bool:
    try:
        client.ilm.get_status()
    except Exception:
        return False
    return True


def setup(client: Any, cfg: ElasticsearchConfig, *, with_ilm: bool | None = None) -> list[str]:
    """Install the ILM policy (when the cluster has ILM), the index templates and the checkpoint index.
    Idempotent. Returns what was done, one line each."""
    done: list[str] = []
    ilm = has_ilm(client) if with_ilm is None else with_ilm
    if ilm:
        policy = ILM_POLICY_DATA_STREAM if cfg.index_mode == "data_stream" else ILM_POLICY_DAILY
        client.ilm.put_lifecycle(name=cfg.index, policy=policy["policy"])
        done.append(f"ILM policy {cfg.index}")
    else:
        done.append("ILM not available on this cluster: skipped the lifecycle policy")
    client.indices.put_index_template(name=cfg.index, **index_template(cfg, ilm=ilm))
    done.append(f"index template {cfg.index} for {search_pattern(cfg)} ({cfg.index_mode})")
    client.indices.put_index_template(name=cfg.checkpoint_index, **checkpoint_template(cfg))
    done.append(f"index template {cfg.checkpoint_index} for {cfg.checkpoint_index}")
    if cfg.index_mode == "data_stream" and not client.indices.exists(index=cfg.index):
        client.indices.create_data_stream(name=cfg.index)
        done.append(f"data stream {cfg.index}")
    return done


def export(cfg: ElasticsearchConfig, directory: Path) -> list[Path]:
    """Write the template and policy JSON files (for clusters managed by other tools)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        f"{cfg.index}.index-template.json": index_template(cfg, ilm=True),
        f"{cfg.checkpoint_index}.index-template.json": checkpoint_template(cfg),
        f"{cfg.index}.ilm-policy.json": ILM_POLICY_DATA_STREAM
        if cfg.index_mode == "data_stream"
        else ILM_POLICY_DAILY,
    }
    out = []
    for name, body in files.items():
        path = directory / name
        path.write_text(json.dumps(body, indent=2) + "\n")
        out.append(path)
    return out
