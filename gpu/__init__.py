"""GPU telemetry: NVML (``pynvml``) or a scenario-driven simulation with the same interface, sampled
in a background thread by one collector (``collector``). Importing this package loads neither."""
