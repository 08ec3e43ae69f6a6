"""The alert engine's own metrics, on the sidecar's /metrics next to everything else."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ALERTS = Gauge("custos_alerts", "Active alerts by rule and state (pending or firing)", ["alertname", "state"])
EVALUATIONS = Counter("custos_alert_rule_evaluations_total", "Rule group evaluations", ["group"])
EVALUATION_FAILURES = Counter(
    "custos_alert_rule_evaluation_failures_total",
    "Rule evaluations that failed (bad data, Prometheus down)",
    ["group"],
)
SCRAPE_FAILURES = Counter("custos_alert_scrape_failures_total", "Failed reads of a metrics target", ["job"])
NOTIFICATIONS = Counter(
    "custos_alert_notifications_total", "Notifications delivered", ["receiver", "integration"]
)
NOTIFICATION_FAILURES = Counter(
    "custos_alert_notifications_failed_total",
    "Notifications that failed after all retries",
    ["receiver", "integration"],
)
NOTIFICATION_RETRIES = Counter(
    "custos_alert_notification_retries_total",
    "Notification attempts that were retried",
    ["receiver", "integration"],
)
SILENCES = Gauge("custos_alert_silences", "Silences by state", ["state"])
RELOADS = Counter("custos_alert_rule_reloads_total", "Rule file reloads by outcome", ["outcome"])
