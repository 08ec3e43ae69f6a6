"""A real Prometheus (``/usr/bin/prometheus``) scraping local sidecars and engines with the exported alert
rules loaded, and the Grafana dashboards' panel queries as Grafana sends them: what the dashboard checks
(tests/deploy) and the dashboard cost benchmark (bench/deploy_dashboards.py) run."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.procs import REPO, ManagedProcess, free_port, wait_http
from bench.stack import mint_token

# The alert rules the Helm chart ships to Prometheus (deploy/tools/export_rules.py writes them).
RULES = REPO / "deploy" / "helm" / "custos" / "files" / "prometheus" / "custos-rules.yml"
GRAFANA_DASHBOARDS = REPO / "dashboards" / "grafana" / "dashboards"


@dataclass
class Prometheus:
    url: str
    process: ManagedProcess

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
            doc = json.loads(resp.read())
        if doc["status"] != "success":
            raise RuntimeError(f"Prometheus {path}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def series(self, metric: str) -> list[dict[str, Any]]:
        start = str(time.time() - 600)
        return self.get("/api/v1/series", **{"match[]": metric, "start": start})

    def label_values(self, label: str, match: str) -> list[str]:
        return self.get(
            f"/api/v1/label/{label}/values", **{"match[]": match, "start": str(time.time() - 600)}
        )


def prometheus_token() -> str:
    """The Bearer token Prometheus scrapes sidecars with, as docs/deploy.md has operators mint one:
    a long-lived token for subject ``prometheus`` whose role grants ``metrics:read``."""
    return mint_token("prometheus", ["tester"], ttl_s=7 * 24 * 3600)


def start_prometheus(
    workdir: Path, targets: dict[str, list[str]], tokens: dict[str, str] | None = None
) -> Prometheus:
    """Prometheus scraping ``targets`` ({job: [host:port]}); a job named in ``tokens`` sends that
    Bearer token, read from a file (``authorization.credentials_file``) as in deploy/compose."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    port = free_port()
    rules = workdir / "rules.yml"
    shutil.copy(RULES, rules)
    scrape_configs = []
    for job, hosts in targets.items():
        scrape: dict[str, Any] = {"job_name": job, "static_configs": [{"targets": hosts}]}
        if tokens and job in tokens:
            token_file = workdir / f"{job}.token"
            token_file.write_text(tokens[job] + "\n")
            token_file.chmod(0o600)
            scrape["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
        scrape_configs.append(scrape)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": scrape_configs,
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = ManagedProcess(
        "prometheus",
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready", timeout=60, proc=proc.proc)
    return Prometheus(url=url, process=proc)


def substitute(expr: str) -> str:
    """Grafana's variables as Grafana would send them with everything selected."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$__interval", "15s")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A dashboard's panels, those nested in rows included."""
    out = []
    for p in panels:
        out.append(p)
        out.extend(all_panels(p.get("panels", [])))
    return out
