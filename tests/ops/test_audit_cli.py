"""``custos audit show|search|tail``: the trail read without Kibana, from a real spool (written by the
real audit trail, with compressed sealed segments and several chains), through the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.procs import REPO, custos_cmd
from sidecar.audit.config import AuditConfig
from sidecar.audit.query import Filter, parse_time
from sidecar.audit.record import build_record
from sidecar.audit.trail import AuditTrail
from sidecar.context import Identity
from tests.audit.helpers import make_ctx

from .test_bad_input import one_line_error, run

HOUR = 3600.0


def write_spool(
    state: Path, n: int, *, start: int = 0, compression: str = "gzip", step_s: float = 600
) -> None:
    """``n`` records, one every ``step_s`` seconds up to now: users alice/bob alternating, statuses
    200, 200, 403 (denied), 500 in turn; small segments so most are sealed (and compressed)."""

    async def go() -> None:
        trail = AuditTrail(
            AuditConfig(checkpoint_every=10, segment_bytes=4096, compression=compression), state
        )
        await trail.open()
        now = time.time()
        for i in range(start, start + n):
            ctx = make_ctx(i, status=(200, 200, 403, 500)[i % 4], denied=i % 4 == 2)
            ctx.identity = Identity(("alice", "bob")[i % 2], ("analyst",))
            ctx.started_wall = now - (start + n - i) * step_s
            trail.append(build_record(ctx))
        await trail.close()

    asyncio.run(go())


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("audit-cli")
    write_spool(state, 40)
    spool = state / "audit" / "spool"
    (chain,) = [p for p in spool.iterdir() if p.is_dir()]
    assert list(chain.glob("seg-*.jsonl.gz")), "the test needs compressed segments"
    return spool


def ids(out: subprocess.CompletedProcess) -> list[str]:
    return [json.loads(line)["event"]["id"] for line in out.stdout.splitlines()]


def test_search_filters_combine(spool: Path) -> None:
    out = run("audit", "search", "--spool", str(spool), "--user", "bob", "--status", "5xx", "--json")
    assert out.returncode == 0, out.stderr
    assert ids(out) == [f"req-{i:06d}" for i in range(3, 40, 4)]  # bob's 500s, oldest first
    out = run("audit", "search", "--spool", str(spool), "--outcome", "failure", "--since", "1h", "--json")
    docs = [json.loads(line) for line in out.stdout.splitlines()]
    assert docs and all(d["event"]["outcome"] == "failure" for d in docs)
    assert all(parse_time(d["@timestamp"]) >= time.time() - HOUR - 60 for d in docs)
    out = run("audit", "search", "--spool", str(spool), "--status", "403", "--limit", "2", "--json")
    assert ids(out) == ["req-000034", "req-000038"]  # the newest two, oldest first


def test_search_time_range_rfc3339_and_relative(spool: Path) -> None:
    all_docs = [
        json.loads(x)
        for x in run("audit", "search", "--spool", str(spool), "--all", "--json").stdout.splitlines()
    ]
    assert len(all_docs) == 40
    since, until = all_docs[10]["@timestamp"], all_docs[20]["@timestamp"]
    out = run("audit", "search", "--spool", str(spool), "--since", since, "--until", until, "--all", "--json")
    assert ids(out) == [f"req-{i:06d}" for i in range(10, 20)]  # --until is exclusive
    out = run("audit", "search", "--spool", str(spool), "--since", "65m", "--json")
    assert len(ids(out)) == 6  # one record every 10 minutes


def test_search_table_is_readable(spool: Path) -> None:
    out = run("audit", "search", "--spool", str(spool), "--request-id", "req-000002")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split()[:3] == ["TIME", "REQUEST", "ID"]
    for part in ("req-000002", "alice", "403", "failure", "POST", "/v1/chat/completions", "role not allowed"):
        assert part in row


def test_show_one_record_in_full(spool: Path) -> None:
    out = run("audit", "show", "req-000007", "--spool", str(spool))
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(None, 1) for line in out.stdout.splitlines())
    assert fields["event.id"] == "req-000007" and fields["user.id"] == "bob"
    assert fields["http.response.status_code"] == "500" and "audit.hash" in fields
    out = run("audit", "show", "req-000007", "--spool", str(spool), "--json")
    (doc,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert doc["event"]["id"] == "req-000007" and doc["audit"]["seq"] == 8


def test_nothing_found_is_exit_1(spool: Path) -> None:
    out = run("audit", "show", "no-such-request", "--spool", str(spool))
    assert out.returncode == 1 and out.stdout == "" and "no audit record" in out.stderr
    out = run("audit", "search", "--spool", str(spool), "--user", "nobody")
    assert out.returncode == 1 and out.stdout == "" and "no matching audit records" in out.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--since", "yesterday"), "--since 'yesterday'"),
        (("--until", "2026-11-30T08:00:00"), "time zone"),
        (("--since", "1h", "--until", "2h"), "time range is empty"),
        (("--status", "999"), "--status"),
        (("--index", "x"), "--index needs --es"),
    ],
)
def test_bad_query_input(spool: Path, args: tuple[str, ...], needle: str) -> None:
    one_line_error(run("audit", "search", "--spool", str(spool), *args), needle)


def test_bad_sources(tmp_path: Path) -> None:
    one_line_error(run("audit", "search", "--spool", str(tmp_path / "missing")), "no such file")
    one_line_error(run("audit", "search", "--spool", str(tmp_path)), "no audit chains")
    one_line_error(run("audit", "tail", "-f", "--es", "http://127.0.0.1:1"), "--follow")
    one_line_error(run("audit", "search", "--es", "http://127.0.0.1:1", "--index", "x"), "cannot search")
    one_line_error(run("audit", "search", "--es", "notaurl"), "http:// or https://")


def test_tail_shows_the_newest(spool: Path) -> None:
    out = run("audit", "tail", "-n", "3", "--spool", str(spool), "--json")
    assert ids(out) == ["req-000037", "req-000038", "req-000039"]
    out = run("audit", "tail", "-n", "2", "--spool", str(spool), "--user", "alice")
    assert out.returncode == 0 and out.stdout.count("alice") == 2 and "req-000038" in out.stdout


def test_tail_follows_rotation_compression_and_new_chains(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_spool(state, 3, compression="none")
    spool = state / "audit" / "spool"
    argv = custos_cmd("audit", "tail", "-f", "-n", "1", "--spool", str(spool), "--json")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    lines = Lines(proc)
    try:
        assert json.loads(lines.next())["event"]["id"] == "req-000002"
        # The same chain continues (its segments rotate and are compressed as they are sealed).
        write_spool(state, 30, start=3, step_s=1)
        got = [json.loads(lines.next())["event"]["id"] for _ in range(30)]
        assert got == [f"req-{i:06d}" for i in range(3, 33)]
        # A second worker's chain, started after the tail: its records show up too.
        _second_chain(state)
        more = [json.loads(lines.next())["event"]["id"] for _ in range(2)]
        assert sorted(more) == ["req-000100", "req-000101"]
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in proc.stderr.read()


class Lines:
    """The lines a process prints, read in a thread: ``next()`` fails after a timeout, never hangs."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import queue
        import threading

        self.proc = proc
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.queue.put(line)
        self.queue.put("")

    def next(self, timeout: float = 20.0) -> str:
        import queue

        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"tail -f printed nothing for {timeout}s") from None
        assert line, "tail -f ended"
        return line


def _second_chain(state: Path) -> None:
    """Two trails open at once: the second claims a new chain slot (what a second worker does)."""

    async def go() -> None:
        first = AuditTrail(AuditConfig(compression="none"), state)
        await first.open()
        second = AuditTrail(AuditConfig(compression="none"), state)
        await second.open()
        assert first.chain is not None and second.chain is not None
        assert first.chain.chain_id != second.chain.chain_id
        for i in (100, 101):
            second.append(build_record(make_ctx(i)))
        await second.close()
        await first.close()

    asyncio.run(go())


def test_filter_as_an_elasticsearch_query() -> None:
    flt = Filter(
        request_id="r1", user="alice", since=0.0, until=60.0, outcome="failure", statuses=frozenset({403})
    )
    query = flt.es_query()["bool"]
    assert {"term": {"event.id": "r1"}} in query["filter"]
    assert {"term": {"user.id": "alice"}} in query["filter"]
    assert {"terms": {"http.response.status_code": [403]}} in query["filter"]
    (rng,) = [f["range"]["@timestamp"] for f in query["filter"] if "range" in f]
    assert rng["gte"] == "1970-01-01T00:00:00.000Z" and rng["lt"] == "1970-01-01T00:01:00.000Z"
