"""The Kibana saved objects against the real audit trail: the live stack's sidecar ships its audit
records to a real Elasticsearch (tests/es_node); every field the objects reference exists in the audit
index mapping and every saved search and visualization query runs there and finds the traffic."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from .conftest import USERS, LiveStack
from .tools import DASHBOARDS

NDJSON = DASHBOARDS / "kibana" / "custos-audit.ndjson"


def saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in NDJSON.read_text().splitlines() if line.strip()]


OBJECTS = saved_objects()
BY_ID = {o["id"]: o for o in OBJECTS}


def _source(obj: dict[str, Any]) -> dict[str, Any]:
    return json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def query_fields(query: str) -> set[str]:
    fields = set(re.findall(r"(?:^|[\s(])([@\w.]+):", query)) - {"_exists_"}
    fields |= set(re.findall(r"_exists_:([@\w.]+)", query))
    return fields


def referenced_fields(obj: dict[str, Any]) -> set[str]:
    attrs = obj["attributes"]
    fields: set[str] = set()
    if obj["type"] == "index-pattern":
        fields.add(attrs["timeFieldName"])
        fields |= set(json.loads(attrs.get("fieldFormatMap") or "{}"))
    if obj["type"] == "search":
        fields |= set(attrs["columns"]) | {s[0] for s in attrs["sort"]}
    if obj["type"] == "visualization":
        fields |= {
            a["params"]["field"] for a in json.loads(attrs["visState"])["aggs"] if "field" in a["params"]
        }
    if obj["type"] in ("search", "visualization"):
        fields |= query_fields(_source(obj)["query"]["query"])
    return fields


def es_query(query: str) -> dict[str, Any]:
    if not query:
        return {"match_all": {}}
    return {"query_string": {"query": query, "analyze_wildcard": True, "default_operator": "AND"}}


def es_aggs(vis_state: dict[str, Any]) -> dict[str, Any]:
    """A legacy Kibana visualization's aggregations as the Elasticsearch request Kibana sends."""
    metrics = {
        a["id"]: {"sum": {"field": a["params"]["field"]}} for a in vis_state["aggs"] if a["type"] == "sum"
    }
    buckets = [a for a in vis_state["aggs"] if a["schema"] in ("segment", "group", "bucket")]
    inner: dict[str, Any] = metrics
    for agg in reversed(buckets):
        p = agg["params"]
        if agg["type"] == "terms":
            body: dict[str, Any] = {"terms": {"field": p["field"], "size": p["size"]}}
        elif agg["type"] == "date_histogram":
            body = {"date_histogram": {"field": p["field"], "fixed_interval": "1m", "min_doc_count": 1}}
        else:
            raise AssertionError(f"unsupported bucket aggregation {agg['type']}")
        if inner:
            body["aggs"] = inner
        inner = {agg["id"]: body}
    return inner


@pytest.fixture(scope="module")
def audit(live_stack: LiveStack) -> tuple[Elasticsearch, str]:
    """Elasticsearch with every audit record of the main sidecar's traffic shipped."""
    es = Elasticsearch(live_stack.es_url, request_timeout=30)
    pattern = BY_ID["custos-audit"]["attributes"]["title"]
    expected = live_stack.requests_sent - 3  # the "broken" sidecar ships nowhere
    deadline = time.monotonic() + 90
    count = 0
    while time.monotonic() < deadline:
        es.indices.refresh(index=pattern, ignore_unavailable=True, allow_no_indices=True)
        count = es.count(index=pattern, ignore_unavailable=True, allow_no_indices=True)["count"]
        if count >= expected:
            break
        time.sleep(1)
    assert count >= expected, f"only {count} of {expected} audit records reached Elasticsearch"
    return es, pattern


