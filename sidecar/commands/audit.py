"""``custos audit``: verify a trail (local spool, export file or Elasticsearch) and set up Elasticsearch.

Exit codes of ``verify``: 0 intact (with a summary), 1 tampering or loss found (the first problem
first), 2 bad input (missing path, no public key, cluster unreachable).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from ..cli import UsageError
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
    v.add_argument("--public-key", metavar="PEM", help="Ed25519 public key (default: <signing key>.pub)")
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
    s.set_defaults(func=run_setup_es)


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
    from ..audit.keys import KeyError_, load_public_key
    from ..audit.verify import Report, load_path, verify

    config = load_config(args.config)
    audit = config.audit
    key_path = (
        Path(args.public_key) if args.public_key else audit.key_path(config.state.dir).with_suffix(".pub")
    )
    if not key_path.exists() and not args.public_key:
        private = audit.key_path(config.state.dir)
        key_path = private if private.exists() else key_path
    if not key_path.exists():
        raise UsageError(f"public key {key_path} not found: pass --public-key PEM")
    try:
        public = load_public_key(key_path)
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
    report = verify(chains, public, report)
    code = 0 if report.ok else 1
    if args.json:
        out = {
            "source": source,
            "ok": report.ok,
            "problems": [p.__dict__ for p in report.problems],
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

    from ..audit.es import search_pattern
    from ..audit.verify import check_placement, load_docs

    es = _es_config(config, [args.es])
    index = args.index or search_pattern(es)
    cp_index = args.checkpoint_index or es.checkpoint_index
    client = _client(es)
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
        raise UsageError(f"index {index!r} not found at {args.es}") from None
    except (ApiError, TransportError) as exc:
        raise UsageError(f"cannot read {index!r} from {args.es}: {_why(exc)}") from None
    finally:
        client.close()
    if not records:
        raise UsageError(f"index {index!r} at {args.es} holds no audit records")
    # Daily indices are named after each record's own @timestamp (whatever prefix --index names); a
    # data stream's backing indices are named after their rollover, so there only the _id is checked.
    check_placement(hits, es.index_mode != "data_stream", report)
    return f"{args.es} index {index}", load_docs(records, cps)


def run_setup_es(args: argparse.Namespace) -> int:
    from elasticsearch import ApiError, TransportError

    from ..audit.es import export, setup

    config = load_config(args.config)
    es = _es_config(config, args.es)
    if args.export:
        for path in export(es, Path(args.export)):
            print(f"wrote {path}")
        return 0
    client = _client(es)
    try:
        done = setup(client, es, with_ilm=False if args.no_ilm else None)
    except (ApiError, TransportError) as exc:
        raise UsageError(f"cannot set up Elasticsearch at {', '.join(es.hosts)}: {_why(exc)}") from None
    finally:
        client.close()
    for line in done:
        print(f"installed: {line}" if not line.startswith("ILM not") else line)
    return 0
