"""Every PromQL expression in the Grafana dashboards and in the alert rules runs against a real
Prometheus scraping a running sidecar and CPU engine under traffic (see conftest.py) and returns data.

Expressions are discovered from the committed files, so a new panel is checked without touching this
test. A panel passes when its query returns at least one series AND every metric it names has series in
Prometheus (so ``or vector(0)`` cannot hide a renamed metric). Alert rule expressions are thresholds, so
for them every metric they name must have series and the expression must evaluate without error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from bench.prometheus import GRAFANA_DASHBOARDS, RULES, all_panels, substitute

from .conftest import LiveStack

# Metric names that may legitimately be absent from this stack, with the reason.
MAY_BE_ABSENT = {
    # Older vLLM's name of the KV-cache gauge; the panel shows whichever the engine exports.
    "vllm:gpu_cache_usage_perc": "alternative name for vllm:kv_cache_usage_perc (vLLM < 0.10)",
    # Exported only by a sidecar that serves TLS (server.tls); the live stack speaks plain HTTP, and a
    # plain sidecar must not export it (tests/tls checks both).
    "custos_tls_certificate_expiry_timestamp_seconds": "only with server.tls",
}

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers that are not functions, keywords or labels)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", text):
        word = m.group(1)
        if word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted(GRAFANA_DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in all_panels(doc["panels"]):
            for target in panel.get("targets", []):
                found.append((f"{doc['uid']}: {panel['title']} [{target['refId']}]", target["expr"]))
    return found


def variable_queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted(GRAFANA_DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for var in doc["templating"]["list"]:
            if var["type"] == "query":
                q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                found.append((f"{doc['uid']}: ${var['name']}", q))
    return found


def rule_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(Path(RULES).read_text())
    return [
        (f"{g['name']}: {r.get('alert') or r.get('record')}", r["expr"])
        for g in doc["groups"]
        for r in g["rules"]
    ]


DASHBOARD_QUERIES = dashboard_queries()
VARIABLE_QUERIES = variable_queries()
RULE_QUERIES = rule_queries()


def test_discovery_finds_every_dashboard_and_rule() -> None:
    uids = {name.split(":")[0] for name, _ in DASHBOARD_QUERIES}
    assert uids == {
        "custos-overview",
        "custos-gpus",
        "custos-compliance",
        "custos-alerts",
        "custos-inference",
    }
    assert len(DASHBOARD_QUERIES) > 60 and len(RULE_QUERIES) > 10 and VARIABLE_QUERIES
    assert metric_names('sum by (le) (rate(a_b{x="y"}[1m])) / on(i) group_left c:d or vector(0)') == {
        "a_b",
        "c:d",
    }


def _missing(stack: LiveStack, expr: str) -> list[str]:
    return [
        m for m in sorted(metric_names(expr)) if m not in MAY_BE_ABSENT and not stack.prometheus.series(m)
    ]


@pytest.mark.parametrize(("name", "expr"), DASHBOARD_QUERIES, ids=[n for n, _ in DASHBOARD_QUERIES])
def test_dashboard_query_returns_data(live_stack: LiveStack, name: str, expr: str) -> None:
    query = substitute(expr)
    assert not _missing(live_stack, query), f"{name}: metrics with no series: {_missing(live_stack, query)}"
    result = live_stack.prometheus.query(query)
    assert result, f"{name}: no data for {query}"


@pytest.mark.parametrize(("name", "expr"), VARIABLE_QUERIES, ids=[n for n, _ in VARIABLE_QUERIES])
def test_template_variable_has_values(live_stack: LiveStack, name: str, expr: str) -> None:
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(expr))
    assert m, f"{name}: unsupported variable query {expr}"
    assert live_stack.prometheus.label_values(m.group(2), m.group(1)), f"{name}: no values"


@pytest.mark.parametrize(("name", "expr"), RULE_QUERIES, ids=[n for n, _ in RULE_QUERIES])
def test_alert_rule_runs_on_real_series(live_stack: LiveStack, name: str, expr: str) -> None:
    assert not _missing(live_stack, expr), f"{name}: metrics with no series: {_missing(live_stack, expr)}"
    live_stack.prometheus.query(expr)  # evaluates without error (raises on a bad expression)


def test_rules_fire_in_prometheus_and_in_the_sidecar(live_stack: LiveStack) -> None:
    """The auth-failure spike fired in both places; notifications reached the live webhook."""
    firing = live_stack.prometheus.query('ALERTS{alertstate="firing", alertname="CustosAuthFailureSpike"}')
    assert firing and firing[0]["metric"]["severity"] == "warning"
    assert any(
        a["labels"]["alertname"] == "CustosAuthFailureSpike"
        for doc in live_stack.hook_received
        for a in doc.get("alerts", [])
    )
