"""The in-process PromQL evaluator against Prometheus itself: ``promtool test rules`` checks that our
values for the same input series are exactly what Prometheus computes."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alerting import promql
from alerting.tsdb import MISSING, Store, expand_values, parse_series_selector

INPUT = [
    ('http_requests_total{job="api", instance="a"}', "0+10x30"),
    ('http_requests_total{job="api", instance="b"}', "0+5x10 0+5x20"),  # counter reset at 10m
    ('http_requests_total{job="web", instance="c"}', "0+1x30"),
    ('http_errors_total{job="api", instance="a"}', "0+1x30"),
    ('http_errors_total{job="api", instance="b"}', "0+0x30"),
    (
        'temp{gpu="0"}',
        "50 60 70 80 90 95 95 95 80 70 60 _ 50 50 50 50 50 50 50 50 50 50 50 50 50 50 50 50 50 50",
    ),
    ('temp{gpu="1"}', "40+1x30"),
    ('build_info{instance="a", version="1.2"}', "1x30"),
    ('build_info{instance="b", version="1.3"}', "1x30"),
    ('lat_bucket{le="0.1"}', "0+6x30"),
    ('lat_bucket{le="0.5"}', "0+9x30"),
    ('lat_bucket{le="1"}', "0+10x30"),
    ('lat_bucket{le="+Inf"}', "0+10x30"),
]

EXPRS = [
    "rate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "irate(http_requests_total[5m])",
    "delta(temp[5m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (instance) (rate(http_requests_total[5m]))",
    'sum(rate(http_errors_total[5m])) / sum(rate(http_requests_total{job="api"}[5m]))',
    "rate(http_errors_total[5m]) / ignoring(job) rate(http_requests_total[5m])",
    "rate(http_requests_total[5m]) * on(instance) group_left(version) build_info",
    "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[5m])))",
    "histogram_quantile(0.5, rate(lat_bucket[5m]))",
    "avg_over_time(temp[5m])",
    "max_over_time(temp[3m])",
    "min_over_time(temp[3m])",
    "quantile_over_time(0.5, temp[5m])",
    "count_over_time(temp[5m])",
    "changes(temp[10m])",
    "resets(http_requests_total[20m])",
    "temp > 75",
    "temp > bool 75",
    "80 < temp",
    'temp{gpu="0"} - temp{gpu="0"} offset 2m',
    "temp and on(gpu) (temp > 60)",
    'temp unless temp{gpu="1"}',
    'temp{gpu="0"} or temp{gpu="1"}',
    "topk(1, temp)",
    "max(temp)",
    "count(temp > 10)",
    "avg(temp)",
    "stddev(temp)",
    "quantile(0.25, temp)",
    'absent(nonexistent{job="x"})',
    "absent(temp)",
    "clamp_min(temp, 60)",
    "clamp_max(temp, 60)",
    "-temp + 2 * 3",
    "2 ^ 3 ^ 2",
    'label_replace(temp, "device", "nvidia$1", "gpu", "(.*)")',
    "(temp - 40) / 10 >= 3",
    "round(avg_over_time(temp[5m]), 0.5)",
]
EVAL_TIMES = [0, 150, 300, 600, 660, 900]


def _store() -> Store:
    store = Store(retention_s=1e9)
    for series, values in INPUT:
        labels = parse_series_selector(series)
        for i, v in enumerate(expand_values(values)):
            if v is not MISSING:
                store.add(labels, i * 60.0, v)  # type: ignore[arg-type]
    return store


def _fmt(labels: tuple[tuple[str, str], ...]) -> str:
    name = dict(labels).get("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in labels if k != "__name__")
    return f"{name}{{{inner}}}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_evaluator_matches_promtool(tmp_path: Path) -> None:
    store = _store()
    expr_tests = []
    for expr in EXPRS:
        node = promql.parse(expr)
        for t in EVAL_TIMES:
            value = promql.evaluate(node, store, float(t))
            if isinstance(value, float):
                value = [((), value)]
            samples = []
            for labels, v in value:
                if math.isnan(v) or math.isinf(v):
                    continue  # promtool cannot express NaN expectations
                samples.append({"labels": _fmt(labels), "value": v})
            if len(samples) != len(value):
                continue
            expr_tests.append({"expr": expr, "eval_time": f"{t}s", "exp_samples": samples})
    (tmp_path / "empty.yaml").write_text("groups: []\n")
    test = {
        "rule_files": ["empty.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in INPUT],
                "promql_expr_test": expr_tests,
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    out = subprocess.run(
        ["promtool", "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert len(expr_tests) > 150


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("rate(x)", "range vector"),
        ("sum(x[5m])", "instant vector"),
        ('x{a=~"("}', "bad regex"),
        ('x{a=~"a(?=b)"}', "lookahead"),
        ("1 > 2", "bool"),
        ("x[5m] + 1", "range vectors"),
        ("foo(", "expected"),
        ('{a=""}', "does not match empty"),
        ("x and 1", "set operator"),
        ('x{a="b"', "expected ',' or '}'"),
        ("nosuchfunc(x)", "unexpected input"),
    ],
)
def test_parse_errors_are_clear(expr: str, message: str) -> None:
    with pytest.raises(promql.PromQLError, match=message):
        promql.parse(expr)


def test_durations_round_trip() -> None:
    assert promql.parse_duration("1h30m") == 5400
    assert promql.parse_duration("500ms") == 0.5
    assert promql.format_duration(5400) == "1h30m"
    with pytest.raises(ValueError, match="not a duration"):
        promql.parse_duration("5 minutes")


def test_stale_marker_ends_a_series() -> None:
    store = Store()
    store.ingest("t", [((("__name__", "g"), ("a", "1")), 1.0), ((("__name__", "g"), ("a", "2")), 2.0)], 0.0)
    store.ingest("t", [((("__name__", "g"), ("a", "1")), 1.0)], 15.0)
    result = promql.evaluate(promql.parse("g"), store, 20.0)
    assert [dict(lb)["a"] for lb, _ in result] == ["1"]
