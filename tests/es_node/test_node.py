"""The test Elasticsearch node is a real cluster: mappings, bulk, aggregations, restarts, crashes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from elasticsearch import ConflictError, ConnectionTimeout, Elasticsearch, helpers

from bench.es_node import ESNode, EsNodeError, ensure_built, es_version, start_elasticsearch
from bench.procs import REPO, free_port, wait_http

MAPPING = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": {"type": "date"},
        "event": {"properties": {"id": {"type": "keyword"}, "outcome": {"type": "keyword"}}},
        "user": {"properties": {"id": {"type": "keyword"}}},
        "source": {"properties": {"ip": {"type": "ip"}}},
        "message": {"type": "text"},
        "llm": {"properties": {"output_tokens": {"type": "long"}}},
    },
}
USERS = ["alice", "bob", "carol"]


def audit_docs(index: str, start: int, count: int) -> list[dict]:
    return [
        {
            "_op_type": "create",
            "_index": index,
            "_id": f"req-{i}",
            "_source": {
                "@timestamp": f"2026-01-0{1 + i % 3}T10:{i % 60:02d}:00Z",
                "event": {"id": f"req-{i}", "outcome": "failure" if i % 10 == 0 else "success"},
                "user": {"id": USERS[i % 3]},
                "source": {"ip": f"10.0.0.{i % 250}"},
                "message": f"chat completion number {i}",
                "llm": {"output_tokens": i},
            },
        }
        for i in range(start, start + count)
    ]


def user_buckets(es: Elasticsearch, index: str) -> dict[str, int]:
    resp = es.search(index=index, size=0, aggs={"users": {"terms": {"field": "user.id"}}})
    return {b["key"]: b["doc_count"] for b in resp["aggregations"]["users"]["buckets"]}


def test_mapping_bulk_aggregations_and_restart_on_same_data(elasticsearch_factory) -> None:
    node: ESNode = elasticsearch_factory()
    es = node.client()
    assert es.info()["version"]["number"] == es_version()
    es.indices.create(
        index="audit", mappings=MAPPING, settings={"number_of_shards": 1, "number_of_replicas": 0}
    )

    ok, errors = helpers.bulk(es, audit_docs("audit", 0, 300), refresh="wait_for")
    assert (ok, errors) == (300, [])
    assert es.count(index="audit")["count"] == 300
    assert user_buckets(es, "audit") == {"alice": 100, "bob": 100, "carol": 100}

    hist = es.search(
        index="audit",
        size=0,
        aggs={
            "per_day": {
                "date_histogram": {"field": "@timestamp", "calendar_interval": "day"},
                "aggs": {"tokens": {"sum": {"field": "llm.output_tokens"}}},
            },
        },
    )["aggregations"]["per_day"]["buckets"]
    assert [b["doc_count"] for b in hist] == [100, 100, 100]
    assert sum(b["tokens"]["value"] for b in hist) == sum(range(300))
    assert es.count(index="audit", query={"term": {"event.outcome": "failure"}})["count"] == 30
    assert es.search(index="audit", query={"match": {"message": "number 7"}})["hits"]["total"]["value"] >= 1

    # op_type=create: a replayed batch is rejected per item with 409, nothing is duplicated.
    ok, errors = helpers.bulk(es, audit_docs("audit", 290, 20), raise_on_error=False, refresh="wait_for")
    assert ok == 10 and len(errors) == 10
    assert {e["create"]["status"] for e in errors} == {409}
    assert es.count(index="audit")["count"] == 310
    with pytest.raises(ConflictError):
        es.create(index="audit", id="req-0", document={"event": {"id": "req-0"}})

    # strict mapping: an unknown field is refused, not silently added.
    _, errors = helpers.bulk(es, [{"_index": "audit", "_source": {"surprise": 1}}], raise_on_error=False)
    assert errors and errors[0]["index"]["error"]["type"] == "strict_dynamic_mapping_exception"

    port, data_dir = node.port, node.data_dir
    assert node.stop() is not None and not node.alive()
    # the first clean stop leaves a class-data archive that later starts map (faster startup)
    assert list(ensure_built().home.glob("app-cds-*.jsa"))
    with pytest.raises(OSError):
        urllib.request.urlopen(node.url, timeout=2)

    node.restart()
    assert (node.port, node.data_dir) == (port, data_dir)
    assert any(arg.startswith("-XX:SharedArchiveFile=") for arg in node.proc.args)
    assert es.count(index="audit")["count"] == 310
    assert user_buckets(es, "audit") == {"alice": 104, "bob": 103, "carol": 103}
    assert es.indices.get_mapping(index="audit")["audit"]["mappings"]["dynamic"] == "strict"


def test_kill9_keeps_acknowledged_writes(elasticsearch_factory) -> None:
    node: ESNode = elasticsearch_factory()
    es = node.client()
    # No refresh and no flush before the crash: the documents live only in the translog, which the
    # node fsyncs before acknowledging each request (index.translog.durability=request).
    ok, _ = helpers.bulk(es, audit_docs("crash", 0, 200))
    assert ok == 200
    assert node.kill() == -signal.SIGKILL
    node.start()
    es.indices.refresh(index="crash")
    assert es.count(index="crash")["count"] == 200
    ids = {h["_id"] for h in es.search(index="crash", size=500, source=False)["hits"]["hits"]}
    assert ids == {f"req-{i}" for i in range(200)}

    # A hung node (SIGSTOP) keeps its port but answers nothing: clients time out, then it resumes.
    impatient = node.client(request_timeout=2, max_retries=0)
    node.freeze()
    with pytest.raises(ConnectionTimeout):
        impatient.cluster.health()
    node.thaw()
    assert impatient.cluster.health(wait_for_status="yellow")["status"] in ("green", "yellow")


def test_data_stream_from_index_template(elasticsearch, es_index_prefix) -> None:
    es = elasticsearch.client()
    name = f"logs-{es_index_prefix}"
    es.indices.put_index_template(
        name=es_index_prefix,
        index_patterns=[f"logs-{es_index_prefix}*"],
        data_stream={},
        priority=500,
        template={"mappings": MAPPING},
    )
    ok, errors = helpers.bulk(es, audit_docs(name, 0, 50), refresh="wait_for")
    assert (ok, errors) == (50, [])
    assert es.count(index=name)["count"] == 50
    backing = list(es.indices.get(index=name))
    assert len(backing) == 1 and backing[0].startswith(f".ds-{name}-")
    _, errors = helpers.bulk(es, audit_docs(name, 0, 5), raise_on_error=False)
    assert {e["create"]["status"] for e in errors} == {409}
    # a data stream only takes op_type=create
    _, errors = helpers.bulk(es, [{"_op_type": "index", "_index": name, "_source": {}}], raise_on_error=False)
    assert errors and errors[0]["index"]["status"] == 400


def test_shared_node_is_single_node_cluster(elasticsearch) -> None:
    es = elasticsearch.client()
    health = es.cluster.health()
    assert health["number_of_nodes"] == 1 and health["status"] in ("green", "yellow")
    assert es.ping()
    nodes = es.nodes.info()["nodes"]
    (info,) = nodes.values()
    assert info["http"]["publish_address"] == f"127.0.0.1:{elasticsearch.port}"
    assert elasticsearch.url.startswith("http://127.0.0.1:")


def test_port_in_use_fails_with_the_reason() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EsNodeError) as excinfo:
            start_elasticsearch(port=port, startup_timeout=120)
    first_line = str(excinfo.value).splitlines()[0]
    assert "exited with 1 while starting" in first_line
    assert f"Failed to bind to 127.0.0.1:{port}" in first_line and "Address already in use" in first_line


def test_build_is_cached() -> None:
    first = ensure_built()
    again = ensure_built()
    assert again.built is False and again.args_file == first.args_file
    assert again.args_file.read_text().startswith('-cp "') and str(again.home).startswith(str(first.home))


def test_run_by_hand_and_ctrl_c(tmp_path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.es_node", "--port", str(port), "--data-dir", str(tmp_path / "by-hand")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not any("ready at" in line for line in lines):  # ends by EOF if the process dies
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        wait_http(f"http://127.0.0.1:{port}/_cluster/health?wait_for_status=yellow", timeout=30, proc=proc)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
        out = "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"ready at http://127.0.0.1:{port}" in out and "stopping" in out
    assert (tmp_path / "by-hand" / "data").is_dir()  # an explicit data dir is kept
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_session_node_shared_across_conftests(tmp_path) -> None:
    """Two directories whose conftests both import the fixture still get one node (one JVM)."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "conftest.py").write_text(
            "from tests.es_node.fixtures import elasticsearch  # noqa\n"
        )
        (tmp_path / sub / f"test_{sub}.py").write_text(
            "import os\n"
            f"def test_{sub}(elasticsearch):\n"
            f"    open(os.path.join({str(tmp_path)!r}, 'urls'), 'a').write(\n"
            "        f'{elasticsearch.url} {elasticsearch.proc.pid}\\n')\n"
        )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "a"),
            str(tmp_path / "b"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    lines = (tmp_path / "urls").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], lines
    pid = int(lines[0].split()[1])
    with pytest.raises(ProcessLookupError):  # the last user stopped it
        os.kill(pid, 0)
