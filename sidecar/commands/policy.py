"""``custos policy check FILE`` and ``custos policy explain``: validate an RBAC policy and ask it
what it would decide, without starting the sidecar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="validate the RBAC policy or explain a decision")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", parser_class=type(p))
    psub.required = True

    c = psub.add_parser("check", help="validate a policy file (exit 0, or 2 with file:line errors)")
    c.add_argument("file", metavar="FILE", help="the policy YAML file")
    c.set_defaults(func=run_check)

    e = psub.add_parser("explain", help="print allow or deny for a request, and the rule that decided")
    e.add_argument("--role", action="append", default=[], metavar="ROLE", help="caller's role; repeatable")
    e.add_argument("--method", default="POST", help="HTTP method (default POST)")
    e.add_argument(
        "--path", default="/v1/chat/completions", help="request path (default /v1/chat/completions)"
    )
    e.add_argument("--model", help="the model named in the request body")
    e.add_argument("--ip", default="127.0.0.1", help="the caller's source address (default 127.0.0.1)")
    e.add_argument("--file", metavar="FILE", help="policy file (default: rbac.policy_file of the config)")
    e.add_argument(
        "--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or built-in defaults)"
    )
    e.set_defaults(func=run_explain)


def _load(path: str | Path):
    from custos.errors import UsageError

    from ..rbac.policy import PolicyError, load_policy_file

    try:
        return load_policy_file(Path(path))
    except PolicyError as exc:
        raise UsageError(str(exc)) from None


def run_check(args: argparse.Namespace) -> int:
    policy = _load(args.file)
    routes = len(policy.routes)
    print(f"{args.file}: OK ({len(policy.roles)} roles: {', '.join(policy.roles)}; {routes} extra route(s))")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    import ipaddress

    from custos.errors import UsageError

    from ..config import load_config
    from ..rbac.decide import decide
    from ..rbac.routes import RouteTable

    if args.file:
        path = args.file
    else:
        path = load_config(args.config).rbac.policy_file
    if not args.path.startswith("/"):
        raise UsageError(f"--path: {args.path!r} must start with /")
    try:
        ipaddress.ip_address(args.ip)
    except ValueError:
        raise UsageError(f"--ip: {args.ip!r} is not an IP address") from None
    policy = _load(path)
    unknown = [r for r in args.role if r not in policy.roles]
    method = args.method.upper()
    out = decide(policy, RouteTable(policy.routes), tuple(args.role), method, args.path, args.model, args.ip)
    d = out.decision
    verdict = "ALLOW" if d.allowed and not out.failure else "DENY"
    print(f"{verdict} {method} {args.path}" + (f" model={args.model}" if args.model else ""))
    print(f"  permission: {d.permission}")
    print(f"  rule:       {d.rule}")
    if d.reason:
        print(f"  reason:     {d.reason}")
    if out.failure == "hidden_model":
        print(f"  note:       {out.model!r} is not invokable for these roles: answered as 404 (hidden)")
    if out.failure == "model_missing":
        print("  note:       the request names no model: answered as 400")
    if out.grant is not None and verdict == "ALLOW":
        g = out.grant
        if g.max_tokens is not None:
            print(f"  max_tokens: capped at {g.max_tokens}")
        if g.per_subject is not None:
            print(f"  rate limit: {g.per_subject.per_subject_rpm}/min per subject")
        if g.per_role is not None:
            print(f"  rate limit: {g.per_role.per_role_rpm}/min for role {g.role}")
    if unknown:
        print(f"  warning:    role(s) not in the policy: {', '.join(unknown)}", file=sys.stderr)
    print(f"  policy:     {path}")
    return 0 if verdict == "ALLOW" else 1  # scripts can test the answer
