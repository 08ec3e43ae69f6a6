"""Records per second the audit shipper moves from the spool into a local Elasticsearch node, next to
the node's own ceiling measured in the same run by bulk-loading the same documents directly.

A real single-node Elasticsearch (bench/es_node) and a real spool written by the real audit trail.
Rows, all with ``op_type=create`` and the same documents, each into a fresh daily index:
  shipper             the sidecar's shipper: reads the spool, bulk-sends, handles items, persists its position
  direct async_bulk   the client's async_bulk helper, same chunk size, documents already in memory
  direct raw _bulk    pre-serialized NDJSON bodies sent with client.bulk (no client-side JSON work)

    ~/.cache/custos/venv/bin/python -m bench.audit_ship --records 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from elasticsearch.serializer import OrjsonSerializer

from bench.audit_stage import make_ctx
from sidecar.audit.config import AuditConfig, ElasticsearchConfig
from sidecar.audit.es import setup
from sidecar.audit.record import build_record
from sidecar.audit.shipper import Shipper
from sidecar.audit.trail import AuditTrail


async def fill_spool(state: Path, n: int) -> AuditTrail:
    trail = AuditTrail(AuditConfig(), state)
    await trail.open()
    for i in range(n):
        trail.append(build_record(make_ctx(i)))
        if i % 1000 == 0:
            await asyncio.sleep(0)
    while trail.writer.written_seq < n:  # type: ignore[union-attr]  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return trail


async def count(client: AsyncElasticsearch, index: str) -> int:
    await client.indices.refresh(index=index)
    return (await client.count(index=index))["count"]


async def run(n: int, batch: int, url: str, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        trail = await fill_spool(state, n)
        docs = [
            orjson.loads(line)
            for seg in sorted(trail.chain_dir.glob("seg-*.jsonl"))  # type: ignore[union-attr]
            for line in seg.read_bytes().splitlines()
        ]
        client = AsyncElasticsearch(url, serializer=OrjsonSerializer(), request_timeout=120)

        def actions(prefix: str):
            for d in docs:
                day = d["@timestamp"][:10].replace("-", ".")
                yield {
                    "_op_type": "create",
                    "_index": f"{prefix}-{day}",
                    "_id": d["event"]["id"],
                    "_source": d,
                }

        from elasticsearch import Elasticsearch

        base = ElasticsearchConfig(
            hosts=[url], index="bench-x", checkpoint_index="bench-x-cp", batch_size=batch
        )
        sync = Elasticsearch(url)
        days = sorted({d["@timestamp"][:10].replace("-", ".") for d in docs})

        def fresh(name: str) -> ElasticsearchConfig:
            cfg = base.model_copy(update={"index": name, "checkpoint_index": f"{name}-cp"})
            setup(sync, cfg)
            # Indices exist before the clock starts: index creation is not what is measured.
            for day in days:
                sync.indices.create(index=f"{name}-{day}")
            sync.indices.create(index=f"{name}-cp")
            return cfg

        async def shipper_row(r: int) -> float:
            # Templates and indices are in place (as for the direct rows): no setup check at start.
            cfg = fresh(f"bench-ship{r}").model_copy(update={"setup_on_start": False})
            (trail.chain_dir / "shipped.json").unlink(missing_ok=True)  # type: ignore[operator]
            shipper = Shipper(cfg, trail.spool_dir, trail.chain_dir, trail.writer)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            await shipper.start()
            while shipper.cursor.acked_seq < n:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            dt = time.perf_counter() - t0
            await shipper.stop()
            assert await count(client, f"bench-ship{r}-2*") == n
            return dt

        async def direct_row(r: int) -> float:
            fresh(f"bench-direct{r}")
            t0 = time.perf_counter()
            ok, errors = await async_bulk(
                client, actions(f"bench-direct{r}"), chunk_size=batch, max_chunk_bytes=100 << 20
            )
            dt = time.perf_counter() - t0
            assert ok == n and not errors
            return dt

        async def raw_row(r: int) -> float:
            fresh(f"bench-raw{r}")
            bodies = []  # serialized before the clock starts
            for i in range(0, n, batch):
                lines = []
                for d in docs[i : i + batch]:
                    day = d["@timestamp"][:10].replace("-", ".")
                    meta = {"create": {"_index": f"bench-raw{r}-{day}", "_id": d["event"]["id"]}}
                    lines.append(orjson.dumps(meta))
                    lines.append(orjson.dumps(d))
                bodies.append(b"\n".join(lines) + b"\n")
            t0 = time.perf_counter()
            for body in bodies:
                resp = await client.bulk(operations=body)
                assert not resp["errors"]
            return time.perf_counter() - t0

        # Warm the node's JVM first (not timed), then rounds in rotating order; best round counts.
        fresh("bench-warm")
        await async_bulk(client, actions("bench-warm"), chunk_size=batch, max_chunk_bytes=100 << 20)
        cases = [
            (f"shipper (batch {batch})", shipper_row),
            (f"direct async_bulk (chunk {batch})", direct_row),
            (f"direct raw _bulk (chunk {batch})", raw_row),
        ]
        times: dict[str, list[float]] = {name: [] for name, _fn in cases}
        for r in range(rounds):
            order = cases[r % 3 :] + cases[: r % 3]
            for name, fn in order:
                times[name].append(await fn(r))
        sync.close()
        rows = [
            {
                "case": name,
                "records": n,
                "seconds": min(times[name]),
                "all_rounds_s": [round(t, 2) for t in times[name]],
            }
            for name, _fn in cases
        ]
        await client.close()
        await trail.close()
    for r in rows:
        r["records_per_s"] = round(r["records"] / r["seconds"])
        r["seconds"] = round(r["seconds"], 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument(
        "--rounds", type=int, default=3, help="each case once per round, order rotated; best counts"
    )
    ap.add_argument("--es", metavar="URL", help="use this node instead of starting one (bench/es_node)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    node = None
    url = args.es
    if url is None:
        from bench.es_node import start_elasticsearch

        node = start_elasticsearch()
        url = node.url
    try:
        rows = asyncio.run(run(args.records, args.batch, url, args.rounds))
    finally:
        if node is not None:
            node.stop()
    print(f"{'case':<34} {'records':>8} {'best s':>8} {'records/s':>10}  every round (s)")
    for r in rows:
        rounds = r["all_rounds_s"]
        print(f"{r['case']:<34} {r['records']:>8} {r['seconds']:>8} {r['records_per_s']:>10}  {rounds}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
