"""Generate the Kibana saved objects for the Custos audit trail (NDJSON for the Saved Objects API).

    python dashboards/generate_kibana.py          # writes dashboards/kibana/custos-audit.ndjson
    python dashboards/generate_kibana.py --check  # exit 1 if the committed file differs

Import: ``curl -X POST 'http://kibana:5601/api/saved_objects/_import?overwrite=true' -H 'kbn-xsrf: true'
--form file=@dashboards/kibana/custos-audit.ndjson`` (the Compose stack's kibana-setup service does this).

Field names follow the audit index mapping (sidecar/audit/es.py). Queries use the Lucene syntax so the
very same strings run in Elasticsearch's ``query_string`` (tests/deploy/test_kibana_live.py runs them).
Legacy aggregation-based visualizations keep the objects readable and importable into Kibana 8.x.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "kibana" / "custos-audit.ndjson"
KIBANA_VERSION = "8.19.0"
DATA_VIEW_ID = "custos-audit"
# Daily indices (custos-audit-YYYY.MM.DD) or the data stream custos-audit; never the checkpoint index.
DATA_VIEW_PATTERN = "custos-audit*,-custos-audit-checkpoints*"
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
# Entity types the redaction engine reports (llm.redactions.<TYPE>, mapped as long by the index template).
REDACTION_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD")


def _search_source(query: str = "", language: str = "lucene") -> dict[str, Any]:
    return {
        "kibanaSavedObjectMeta": {
            "searchSourceJSON": json.dumps(
                {"query": {"query": query, "language": language}, "filter": [], "indexRefName": INDEX_REF},
                sort_keys=True,
            )
        }
    }


def _index_ref() -> list[dict[str, str]]:
    return [{"name": INDEX_REF, "type": "index-pattern", "id": DATA_VIEW_ID}]


def data_view() -> dict[str, Any]:
    return {
        "type": "index-pattern",
        "id": DATA_VIEW_ID,
        "attributes": {
            "title": DATA_VIEW_PATTERN,
            "name": "Custos audit trail",
            "timeFieldName": "@timestamp",
            "fieldFormatMap": json.dumps(
                {
                    "event.duration": {
                        "id": "duration",
                        "params": {
                            "inputFormat": "nanoseconds",
                            "outputFormat": "asMilliseconds",
                            "outputPrecision": 1,
                        },
                    }
                }
            ),
        },
        "references": [],
        "typeMigrationVersion": "8.0.0",
        "coreMigrationVersion": "8.8.0",
    }


def saved_search(sid: str, title: str, description: str, query: str, columns: list[str]) -> dict[str, Any]:
    return {
        "type": "search",
        "id": sid,
        "attributes": {
            "title": title,
            "description": description,
            "columns": columns,
            "sort": [["@timestamp", "desc"]],
            **_search_source(query),
        },
        "references": _index_ref(),
        "typeMigrationVersion": "8.0.0",
        "coreMigrationVersion": "8.8.0",
    }


def _histogram_params(label: str) -> dict[str, Any]:
    # Kibana's defaults for a vertical bar chart (vislib); listed so nothing depends on migrations.
    return {
        "type": "histogram",
        "grid": {"categoryLines": False},
        "categoryAxes": [
            {
                "id": "CategoryAxis-1",
                "type": "category",
                "position": "bottom",
                "show": True,
                "scale": {"type": "linear"},
                "labels": {"show": True, "filter": True, "truncate": 100},
                "title": {},
            }
        ],
        "valueAxes": [
            {
                "id": "ValueAxis-1",
                "name": "LeftAxis-1",
                "type": "value",
                "position": "left",
                "show": True,
                "scale": {"type": "linear", "mode": "normal"},
                "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                "title": {"text": label},
            }
        ],
        "seriesParams": [
            {
                "show": True,
                "type": "histogram",
                "mode": "stacked",
                "data": {"label": label, "id": "1"},
                "valueAxis": "ValueAxis-1",
                "drawLinesBetweenPoints": True,
                "lineWidth": 2,
                "showCircles": True,
            }
        ],
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "times": [],
        "addTimeMarker": False,
        "labels": {"show": False},
        "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
        "palette": {"type": "palette", "name": "default"},
        "isVislibVis": True,
        "detailedTooltip": True,
    }


def _agg(aid: str, kind: str, schema: str, **params: Any) -> dict[str, Any]:
    return {"id": aid, "enabled": True, "type": kind, "schema": schema, "params": params}


def _terms(aid: str, schema: str, field: str, size: int = 10) -> dict[str, Any]:
    return _agg(
        aid,
        "terms",
        schema,
        field=field,
        size=size,
        order="desc",
        orderBy="1",
        otherBucket=False,
        missingBucket=False,
    )


def _over_time(aid: str = "2") -> dict[str, Any]:
    return _agg(
        aid,
        "date_histogram",
        "segment",
        field="@timestamp",
        interval="auto",
        min_doc_count=1,
        extended_bounds={},
    )


def visualization(
    vid: str,
    title: str,
    vis_type: str,
    aggs: list[dict[str, Any]],
    *,
    query: str = "",
    params: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    vis_state = {"title": title, "type": vis_type, "aggs": aggs, "params": params or {}}
    return {
        "type": "visualization",
        "id": vid,
        "attributes": {
            "title": title,
            "description": description,
            "version": 1,
            "visState": json.dumps(vis_state, sort_keys=True),
            "uiStateJSON": "{}",
            **_search_source(query),
        },
        "references": _index_ref(),
        "typeMigrationVersion": "8.5.0",
        "coreMigrationVersion": "8.8.0",
    }


TABLE = {
    "perPage": 10,
    "showPartialRows": False,
    "showMetricsAtAllLevels": False,
    "showTotal": False,
    "totalFunc": "sum",
    "percentageCol": "",
}
PIE = {
    "type": "pie",
    "addTooltip": True,
    "legendPosition": "right",
    "isDonut": True,
    "labels": {"show": True, "values": True, "last_level": True, "truncate": 100},
    "palette": {"type": "palette", "name": "default"},
    "distinctColors": True,
    "legendDisplay": "show",
}
METRIC = {
    "addTooltip": True,
    "addLegend": False,
    "type": "metric",
    "metric": {
        "percentageMode": False,
        "useRanges": False,
        "colorSchema": "Green to Red",
        "metricColorMode": "None",
        "colorsRange": [{"from": 0, "to": 10000}],
        "labels": {"show": True},
        "invertColors": False,
        "style": {"bgFill": "#000", "bgColor": False, "labelColor": False, "subText": "", "fontSize": 40},
    },
}


def objects() -> list[dict[str, Any]]:
    count = _agg("1", "count", "metric")
    searches = [
        saved_search(
            "custos-denied-requests",
            "Custos: denied requests",
            "Requests refused by authentication (401) or RBAC (403): who, what, which permission.",
            "event.type:denied",
            [
                "user.id",
                "user.roles",
                "url.path",
                "llm.request.model",
                "http.response.status_code",
                "llm.authz.permission",
                "event.reason",
                "error.code",
                "source.ip",
            ],
        ),
        saved_search(
            "custos-redacted-requests",
            "Custos: redacted requests by type",
            "Requests in which PII was redacted, with the count per entity type (llm.redactions.<TYPE>).",
            "llm.redactions_total:>0",
            [
                "user.id",
                "llm.request.model",
                "llm.redactions_total",
                *(f"llm.redactions.{t}" for t in REDACTION_TYPES),
                "url.path",
            ],
        ),
        saved_search(
            "custos-user-activity",
            "Custos: user activity",
            "Everything one user did: filter on user.id (or click a user in the dashboard's Top users).",
            "_exists_:user.id",
            [
                "user.id",
                "user.roles",
                "event.action",
                "llm.request.model",
                "http.response.status_code",
                "event.outcome",
                "llm.usage.input_tokens",
                "llm.usage.output_tokens",
                "llm.redactions_total",
                "source.ip",
            ],
        ),
    ]
    visualizations = [
        visualization(
            "custos-requests-by-outcome",
            "Custos: requests by outcome",
            "histogram",
            [count, _over_time(), _terms("3", "group", "event.outcome", 5)],
            params=_histogram_params("Requests"),
        ),
        visualization(
            "custos-denials-by-permission",
            "Custos: denials by permission",
            "table",
            [count, _terms("2", "bucket", "llm.authz.permission", 20), _terms("3", "bucket", "user.id", 20)],
            query="llm.authz.decision:deny",
            params=TABLE,
        ),
        visualization(
            "custos-denials-by-status",
            "Custos: denied requests by status",
            "pie",
            [count, _terms("2", "segment", "http.response.status_code", 5)],
            query="event.type:denied",
            params=PIE,
        ),
        visualization(
            "custos-redactions-by-type",
            "Custos: redactions by entity type",
            "table",
            [
                *(
                    _agg(str(i + 1), "sum", "metric", field=f"llm.redactions.{t}", customLabel=t)
                    for i, t in enumerate(REDACTION_TYPES)
                ),
                _terms(str(len(REDACTION_TYPES) + 1), "bucket", "llm.request.model", 10),
            ],
            query="llm.redactions_total:>0",
            params=TABLE,
            description="Entities redacted per type and model.",
        ),
        visualization(
            "custos-top-users",
            "Custos: top users",
            "table",
            [
                count,
                _terms("2", "bucket", "user.id", 20),
                _agg("3", "sum", "metric", field="llm.usage.output_tokens", customLabel="output tokens"),
            ],
            params=TABLE,
            description="Click a user to filter the whole dashboard to their activity.",
        ),
        visualization(
            "custos-models",
            "Custos: requests by model",
            "pie",
            [count, _terms("2", "segment", "llm.request.model", 10)],
            params=PIE,
        ),
        visualization("custos-audit-records", "Custos: audit records", "metric", [count], params=METRIC),
    ]
    panels, refs = [], []
    layout = [
        ("visualization", "custos-audit-records", 0, 0, 12, 8),
        ("visualization", "custos-denials-by-status", 12, 0, 12, 8),
        ("visualization", "custos-models", 24, 0, 12, 8),
        ("visualization", "custos-redactions-by-type", 36, 0, 12, 8),
        ("visualization", "custos-requests-by-outcome", 0, 8, 48, 12),
        ("visualization", "custos-denials-by-permission", 0, 20, 24, 14),
        ("visualization", "custos-top-users", 24, 20, 24, 14),
        ("search", "custos-denied-requests", 0, 34, 48, 14),
        ("search", "custos-redacted-requests", 0, 48, 48, 14),
        ("search", "custos-user-activity", 0, 62, 48, 16),
    ]
    for i, (kind, oid, x, y, w, h) in enumerate(layout, start=1):
        panels.append(
            {
                "version": KIBANA_VERSION,
                "type": kind,
                "panelIndex": str(i),
                "panelRefName": f"panel_{i}",
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i)},
                "embeddableConfig": {},
            }
        )
        refs.append({"name": f"panel_{i}", "type": kind, "id": oid})
    dashboard = {
        "type": "dashboard",
        "id": "custos-compliance",
        "attributes": {
            "title": "Custos compliance",
            "description": "Audit trail of the Custos sidecars: denials, redactions, users, models.",
            "panelsJSON": json.dumps(panels, sort_keys=True),
            "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "hidePanelTitles": False}),
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 60000},
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps({"query": {"query": "", "language": "lucene"}, "filter": []})
            },
        },
        "references": refs,
        "typeMigrationVersion": "8.9.0",
        "coreMigrationVersion": "8.8.0",
    }
    return [data_view(), *searches, *visualizations, dashboard]


def render() -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python dashboards/generate_kibana.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
