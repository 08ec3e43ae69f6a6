"""``custos alerts ...``: export, check and test rules; manage silences.

    custos alerts export [--format prometheus|prometheusrule] [--rules FILE ...]
    custos alerts check [FILE ...] [--config PATH]
    custos alerts test --rules FILE --scenario FILE [--config PATH] [--deliver] [--json]
    custos alerts send-test --receiver NAME [--config PATH]
    custos alerts list [--config PATH | --state-dir DIR | --url URL]
    custos alerts silence add MATCHER ... (--duration 2h | --until TIME) --comment TEXT [--author NAME]
    custos alerts silence list [--all]
    custos alerts silence expire ID

Silences go to the state dir (``state.dir`` of the config, shared with the running sidecar) or, with
``--url``, to a sidecar's admin API (``--token`` or ``$CUSTOS_TOKEN`` for the Bearer token).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from custos.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerts", help="alert rules, replays and silences")
    asub = p.add_subparsers(dest="alerts_command", metavar="ACTION", parser_class=type(p))
    asub.required = True

    e = asub.add_parser("export", help="print the rules as a Prometheus rule file or PrometheusRule manifest")
    e.add_argument("--format", choices=["prometheus", "prometheusrule"], default="prometheus")
    e.add_argument("--rules", nargs="+", metavar="FILE", help="rule files (default: the built-in rules)")
    e.add_argument("--name", default="custos-alerts", help="metadata.name of the PrometheusRule")
    e.add_argument("--namespace", help="metadata.namespace of the PrometheusRule")
    e.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="K=V",
        help="extra metadata label (e.g. release=prometheus for the Operator's ruleSelector)",
    )
    e.set_defaults(func=cmd_export)

    c = asub.add_parser("check", help="validate rule files (and the alerting config with --config)")
    c.add_argument("files", nargs="*", metavar="FILE", help="rule files (default: the built-in rules)")
    c.add_argument("--config", metavar="PATH", help="also check this config's alerting section")
    c.set_defaults(func=cmd_check)

    t = asub.add_parser(
        "test", help="replay a scenario in accelerated time: which alerts fire, when, to whom"
    )
    t.add_argument(
        "--rules", nargs="+", metavar="FILE", help="rule files (default: the config's or built-in)"
    )
    t.add_argument(
        "--scenario",
        required=True,
        metavar="FILE",
        help="scenario (series in promtool notation), GPU simulation file or promtool test file; or a "
        "bundled name: gpu-saturated, or a GPU scenario from `custos gpu scenarios` (thermal-spike)",
    )
    t.add_argument("--config", metavar="PATH", help="config whose alerting routes/receivers to use")
    t.add_argument("--deliver", action="store_true", help="really send notifications to the receivers")
    t.add_argument("--json", action="store_true", help="print events as JSON lines")
    t.set_defaults(func=cmd_test)

    st = asub.add_parser("send-test", help="send a test notification through a receiver's integrations")
    st.add_argument("--receiver", required=True, help="receiver name from the config")
    st.add_argument("--config", metavar="PATH", help="config with the alerting receivers")
    st.add_argument("--resolved", action="store_true", help="send it as a resolved notification")
    st.set_defaults(func=cmd_send_test)

    ls = asub.add_parser("list", help="list pending/firing/resolved alerts")
    _target_args(ls)
    ls.set_defaults(func=cmd_list)

    s = asub.add_parser("silence", help="add, list or expire silences")
    ssub = s.add_subparsers(dest="silence_command", metavar="ACTION", parser_class=type(p))
    ssub.required = True
    sa = ssub.add_parser("add", help='silence alerts matching all MATCHERs, e.g. alertname="X" gpu="0"')
    sa.add_argument("matchers", nargs="+", metavar="MATCHER")
    sa.add_argument("--duration", help="how long, e.g. 2h (default 1h unless --until)")
    sa.add_argument("--until", help="end time, RFC 3339 (e.g. 2026-12-01T08:00:00Z)")
    sa.add_argument("--start", help="start time, RFC 3339 (default: now)")
    sa.add_argument("--comment", required=True, help="why (shown to on-call colleagues)")
    sa.add_argument("--author", default=None, help="who (default: your user name)")
    _target_args(sa)
    sa.set_defaults(func=cmd_silence_add)
    sl = ssub.add_parser("list", help="list silences (active and pending; --all for expired too)")
    sl.add_argument("--all", action="store_true")
    _target_args(sl)
    sl.set_defaults(func=cmd_silence_list)
    sx = ssub.add_parser("expire", help="end a silence now")
    sx.add_argument("id", help="silence id (a unique prefix is enough)")
    _target_args(sx)
    sx.set_defaults(func=cmd_silence_expire)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="config whose state.dir holds the silences")
    p.add_argument("--state-dir", metavar="DIR", help="state dir (overrides the config's)")
    p.add_argument("--url", help="a running sidecar's base URL: use its admin API instead of the state dir")
    p.add_argument("--token", help="Bearer token for --url (default: $CUSTOS_TOKEN)")


# -- export / check ---------------------------------------------------------------------------------
def _load_groups(files: list[str] | None) -> Any:
    from alerting.rules import RuleError, load_rule_files

    try:
        return load_rule_files(files or None)
    except RuleError as exc:
        raise UsageError(str(exc)) from None


def cmd_export(args: argparse.Namespace) -> int:
    from alerting.rules import export

    groups = _load_groups(args.rules)
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    sys.stdout.write(export(groups, args.format, name=args.name, namespace=args.namespace, labels=labels))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from alerting import promql
    from alerting.rules import rule_count

    if args.files:
        from alerting.rules import resolve_rule_files

        if not resolve_rule_files(args.files):
            raise UsageError(f"{', '.join(args.files)}: no rule files there (*.yaml, *.yml)")
    groups = _load_groups(args.files)
    alerts, records = rule_count(groups)
    if not groups:
        raise UsageError(f"{', '.join(args.files or ['built-in rules'])}: no rule groups found")
    if args.config:
        from sidecar.config import load_config

        load_config(args.config)  # ConfigError -> exit 2 with the field named
    names = sorted(
        {n for g in groups for r in g.rules if r.node is not None for n in promql.metric_names(r.node)}
    )
    where = ", ".join(args.files) if args.files else "built-in rules"
    print(f"OK: {where}: {len(groups)} group(s), {alerts} alerting rule(s), {records} recording rule(s)")
    print("metrics read: " + ", ".join(names))
    return 0


# -- test (replay) ----------------------------------------------------------------------------------
def _alerting_config(path: str | None) -> Any:
    from alerting.config import AlertingConfig
    from sidecar.config import load_config

    if path:
        return load_config(path).alerting
    return AlertingConfig()


def cmd_test(args: argparse.Namespace) -> int:
    from alerting.replay import Replay, ScenarioError, format_events, load_scenario

    cfg = _alerting_config(args.config)
    groups = _load_groups(args.rules or cfg.rules or None)
    try:
        scenario = load_scenario(_resolve_scenario(args.scenario))
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--scenario {args.scenario!r}: cannot read it: {exc.strerror or exc}") from None
    replay = Replay(cfg, groups, scenario, deliver=args.deliver)
    events = asyncio.run(replay.run())
    if args.json:
        for e in events:
            print(
                json.dumps(
                    {"at_s": e.at, "event": e.kind, "alert": e.alert, "labels": e.labels, "detail": e.detail},
                    ensure_ascii=False,
                )
            )
    else:
        from alerting.promql import format_duration

        length, step = format_duration(scenario.length_s), format_duration(replay.service.interval_s)
        print(f"replayed {length} in steps of {step} ({sum(len(g.rules) for g in groups)} rules)")
        print(format_events(events) if events else "no alerts fired")
    return 0


def _resolve_scenario(name: str) -> str:
    """A scenario file, or a bundled name: an alert scenario (``alerting/scenarios/``, e.g.
    ``gpu-saturated``) or a GPU simulation scenario as ``custos gpu scenarios`` lists and
    ``custos up --gpu-sim`` accepts (``thermal-spike``)."""
    path = Path(name).expanduser()
    if path.is_dir():
        raise UsageError(f"--scenario {name!r} is a directory: give a scenario file or a bundled name")
    if path.exists() or "/" in name:
        return name
    from alerting.replay import ALERT_SCENARIO_DIR

    bundled = ALERT_SCENARIO_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if bundled.is_file():
        return str(bundled)
    from gpu.sim import SCENARIO_DIR, resolve_scenario

    resolved = resolve_scenario(name)
    if Path(resolved).is_file():
        return resolved
    names = sorted(
        {p.stem for p in ALERT_SCENARIO_DIR.glob("*.yaml")} | {p.stem for p in SCENARIO_DIR.glob("*.yaml")}
    )
    raise UsageError(
        f"--scenario: no file {name!r} and no bundled scenario of that name ({', '.join(names)})"
    )


def cmd_send_test(args: argparse.Namespace) -> int:
    from alerting.receivers import Notifier, send_test

    cfg = _alerting_config(args.config)
    names = [r.name for r in cfg.receivers]
    if args.receiver not in names:
        raise UsageError(f"--receiver {args.receiver!r}: no such receiver (have: {', '.join(names)})")

    async def go() -> dict[str, bool]:
        notifier = Notifier(cfg)
        try:
            return await send_test(notifier, args.receiver, status="resolved" if args.resolved else "firing")
        finally:
            await notifier.close()

    probe = Notifier(cfg)
    try:
        kinds = {i.kind for i in probe.integrations(args.receiver)}
    finally:
        asyncio.run(probe.close())
    if kinds <= {"log"}:
        raise UsageError(
            f"--receiver {args.receiver!r} has no integrations (wecom_configs, webhook_configs, "
            "email_configs, ...): its notifications are only logged; nothing was sent"
        )
    results = asyncio.run(go())
    if not results:
        raise UsageError(f"--receiver {args.receiver!r}: nothing was sent (no integrations)")
    for name, ok in results.items():
        print(f"{name}: {'delivered' if ok else 'FAILED (see the log above)'}")
    return 0 if all(results.values()) else 1


# -- silences and alerts ----------------------------------------------------------------------------
def _state_dir(args: argparse.Namespace) -> Path:
    """``<state dir>/alerting``; the state dir must exist: a silence written where no sidecar reads
    it, or "no alerts" read from a directory no sidecar ever wrote, would mislead."""
    if args.state_dir:
        base, what = Path(args.state_dir).expanduser(), "--state-dir"
    else:
        from sidecar.config import load_config

        base, what = Path(load_config(args.config).state.dir).expanduser(), "state.dir"
    if not base.exists():
        raise UsageError(f"{what} {str(base)!r}: no such directory (is it the sidecar's state.dir?)")
    if not base.is_dir():
        raise UsageError(f"{what} {str(base)!r}: not a directory")
    return base / "alerting"


def _store(args: argparse.Namespace) -> Any:
    from alerting.silences import SilenceStore

    path = _state_dir(args) / "silences.json"
    try:
        return SilenceStore(path)
    except OSError as exc:
        raise UsageError(f"cannot read silences at {path}: {exc.strerror or exc}") from None


def _check_url(args: argparse.Namespace) -> None:
    from urllib.parse import urlsplit

    url = urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise UsageError(f"--url {args.url!r}: expected a sidecar base URL like http://127.0.0.1:8080")


def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    _check_url(args)
    token = args.token or os.environ.get("CUSTOS_TOKEN")
    url = args.url.rstrip("/") + "/admin/alerts" + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read())["error"]["message"]
        except Exception:
            msg = exc.reason
        raise UsageError(f"{url}: HTTP {exc.code}: {msg}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{url}: cannot connect: {getattr(exc, 'reason', None) or exc}") from None


def _ts(text: str, what: str) -> float:
    from alerting.model import parse_iso

    try:
        return parse_iso(text)
    except ValueError:
        raise UsageError(f"--{what} {text!r}: expected an RFC 3339 time like 2026-12-01T08:00:00Z") from None


def cmd_silence_add(args: argparse.Namespace) -> int:
    from alerting.model import iso
    from alerting.promql import parse_duration
    from alerting.silences import SilenceError

    now = time.time()
    start = _ts(args.start, "start") if args.start else now
    if args.until and args.duration:
        raise UsageError("give --duration or --until, not both")
    if args.until:
        end = _ts(args.until, "until")
    else:
        try:
            end = start + parse_duration(args.duration or "1h")
        except ValueError as exc:
            raise UsageError(f"--duration: {exc}") from None
    if args.url:
        if args.author:
            print(
                "custos: note: --author is ignored with --url: the sidecar records the authenticated "
                "subject of the token as the author",
                file=sys.stderr,
            )
        doc = _api(
            args,
            "POST",
            "/silences",
            {
                "matchers": args.matchers,
                "startsAt": iso(start),
                "endsAt": iso(end),
                "comment": args.comment,
            },
        )
        author = (doc.get("silence") or {}).get("createdBy")
        print(doc["silenceID"])
        if author:
            print(f"created by {author} (the authenticated subject)", file=sys.stderr)
        return 0
    # Written straight to the state dir: no one authenticated, so the author is what --author says or,
    # by default, the local OS account, labelled as such.
    author = args.author or f"os-user:{getpass.getuser()}"
    store = _store(args)
    try:
        s = store.add(args.matchers, end, created_by=author, comment=args.comment, starts_at=start, now=now)
    except SilenceError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        where = _state_dir(args) / "silences.json"
        raise UsageError(f"cannot write the silence to {where}: {exc.strerror or exc}") from None
    print(s.id)
    if not args.author:
        print(f"created by {author} (local OS user; no authenticated subject without --url)", file=sys.stderr)
    return 0


def cmd_silence_list(args: argparse.Namespace) -> int:

    now = time.time()
    if args.url:
        docs = _api(args, "GET", "/silences")["silences"]
    else:
        docs = [s.to_json(now) for s in _store(args).list()]
    rows = [d for d in docs if args.all or d["status"]["state"] != "expired"]
    if not rows:
        print("no silences")
        return 0
    print(f"{'ID':<12} {'STATE':<8} {'ENDS':<24} {'BY':<12} MATCHERS / COMMENT")
    for d in sorted(rows, key=lambda d: d["endsAt"]):
        print(
            f"{d['id'][:12]:<12} {d['status']['state']:<8} {d['endsAt']:<24} {d['createdBy'][:12]:<12} "
            f"{' '.join(d['matchers'])}  # {d['comment']}"
        )
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    from alerting.silences import SilenceError

    if args.url:
        doc = _api(args, "DELETE", f"/silences/{args.id}")
    else:
        try:
            doc = _store(args).expire(args.id).to_json(time.time())
        except SilenceError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot expire the silence: {exc.strerror or exc}") from None
    print(f"expired {doc['id']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from alerting.api import _alert_doc
    from alerting.state import read_json

    if args.url:
        docs = _api(args, "GET", "")["alerts"]
    else:
        _state_dir(args)  # exists, or a one-line error
        docs = [
            _alert_doc(r, None, []) for r in read_json(_state_dir(args) / "alerts.json", {}).get("alerts", [])
        ]
    if not docs:
        print("no alerts")
        return 0
    for d in docs:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(d["labels"].items()) if k != "alertname")
        print(
            f"{d['state']:<10} {d['labels'].get('alertname', '')}{{{labels}}}  since {d['activeAt']}  "
            f"{d['annotations'].get('summary', '')}"
        )
    return 0
