"""Generate the Custos Grafana dashboards with grafana-foundation-sdk.

    python dashboards/generate_grafana.py          # writes dashboards/grafana/dashboards/*.json
    python dashboards/generate_grafana.py --check  # exit 1 if the committed JSON differs from a fresh render

Metric names follow docs/metrics.md (sidecar), sidecar/audit/metrics.py (audit), alerting/metrics.py
(alerting) and the vLLM names the inference engines export. Every panel's PromQL is checked by
tests/deploy/test_promql_live.py against a real Prometheus scraping a real sidecar and engine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["custos"]
RATE = "$__rate_interval"

# Selector fragments shared by the panels (template variables are regex-matched: "All" is ".*").
SIDECAR = 'instance=~"$instance"'
MODEL = 'model=~"$model"'
GPU = 'instance=~"$instance", gpu=~"$gpu"'
ENGINE = 'instance=~"$engine_instance", model_name=~"$model"'


# -- building blocks -------------------------------------------------------------------------------
def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def targets(*queries: tuple[str, str]) -> list[prometheus.Dataquery]:
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def series(
    title: str,
    *queries: tuple[str, str],
    unit: str = "short",
    desc: str = "",
    span: int = 12,
    stack: bool = False,
    minimum: float | None = 0,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .description(desc)
        .datasource(DS)
        .targets(targets(*queries))
        .unit(unit)
        .span(span)
        .height(8)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    if minimum is not None:
        p = p.min(minimum)
    if stack:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    return p


def single(
    title: str,
    expr: str,
    *,
    unit: str = "short",
    desc: str = "",
    span: int = 4,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> stat.Panel:
    steps = [dm.Threshold(value=v, color=c) for v, c in (thresholds or [(None, "green")])]
    return (
        stat.Panel()
        .title(title)
        .description(desc)
        .datasource(DS)
        .targets([query(expr, "", "A")])
        .unit(unit)
        .span(span)
        .height(4)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .color_mode(cm.BigValueColorMode.VALUE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps))
    )


def grid(title: str, expr: str, *, desc: str = "", span: int = 24, unit: str = "short") -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(desc)
        .datasource(DS)
        .targets([query(expr, "", "A", instant=True).format(pm.PromQueryFormat.TABLE)])
        .unit(unit)
        .span(span)
        .height(8)
    )


def quantiles(
    metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"{prefix}p{int(q * 100)}",
        )
        for q in qs
    ]


def datasource_var() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_var(name: str, label: str, expr: str, *, multi: bool = True) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query({"query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .multi(multi)
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


INSTANCE_VAR = query_var("instance", "Sidecar", "label_values(custos_build_info, instance)")
MODEL_VAR = query_var("model", "Model", 'label_values(custos_requests_total{instance=~"$instance"}, model)')
GPU_VAR = query_var("gpu", "GPU", 'label_values(custos_gpu_utilization_ratio{instance=~"$instance"}, gpu)')


def base(uid: str, title: str, desc: str, variables: list[db.QueryVariable]) -> db.Dashboard:
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(desc)
        .tags(TAGS)
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_var())
    )
    for v in variables:
        d = d.with_variable(v)
    return d.link(
        db.DashboardLink("Custos")
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(TAGS)
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    )


# -- dashboards -------------------------------------------------------------------------------------
def overview() -> db.Dashboard:
    sel = f"{SIDECAR}, {MODEL}"
    return (
        base(
            "custos-overview",
            "Custos / Service overview",
            "Traffic, errors, latency and tokens through the Custos sidecars.",
            [INSTANCE_VAR, MODEL_VAR],
        )
        .with_row(db.Row("Now"))
        .with_panel(single("Requests/s", f"sum(rate(custos_requests_total{{{sel}}}[{RATE}]))", unit="reqps"))
        .with_panel(
            single(
                "Server errors (5xx)",
                f'sum(rate(custos_requests_total{{{sel}, status_class="5xx"}}[{RATE}]) or vector(0))'
                f" / clamp_min(sum(rate(custos_requests_total{{{sel}}}[{RATE}])), 1e-9)",
                unit="percentunit",
                thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
                desc="Share of requests answered 5xx (upstream down or failing, sidecar errors).",
            )
        )
        .with_panel(
            single(
                "p95 latency",
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(custos_request_duration_seconds_bucket{{{sel}}}[{RATE}])))",
                unit="s",
            )
        )
        .with_panel(
            single(
                "p95 time to first token",
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(custos_time_to_first_token_seconds_bucket{{{sel}}}[{RATE}])))",
                unit="s",
            )
        )
        .with_panel(single("Output tokens/s", f"sum(rate(custos_output_tokens_total{{{sel}}}[{RATE}]))"))
        .with_panel(single("In flight", f"sum(custos_requests_in_flight{{{SIDECAR}}})"))
        .with_row(db.Row("Traffic"))
        .with_panel(
            series(
                "Requests/s by model and route",
                (
                    f"sum by (model, route) (rate(custos_requests_total{{{sel}}}[{RATE}]))",
                    "{{model}} {{route}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Requests/s by status class",
                (f"sum by (status_class) (rate(custos_requests_total{{{sel}}}[{RATE}]))", "{{status_class}}"),
                unit="reqps",
                stack=True,
            )
        )
        .with_panel(
            series(
                "Error rate by kind",
                (f"sum by (kind) (rate(custos_errors_total{{{SIDECAR}}}[{RATE}]))", "{{kind}}"),
                unit="reqps",
                desc="Requests the sidecar ended with an error (its own 4xx/5xx and upstream failures).",
            )
        )
        .with_panel(
            series(
                "Upstream errors by kind",
                (f"sum by (kind) (rate(custos_upstream_errors_total{{{SIDECAR}}}[{RATE}]))", "{{kind}}"),
                unit="reqps",
                desc="Unreachable, timeouts, broken streams and upstream 5xx answers.",
            )
        )
        .with_panel(
            series(
                "Requests/s by role",
                (f"sum by (role) (rate(custos_requests_total{{{sel}}}[{RATE}]))", "{{role}}"),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "In-flight requests by route",
                (f"sum by (route) (custos_requests_in_flight{{{SIDECAR}}})", "{{route}}"),
            )
        )
        .with_row(db.Row("Latency"))
        .with_panel(
            series(
                "Request latency",
                *quantiles("custos_request_duration_seconds", sel),
                unit="s",
                desc="End-to-end through the sidecar, until the last byte.",
            )
        )
        .with_panel(
            series(
                "p95 latency by model",
                *quantiles("custos_request_duration_seconds", sel, by="model", qs=(0.95,)),
                unit="s",
            )
        )
        .with_panel(
            series(
                "Time to first token (streams)",
                *quantiles("custos_time_to_first_token_seconds", sel),
                unit="s",
            )
        )
        .with_panel(
            series(
                "Time per output token (streams)",
                *quantiles("custos_time_per_output_token_seconds", sel),
                unit="s",
            )
        )
        .with_row(db.Row("Tokens"))
        .with_panel(
            series(
                "Tokens/s by model",
                (f"sum by (model) (rate(custos_input_tokens_total{{{sel}}}[{RATE}]))", "{{model}} input"),
                (f"sum by (model) (rate(custos_output_tokens_total{{{sel}}}[{RATE}]))", "{{model}} output"),
            )
        )
        .with_panel(
            series(
                "Output tokens/s by role",
                (f"sum by (role) (rate(custos_output_tokens_total{{{sel}}}[{RATE}]))", "{{role}}"),
            )
        )
    )


def gpus() -> db.Dashboard:
    by = "{{instance}} GPU {{gpu}}"
    return (
        base(
            "custos-gpus",
            "Custos / GPUs",
            "NVML telemetry sampled by the sidecar (custos_gpu_*). "
            "No data without a GPU unless gpu.simulation is set.",
            [INSTANCE_VAR, GPU_VAR],
        )
        .with_row(db.Row("Health"))
        .with_panel(single("GPUs", f"sum(custos_gpu_count{{{SIDECAR}}})"))
        .with_panel(
            single(
                "Telemetry up",
                f"min(custos_gpu_collector_up{{{SIDECAR}}})",
                thresholds=[(None, "red"), (1, "green")],
                desc="0: no NVML/driver on a sidecar (see its log).",
            )
        )
        .with_panel(
            single(
                "GPUs lost",
                f"sum(custos_gpu_lost{{{GPU}}})",
                thresholds=[(None, "green"), (1, "red")],
                desc="GPUs that fell off the bus (XID 79 and friends).",
            )
        )
        .with_panel(
            single(
                "XID errors (range)",
                f"sum(increase(custos_gpu_xid_errors_total{{{GPU}}}[$__range]))",
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            single(
                "Double-bit ECC (volatile)",
                f'sum(custos_gpu_ecc_errors_total{{{GPU}, error="double_bit", counter="volatile"}})',
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            single(
                "Max temperature",
                f"max(custos_gpu_temperature_celsius{{{GPU}}})",
                unit="celsius",
                thresholds=[(None, "green"), (80, "orange"), (88, "red")],
            )
        )
        .with_row(db.Row("Load"))
        .with_panel(series("Utilization", (f"custos_gpu_utilization_ratio{{{GPU}}}", by), unit="percentunit"))
        .with_panel(
            series(
                "Memory used",
                (f"custos_gpu_memory_used_bytes{{{GPU}}}", by + " used"),
                (f"custos_gpu_memory_total_bytes{{{GPU}}}", by + " total"),
                unit="bytes",
            )
        )
        .with_panel(
            series(
                "Memory controller utilization",
                (f"custos_gpu_memory_utilization_ratio{{{GPU}}}", by),
                unit="percentunit",
            )
        )
        .with_panel(
            series(
                "PCIe throughput",
                (f"custos_gpu_pcie_tx_bytes_per_second{{{GPU}}}", by + " tx"),
                (f"custos_gpu_pcie_rx_bytes_per_second{{{GPU}}}", by + " rx"),
                unit="Bps",
            )
        )
        .with_row(db.Row("Thermals, power, clocks"))
        .with_panel(
            series(
                "Temperature",
                (f"custos_gpu_temperature_celsius{{{GPU}}}", by + " core"),
                (f"custos_gpu_memory_temperature_celsius{{{GPU}}}", by + " memory"),
                unit="celsius",
            )
        )
        .with_panel(
            series(
                "Power",
                (f"custos_gpu_power_watts{{{GPU}}}", by + " draw"),
                (f"custos_gpu_power_limit_watts{{{GPU}}}", by + " limit"),
                unit="watt",
            )
        )
        .with_panel(
            series(
                "Clocks",
                (f"custos_gpu_sm_clock_hertz{{{GPU}}}", by + " SM"),
                (f"custos_gpu_memory_clock_hertz{{{GPU}}}", by + " memory"),
                unit="hertz",
            )
        )
        .with_panel(
            series(
                "Active clock event (throttle) reasons",
                (f"custos_gpu_clock_event_reason{{{GPU}}} == 1", by + " {{reason}}"),
                minimum=0,
                desc="1 while the reason holds the clocks down; thermal and power reasons matter.",
            )
        )
        .with_row(db.Row("Errors"))
        .with_panel(
            series(
                "XID errors",
                (
                    f"sum by (instance, gpu, xid) (increase(custos_gpu_xid_errors_total{{{GPU}}}[5m]))",
                    by + " XID {{xid}}",
                ),
                desc="XID critical error events in the last 5 minutes (48: DBE, 79: fell off the bus).",
            )
        )
        .with_panel(
            series(
                "ECC errors",
                (
                    f"sum by (instance, gpu, error, counter) (custos_gpu_ecc_errors_total{{{GPU}}})",
                    by + " {{error}} {{counter}}",
                ),
            )
        )
        .with_panel(
            series(
                "Retired pages and remapped rows",
                (f"custos_gpu_retired_pages{{{GPU}}}", by + " retired {{cause}}"),
                (f"custos_gpu_remapped_rows{{{GPU}}}", by + " remapped {{kind}}"),
            )
        )
        .with_panel(
            series("PCIe replays/s", (f"rate(custos_gpu_pcie_replay_errors_total{{{GPU}}}[{RATE}])", by))
        )
        .with_row(db.Row("Processes"))
        .with_panel(
            grid(
                "GPU memory per process",
                f"sum by (instance, gpu, pid, process) (custos_gpu_process_memory_bytes{{{GPU}}})",
                unit="bytes",
            )
        )
    )


def compliance() -> db.Dashboard:
    return (
        base(
            "custos-compliance",
            "Custos / Compliance",
            "Identity, authorization, PII redaction and the tamper-evident audit trail.",
            [INSTANCE_VAR],
        )
        .with_row(db.Row("Now"))
        .with_panel(
            single(
                "Auth failures/s", f"sum(rate(custos_auth_failures_total{{{SIDECAR}}}[{RATE}]))", unit="reqps"
            )
        )
        .with_panel(
            single(
                "RBAC denials/s", f"sum(rate(custos_rbac_denials_total{{{SIDECAR}}}[{RATE}]))", unit="reqps"
            )
        )
        .with_panel(single("Redactions/s", f"sum(rate(custos_redactions_total{{{SIDECAR}}}[{RATE}]))"))
        .with_panel(
            single(
                "Audit backlog",
                f"sum(custos_audit_backlog_records{{{SIDECAR}}})",
                thresholds=[(None, "green"), (10000, "orange"), (100000, "red")],
            )
        )
        .with_panel(
            single(
                "Audit ship lag",
                f"max(custos_audit_ship_lag_seconds{{{SIDECAR}}})",
                unit="s",
                thresholds=[(None, "green"), (60, "orange"), (300, "red")],
            )
        )
        .with_panel(
            single(
                "Dead letters (range)",
                f"sum(increase(custos_audit_dead_letters_total{{{SIDECAR}}}[$__range]))",
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_row(db.Row("Identity and access"))
        .with_panel(
            series(
                "Authentication failures by reason",
                (f"sum by (reason) (rate(custos_auth_failures_total{{{SIDECAR}}}[{RATE}]))", "{{reason}}"),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "RBAC denials by permission",
                (
                    f"sum by (permission) (rate(custos_rbac_denials_total{{{SIDECAR}}}[{RATE}]))",
                    "{{permission}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Denied and rejected requests (4xx) by role",
                (
                    f'sum by (role) (rate(custos_requests_total{{{SIDECAR}, status_class="4xx"}}[{RATE}]))',
                    "{{role}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Redactions by entity type",
                (
                    f"sum by (entity_type) (rate(custos_redactions_total{{{SIDECAR}}}[{RATE}]))",
                    "{{entity_type}}",
                ),
                stack=True,
            )
        )
        .with_row(db.Row("Audit trail"))
        .with_panel(
            series(
                "Audit records written and shipped",
                (f"sum(rate(custos_audit_records_total{{{SIDECAR}}}[{RATE}]))", "written"),
                (
                    f"sum by (result) (rate(custos_audit_shipped_total{{{SIDECAR}}}[{RATE}]))",
                    "shipped {{result}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Backlog (not yet in Elasticsearch)",
                (f"sum by (instance) (custos_audit_backlog_records{{{SIDECAR}}})", "{{instance}} records"),
            )
        )
        .with_panel(
            series(
                "Ship lag",
                (f"max by (instance) (custos_audit_ship_lag_seconds{{{SIDECAR}}})", "{{instance}}"),
                unit="s",
                desc="Age of the oldest record not yet acknowledged by Elasticsearch.",
            )
        )
        .with_panel(
            series(
                "Spool on disk",
                (f"sum by (instance) (custos_audit_spool_bytes{{{SIDECAR}}})", "{{instance}}"),
                unit="bytes",
            )
        )
        .with_panel(
            series(
                "Ship failures, dead letters, write errors",
                (
                    f"sum by (reason) (rate(custos_audit_ship_failures_total{{{SIDECAR}}}[{RATE}]))",
                    "ship {{reason}}",
                ),
                (f"sum(rate(custos_audit_dead_letters_total{{{SIDECAR}}}[{RATE}]))", "dead letters"),
                (f"sum(rate(custos_audit_write_errors_total{{{SIDECAR}}}[{RATE}]))", "write errors"),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Signed checkpoints",
                (f"sum(increase(custos_audit_checkpoints_total{{{SIDECAR}}}[5m]))", "per 5m"),
            )
        )
    )


def alerts() -> db.Dashboard:
    return (
        base(
            "custos-alerts",
            "Custos / Alerts",
            "The sidecar's alert engine: active alerts, notifications sent and failed.",
            [INSTANCE_VAR],
        )
        .with_row(db.Row("Now"))
        .with_panel(
            single(
                "Firing",
                f'sum(custos_alerts{{{SIDECAR}, state="firing"}})',
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            single(
                "Pending",
                f'sum(custos_alerts{{{SIDECAR}, state="pending"}})',
                thresholds=[(None, "green"), (1, "orange")],
            )
        )
        .with_panel(
            single(
                "Notifications failed (range)",
                f"sum(increase(custos_alert_notifications_failed_total{{{SIDECAR}}}[$__range]))",
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_row(db.Row("Alerts"))
        .with_panel(
            series(
                "Firing alerts by severity (Prometheus)",
                ('sum by (severity) (ALERTS{alertstate="firing", alertname=~"Custos.*"})', "{{severity}}"),
                stack=True,
                desc="The same rules evaluated by Prometheus (the PrometheusRule of the Helm chart).",
            )
        )
        .with_panel(
            series(
                "Active alerts by name and state",
                (f"sum by (alertname, state) (custos_alerts{{{SIDECAR}}})", "{{alertname}} {{state}}"),
            )
        )
        .with_row(db.Row("Notifications"))
        .with_panel(
            series(
                "Notifications sent by receiver",
                (
                    "sum by (receiver, integration) "
                    f"(increase(custos_alert_notifications_total{{{SIDECAR}}}[5m]))",
                    "{{receiver}} {{integration}}",
                ),
            )
        )
        .with_panel(
            series(
                "Notifications failed by receiver",
                (
                    "sum by (receiver, integration) "
                    f"(increase(custos_alert_notifications_failed_total{{{SIDECAR}}}[5m]))",
                    "{{receiver}} {{integration}}",
                ),
                desc="Failed after all retries (alerting.retry).",
            )
        )
        .with_panel(
            series(
                "Rule evaluations and failures",
                (
                    f"sum by (group) (rate(custos_alert_rule_evaluations_total{{{SIDECAR}}}[{RATE}]))",
                    "{{group}}",
                ),
                (
                    "sum by (group) "
                    f"(rate(custos_alert_rule_evaluation_failures_total{{{SIDECAR}}}[{RATE}]))",
                    "{{group}} failed",
                ),
            )
        )
    )


def inference() -> db.Dashboard:
    engine_instance = query_var(
        "engine_instance", "Engine", "label_values(vllm:num_requests_running, instance)"
    )
    model = query_var(
        "model", "Model", 'label_values(vllm:num_requests_running{instance=~"$engine_instance"}, model_name)'
    )
    by = "{{instance}} {{model_name}}"
    return (
        base(
            "custos-inference",
            "Custos / Inference engine",
            "vLLM metrics (the CPU engine exports the same names): queue, KV cache, latency, tokens.",
            [engine_instance, model],
        )
        .with_row(db.Row("Scheduler"))
        .with_panel(
            series(
                "Running and waiting requests",
                (f"sum by (instance, model_name) (vllm:num_requests_running{{{ENGINE}}})", by + " running"),
                (f"sum by (instance, model_name) (vllm:num_requests_waiting{{{ENGINE}}})", by + " waiting"),
            )
        )
        .with_panel(
            series(
                "KV-cache usage",
                (
                    f"max by (instance, model_name) (vllm:kv_cache_usage_perc{{{ENGINE}}}"
                    f" or vllm:gpu_cache_usage_perc{{{ENGINE}}})",
                    by,
                ),
                unit="percentunit",
                desc="vllm:kv_cache_usage_perc (vLLM >= 0.10), vllm:gpu_cache_usage_perc before.",
            )
        )
        .with_row(db.Row("Latency"))
        .with_panel(
            series("Time to first token", *quantiles("vllm:time_to_first_token_seconds", ENGINE), unit="s")
        )
        .with_panel(
            series(
                "Time per output token", *quantiles("vllm:time_per_output_token_seconds", ENGINE), unit="s"
            )
        )
        .with_panel(
            series(
                "End-to-end request latency", *quantiles("vllm:e2e_request_latency_seconds", ENGINE), unit="s"
            )
        )
        .with_panel(
            series(
                "Queue time", *quantiles("vllm:request_queue_time_seconds", ENGINE, qs=(0.5, 0.95)), unit="s"
            )
        )
        .with_row(db.Row("Throughput"))
        .with_panel(
            series(
                "Tokens/s",
                (
                    f"sum by (model_name) (rate(vllm:prompt_tokens_total{{{ENGINE}}}[{RATE}]))",
                    "{{model_name}} prompt",
                ),
                (
                    f"sum by (model_name) (rate(vllm:generation_tokens_total{{{ENGINE}}}[{RATE}]))",
                    "{{model_name}} generation",
                ),
            )
        )
        .with_panel(
            series(
                "Finished requests by reason",
                (
                    f"sum by (finished_reason) (rate(vllm:request_success_total{{{ENGINE}}}[{RATE}]))",
                    "{{finished_reason}}",
                ),
                unit="reqps",
                stack=True,
            )
        )
    )


DASHBOARDS = {
    "custos-overview": overview,
    "custos-gpus": gpus,
    "custos-compliance": compliance,
    "custos-alerts": alerts,
    "custos-inference": inference,
}


def render(builder: db.Dashboard) -> str:
    return json.dumps(builder.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files, write nothing"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    stale = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in DASHBOARDS.items():
        text = render(make())
        path = args.out / f"{name}.json"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run python dashboards/generate_grafana.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
