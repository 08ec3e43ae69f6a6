"""The ``gpu:`` config section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from custos.section import Section


class GpuConfig(Section):
    enabled: bool = Field(True, description="sample GPU telemetry (no GPU or no NVML: reported once, up=0)")
    interval_s: float = Field(5.0, ge=0.1, le=3600, description="seconds between samples")
    names: Literal["custos", "dcgm", "both"] = Field(
        "custos", description="metric names: custos_gpu_*, DCGM-exporter's DCGM_FI_DEV_*, or both"
    )
    simulation: Path | None = Field(
        None, description="scenario YAML file: use the NVML simulation instead of the real NVML"
    )
    per_process_memory: bool = Field(True, description="GPU memory per process (pid, process name)")
    xid_events: bool = Field(True, description="listen for XID critical-error events")
    hostname_label: bool = Field(False, description="add DCGM's Hostname label to DCGM-named metrics")

    @field_validator("simulation")
    @classmethod
    def _scenario_is_valid(cls, value: Path | None) -> Path | None:
        # Checked when the config loads (exit 2 naming the problem), not when a worker starts.
        if value is None:
            return None
        from .sim import read_scenario

        return read_scenario(value).path
