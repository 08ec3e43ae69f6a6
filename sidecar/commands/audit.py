"""``custos audit``: verify a trail (local spool, export file or Elasticsearch) and set up Elasticsearch.

Exit codes of ``verify``: 0 intact (with a summary), 1 tampering or loss found (the first problem
first), 2 bad input (missing path, no public key, cluster unreachable).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from custos.errors import UsageError

from ..config import Config, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="verify the tamper-evident audit trail; set up Elasticsearch for it")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=type(p))
    asub.required = True

    v = asub.add_parser("verify", help="check hashes, chain continuity and checkpoint signatures")
    v.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="spool directory, chain directory or JSON-lines export (default: the configured spool)",
    )
    v.add_argument("--es", metavar="URL", help="verify the records stored in this Elasticsearch instead")
    v.add_argument("--index", metavar="NAME", help="records index or pattern (default: from the config)")
    v.add_argument("--checkpoint-index", metavar="NAME", help="checkpoints index (default: from the config)")
    v.add_argument(
        "--public-key",
        metavar="PEM",
        action="append",
        help="Ed25519 public key, repeatable for a trail signed by several keys (default: <signing key>.pub "
        "and the retired keys in <signing key dir>/keyring/)",
    )
    v.add_argument("--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or defaults)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=run_verify)

    s = asub.add_parser("setup-es", help="install the index templates and ILM policy in Elasticsearch")
    s.add_argument(
        "--es", metavar="URL", action="append", help="Elasticsearch URL (default: audit.elasticsearch.hosts)"
    )
    s.add_argument("--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or defaults)")
    s.add_argument("--no-ilm", action="store_true", help="do not install the ILM policy")
    s.add_argument("--export", metavar="DIR", help="only write the template and policy JSON files to DIR")
    s.add_argument("--force", action="store_true", help="with --export: overwrite files already in DIR")
    s.set_defaults(func=run_setup_es)
    _register_query(asub)


def _es_config(config: Config, urls: list[str] | None) -> Any:
    es = config.audit.elasticsearch
    if urls:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise UsageError(f"--es {url!r}: must be an http:// or https:// URL")
        es = es.model_copy(update={"hosts": urls})
    return es


def _why(exc: BaseException) -> str:
    """The transport's own message plus its underlying cause (e.g. connection refused)."""
    errors = getattr(exc, "errors", ()) or ((exc.__cause__,) if exc.__cause__ else ())
    cause = f" ({errors[0]})" if errors else ""
    return f"{exc}{cause}"


def _client(es: Any) -> Any:
    import logging

    from elasticsearch import Elasticsearch

    logging.getLogger("elastic_transport").setLevel(logging.ERROR)  # one line per request otherwise

    from ..audit.es import client_options

    if not es.hosts:
        raise UsageError("no Elasticsearch given: pass --es URL or set audit.elasticsearch.hosts")
    return Elasticsearch(**client_options(es))


