"""The live stack the dashboard checks run against, built once per session from real processes:

- the CPU engine (the shared ``engine`` fixture) and a real Elasticsearch (``bench/es_node``);
- sidecar "main" in front of the engine: GPU simulation (bench/data/gpu-dashboard.yaml), audit
  shipped to Elasticsearch, its alert engine notifying a live webhook and a dead one;
- sidecar "broken" in front of a port where nothing listens (502s: upstream errors, 5xx), shipping
  audit records to a dead Elasticsearch and evaluating a rule group against a dead Prometheus;
- ``/usr/bin/prometheus`` scraping both sidecars (job ``custos``) and the engine (job ``upstream``)
  every second and evaluating the exported alert rules;
- traffic: chat (plain and streamed), completions, models, PII in prompts, several users,
  unauthenticated callers (an auth-failure spike that fires an alert) and RBAC denials.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from bench.procs import ManagedProcess, free_port
from bench.prometheus import Prometheus, prometheus_token, start_prometheus
from bench.stack import GPU_DASHBOARD_SIMULATION, Engine, launch_sidecar, mint_token

DATA = Path(__file__).parent / "data"
USERS = ("alice", "bob")
PII_PROMPT = (
    "Please write back to alice.smith@example.com or call +1 415 555 0100 about card 4111 1111 1111 1111."
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # On a fresh machine the first test builds helm from source (deploy/tools/install.sh, minutes on
    # two cores) and Elasticsearch's launcher: more than the suite's default per-test timeout.
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.timeout(1800))


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            _Hook.received.append(json.loads(body))
        except ValueError:
            _Hook.received.append({"raw": body.decode(errors="replace")})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@dataclass
class LiveStack:
    engine: Engine
    es_url: str
    prometheus: Prometheus
    main_url: str
    broken_url: str
    headers: dict[str, str]
    hook_received: list[dict[str, Any]]
    requests_sent: int = 0
    subjects: set[str] = field(default_factory=set)


def _traffic(stack: LiveStack) -> None:
    model = stack.engine.model
    chat = {"model": model, "messages": [{"role": "user", "content": PII_PROMPT}], "max_tokens": 8}
    with httpx.Client(timeout=120) as client:

        def send(
            method: str, url: str, headers: dict[str, str], body: Any = None, stream: bool = False
        ) -> int:
            stack.requests_sent += 1
            if stream:
                with client.stream(method, url, headers=headers, json=body) as resp:
                    for _ in resp.iter_bytes():
                        pass
                    return resp.status_code
            return client.request(method, url, headers=headers, json=body).status_code

        main = stack.main_url
        for user in USERS:
            hdrs = {"Authorization": f"Bearer {mint_token(user, ['tester'])}"}
            stack.subjects.add(user)
            assert send("POST", f"{main}/v1/chat/completions", hdrs, chat) == 200
            assert (
                send("POST", f"{main}/v1/chat/completions", hdrs, {**chat, "stream": True}, stream=True)
                == 200
            )
        assert (
            send(
                "POST",
                f"{main}/v1/completions",
                stack.headers,
                {"model": model, "prompt": "Mail bob@example.org", "max_tokens": 8},
            )
            == 200
        )
        assert send("GET", f"{main}/v1/models", stack.headers) == 200
        # RBAC: a viewer may list models but not invoke one.
        viewer = {"Authorization": f"Bearer {mint_token('carol', ['viewer'])}"}
        stack.subjects.add("carol")
        for _ in range(3):
            assert send("POST", f"{main}/v1/chat/completions", viewer, chat) == 403
        # Authentication failures, in two bursts so Prometheus sees the counter rise (alert rule).
        # The same failure reason in both bursts: the series must exist before the spike to show an increase.
        bad = {"Authorization": "Bearer not-a-jwt"}
        for _ in range(2):
            assert send("POST", f"{main}/v1/chat/completions", {}, chat) == 401
            assert send("POST", f"{main}/v1/chat/completions", bad, chat) == 401
        _wait_for(stack.prometheus, 'custos_auth_failures_total{reason="malformed"} >= 2')
        for _ in range(30):
            assert send("POST", f"{main}/v1/chat/completions", bad, chat) == 401
        # The upstream of "broken" is down: 502s.
        for _ in range(3):
            assert send("POST", f"{stack.broken_url}/v1/chat/completions", stack.headers, chat) == 502


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    from bench.es_node import start_elasticsearch

    node = start_elasticsearch()
    yield node.url
    node.stop()


@pytest.fixture(scope="session")
def live_stack(engine: Engine, es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    workdir = tmp_path_factory.mktemp("live-stack")
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    procs: list[ManagedProcess] = []
    try:
        main_cfg = {
            # The traffic below sends a burst of bad tokens from one address on purpose (the auth
            # failure alert): the per-source failure guard would answer most of them with 429.
            "rbac": {"failure_burst": 200},
            "gpu": {"simulation": str(GPU_DASHBOARD_SIMULATION), "interval_s": 1},
            "audit": {
                "elasticsearch": {"hosts": [es_url]},
                "checkpoint_every": 5,
                "checkpoint_interval_s": 2,
            },
            "alerting": {
                "evaluation_interval": "1s",
                "route": {
                    "receiver": "hook",
                    "group_by": ["alertname"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                    "routes": [
                        {"matchers": ['alertname=~".+"'], "receiver": "dead", "continue": True},
                        {"matchers": ['alertname=~".+"'], "receiver": "hook"},
                    ],
                },
                "receivers": [
                    {
                        "name": "hook",
                        "webhook_configs": [{"url": f"http://127.0.0.1:{hook.server_port}/hook"}],
                    },
                    {"name": "dead", "webhook_configs": [{"url": f"http://127.0.0.1:{free_port()}/gone"}]},
                ],
                "retry": {"max_attempts": 1, "initial_backoff_s": 0.1},
            },
        }
        main = launch_sidecar(
            workdir, engine.url, main_cfg, name="sidecar-main", state_dir=workdir / "state-main"
        )
        procs.append(main.process)
        broken = launch_sidecar(
            workdir,
            f"http://127.0.0.1:{free_port()}",
            {
                "gpu": {"enabled": False},
                # Faults on purpose: Elasticsearch and the rules' Prometheus are down (ship and
                # rule-evaluation failures must have series for the dashboards).
                "audit": {
                    "elasticsearch": {"hosts": [f"http://127.0.0.1:{free_port()}"], "backoff_max_s": 1}
                },
                "alerting": {
                    "rules": [str(DATA / "fleet-rules.yaml")],
                    "evaluation_interval": "1s",
                    "prometheus": {"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 1},
                },
            },
            name="sidecar-broken",
            state_dir=workdir / "state-broken",
        )
        procs.append(broken.process)
        host = lambda url: url.removeprefix("http://")  # noqa: E731
        prom = start_prometheus(
            workdir,
            {"custos": [host(main.url), host(broken.url)], "upstream": [host(engine.url)]},
            tokens={"custos": prometheus_token()},
        )
        procs.append(prom.process)
        stack = LiveStack(
            engine=engine,
            es_url=es_url,
            prometheus=prom,
            main_url=main.url,
            broken_url=broken.url,
            headers=main.headers,
            hook_received=_Hook.received,
        )
        _traffic(stack)
        _settle(stack)
        yield stack
    finally:
        for p in reversed(procs):
            p.stop()
        hook.shutdown()


def _wait_for(prom: Prometheus, expr: str, timeout: float = 60.0) -> None:
    """Until Prometheus has scraped what the traffic did so far (scrapes can be slow on a busy machine)."""
    deadline = time.monotonic() + timeout
    while not prom.query(expr):
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus never saw {expr}")
        time.sleep(0.5)


def _settle(stack: LiveStack, timeout: float = 90.0) -> None:
    """Wait until Prometheus has the traffic, the alerts fired and notifications went out."""
    prom = stack.prometheus
    checks = {
        "requests scraped": "sum(custos_requests_total) > 0",
        "Prometheus alert firing": 'ALERTS{alertstate="firing"}',
        "in-process alert firing": 'custos_alerts{state="firing"} > 0',
        "notification sent": "custos_alert_notifications_total > 0",
        "notification failed": "custos_alert_notifications_failed_total > 0",
        "audit shipped": "custos_audit_shipped_total > 0",
        "audit ship failed": "custos_audit_ship_failures_total > 0",
        "rule evaluation failed": "custos_alert_rule_evaluation_failures_total > 0",
        "xid seen": "custos_gpu_xid_errors_total > 0",
        "two rate samples": "count_over_time(custos_build_info[1m]) > 5",
    }
    deadline = time.monotonic() + timeout
    pending = dict(checks)
    while pending and time.monotonic() < deadline:
        for name, expr in list(pending.items()):
            if prom.query(expr):
                del pending[name]
        time.sleep(1)
    if pending:
        diagnostics = {
            expr: prom.query(expr)
            for expr in (
                "sum(increase(custos_auth_failures_total[5m]))",
                "custos_auth_failures_total",
                "ALERTS",
                "prometheus_rule_evaluation_failures_total",
            )
        }
        raise AssertionError(f"live stack never reached: {sorted(pending)}; diagnostics: {diagnostics}")
