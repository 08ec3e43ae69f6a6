"""``custos config check`` and ``custos config show``: validate a configuration and print what the
sidecar would actually run with, without starting anything.

``check`` loads the file exactly as ``custos serve`` does (environment overrides included) and also
reads the files the config names (RBAC and redaction policies): exit 0 with ``OK: <source>``, or
exit 2 with one problem per line. ``show`` prints the options set in the file and the environment;
``show --effective`` prints every option, defaults included. Secrets are printed as ``****``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretBytes, SecretStr

from custos.errors import ConfigError
from sidecar.config import ENV_CONFIG_PATH, Config, env_overrides, load_config

MASK = "****"

# Option names whose values are secrets wherever they appear.
_SECRET_NAMES = re.compile(
    r"^(password|passwd|secret|token|api_key|apikey|bearer_token|routing_key|client_secret|"
    r"access_token|private_key|hash_key|credentials|auth_password|.*_password|.*_secret|.*_token|.*_api_key)$",
    re.I,
)
# Header names whose values are credentials.
_SECRET_HEADERS = re.compile(
    r"^(authorization|proxy-authorization|cookie|.*api[-_]?key.*|.*token.*|.*secret.*)$", re.I
)
# URL query parameters that carry credentials (webhook robots put their key there).
_SECRET_PARAMS = re.compile(r"^(key|token|access_token|secret|sig|signature|password|api_key|apikey)$", re.I)
# Webhook URLs whose path itself is the credential (whoever has it may post).
_PATH_SECRET_HOSTS = ("hooks.slack.com", "open.feishu.cn", "open.larksuite.com", "outlook.office.com")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate the configuration; show the effective configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", parser_class=type(p))
    csub.required = True
    config_help = "YAML config file (default: $CUSTOS_CONFIG or built-in defaults)"

    c = csub.add_parser(
        "check",
        help="validate a config and the files it names (exit 0 with OK, or 2 with one error per line)",
    )
    c.add_argument("--config", metavar="PATH", help=config_help)
    c.set_defaults(func=run_check)

    s = csub.add_parser(
        "show",
        help="print the configuration with environment overrides applied (secrets masked)",
        description="Print the configuration as the sidecar would load it: the file plus "
        "CUSTOS_<SECTION>__<OPTION> environment overrides. Secrets are shown as ****.",
    )
    s.add_argument("--config", metavar="PATH", help=config_help)
    s.add_argument(
        "--effective", action="store_true", help="every option, defaults included (default: only those set)"
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    s.set_defaults(func=run_show)


def source_of(path: str | None, environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    """How ``load_config`` names what it read: the file (or ``defaults``), ``+ environment``."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_CONFIG_PATH) or None
    source = str(Path(path).expanduser()) if path else "defaults"
    if env_overrides(environ):
        source += " + environment"
    return source


def _errors(exc: ConfigError) -> list[str]:
    lines = str(exc).splitlines()
    if len(lines) > 1 and lines[0].rstrip().endswith(":"):
        return [line.strip() for line in lines[1:] if line.strip()]
    return [line.strip() for line in lines if line.strip()]


def referenced_file_errors(config: Config) -> list[str]:
    """Problems with the files the config names, found the way the sidecar would find them."""
    out: list[str] = []
    if config.rbac.enabled:
        from ..rbac.policy import PolicyError, load_policy_file

        try:
            load_policy_file(Path(config.rbac.policy_file))
        except PolicyError as exc:
            out += [f"rbac.policy_file: {e}" for e in exc.errors]
        except OSError as exc:
            out.append(f"rbac.policy_file: {config.rbac.policy_file}: {exc.strerror}")
    if config.auth.enabled:
        for i, key in enumerate(config.auth.keys):
            path = Path(key.path).expanduser()
            if not path.is_file():
                out.append(f"auth.keys.{i}.path: {path}: no such file")
            elif not os.access(path, os.R_OK):
                out.append(f"auth.keys.{i}.path: {path}: not readable")
        if not config.auth.dev_key and not config.auth.keys and not config.auth.jwks:
            out.append("auth: no key is trusted (dev_key is false, no keys, no jwks): every token is refused")
    audit = config.audit
    if audit.enabled and audit.signing_key is not None and not Path(audit.signing_key).expanduser().is_file():
        out.append(
            f"audit.signing_key: {audit.signing_key}: no such file (a configured key is never generated)"
        )
    es = audit.elasticsearch
    if audit.enabled and es.ca_certs is not None and not Path(es.ca_certs).expanduser().is_file():
        out.append(f"audit.elasticsearch.ca_certs: {es.ca_certs}: no such file")
    return out


def run_check(args: argparse.Namespace) -> int:
    source = source_of(args.config)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in _errors(exc):
            print(line, file=sys.stderr)
        return 2
    problems = referenced_file_errors(config)
    if problems:
        for line in problems:
            print(f"{source}: {line}", file=sys.stderr)
        return 2
    from ..startup import warnings

    for line in warnings(config):
        print(f"warning: {line}", file=sys.stderr)
    print(f"OK: {source}")
    return 0


# -- show ---------------------------------------------------------------------------------------------
def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if parts.password is not None or (parts.username and "@" in netloc):
        host = netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        netloc = f"{user}:{MASK}@{host}" if parts.password is not None else f"{MASK}@{host}"
    path = parts.path
    if (parts.hostname or "").lower() in _PATH_SECRET_HOSTS and path not in ("", "/"):
        path = "/" + MASK
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAMS.match(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def _plain(value: Any) -> Any:
    """Plain YAML/JSON data: strings for paths, URLs, enums."""
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def mask(data: Any, key: str = "") -> Any:
    """``data`` with every secret replaced by ``****`` (by option name, header name or URL part)."""
    if isinstance(data, dict):
        headers = key.lower().endswith("headers")
        out: dict[str, Any] = {}
        for k, v in data.items():
            if (
                v is not None
                and not isinstance(v, bool)
                and (_SECRET_NAMES.match(k) or (headers and _SECRET_HEADERS.match(k)))
            ):
                out[k] = MASK
            else:
                out[k] = mask(v, k)
        return out
    if isinstance(data, list):
        return [mask(v, key) for v in data]
    if isinstance(data, str) and "://" in data:
        return _mask_url(data)
    return data


def shown_config(config: Config, *, effective: bool) -> dict[str, Any]:
    """The config as plain data, masked; ``effective=False`` keeps only the options that were set."""
    data = config.model_dump(mode="python", by_alias=True, exclude_unset=not effective)
    return mask(_plain(data))  # python mode keeps SecretStr objects: _plain masks them by type


def run_show(args: argparse.Namespace) -> int:
    source = source_of(args.config)
    config = load_config(args.config)
    data = shown_config(config, effective=args.effective)
    if args.json:
        import json

        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    import yaml

    what = "effective configuration (defaults included)" if args.effective else "options set"
    print(f"# {what}; source: {source}; secrets shown as {MASK}")
    text = (
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
        if data
        else "{}\n"
    )
    sys.stdout.write(text)
    return 0
