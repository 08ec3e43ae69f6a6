"""``custos top``: a live terminal view of a running sidecar, built from its own endpoints.

- ``client``: reads ``/metrics``, ``/metrics/upstream``, ``/admin/alerts``, ``/admin/audit/recent``
  with the operator's token and says, per endpoint, why it could not (no token, missing permission).
- ``series``: Prometheus text parsed into scrapes; rates, increases and quantiles between scrapes.
- ``thresholds``: warning/critical levels taken from the alert rules (the sidecar's, else built-in).
- ``state``: everything one frame needs, kept across refreshes (rate windows, GPU history).
- ``view``: the rich renderables (panes, sparklines); ``keys``: keys read without blocking.
"""
