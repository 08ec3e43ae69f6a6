"""``custos audit show|search --es``: the same queries answered by a real Elasticsearch node holding
the records under the real index templates (``custos audit setup-es``)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from elasticsearch import Elasticsearch
from elasticsearch.helpers import bulk

from tests.audit.helpers import spool_records
from tests.es_node.fixtures import elasticsearch, es_index_prefix  # noqa: F401

from .test_audit_cli import ids, write_spool
from .test_bad_input import run


def test_search_and_show_in_elasticsearch(elasticsearch, es_index_prefix, tmp_path: Path) -> None:  # noqa: F811
    cfg = tmp_path / "custos.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state": {"dir": str(tmp_path / "state")},
                "audit": {
                    "elasticsearch": {
                        "hosts": [elasticsearch.url],
                        "index": es_index_prefix,
                        "checkpoint_index": f"{es_index_prefix}-checkpoints",
                    }
                },
            }
        )
    )
    setup = run("audit", "setup-es", "--config", str(cfg))
    assert setup.returncode == 0, setup.stderr
    write_spool(tmp_path / "state", 40)
    records = spool_records(tmp_path / "state" / "audit" / "spool")
    client = Elasticsearch(elasticsearch.url)
    try:
        actions = [
            {
                "_index": f"{es_index_prefix}-{d['@timestamp'][:10].replace('-', '.')}",
                "_id": d["event"]["id"],
                "_source": d,
            }
            for d in records
        ]
        bulk(client, actions, refresh=True)
    finally:
        client.close()
    es = ("--es", elasticsearch.url, "--config", str(cfg))

    out = run("audit", "search", *es, "--user", "bob", "--status", "5xx", "--json")
    assert out.returncode == 0, out.stderr
    assert ids(out) == [f"req-{i:06d}" for i in range(3, 40, 4)]
    out = run("audit", "search", *es, "--status", "403", "--limit", "2", "--json")
    assert ids(out) == ["req-000034", "req-000038"]
    since, until = records[10]["@timestamp"], records[20]["@timestamp"]
    out = run("audit", "search", *es, "--since", since, "--until", until, "--all", "--json")
    assert ids(out) == [f"req-{i:06d}" for i in range(10, 20)]
    out = run("audit", "search", *es, "--outcome", "failure", "--since", "65m")
    assert out.returncode == 0 and out.stdout.splitlines()[0].startswith("TIME")
    assert len(out.stdout.splitlines()) == 1 + 4  # the 403s and 500s among the last 6 records

    out = run("audit", "show", "req-000007", *es, "--json")
    (doc,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert doc == next(d for d in records if d["event"]["id"] == "req-000007")
    out = run("audit", "show", "no-such-request", *es)
    assert out.returncode == 1 and "no audit record" in out.stderr
    out = run("audit", "search", *es, "--index", f"{es_index_prefix}-none-*", "--user", "bob")
    assert out.returncode == 1 and "no matching audit records" in out.stderr
