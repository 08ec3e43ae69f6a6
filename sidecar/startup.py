"""What ``custos serve`` tells the operator once at start: a summary of the setup in force and loud
warnings about settings that are fine on a laptop and dangerous anywhere else.

``summary(config)`` and ``warnings(config)`` return plain lines (also used by tests and by
``custos config check``); ``log_startup`` writes them to the log, the warnings at WARNING level.
Nothing here touches the network or creates files.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .config import Config

log = logging.getLogger("custos.startup")

_REPO = Path(__file__).resolve().parents[1]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: may resolve to anything


def _safe_url(url: str) -> str:
    """``url`` without credentials (user:password@ is shown as ****@)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, f"****@{host}", parts.path, parts.query, parts.fragment))
    return url


def _auth_line(config: Config) -> str:
    auth = config.auth
    if not auth.enabled:
        roles = ", ".join(auth.anonymous_roles) or "none"
        return f"auth: DISABLED, every caller is anonymous with roles [{roles}]"
    sources: list[str] = []
    if auth.dev_key:
        from .auth.devkey import dev_key_path

        sources.append(f"dev key {dev_key_path(config.state.dir, auth.dev_key_algorithm)} (custos token)")
    for key in auth.keys:
        sources.append(f"{key.type} {key.path}" + (f" (kid {key.kid})" if key.kid else ""))
    for jwks in auth.jwks:
        sources.append(f"JWKS {_safe_url(str(jwks.url))}")
    if not sources:
        sources.append("NONE (every token will be refused)")
    extra = []
    if auth.issuer:
        extra.append(f"issuer {', '.join(auth.issuer)}")
    if auth.audience:
        extra.append(f"audience {', '.join(auth.audience)}")
    extra.append(f"roles from claim {auth.roles_claim!r}")
    if auth.role_mapping:
        extra.append(f"{len(auth.role_mapping)} role mapping(s)")
    return f"auth: JWT; keys: {'; '.join(sources)}; {', '.join(extra)}"


def _policy_line(config: Config) -> str:
    rbac = config.rbac
    if not rbac.enabled:
        return "rbac: DISABLED, every authenticated caller may do everything"
    path = Path(rbac.policy_file)
    where = f"rbac: policy file {path}"
    try:
        inside_repo = path.resolve().is_relative_to(_REPO) and (_REPO / ".git").exists()
    except OSError:
        inside_repo = False
    if inside_repo:
        where += " (the repository's default: copy it to /etc/custos/ and set rbac.policy_file)"
    if rbac.trusted_proxies:
        where += f"; X-Forwarded-For trusted from {', '.join(rbac.trusted_proxies)}"
    return where


def _audit_line(config: Config) -> str:
    audit = config.audit
    if not audit.enabled:
        return "audit: DISABLED (no sink: requests leave no record)"
    spool = audit.spool_path(config.state.dir)
    es = audit.elasticsearch
    if es.hosts:
        sink = f"Elasticsearch {', '.join(_safe_url(h) for h in es.hosts)} (index {es.index})"
    else:
        sink = "no sink (records stay in the local spool; set audit.elasticsearch.hosts to ship them)"
    mode = "fail closed" if audit.fail_closed else f"when full: {audit.when_full}"
    return f"audit: spool {spool} -> {sink}; signing key {audit.key_path(config.state.dir)}; {mode}"


_INTEGRATIONS = (
    "wecom",
    "dingtalk",
    "feishu",
    "email",
    "sms",
    "webhook",
    "slack",
    "pagerduty",
    "alertmanager",
    "command",
)


def _alerting_line(config: Config) -> str:
    alerting = config.alerting
    if not alerting.enabled:
        return "alerting: disabled"
    receivers = []
    for receiver in alerting.receivers:
        kinds = []
        for kind in _INTEGRATIONS:
            n = len(getattr(receiver, f"{kind}_configs", []) or [])
            if n:
                kinds.append(kind if n == 1 else f"{kind} x{n}")
        receivers.append(f"{receiver.name} ({', '.join(kinds) or 'log only'})")
    rules = ", ".join(alerting.rules) if alerting.rules else "built-in rules"
    return (
        f"alerting: {rules} every {alerting.evaluation_interval}; root receiver "
        f"{alerting.route.receiver}; receivers: {'; '.join(receivers) or 'none'}"
    )


def summary(config: Config) -> list[str]:
    """One line per concern: where requests go, who may call, what is decided, recorded, alerted."""
    server = config.server
    metrics = (
        "needs a token granting metrics:read" if config.metrics.require_token else "open to anyone (no token)"
    )
    return [
        f"listening on {server.host}:{server.port} ({server.workers} worker(s)); "
        f"state dir {config.state.dir}",
        f"upstream: {_safe_url(str(config.upstream.url))}",
        _auth_line(config),
        _policy_line(config),
        _audit_line(config),
        _alerting_line(config),
        f"metrics: /metrics {metrics}",
    ]


def warnings(config: Config) -> list[str]:
    """Settings that expose the sidecar: each one a full sentence saying what to change."""
    server = config.server
    out: list[str] = []
    if is_loopback(server.host):
        return out
    where = f"server.host is {server.host!r} (reachable from other machines)"
    if config.auth.enabled and config.auth.dev_key:
        out.append(
            f"SECURITY: the local dev key is trusted (auth.dev_key: true) and {where}: anyone with "
            f"access to {config.state.dir} can mint admin tokens. Set auth.dev_key: false and trust "
            "your identity provider (auth.jwks / auth.keys), or bind server.host to 127.0.0.1 "
            "(docs/identity.md)."
        )
    if not config.auth.enabled:
        out.append(
            f"SECURITY: authentication is disabled (auth.enabled: false) and {where}: every caller "
            "is anonymous. Enable auth for anything but a local test."
        )
    if not config.rbac.enabled:
        out.append(
            f"SECURITY: authorization is disabled (rbac.enabled: false) and {where}: every "
            "authenticated caller may do everything. Enable rbac for anything but a local test."
        )
    return out


def log_startup(
    config: Config, *, host: str | None = None, port: int | None = None, workers: int | None = None
) -> None:
    """Log the summary once and each warning loudly. ``host``/``port``/``workers``: command-line
    overrides of the config."""
    update = {k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v}
    if update:
        config = config.model_copy(update={"server": config.server.model_copy(update=update)})
    for line in summary(config):
        log.info("%s", line)
    for line in warnings(config):
        log.warning("%s", line)