def run_verify(args: argparse.Namespace) -> int:
    from ..audit.keys import KeyError_, load_keyring
    from ..audit.verify import Report, load_path, verify

    config = load_config(args.config)
    audit = config.audit
    signing_key = audit.key_path(config.state.dir)
    given = [Path(p) for p in args.public_key or []]
    key_path = given[0] if given else signing_key.with_suffix(".pub")
    if not key_path.exists() and not given:
        key_path = signing_key if signing_key.exists() else key_path
    for path in given or [key_path]:
        if not path.exists():
            raise UsageError(f"public key {path} not found: pass --public-key PEM")
    try:
        # Keys retired by `custos keys rotate audit` stay beside the signing key: a trail that spans a
        # rotation verifies with all of them, each checkpoint with the key its key id names.
        public = load_keyring(given or [key_path], None if given else signing_key)
    except KeyError_ as exc:
        raise UsageError(str(exc)) from None

    report = Report()
    if args.es:
        if args.path:
            raise UsageError("give either PATH or --es URL, not both")
        source, chains = _load_es(args, config, report)
    else:
        if args.index or args.checkpoint_index:
            raise UsageError("--index and --checkpoint-index need --es URL")
        path = Path(args.path).expanduser() if args.path else audit.spool_path(config.state.dir)
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
        source = str(path)
        chains = load_path(path, report)
        if not chains and not report.problems:
            raise UsageError(f"{path}: no audit records or checkpoints found there")
        if not _holds_audit(chains):
            raise UsageError(f"{path}: not an audit trail (no line holds an audit record or checkpoint)")
    report = verify(chains, public, report)
    _refuse_wrong_key(report, key_path, public)
    code = 0 if report.ok else 1
    record_verification(audit.spool_path(config.state.dir), source, report)
    if args.json:
        out = {
            "source": source,
            "ok": report.ok,
            "problems": [p.__dict__ for p in report.problems],
            "warnings": report.warnings,
            "chains": [c.__dict__ for c in report.chains],
        }
        return _emit(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n", code)
    if report.ok:
        return _emit(f"OK: audit trail intact ({source})\n{report.summary()}\n", code)
    first = report.problems[0]
    lines = [f"FAILED: audit trail is not intact ({source})", f"first problem: {first.line()}"]
    lines += [f"also: {other.line()}" for other in report.problems[1:]]
    if len(report.problems) >= 50:
        lines.append("(only the first 50 problems are listed)")
    lines.append(report.summary())
    return _emit("\n".join(lines) + "\n", code)


def _emit(text: str, code: int) -> int:
    """Print the report; the verdict is the exit code however the output is consumed: a reader that
    goes away early (``custos audit verify | head``) must not turn a failed trail into exit 0."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can be shown; point stdout at /dev/null so the interpreter's final flush
        # does not raise again, and keep the verdict.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        print(
            f"custos: audit verify: output closed early; verdict: {'intact' if code == 0 else 'NOT intact'}",
            file=sys.stderr,
        )
    return code


def _load_es(args: argparse.Namespace, config: Config, report: Any) -> tuple[str, list[Any]]:
    from elasticsearch import ApiError, NotFoundError, TransportError
    from elasticsearch.helpers import scan

    from ..audit.es import mask_userinfo, search_pattern
    from ..audit.verify import check_placement, load_docs

    es = _es_config(config, [args.es])
    index = args.index or search_pattern(es)
    cp_index = args.checkpoint_index or es.checkpoint_index
    client = _client(es)
    shown = mask_userinfo(args.es)  # the URL may carry credentials; never print them
    # Make what was just shipped searchable (a checkpoint seen before its records would read as a
    # truncation). Read-only roles may lack the privilege: then it is skipped.
    with contextlib.suppress(ApiError, TransportError):
        client.indices.refresh(index=f"{index},{cp_index}", ignore_unavailable=True, allow_no_indices=True)
    try:
        hits = [
            (h["_index"], h["_id"], h["_source"])
            for h in scan(client, index=index, size=2000, query={"query": {"match_all": {}}})
        ]
        records = [(f"{i}/{d}", doc) for i, d, doc in hits]
        try:
            cps = [
                (f"{h['_index']}/{h['_id']}", h["_source"]) for h in scan(client, index=cp_index, size=2000)
            ]
        except NotFoundError:
            cps = []
    except NotFoundError:
        raise UsageError(f"index {index!r} not found at {shown}") from None
    except (ApiError, TransportError) as exc:
        raise UsageError(f"cannot read {index!r} from {shown}: {mask_userinfo(_why(exc))}") from None
    finally:
        client.close()
    if not records:
        raise UsageError(f"index {index!r} at {shown} holds no audit records")
    # Daily indices are named after each record's own @timestamp (whatever prefix --index names); a
    # data stream's backing indices are named after their rollover, so there only the _id is checked.
    check_placement(hits, es.index_mode != "data_stream", report)
    return f"{shown} index {index}", load_docs(records, cps)


def run_setup_es(args: argparse.Namespace) -> int:
    from elasticsearch import ApiError, TransportError

    from ..audit.es import export, setup

    config = load_config(args.config)
    es = _es_config(config, args.es)
    if args.export:
        for path in _export(es, Path(args.export).expanduser(), args.force, export):
            print(f"wrote {path}")
        return 0
    client = _client(es)
    try:
        done = setup(client, es, with_ilm=False if args.no_ilm else None)
    except (ApiError, TransportError) as exc:
        from ..audit.es import mask_userinfo

        where = mask_userinfo(", ".join(es.hosts))
        raise UsageError(f"cannot set up Elasticsearch at {where}: {mask_userinfo(_why(exc))}") from None
    finally:
        client.close()
    for line in done:
        print(f"installed: {line}" if not line.startswith("ILM not") else line)
    return 0


def _export(es: Any, directory: Path, force: bool, export: Any) -> list[Path]:
    """``setup-es --export DIR``: DIR is a directory (made if missing) whose files are not silently
    replaced; every problem is one line (exit 2)."""
    names = [
        f"{es.index}.index-template.json",
        f"{es.checkpoint_index}.index-template.json",
        f"{es.index}.ilm-policy.json",
    ]
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--export {str(directory)!r}: exists and is not a directory")
    present = [n for n in names if (directory / n).exists()]
    if present and not force:
        raise UsageError(
            f"--export {str(directory)!r}: would overwrite {', '.join(present)} "
            "(pass --force to replace them)"
        )
    try:
        return export(es, directory)
    except OSError as exc:
        raise UsageError(f"--export {str(directory)!r}: cannot write there: {exc.strerror or exc}") from None


def _holds_audit(chains: list[Any]) -> bool:
    """At least one line of the input is an audit record or checkpoint (``audit.seq`` and a hash)."""
    for ci in chains:
        for _where, doc in (*ci.records, *ci.checkpoints):
            audit = doc.get("audit") if isinstance(doc, dict) else None
            if isinstance(audit, dict) and isinstance(audit.get("seq"), int) and audit.get("hash"):
                return True
    return False


def record_verification(spool_dir: Path, source: str, report: Any) -> None:
    """Keep the outcome beside this sidecar's spool, for operators' views (``custos top`` reads it
    through ``/admin/audit/recent``). A spool that does not exist here (verifying a copy on another
    machine) records nothing."""
    from custos.keyfile import replace_file

    from ..audit.recent import LAST_VERIFY

    if not spool_dir.is_dir():
        return
    result = {
        "at": time.time(),
        "source": source,
        "ok": report.ok,
        "problems": len(report.problems),
        "warnings": len(report.warnings),
        "records": sum(c.records for c in report.chains),
    }
    try:
        replace_file(spool_dir / LAST_VERIFY, orjson.dumps(result), 0o644)
    except OSError as exc:  # a read-only spool (verifying as another user): the verdict stands anyway
        print(f"note: could not record the result in {spool_dir}: {exc.strerror}", file=sys.stderr)


def _refuse_wrong_key(report: Any, key_path: Path, public: Any) -> None:
    """Checked with another sidecar's public key, a trail's checkpoints cannot verify: that is a bad
    input (exit 2) naming the key id they were signed with, not "forged or altered" (exit 1)."""
    from ..audit.verify import wrong_key_ids

    named = wrong_key_ids(report)
    if named:
        raise UsageError(
            f"wrong public key: {key_path} has key id {', '.join(public.ids)}, but the trail's checkpoints "
            f"were signed with key id {', '.join(named)}; pass --public-key with that sidecar's public key "
            "(<signing key>.pub)"
        )


# -- show / search / tail ----------------------------------------------------------------------------
def _register_query(asub: argparse._SubParsersAction) -> None:
    sh = asub.add_parser("show", help="one request's audit record, in full (by request id)")
    sh.add_argument("request_id", metavar="REQUEST_ID", help="the request id (X-Request-ID, event.id)")
    _source_args(sh)
    sh.add_argument("--json", action="store_true", help="print the record as one JSON object")
    sh.set_defaults(func=run_show)

    se = asub.add_parser("search", help="records by request id, user, time range, outcome or status")
    _filter_args(se)
    se.add_argument(
        "--limit", type=_positive, default=100, metavar="N", help="the newest N matches (default 100)"
    )
    se.add_argument("--all", action="store_true", help="every match (no --limit)")
    _source_args(se)
    se.add_argument("--json", action="store_true", help="one JSON object per line")
    se.set_defaults(func=run_search)

    ta = asub.add_parser("tail", help="the newest records of the spool; -f: follow as they are written")
    ta.add_argument(
        "-n", "--lines", type=_positive0, default=20, metavar="N", help="how many to show first (default 20)"
    )
    ta.add_argument("-f", "--follow", action="store_true", help="keep printing records as they are written")
    _filter_args(ta)
    _source_args(ta)
    ta.add_argument("--json", action="store_true", help="one JSON object per line")
    ta.set_defaults(func=run_tail)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _positive0(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request-id", metavar="ID", help="event.id (the X-Request-ID of the request)")
    p.add_argument("--user", metavar="SUBJECT", help="user.id (the authenticated subject)")
    p.add_argument("--since", metavar="TIME", help="from this time: RFC 3339 or back from now (1h, 30m, 2d)")
    p.add_argument("--until", metavar="TIME", help="before this time: RFC 3339 or back from now")
    p.add_argument("--outcome", choices=["success", "failure", "unknown"], help="event.outcome")
    p.add_argument("--status", metavar="CODES", help="HTTP status: 403, 401,403,429 or 5xx")


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--spool",
        metavar="PATH",
        help="spool directory, chain directory or JSON-lines export (default: the configured spool)",
    )
    p.add_argument("--es", metavar="URL", help="search this Elasticsearch instead of the spool")
    p.add_argument(
        "--index", metavar="NAME", help="with --es: records index or pattern (default: from the config)"
    )
    p.add_argument("--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or defaults)")


def _filter(args: argparse.Namespace, request_id: str | None = None) -> Any:
    from ..audit.query import Filter, QueryError, parse_statuses, parse_time

    def parsed(flag: str, parse: Any) -> Any:
        value = getattr(args, flag, None)
        if not value:
            return None
        try:
            return parse(value)
        except QueryError as exc:
            raise UsageError(f"--{flag} {exc}") from None

    since, until = parsed("since", parse_time), parsed("until", parse_time)
    statuses = parsed("status", parse_statuses)
    try:
        return Filter(
            request_id=request_id or getattr(args, "request_id", None),
            user=getattr(args, "user", None),
            since=since,
            until=until,
            outcome=getattr(args, "outcome", None),
            statuses=statuses,
        )
    except QueryError as exc:
        raise UsageError(str(exc)) from None


def _find(args: argparse.Namespace, flt: Any, limit: int | None) -> tuple[str, list[dict[str, Any]]]:
    """(where, matching records oldest first) from the spool or, with --es, Elasticsearch."""
    from ..audit.query import QueryError, open_source, search

    config = load_config(args.config)
    if args.es:
        if args.spool:
            raise UsageError("give either --spool PATH or --es URL, not both")
        return _find_es(args, config, flt, limit)
    if args.index:
        raise UsageError("--index needs --es URL")
    path = Path(args.spool) if args.spool else config.audit.spool_path(config.state.dir)
    try:
        source = open_source(path)
        return str(source.path), search(source, flt, limit)
    except QueryError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the spool: {exc.strerror or exc}") from None


def _find_es(args: argparse.Namespace, config: Config, flt: Any, limit: int | None) -> tuple[str, list[Any]]:
    from elasticsearch import ApiError, NotFoundError, TransportError

    from ..audit.es import search_pattern
    from ..audit.query import search_es

    es = _es_config(config, [args.es])
    index = args.index or search_pattern(es)
    client = _client(es)
    try:
        docs = search_es(client, index, flt, limit)
    except NotFoundError:
        raise UsageError(f"index {index!r} not found at {args.es}") from None
    except (ApiError, TransportError) as exc:
        raise UsageError(f"cannot search {index!r} at {args.es}: {_why(exc)}") from None
    finally:
        client.close()
    return f"{args.es} index {index}", docs


def _print_records(
    docs: list[dict[str, Any]], as_json: bool, header: bool = True, widths: list[int] | None = None
) -> None:
    from ..audit.query import json_line, table

    lines = [json_line(d) for d in docs] if as_json else table(docs, header=header, widths=widths)
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def run_show(args: argparse.Namespace) -> int:
    from ..audit.query import details, json_line

    where, docs = _find(args, _filter(args, request_id=args.request_id), None)
    if not docs:
        print(f"custos: no audit record with request id {args.request_id!r} in {where}", file=sys.stderr)
        return 1
    for i, doc in enumerate(docs):
        if args.json:
            print(json_line(doc))
            continue
        if i:
            print()
        if len(docs) > 1:
            print(f"# record {i + 1} of {len(docs)} with this request id")
        print("\n".join(details(doc)))
    return 0


def run_search(args: argparse.Namespace) -> int:
    flt = _filter(args)
    where, docs = _find(args, flt, None if args.all else args.limit)
    if not docs:
        print(f"custos: no matching audit records in {where}", file=sys.stderr)
        return 1
    _print_records(docs, args.json)
    return 0


def run_tail(args: argparse.Namespace) -> int:
    from ..audit.query import (
        FOLLOW_WIDTHS,
        QueryError,
        column_widths,
        end_positions,
        follow,
        open_source,
        record_key,
    )

    flt = _filter(args)
    if args.follow and args.es:
        raise UsageError("--follow reads the local spool; it cannot follow --es (use search --since)")
    start = None
    if args.follow:
        config = load_config(args.config)
        path = Path(args.spool) if args.spool else config.audit.spool_path(config.state.dir)
        try:
            source = open_source(path)
            start = end_positions(source)  # before the last records are read: nothing falls between
        except QueryError as exc:
            raise UsageError(str(exc)) from None
    if args.lines:
        where, docs = _find(args, flt, args.lines)
    else:
        where, docs = _find(args, flt, 1)  # checks the source; shows nothing
        docs = []
    widths = [max(a, b) for a, b in zip(column_widths(docs), FOLLOW_WIDTHS, strict=True)]
    _print_records(docs, args.json, widths=widths if args.follow else None)
    if not args.follow:
        if not docs:
            print(f"custos: no matching audit records in {where}", file=sys.stderr)
            return 1
        return 0
    header = not docs and not args.json
    for doc in follow(source, flt, start=start, seen={record_key(d) for d in docs}):
        _print_records([doc], args.json, header=header, widths=widths)
        header = False
    return 0
