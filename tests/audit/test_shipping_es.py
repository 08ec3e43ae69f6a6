"""Shipping to a real Elasticsearch node (tests/es_node): templates, exactly-once delivery through an
outage and a sidecar kill -9, dead letters for mapping errors, and verification of the stored trail."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
from elasticsearch import Elasticsearch

from .es_helpers import Load, audit_config, wait_es_ids
from .helpers import run_verify, spool_records, wait_until
from .test_spool_full import metric, send

CHAT = "/v1/chat/completions"


def _cli(*args: str, env: dict[str, str] | None = None):
    import subprocess

    from bench.procs import custos_cmd

    return subprocess.run(custos_cmd("audit", *args), capture_output=True, text=True, timeout=120, env=env)


def test_setup_es_installs_explicit_mappings(elasticsearch, es_index_prefix, tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        json.dumps(
            {
                "audit": {
                    "elasticsearch": {
                        "index": es_index_prefix,
                        "checkpoint_index": f"{es_index_prefix}-checkpoints",
                    }
                }
            }
        )
    )
    proc = _cli("setup-es", "--es", elasticsearch.url, "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "ILM not available" in proc.stdout  # this node has no ILM; the policy ships as a file
    client = Elasticsearch(elasticsearch.url)
    tpl = client.indices.get_index_template(name=es_index_prefix)["index_templates"][0]["index_template"]
    props = tpl["template"]["mappings"]["properties"]
    assert tpl["index_patterns"] == [f"{es_index_prefix}-*"]
    assert tpl["template"]["mappings"]["dynamic"] in (False, "false")
    assert props["event"]["properties"]["id"]["type"] == "keyword"
    assert props["source"]["properties"]["ip"]["type"] == "ip"
    assert props["error"]["properties"]["message"]["type"] == "text"
    client.close()
    out = tmp_path / "export"
    assert _cli("setup-es", "--config", str(cfg), "--export", str(out)).returncode == 0
    policy = json.loads((out / f"{es_index_prefix}.ilm-policy.json").read_text())
    assert "delete" in policy["policy"]["phases"]
    bad = _cli("setup-es", "--es", "ftp://x", "--config", str(cfg))
    assert bad.returncode == 2 and "--es" in bad.stderr and "Traceback" not in bad.stderr


def test_records_reach_es_and_verify_there(
    engine, start_sidecar, elasticsearch, es_index_prefix, tmp_path
) -> None:
    # Only the shutdown checkpoint will cover these records (no count or timer checkpoint before it).
    cfg = audit_config(elasticsearch.url, es_index_prefix, checkpoint_every=1000, checkpoint_interval_s=3600)
    sc = start_sidecar(engine.url, config=cfg)
    ids = {f"ship-{i}" for i in range(12)}
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=60) as client:
        for rid in sorted(ids):
            assert (
                client.post(
                    CHAT,
                    headers={"x-request-id": rid},
                    json={
                        "model": "custos-tiny",
                        "max_tokens": 4,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                ).status_code
                == 200
            )
        # A client reusing a request id: both records are kept (the second under its own _id).
        for _ in range(2):
            client.post(
                CHAT,
                headers={"x-request-id": "ship-dup"},
                json={
                    "model": "custos-tiny",
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
    docs = wait_es_ids(elasticsearch.url, es_index_prefix, ids | {"ship-dup"})
    assert len(docs) == 14 and len({d["_id"] for d in docs}) == 14
    assert {d["_id"] for d in docs if d["event"]["id"] != "ship-dup"} == ids  # _id = event.id
    assert sum(d["event"]["id"] == "ship-dup" for d in docs) == 2
    sc.stop()  # final checkpoint, shipped on the way out
    key = str(tmp_path / "state" / "audit" / "signing.pub")
    proc = _cli(
        "verify",
        "--es",
        elasticsearch.url,
        "--index",
        f"{es_index_prefix}-2*",
        "--checkpoint-index",
        f"{es_index_prefix}-checkpoints",
        "--public-key",
        key,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "14 record(s)" in proc.stdout and "signed checkpoint" in proc.stdout
    assert "not yet under a checkpoint" not in proc.stdout  # the shutdown checkpoint was shipped too
    # Someone edits a record inside Elasticsearch: the verifier names it.
    client = Elasticsearch(elasticsearch.url)
    victim = next(d for d in docs if d["event"]["id"] == "ship-3")
    client.update(index=victim["_index"], id=victim["_id"], doc={"user": {"id": "mallory"}}, refresh=True)
    client.close()
    proc = _cli(
        "verify",
        "--es",
        elasticsearch.url,
        "--index",
        f"{es_index_prefix}-2*",
        "--checkpoint-index",
        f"{es_index_prefix}-checkpoints",
        "--public-key",
        key,
    )
    assert proc.returncode == 1
    assert "ALTERED" in proc.stdout and f"seq {victim['audit']['seq']}" in proc.stdout
    verify_args = (
        "verify",
        "--es",
        elasticsearch.url,
        "--index",
        f"{es_index_prefix}-2*",
        "--checkpoint-index",
        f"{es_index_prefix}-checkpoints",
        "--public-key",
        key,
    )
    # Two records' sources swapped under each other's _id: every hash still matches, but a lookup by
    # request id returns the other request's record.
    client = Elasticsearch(elasticsearch.url)
    a, b = (next(d for d in docs if d["event"]["id"] == f"ship-{i}") for i in (5, 6))
    strip = ("_id", "_index")
    client.index(index=a["_index"], id=a["_id"], document={k: v for k, v in b.items() if k not in strip})
    client.index(index=b["_index"], id=b["_id"], document={k: v for k, v in a.items() if k not in strip})
    client.indices.refresh(index=f"{es_index_prefix}-2*")
    proc = _cli(*verify_args)
    assert proc.returncode == 1 and "event.id is 'ship-6'" in proc.stdout, proc.stdout
    # The head of the chain deleted: the checkpoint covers it from seq 1, so it is missing.
    first = min(docs, key=lambda d: d["audit"]["seq"])
    assert first["audit"]["seq"] == 1
    client.delete(index=first["_index"], id=first["_id"], refresh=True)
    client.close()
    proc = _cli(*verify_args)
    assert proc.returncode == 1 and "MISSING: chain" in proc.stdout and "seq range 1-1" in proc.stdout


def test_es_outage_then_every_record_exactly_once(
    engine, start_sidecar, elasticsearch_factory, es_index_prefix, tmp_path
) -> None:
    """Elasticsearch is killed for ~12 s (not a minute: shared CI machine) while traffic flows."""
    node = elasticsearch_factory()
    sc = start_sidecar(engine.url, config=audit_config(node.url, es_index_prefix))
    load = Load(sc.url, sc.headers, "outage").start()
    time.sleep(3)
    node.kill()
    time.sleep(12)
    node.restart()
    time.sleep(3)
    load.stop()
    sent = load.ok_ids()
    assert len(sent) > 10
    docs = wait_es_ids(node.url, es_index_prefix, sent, timeout=90)
    ids = [d["event"]["id"] for d in docs]
    assert len(ids) == len(set(ids))  # exactly once
    assert set(ids) == sent
    assert metric(sc, "custos_audit_ship_failures_total") > 0  # the outage was seen and retried
    # Every scrape is a request with its own record: the backlog drains to 0 between scrapes.
    assert wait_until(lambda: metric(sc, "custos_audit_backlog_records") == 0, timeout=20, interval=1.0)


def test_kill9_under_load_loses_nothing(
    engine, start_sidecar, elasticsearch, es_index_prefix, tmp_path
) -> None:
    cfg = audit_config(elasticsearch.url, es_index_prefix)
    sc = start_sidecar(engine.url, config=cfg)
    load = Load(sc.url, sc.headers, "k9a").start()
    time.sleep(5)
    sc.process.kill9()
    load.stop()
    sc2 = start_sidecar(engine.url, config=cfg, port=sc.port, name="sidecar-restarted")
    load2 = Load(sc2.url, sc2.headers, "k9b").start()
    time.sleep(3)
    load2.stop()
    # Every answered request before the kill (its record reached the kernel before the client had
    # the last byte, so no allowance for the last moments) and every one after the restart is in
    # Elasticsearch.
    expected = load.ok_ids() | load2.ok_ids()
    assert len(expected) > 10
    docs = wait_es_ids(elasticsearch.url, es_index_prefix, expected, timeout=90)
    ids = [d["event"]["id"] for d in docs]
    assert len(ids) == len(set(ids))  # nothing duplicated by the re-sent batch
    spool = spool_records(tmp_path / "state" / "audit" / "spool")
    assert sorted(r["event"]["id"] for r in spool) == sorted(ids)  # ES holds exactly the spool
    # The restart after kill -9 is a record of the chain (shipped too): one chain, linked across
    # the crash; verify passes with a warning naming the unclean stop, on the spool and on ES.
    (restart,) = [d for d in docs if d["event"]["action"] == "audit_restart"]
    assert restart["custos"]["restart"]["previous_seq"] == restart["audit"]["seq"] - 1
    sc2.stop()
    env = {**os.environ, "CUSTOS_STATE_DIR": str(tmp_path / "state")}
    proc = run_verify(env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chain(s)" in proc.stdout and "WARNING" in proc.stdout and "unclean stop" in proc.stdout
    proc = _cli(
        "verify",
        "--es",
        elasticsearch.url,
        "--index",
        f"{es_index_prefix}-2*",
        "--checkpoint-index",
        f"{es_index_prefix}-checkpoints",
        "--public-key",
        str(tmp_path / "state" / "audit" / "signing.pub"),
    )
    assert proc.returncode == 0 and "unclean stop" in proc.stdout, proc.stdout + proc.stderr


def test_mapping_error_goes_to_dead_letter(
    engine, start_sidecar, elasticsearch, es_index_prefix, tmp_path
) -> None:
    client = Elasticsearch(elasticsearch.url)
    # A cluster-side mapping that cannot take our records (user.id as a number).
    client.indices.put_index_template(
        name=f"{es_index_prefix}-clash",
        index_patterns=[f"{es_index_prefix}-2*"],
        priority=900,
        template={"mappings": {"properties": {"user": {"properties": {"id": {"type": "long"}}}}}},
    )
    client.close()
    sc = start_sidecar(engine.url, config=audit_config(elasticsearch.url, es_index_prefix))
    with httpx.Client(base_url=sc.url, headers=sc.headers, timeout=60) as http:
        for i in range(3):
            assert (
                http.post(
                    CHAT,
                    headers={"x-request-id": f"dl-{i}"},
                    json={
                        "model": "custos-tiny",
                        "max_tokens": 4,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                ).status_code
                == 200
            )
    deadline = time.monotonic() + 30
    dead: list[dict] = []
    while time.monotonic() < deadline and len(dead) < 3:
        files = list((tmp_path / "state" / "audit" / "spool").glob("*/dead-letter.jsonl"))
        dead = [json.loads(x) for f in files for x in f.read_bytes().splitlines()]
        time.sleep(0.3)
    assert sorted(d["record"]["event"]["id"] for d in dead) == ["dl-0", "dl-1", "dl-2"]
    assert all("user.id" in d["reason"] or "parse" in d["reason"] for d in dead), dead[0]["reason"]
    assert metric(sc, "custos_audit_dead_letters_total") == 3
    # Not stuck retrying: the backlog drains. Each scrape leaves an audit record of its own (which
    # the clashing mapping dead-letters too), so the gauge can show the previous scrape's record for
    # a moment; it must reach 0, not stay at the three refused records.
    assert wait_until(lambda: metric(sc, "custos_audit_backlog_records") == 0, timeout=20, interval=1.0)


def test_block_with_shipping_prunes_instead_of_blocking(
    start_sidecar, elasticsearch, es_index_prefix, tmp_path
) -> None:
    from bench.procs import free_port

    cfg = audit_config(
        elasticsearch.url, es_index_prefix, max_bytes=64 * 1024, when_full="block", block_timeout_s=10
    )
    sc = start_sidecar(f"http://127.0.0.1:{free_port()}", config=cfg)
    codes = [r.status_code for r in send(sc, 150)]  # ~3x the cap
    assert set(codes) == {502}  # never refused: shipped files make room
    docs = wait_es_ids(elasticsearch.url, es_index_prefix, {f"full-{i:04d}" for i in range(150)})
    assert len(docs) == 150
    size = sum(p.stat().st_size for p in Path(tmp_path / "state" / "audit" / "spool").glob("*/seg-*"))
    assert size <= 64 * 1024


def test_drop_oldest_losses_reach_es_and_fail_verify(
    start_sidecar, elasticsearch, es_index_prefix, tmp_path
) -> None:
    """Elasticsearch unreachable while the spool overflows with drop_oldest: the drops are records of
    the chain, so once shipping works they reach Elasticsearch and `verify --es` fails, naming them."""
    from bench.procs import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    cfg = audit_config(
        dead,
        es_index_prefix,
        max_bytes=64 * 1024,
        when_full="drop_oldest",
        checkpoint_every=1000,
        compression="none",  # the cap is reached, not absorbed by compressing sealed files
    )
    sc = start_sidecar(f"http://127.0.0.1:{free_port()}", config=cfg)
    assert {r.status_code for r in send(sc, 150)} == {502}  # never refused: the oldest are dropped
    sc.stop()
    spool = tmp_path / "state" / "audit" / "spool"
    losses = [r for r in spool_records(spool) if r["event"]["action"] == "audit_loss"]
    assert losses
    cfg["audit"]["elasticsearch"]["hosts"] = [elasticsearch.url]
    sc2 = start_sidecar(f"http://127.0.0.1:{free_port()}", config=cfg, name="sidecar-2")
    kept = {r["event"]["id"] for r in spool_records(spool)}
    docs = wait_es_ids(elasticsearch.url, es_index_prefix, kept)
    shipped = [d for d in docs if d["event"]["action"] == "audit_loss"]
    assert shipped and "drop_oldest" in shipped[-1]["custos"]["loss"]["reason"]
    sc2.stop()
    proc = _cli(
        "verify",
        "--es",
        elasticsearch.url,
        "--index",
        f"{es_index_prefix}-2*",
        "--checkpoint-index",
        f"{es_index_prefix}-checkpoints",
        "--public-key",
        str(tmp_path / "state" / "audit" / "signing.pub"),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MISSING" in proc.stdout and "drop_oldest" in proc.stdout, proc.stdout
    lost = max(r["custos"]["loss"]["to"] for r in shipped)
    assert f"seq range 1-{lost}" in proc.stdout, proc.stdout
