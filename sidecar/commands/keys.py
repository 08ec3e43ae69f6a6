"""``custos keys``: list and rotate the keys Custos signs with (the local dev JWT key, the audit key).

``custos keys rotate dev-jwt`` retires the dev signing key and makes a new one: tokens signed with the
old key stay valid for ``auth.dev_key_overlap_s`` (or ``--overlap-s``), matched by their ``kid``; a
running sidecar picks the change up within ``auth.dev_key_check_interval_s``.

``custos keys rotate audit`` retires the audit signing key: its public key is kept in the keyring
beside the key (``<key dir>/keyring/<key id>.pub``), so ``custos audit verify`` proves a trail that
spans rotations; running sidecars sign their next checkpoints with the new key.
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any

from custos.errors import ConfigError
from sidecar.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="list and rotate the keys Custos signs with (dev JWT key, audit key)")
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    lst = ksub.add_parser("list", help="the dev JWT keys a sidecar with this config trusts, and until when")
    lst.add_argument(
        "--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or defaults)"
    )
    lst.set_defaults(func=run_list)
    rot = ksub.add_parser("rotate", help="retire a key and make a new one")
    rot.add_argument(
        "which",
        choices=["dev-jwt", "audit"],
        help="dev-jwt: the local token signing key; audit: the audit checkpoint signing key",
    )
    rot.add_argument(
        "--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or defaults)"
    )
    rot.add_argument(
        "--overlap-s",
        type=float,
        default=None,
        help="how long tokens of the retired key stay valid (default: auth.dev_key_overlap_s)",
    )
    rot.set_defaults(func=run_rotate)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_list(args: argparse.Namespace) -> int:
    from ..auth import devkey

    config = load_config(args.config)
    auth = config.auth
    if not auth.dev_key:
        raise ConfigError("auth.dev_key is false: this configuration trusts no dev key")
    current = devkey.load_or_create(config.state.dir, auth.dev_key_algorithm)
    age = devkey.key_age_s(config.state.dir, auth.dev_key_algorithm) or 0.0
    print(f"current  {devkey.key_id(current.public_key())}  in use for {age / 3600:.1f} h")
    for kid, _, until in devkey.retired_keys(config.state.dir, auth.dev_key_algorithm):
        print(f"retired  {kid}  tokens accepted until {_when(until)}")
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    from ..auth import devkey

    config = load_config(args.config)
    if args.which == "audit":
        return _rotate_audit(config)
    auth = config.auth
    overlap = auth.dev_key_overlap_s if args.overlap_s is None else args.overlap_s
    if overlap < 0:
        raise ConfigError(f"--overlap-s {args.overlap_s:g}: must be 0 or more")
    try:
        rotated = devkey.rotate(config.state.dir, auth.dev_key_algorithm, overlap_s=overlap)
    except OSError as exc:
        raise ConfigError(f"{config.state.dir}: cannot rotate the dev key: {exc.strerror}") from None
    assert rotated is not None
    old, new = rotated
    print(f"rotated the dev JWT key: {old} -> {new}")
    print(f"tokens signed with {old} are accepted until {_when(time.time() + overlap)}; new tokens use {new}")
    return 0


def _rotate_audit(config: Any) -> int:
    from ..audit.keys import KeyError_, keyring_dir, rotate_signing_key

    path = config.audit.key_path(config.state.dir)
    if not path.exists():
        raise ConfigError(f"{path}: no audit signing key to rotate (it is made at the sidecar's first start)")
    try:
        rotated = rotate_signing_key(path)
    except KeyError_ as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot rotate the audit signing key: {exc.strerror}") from None
    assert rotated is not None
    old, new = rotated
    print(f"rotated the audit signing key: {old} -> {new}")
    print(
        f"the public key of {old} stays in {keyring_dir(path)}/ (custos audit verify reads it); "
        f"publish {path.with_suffix('.pub')} for {new}"
    )
    return 0
