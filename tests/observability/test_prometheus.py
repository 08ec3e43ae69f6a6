"""A real Prometheus (Debian package) scrapes a real sidecar and the real CPU engine; queries through
its HTTP API return the series the dashboards and alerts use."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from bench.procs import ManagedProcess
from bench.prometheus import start_prometheus
from bench.stack import TEST_ROLE, mint_token
from gpu.sim import SCENARIO_DIR

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture
def prometheus(tmp_path: Path):
    if not Path(PROMETHEUS).exists():
        pytest.skip("the prometheus binary is not installed (Debian package `prometheus`)")
    procs: list[ManagedProcess] = []

    def start(targets: dict[str, str], tokens: dict[str, str] | None = None) -> str:
        """Scrape ``targets`` ({job: host:port}); a job in ``tokens`` sends that Bearer token, read
        from a file as in production (``authorization.credentials_file``)."""
        workdir = tmp_path / f"prometheus-{len(procs)}"
        workdir.mkdir()
        prom = start_prometheus(workdir, {job: [target] for job, target in targets.items()}, tokens)
        procs.append(prom.process)
        return prom.url

    yield start
    for p in procs:
        p.stop()


def query(prom: str, expr: str) -> list[dict]:
    resp = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10)
    resp.raise_for_status()
    doc = resp.json()
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def wait_value(prom: str, expr: str, want, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = query(prom, expr)
        if result and want(float(result[0]["value"][1])):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{expr} never satisfied the condition; last result {result}")


def test_prometheus_scrapes_sidecar_and_engine(engine, start_sidecar, prometheus):
    sidecar = start_sidecar(
        engine.url, {"gpu": {"simulation": str(SCENARIO_DIR / "steady.yaml"), "interval_s": 0.5}}
    )
    n = 4
    for _ in range(n):
        resp = httpx.post(
            sidecar.url + "/v1/chat/completions",
            headers=sidecar.headers,
            timeout=60,
            json={"model": "custos-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert resp.status_code == 200
    # The sidecar's /metrics needs a token granting metrics:read: Prometheus reads it from a file.
    # A long-lived token for a `prometheus` subject, as docs/deploy.md has operators mint one.
    token = mint_token("prometheus", [TEST_ROLE], ttl_s=24 * 3600)
    prom = prometheus(
        {"custos": f"127.0.0.1:{sidecar.port}", "engine": f"127.0.0.1:{engine.port}"},
        tokens={"custos": token},
    )

    wait_value(prom, 'up{job="custos"}', lambda v: v == 1)
    wait_value(prom, 'up{job="engine"}', lambda v: v == 1)
    result = wait_value(
        prom, 'sum(custos_requests_total{route="/v1/chat/completions",status_class="2xx"})', lambda v: v == n
    )
    assert float(result[0]["value"][1]) == n
    by_model = query(
        prom,
        'sum by (model, role) (custos_requests_total{route="/v1/chat/completions",status_class="2xx"})',
    )
    assert {(r["metric"]["model"], r["metric"]["role"]) for r in by_model} == {("custos-tiny", "tester")}
    wait_value(prom, 'sum(custos_output_tokens_total{model="custos-tiny"})', lambda v: v >= n)
    p95 = wait_value(
        prom,
        "histogram_quantile(0.95, sum by (le) (custos_request_duration_seconds_bucket))",
        lambda v: 0 < v <= 120,
    )
    assert p95
    # the engine's own (vLLM-compatible) metrics, scraped side by side
    wait_value(prom, 'sum(vllm:request_success_total{job="engine"})', lambda v: v >= n)
    # GPU telemetry (simulation) arrives through the sidecar's /metrics
    gpus = wait_value(prom, 'count(custos_gpu_utilization_ratio{job="custos"})', lambda v: v == 2)
    assert gpus
    wait_value(prom, 'custos_gpu_collector_up{job="custos"}', lambda v: v == 1)
