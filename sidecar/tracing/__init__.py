"""OpenTelemetry tracing of proxied requests (``setup``); the stage is ``sidecar.stages.tracing``.
Importing this package loads no OpenTelemetry code."""
