"""CLI subcommands of the sidecar itself."""
