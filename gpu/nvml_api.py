"""The NVML interface the collector talks to: the real ``pynvml`` module when installed, else a
minimal stand-in with the same error type and constants (enough for the simulation and for
reporting "no NVML" cleanly)."""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

try:
    import pynvml as nvml

    HAVE_PYNVML = True
except ImportError:  # the optional extra custos[gpu] is not installed
    HAVE_PYNVML = False
    nvml = None  # type: ignore[assignment]

if HAVE_PYNVML:
    NVMLError = nvml.NVMLError
    C: Any = nvml
else:

    class NVMLError(Exception):  # type: ignore[no-redef]
        _messages: ClassVar[dict[int, str]] = {
            3: "Not Supported",
            6: "Not Found",
            10: "Timeout",
            12: "NVML Shared Library Not Found",
            15: "GPU is lost",
            999: "Unknown Error",
        }

        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return self._messages.get(self.value, f"NVML error {self.value}")

    class _Constants:
        NVML_SUCCESS = 0
        NVML_ERROR_NOT_SUPPORTED = 3
        NVML_ERROR_NOT_FOUND = 6
        NVML_ERROR_TIMEOUT = 10
        NVML_ERROR_LIBRARY_NOT_FOUND = 12
        NVML_ERROR_GPU_IS_LOST = 15
        NVML_ERROR_UNKNOWN = 999
        NVML_TEMPERATURE_GPU = 0
        NVML_CLOCK_SM = 1
        NVML_CLOCK_MEM = 2
        NVML_PCIE_UTIL_TX_BYTES = 0
        NVML_PCIE_UTIL_RX_BYTES = 1
        NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
        NVML_VOLATILE_ECC = 0
        NVML_AGGREGATE_ECC = 1
        NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
        NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
        NVML_FEATURE_ENABLED = 1
        NVML_DEVICE_MIG_ENABLE = 1
        NVML_FI_DEV_MEMORY_TEMP = 82
        NVML_VALUE_TYPE_UNSIGNED_INT = 1
        nvmlEventTypeXidCriticalError = 8

    C = _Constants()

# Clock event (throttle) reason bits, NVML's nvmlClocksEventReason* values.
CLOCK_EVENT_REASONS: dict[str, int] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}


def real_nvml() -> ModuleType | None:
    return nvml if HAVE_PYNVML else None
