"""Audit soak: unpaced load through a sidecar that ships to a real Elasticsearch node, with repeated
``kill -9`` of the sidecar and of Elasticsearch; then counts what was answered, recorded, shipped and
reported as lost.

One sidecar (default audit settings: ``fsync: interval``, ``fail_closed: false``) in front of an
instant upstream (``bench.audit_load``), shipping to the test node of ``bench/es_node``. For
``--duration`` seconds an unpaced load (``--concurrency`` clients back to back) runs; every
``--sidecar-kill-every`` seconds the sidecar is killed with SIGKILL and started again at once, and every
``--es-kill-every`` seconds Elasticsearch is killed with SIGKILL and restarted after ``--es-down``
seconds. At the end the sidecar is stopped cleanly and the backlog drained, then:

  answered   requests whose client got 200
  recorded   of those, how many have their record in the spool
  shipped    of those, how many have their record in Elasticsearch (exactly once)
  lost       records the trail itself reports as lost (loss records), and restart records
  verify     the exit codes of ``custos audit verify`` on the spool and with ``--es``

Reproduce (a few minutes):

    ~/.cache/custos/venv/bin/python -m bench.audit_soak --duration 90
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

from bench.audit_load import UnpacedLoad
from bench.procs import ManagedProcess, custos_cmd, free_port, wait_http
from bench.proxy import sidecar_headers


def _records(spool: Path) -> list[dict]:
    from sidecar.audit.compression import open_segment
    from sidecar.audit.spool import chain_dirs, list_segments

    out = []
    for chain in chain_dirs(spool):
        for _first, seg in list_segments(chain):
            with open_segment(seg) as f:
                out.extend(json.loads(line) for line in f.read().splitlines() if line)
    return out


def _es_docs(url: str, prefix: str) -> list[dict]:
    from elasticsearch import Elasticsearch
    from elasticsearch.helpers import scan

    client = Elasticsearch(url, request_timeout=60)
    try:
        client.indices.refresh(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
        hits = scan(client, index=f"{prefix}-2*", query={"query": {"match_all": {}}}, ignore_unavailable=True)
        return [h["_source"] for h in hits]
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=90.0, help="seconds of load")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--sidecar-kill-every", type=float, default=10.0)
    p.add_argument("--es-kill-every", type=float, default=30.0)
    p.add_argument("--es-down", type=float, default=8.0, help="seconds Elasticsearch stays down")
    p.add_argument("--fsync", default="interval")
    p.add_argument("--json", metavar="PATH", help="also write the counts as JSON")
    args = p.parse_args(argv)

    from bench.es_node import start_elasticsearch

    prefix = f"soak-{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="custos-audit-soak-") as t:
        tmp = Path(t)
        node = start_elasticsearch(data_dir=tmp / "es")
        up_port = free_port()
        upstream = ManagedProcess(
            "upstream", [sys.executable, "-m", "bench.audit_load", "--port", str(up_port)]
        )
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", timeout=30, proc=upstream.proc)
        port = free_port()
        state = tmp / "state"
        cfg = {
            "server": {"host": "127.0.0.1", "port": port, "workers": 1, "log_level": "warning"},
            "upstream": {"url": f"http://127.0.0.1:{up_port}"},
            "state": {"dir": str(state)},
            "audit": {
                "fsync": args.fsync,
                "checkpoint_interval_s": 2,
                "elasticsearch": {
                    "hosts": [node.url],
                    "index": prefix,
                    "checkpoint_index": f"{prefix}-checkpoints",
                    "backoff_initial_s": 0.2,
                    "backoff_max_s": 2.0,
                },
            },
        }
        cfg_path = tmp / "sidecar.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))

        def start_sidecar(n: int) -> ManagedProcess:
            proc = ManagedProcess(f"sidecar-{n}", custos_cmd("serve", "--config", str(cfg_path)))
            wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc.proc)
            return proc

        generation = 0
        sidecar = start_sidecar(generation)
        headers = sidecar_headers(cfg_path)
        load = UnpacedLoad(f"http://127.0.0.1:{port}", headers, "soak", concurrency=args.concurrency).start()
        t0 = time.monotonic()
        next_sc = t0 + args.sidecar_kill_every
        next_es = t0 + args.es_kill_every
        es_back_at: float | None = None
        es_thread: threading.Thread | None = None
        kills = Counter()
        try:
            while (now := time.monotonic()) < t0 + args.duration:
                if now >= next_sc:
                    sidecar.kill9()
                    kills["sidecar"] += 1
                    generation += 1
                    sidecar = start_sidecar(generation)
                    next_sc = time.monotonic() + args.sidecar_kill_every
                if es_back_at is None and now >= next_es and (es_thread is None or not es_thread.is_alive()):
                    node.kill()
                    kills["elasticsearch"] += 1
                    es_back_at = now + args.es_down
                if es_back_at is not None and now >= es_back_at:
                    # Started in a thread: the sidecar kills go on while the node recovers.
                    es_thread = threading.Thread(target=node.start, daemon=True)
                    es_thread.start()
                    es_back_at = None
                    next_es = time.monotonic() + args.es_kill_every
                time.sleep(0.1)
        finally:
            load.stop()
        if es_thread is not None:
            es_thread.join(300)
        if es_back_at is not None or not node.alive():
            node.start()
        # Drain: the sidecar ships its backlog, then stops cleanly (final checkpoint shipped).
        answered = load.ok_ids()
        deadline = time.monotonic() + 180
        docs: list[dict] = []
        while time.monotonic() < deadline:
            try:
                docs = _es_docs(node.url, prefix)
            except Exception:
                docs = []
            spool_ids = {r["event"]["id"] for r in _records(state / "audit" / "spool")}
            if spool_ids <= {d["event"]["id"] for d in docs}:
                break
            time.sleep(2)
        sidecar.stop()
        time.sleep(1)
        docs = _es_docs(node.url, prefix)
        records = _records(state / "audit" / "spool")
        spool_ids = [r["event"]["id"] for r in records]
        es_ids = [d["event"]["id"] for d in docs]
        env = {**os.environ, "CUSTOS_STATE_DIR": str(state)}
        key = str(state / "audit" / "signing.pub")
        v_spool = subprocess.run(
            custos_cmd("audit", "verify", str(state / "audit" / "spool"), "--public-key", key, "--json"),
            capture_output=True,
            text=True,
            env=env,
        )
        v_es = subprocess.run(
            custos_cmd(
                "audit",
                "verify",
                "--es",
                node.url,
                "--index",
                f"{prefix}-2*",
                "--checkpoint-index",
                f"{prefix}-checkpoints",
                "--public-key",
                key,
                "--json",
            ),
            capture_output=True,
            text=True,
            env=env,
        )
        rep_spool = json.loads(v_spool.stdout or "{}")
        rep_es = json.loads(v_es.stdout or "{}")
        losses = [r for r in records if r["event"]["action"] == "audit_loss"]
        result = {
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "fsync": args.fsync,
            "kills": dict(kills),
            "requests_sent": len(load.results),
            "answered_200": len(answered),
            "answered_per_s": round(len(answered) / args.duration, 1),
            "recorded": len(answered & set(spool_ids)),
            "answered_without_record": len(answered - set(spool_ids)),
            "shipped": len(answered & set(es_ids)),
            "spool_records": len(spool_ids),
            "es_records": len(es_ids),
            "es_duplicates": len(es_ids) - len(set(es_ids)),
            "spool_not_in_es": len(set(spool_ids) - set(es_ids)),
            "records_without_answer": len(
                {i for i in spool_ids if i.startswith("soak-")} - answered
            ),  # requests cut by a kill: recorded, not (completely) answered
            "restart_records": sum(r["event"]["action"] == "audit_restart" for r in records),
            "reported_lost": sum(r["custos"]["loss"]["count"] for r in losses),
            "verify_spool_exit": v_spool.returncode,
            "verify_spool_warnings": len(rep_spool.get("warnings", [])),
            "verify_es_exit": v_es.returncode,
            "verify_es_warnings": len(rep_es.get("warnings", [])),
            "verify_problems": [p["kind"] for p in rep_spool.get("problems", [])[:5]]
            + [p["kind"] for p in rep_es.get("problems", [])[:5]],
        }
        upstream.stop()
        node.stop()
        node.destroy()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
