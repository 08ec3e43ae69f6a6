"""Request-path stages, one module each. See ``sidecar.stage`` for the contract."""
