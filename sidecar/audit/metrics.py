"""Audit metrics (prometheus-client). Gauges sum over worker processes in multiprocess mode."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECORDS = Counter("custos_audit_records_total", "Audit records appended to the local spool")
WRITE_ERRORS = Counter("custos_audit_write_errors_total", "Failed writes to the audit spool")
REFUSED = Counter(
    "custos_audit_refused_total",
    "Requests refused (503) because their audit record could not be written",
    ["reason"],
)
DROPPED = Counter("custos_audit_dropped_total", "Unshipped audit records dropped by when_full=drop_oldest")
SPOOL_BYTES = Gauge(
    "custos_audit_spool_bytes", "Bytes of audit spool files on disk", multiprocess_mode="livesum"
)
BACKLOG_RECORDS = Gauge(
    "custos_audit_backlog_records",
    "Audit records written but not yet acknowledged by Elasticsearch",
    multiprocess_mode="livesum",
)
BACKLOG_BYTES = Gauge(
    "custos_audit_backlog_bytes",
    "Spool bytes not yet acknowledged by Elasticsearch",
    multiprocess_mode="livesum",
)
SHIP_LAG = Gauge(
    "custos_audit_ship_lag_seconds",
    "Age of the oldest audit record not yet in Elasticsearch (0: none)",
    multiprocess_mode="livemax",
)
SHIPPED = Counter("custos_audit_shipped_total", "Audit records acknowledged by Elasticsearch", ["result"])
SHIP_FAILURES = Counter(
    "custos_audit_ship_failures_total", "Failed bulk attempts or items that will be retried", ["reason"]
)
DEAD_LETTERS = Counter("custos_audit_dead_letters_total", "Audit records Elasticsearch rejected for good")
CHECKPOINTS = Counter("custos_audit_checkpoints_total", "Signed audit checkpoints written")
TRUNCATED = Counter(
    "custos_audit_truncated_fields_total",
    "Audit record fields cut to their size limit ('record': cut down to its minimal form)",
    ["field"],
)
LOST = Counter(
    "custos_audit_records_lost_total",
    "Sealed audit records that never reached the spool (write error, disk full, over the cap); "
    "each loss is also logged at ERROR and noted in <chain>/dropped.jsonl",
)
SPOOL_FILL = Gauge(
    "custos_audit_spool_fill_ratio",
    "Share of audit.max_bytes held by spool segments that cannot be pruned (not yet shipped, not "
    "archived, or retention off); at 1 the when_full policy applies. Per worker; the fullest one shows",
    multiprocess_mode="livemax",
)
PRUNED = Counter(
    "custos_audit_pruned_records_total",
    "Audit records pruned from the spool by policy, each range under a signed pruning note "
    "(reason: room, age, size)",
    ["reason"],
)
ARCHIVE_ERRORS = Counter(
    "custos_audit_archive_errors_total",
    "Failed copies of sealed spool segments to audit.archive_dir (retried; unarchived ones are not pruned)",
)