def test_objects_are_complete_and_consistent() -> None:
    kinds = [o["type"] for o in OBJECTS]
    assert kinds.count("index-pattern") == 1 and kinds.count("dashboard") == 1
    assert {"custos-denied-requests", "custos-redacted-requests", "custos-user-activity"} <= set(BY_ID)
    assert kinds.count("visualization") >= 4
    for obj in OBJECTS:
        for ref in obj["references"]:
            assert ref["id"] in BY_ID and BY_ID[ref["id"]]["type"] == ref["type"], (obj["id"], ref)
    dashboard = BY_ID["custos-compliance"]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    names = {r["name"] for r in dashboard["references"]}
    assert {p["panelRefName"] for p in panels} == names
    # The data view excludes the checkpoint index (different documents, same prefix).
    assert "-custos-audit-checkpoints*" in BY_ID["custos-audit"]["attributes"]["title"]


def test_generated_file_is_current() -> None:
    import subprocess
    import sys

    from bench.procs import REPO

    proc = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate_kibana.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("oid", [o["id"] for o in OBJECTS if o["type"] != "dashboard"])
def test_referenced_fields_exist_in_the_audit_mapping(audit: tuple[Elasticsearch, str], oid: str) -> None:
    es, pattern = audit
    caps = es.field_caps(index=pattern, fields="*", ignore_unavailable=True)["fields"]
    mapped = {name for name, types in caps.items() if not set(types) <= {"object", "nested"}}
    missing = sorted(referenced_fields(BY_ID[oid]) - mapped)
    assert not missing, f"{oid}: fields not in the audit index mapping: {missing}"


@pytest.mark.parametrize("oid", [o["id"] for o in OBJECTS if o["type"] == "search"])
def test_saved_search_runs_and_finds_the_traffic(audit: tuple[Elasticsearch, str], oid: str) -> None:
    es, pattern = audit
    attrs = BY_ID[oid]["attributes"]
    resp = es.search(
        index=pattern,
        query=es_query(_source(BY_ID[oid])["query"]["query"]),
        sort=[{f: {"order": o}} for f, o in attrs["sort"]],
        size=100,
        source=attrs["columns"],
    )
    hits = [h["_source"] for h in resp["hits"]["hits"]]
    assert hits, f"{oid}: no documents"
    if oid == "custos-denied-requests":
        assert {h["http"]["response"]["status_code"] for h in hits} == {401, 403}
        assert any(h.get("llm", {}).get("authz", {}).get("permission") for h in hits)
    if oid == "custos-redacted-requests":
        counts = [h["llm"]["redactions"] for h in hits]
        assert all(sum(c.values()) > 0 for c in counts)
        assert {"EMAIL", "PHONE"} <= {t for c in counts for t in c}


def test_user_activity_narrows_to_one_user(audit: tuple[Elasticsearch, str]) -> None:
    """What the dashboard's click-to-filter does: the user-activity search plus a user.id filter."""
    es, pattern = audit
    query = es_query(_source(BY_ID["custos-user-activity"])["query"]["query"])
    for user in USERS:
        resp = es.search(
            index=pattern,
            query={"bool": {"must": [query], "filter": [{"term": {"user.id": user}}]}},
            size=100,
        )
        users = {h["_source"]["user"]["id"] for h in resp["hits"]["hits"]}
        assert users == {user}
        assert resp["hits"]["total"]["value"] >= 2  # a chat and a stream each


@pytest.mark.parametrize("oid", [o["id"] for o in OBJECTS if o["type"] == "visualization"])
def test_visualization_aggregations_run(audit: tuple[Elasticsearch, str], oid: str) -> None:
    es, pattern = audit
    vis = json.loads(BY_ID[oid]["attributes"]["visState"])
    resp = es.search(
        index=pattern,
        query=es_query(_source(BY_ID[oid])["query"]["query"]),
        aggs=es_aggs(vis) or None,
        size=0,
    )
    assert resp["hits"]["total"]["value"] > 0, f"{oid}: its query matches nothing"
    for agg in resp.get("aggregations", {}).values():
        if "buckets" in agg:
            assert agg["buckets"], f"{oid}: empty buckets"
        elif "value" in agg:
            assert agg["value"] > 0, f"{oid}: sum is 0"
