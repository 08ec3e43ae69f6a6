"""``custos token``: print a JWT signed with the local dev key (the key ``custos serve`` trusts by
default). For laptops and CI; production tokens come from the identity provider."""

from __future__ import annotations

import argparse
import sys

from ..config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "token",
        help="print a dev token signed with the local dev key",
        description="Print a JWT for the embedded setup, signed with the local dev key in "
        "the state directory (created on first use, mode 0600).",
    )
    p.add_argument("--sub", required=True, metavar="SUBJECT", help="who the token is for (the 'sub' claim)")
    p.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="ROLE",
        help="a role from the RBAC policy; repeat for several",
    )
    p.add_argument("--ttl", default=3600, metavar="SECONDS", help="lifetime in seconds (default 3600)")
    p.add_argument(
        "--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or built-in defaults)"
    )
    p.set_defaults(func=run_token)


def run_token(args: argparse.Namespace) -> int:
    from custos.errors import UsageError

    from ..auth import devkey

    try:
        ttl = int(args.ttl)
    except ValueError:
        raise UsageError(f"--ttl: {args.ttl!r} is not a whole number of seconds") from None
    if not 1 <= ttl <= 366 * 86400:
        raise UsageError(f"--ttl: {ttl} is out of range (1 second to 366 days)")
    subject = args.sub.strip()
    if not subject:
        raise UsageError("--sub: the subject must not be empty")
    roles = [r.strip() for r in args.role if r.strip()]
    config = load_config(args.config)
    auth = config.auth
    if not auth.dev_key:
        raise UsageError("auth.dev_key is false in this config: the sidecar would not trust a dev token")
    known = _policy_roles(config)
    unknown = [r for r in roles if known is not None and r not in known]
    if unknown:
        raise UsageError(
            f"--role: {unknown[0]!r} is not a role in {config.rbac.policy_file} "
            f"(roles: {', '.join(sorted(known or ()))})"
        )
    try:
        key = devkey.load_or_create(config.state.dir, auth.dev_key_algorithm)
    except (OSError, ValueError) as exc:
        raise UsageError(f"state.dir: cannot use the dev key in {config.state.dir}: {exc}") from None
    token = devkey.mint_token(
        key,
        subject=subject,
        roles=roles,
        ttl_s=ttl,
        algorithm=auth.dev_key_algorithm,
        audience=auth.audience[0] if auth.audience else None,
        roles_claim=auth.roles_claim,
    )
    sys.stdout.write(token + "\n")
    return 0


def _policy_roles(config) -> set[str] | None:
    """Roles of the configured policy, or None when it cannot be read (then any role is accepted)."""
    from ..rbac.policy import PolicyError, load_policy_file

    if not config.rbac.enabled:
        return None
    try:
        return set(load_policy_file(config.rbac.policy_file).roles)
    except PolicyError:
        return None
