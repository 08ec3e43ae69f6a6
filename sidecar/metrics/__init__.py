"""Prometheus metrics of the sidecar: definitions (``defs``), bounded labels (``labels``) and the
/metrics renderer that also works with several worker processes (``render``).

This package's ``__init__`` imports nothing heavy: ``sidecar.config`` imports ``metrics.config``, and
prometheus-client must not be imported before ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""
