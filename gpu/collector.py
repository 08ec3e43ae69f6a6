"""GPU telemetry collector: one background thread samples NVML (or the simulation) every
``gpu.interval_s`` and renders the Prometheus text once per sample; /metrics only appends those
bytes, so scrapes never call NVML and the request path never waits for a GPU.

Failure handling (a sidecar must outlive its telemetry):
- no NVML library / no driver: logged once, ``custos_gpu_collector_up 0``, retried quietly;
- a field the GPU does not support: skipped from then on, no noise;
- a GPU that falls off the bus (NVML_ERROR_GPU_IS_LOST): logged once, ``custos_gpu_lost 1``, its other
  series stop, the other GPUs go on; logged again when it answers again.

With several worker processes one worker holds a lock file and samples; the others read its
rendered text from the multiprocess directory, so NVML is polled once per host, not per worker.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from custos.statefiles import release_lock, try_lock, write_atomic

from .nvml_api import CLOCK_EVENT_REASONS, C, NVMLError, real_nvml

if TYPE_CHECKING:
    from .config import GpuConfig

log = logging.getLogger("custos.gpu")

_LOST_CODES = {C.NVML_ERROR_GPU_IS_LOST, C.NVML_ERROR_UNKNOWN}
_INIT_RETRY_S = 60.0
_NO_DRIVER_CODES = {C.NVML_ERROR_LIBRARY_NOT_FOUND, getattr(C, "NVML_ERROR_DRIVER_NOT_LOADED", 9)}
MIB = 1 << 20


@dataclass
class Device:
    index: int
    handle: Any
    uuid: str
    name: str
    minor: int
    mig: str = ""  # GPU instance id for a MIG device
    mig_profile: str = ""
    parent: Device | None = None
    lost: bool = False
    unsupported: set[str] = field(default_factory=set)
    xid_counts: dict[int, int] = field(default_factory=dict)
    last_xid: int = 0

    @property
    def labels(self) -> dict[str, str]:
        return {"gpu": str(self.index), "uuid": self.uuid, "name": self.name, "mig": self.mig}


class _GpuLost(Exception):
    pass


class _Families:
    """Accumulates samples into metric families (custos and/or DCGM names) in insertion order."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(self, name: str, kind: str, doc: str, labels: dict[str, str], value: float) -> None:
        fam = self.families.get(name)
        if fam is None:
            base = name[:-6] if kind == "counter" and name.endswith("_total") else name
            fam = self.families[name] = Metric(base, doc, kind)
        sample = fam.name + "_total" if kind == "counter" else fam.name
        fam.add_sample(sample, labels, float(value))


class _Static:
    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return self.metrics


# reading key -> (custos name, kind, scale to custos unit, help, DCGM name, scale to DCGM unit)
READINGS: dict[str, tuple[str, str, float, str, str | None, float]] = {
    "util_gpu": (
        "custos_gpu_utilization_ratio",
        "gauge",
        0.01,
        "GPU (SM) utilization, 0..1",
        "DCGM_FI_DEV_GPU_UTIL",
        1,
    ),
    "util_mem": (
        "custos_gpu_memory_utilization_ratio",
        "gauge",
        0.01,
        "Memory controller utilization, 0..1",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        1,
    ),
    "mem_used": (
        "custos_gpu_memory_used_bytes",
        "gauge",
        1,
        "Framebuffer memory used",
        "DCGM_FI_DEV_FB_USED",
        1 / MIB,
    ),
    "mem_free": (
        "custos_gpu_memory_free_bytes",
        "gauge",
        1,
        "Framebuffer memory free",
        "DCGM_FI_DEV_FB_FREE",
        1 / MIB,
    ),
    "mem_total": (
        "custos_gpu_memory_total_bytes",
        "gauge",
        1,
        "Framebuffer memory total",
        "DCGM_FI_DEV_FB_TOTAL",
        1 / MIB,
    ),
    "temp_gpu": ("custos_gpu_temperature_celsius", "gauge", 1, "GPU temperature", "DCGM_FI_DEV_GPU_TEMP", 1),
    "temp_mem": (
        "custos_gpu_memory_temperature_celsius",
        "gauge",
        1,
        "Memory (HBM) temperature",
        "DCGM_FI_DEV_MEMORY_TEMP",
        1,
    ),
    "power": ("custos_gpu_power_watts", "gauge", 0.001, "Power draw", "DCGM_FI_DEV_POWER_USAGE", 0.001),
    "power_limit": (
        "custos_gpu_power_limit_watts",
        "gauge",
        0.001,
        "Enforced power limit",
        "DCGM_FI_DEV_POWER_MGMT_LIMIT",
        0.001,
    ),
    "energy": (
        "custos_gpu_energy_joules_total",
        "counter",
        0.001,
        "Energy used since the driver loaded",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        1,
    ),
    "sm_clock": ("custos_gpu_sm_clock_hertz", "gauge", 1e6, "SM clock", "DCGM_FI_DEV_SM_CLOCK", 1),
    "mem_clock": ("custos_gpu_memory_clock_hertz", "gauge", 1e6, "Memory clock", "DCGM_FI_DEV_MEM_CLOCK", 1),
    "clock_reasons": (
        "custos_gpu_clock_event_reasons_mask",
        "gauge",
        1,
        "Clock event (throttle) reasons as NVML's bit mask",
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        1,
    ),
    "pcie_tx": (
        "custos_gpu_pcie_tx_bytes_per_second",
        "gauge",
        1024,
        "PCIe transmit throughput",
        "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
        1,
    ),
    "pcie_rx": (
        "custos_gpu_pcie_rx_bytes_per_second",
        "gauge",
        1024,
        "PCIe receive throughput",
        "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
        1,
    ),
    "pcie_replay": (
        "custos_gpu_pcie_replay_errors_total",
        "counter",
        1,
        "PCIe replay counter",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        1,
    ),
    "fan": (
        "custos_gpu_fan_speed_ratio",
        "gauge",
        0.01,
        "Fan speed, 0..1 (absent on passively cooled boards)",
        "DCGM_FI_DEV_FAN_SPEED",
        1,
    ),
    "retired_pending": (
        "custos_gpu_retired_pages_pending",
        "gauge",
        1,
        "1 when pages wait to be retired",
        "DCGM_FI_DEV_RETIRED_PENDING",
        1,
    ),
    "remap_pending": (
        "custos_gpu_row_remap_pending",
        "gauge",
        1,
        "1 when a row remap waits for a reset",
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
        1,
    ),
    "remap_failure": (
        "custos_gpu_row_remap_failure",
        "gauge",
        1,
        "1 when a row remap failed",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        1,
    ),
    "last_xid": (
        "custos_gpu_last_xid",
        "gauge",
        1,
        "Code of the last XID error seen (0: none)",
        "DCGM_FI_DEV_XID_ERRORS",
        1,
    ),
}
# Readings with an extra label: key -> (custos name, kind, label name, help)
LABELLED: dict[str, tuple[str, str, str, str]] = {
    "ecc": (
        "custos_gpu_ecc_errors_total",
        "counter",
        "error",
        "ECC errors; error=single_bit|double_bit, counter=volatile (since boot) or aggregate (lifetime)",
    ),
    "retired": ("custos_gpu_retired_pages", "gauge", "cause", "Retired memory pages by cause"),
    "remapped": ("custos_gpu_remapped_rows", "gauge", "kind", "Remapped memory rows"),
    "reason": (
        "custos_gpu_clock_event_reason",
        "gauge",
        "reason",
        "1 while this clock event (throttle) reason is active",
    ),
    "xid": ("custos_gpu_xid_errors_total", "counter", "xid", "XID critical error events by XID code"),
}
DCGM_LABELLED = {
    ("ecc", "single_bit", "volatile"): "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    ("ecc", "double_bit", "volatile"): "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    ("ecc", "single_bit", "aggregate"): "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    ("ecc", "double_bit", "aggregate"): "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    ("retired", "single_bit"): "DCGM_FI_DEV_RETIRED_SBE",
    ("retired", "double_bit"): "DCGM_FI_DEV_RETIRED_DBE",
    ("remapped", "correctable"): "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    ("remapped", "uncorrectable"): "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
}


class GpuCollector:
    def __init__(
        self,
        nvml: Any = None,
        *,
        source: str = "nvml",
        interval_s: float = 5.0,
        names: str = "custos",
        per_process_memory: bool = True,
        xid_events: bool = True,
        hostname: str | None = None,
        shared_dir: str | None = None,
    ) -> None:
        self.nvml = nvml
        self.source = source
        self.interval_s = interval_s
        self.custos_names = names in ("custos", "both")
        self.dcgm_names = names in ("dcgm", "both")
        self.per_process_memory = per_process_memory
        self.xid_events = xid_events
        self.hostname = hostname
        self.shared_dir = shared_dir
        self.up = False
        self.devices: list[Device] = []
        self.driver_version = ""
        self.errors: dict[str, int] = {}
        self.samples = 0
        self.last_sample_duration = 0.0
        self._event_set: Any = None
        self._init_failed_at: float | None = None
        self._reported: set[tuple[str, ...]] = set()
        self._static = _Static()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._static)  # type: ignore[arg-type]
        self._text = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._proc_names: dict[int, str] = {}

    # -- thread -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="custos-gpu-collector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval_s))
        if self.up and self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass
        self.up = False
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    def _run(self) -> None:
        while True:
            try:
                if self._is_sampler():
                    self.sample()
                else:
                    self._read_shared()
            except Exception:  # telemetry must never take the sidecar down
                log.exception("GPU sampling failed; will retry in %.1fs", self.interval_s)
            if self._stop.wait(self.interval_s):
                return

    def _is_sampler(self) -> bool:
        if self.shared_dir is None or self._lock_fd is not None:
            return True
        # Held until this process exits; then another worker takes over.
        self._lock_fd = try_lock(Path(self.shared_dir) / "gpu-sampler.lock")
        return self._lock_fd is not None

    def _read_shared(self) -> None:
        assert self.shared_dir is not None
        path = os.path.join(self.shared_dir, "gpu.prom")
        try:
            st = os.stat(path)
            # A sampler that died leaves a stale file: drop it rather than export frozen values.
            if time.time() - st.st_mtime > max(3 * self.interval_s, 15.0):
                self._text = b""
                return
            with open(path, "rb") as f:
                self._text = f.read()
        except FileNotFoundError:
            self._text = b""

    def exposition(self) -> bytes:
        """The latest rendered GPU metrics (Prometheus text); safe to call from any thread."""
        return self._text

    # -- NVML ---------------------------------------------------------------------------------
    def _once(self, key: tuple[str, ...], level: int, msg: str, *args: Any) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.log(level, msg, *args)

    def _count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _init(self) -> bool:
        if self.up:
            return True
        now = time.monotonic()
        if self._init_failed_at is not None and now - self._init_failed_at < _INIT_RETRY_S:
            return False
        nvml = self.nvml
        try:
            if nvml is None:
                raise RuntimeError(
                    "the nvidia-ml-py package (module pynvml) is not installed; install custos[gpu]"
                )
            nvml.nvmlInit()
            self.driver_version = _text(nvml.nvmlSystemGetDriverVersion())
            self.devices = self._enumerate()
        except (NVMLError, RuntimeError, OSError) as exc:
            self._init_failed_at = now
            self._count_error("init")
            # No driver at all is normal on a laptop or CI box (INFO); a driver that fails is not.
            code = getattr(exc, "value", None)
            no_gpu = not isinstance(exc, NVMLError) or code in _NO_DRIVER_CODES
            self._once(
                ("init",),
                logging.INFO if no_gpu else logging.WARNING,
                "GPU telemetry unavailable (%s): %s. Exporting custos_gpu_collector_up 0; the sidecar "
                "runs on without GPU metrics and retries every %ds.",
                self.source,
                exc,
                int(_INIT_RETRY_S),
            )
            return False
        self.up = True
        self._init_failed_at = None
        if ("init",) in self._reported:
            self._reported.discard(("init",))
            log.info("GPU telemetry available now")
        log.info(
            "GPU telemetry (%s): %d GPU(s), driver %s, every %.1fs",
            self.source,
            sum(1 for d in self.devices if not d.mig),
            self.driver_version,
            self.interval_s,
        )
        if self.xid_events:
            self._register_events()
        return True

    def _enumerate(self) -> list[Device]:
        nvml = self.nvml
        devices = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            try:
                minor = nvml.nvmlDeviceGetMinorNumber(h)
            except NVMLError:
                minor = i
            dev = Device(
                index=i,
                handle=h,
                uuid=_text(nvml.nvmlDeviceGetUUID(h)),
                name=_text(nvml.nvmlDeviceGetName(h)),
                minor=minor,
            )
            devices.append(dev)
            devices.extend(self._mig_devices(dev))
        return devices

    def _mig_devices(self, dev: Device) -> list[Device]:
        nvml = self.nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(dev.handle)
            if current != C.NVML_DEVICE_MIG_ENABLE:
                return []
            count = nvml.nvmlDeviceGetMaxMigDeviceCount(dev.handle)
        except NVMLError:
            return []
        out = []
        for j in range(count):
            try:
                mh = nvml.nvmlDeviceGetMigDeviceHandleByIndex(dev.handle, j)
            except NVMLError:
                continue  # empty slot
            name = _text(nvml.nvmlDeviceGetName(mh))
            try:
                gi = str(nvml.nvmlDeviceGetGpuInstanceId(mh))
            except NVMLError:
                gi = str(j)
            profile = name.rsplit(" MIG ", 1)[1] if " MIG " in name else ""
            out.append(
                Device(
                    index=dev.index,
                    handle=mh,
                    uuid=_text(nvml.nvmlDeviceGetUUID(mh)),
                    name=name,
                    minor=dev.minor,
                    mig=gi,
                    mig_profile=profile,
                    parent=dev,
                )
            )
        return out

    def _register_events(self) -> None:
        nvml = self.nvml
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except NVMLError as exc:
            self._once(("events",), logging.WARNING, "XID events unavailable: %s", exc)
            return
        for dev in self.devices:
            if dev.mig:
                continue
            try:
                nvml.nvmlDeviceRegisterEvents(dev.handle, C.nvmlEventTypeXidCriticalError, self._event_set)
            except NVMLError as exc:
                self._once(
                    ("events", dev.uuid),
                    logging.WARNING,
                    "GPU %d: XID events unavailable: %s",
                    dev.index,
                    exc,
                )

    def _poll_events(self) -> None:
        if self._event_set is None:
            return
        nvml = self.nvml
        by_handle = {_handle_key(d.handle): d for d in self.devices if not d.mig}
        for _ in range(1000):  # drain what queued up since the last sample; bounded
            try:
                data = nvml.nvmlEventSetWait_v2(self._event_set, 0)
            except NVMLError as exc:
                if exc.value != C.NVML_ERROR_TIMEOUT:
                    self._count_error("events")
                return
            # Match by handle: asking a GPU that just fell off the bus for its UUID would fail.
            dev = by_handle.get(_handle_key(data.device))
            xid = int(data.eventData)
            if dev is None:
                continue
            dev.xid_counts[xid] = dev.xid_counts.get(xid, 0) + 1
            dev.last_xid = xid
            log.error("GPU %d (%s, %s): XID %d critical error event", dev.index, dev.uuid, dev.name, xid)

    def _read(self, dev: Device, key: str, fn: str, *args: Any) -> Any:
        """One NVML call for one field; None when unsupported (remembered) or failing."""
        if key in dev.unsupported:
            return None
        try:
            return getattr(self.nvml, fn)(dev.handle, *args)
        except NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in _LOST_CODES:
                raise _GpuLost(str(exc)) from None
            if code == C.NVML_ERROR_NOT_SUPPORTED:
                dev.unsupported.add(key)
                return None
            self._count_error(key)
            self._once(
                ("read", dev.uuid, key, str(code)),
                logging.WARNING,
                "GPU %d: reading %s failed: %s",
                dev.index,
                key,
                exc,
            )
            return None

    # -- one sample ---------------------------------------------------------------------------
    def sample(self) -> list[Metric]:
        """Read every GPU once and render the text /metrics appends. Returns the metric families."""
        started = time.perf_counter()
        fam = _Families()
        if self._init():
            self._poll_events()
            for dev in self.devices:
                self._sample_device(dev, fam)
        self.samples += 1
        self.last_sample_duration = time.perf_counter() - started
        self._collector_metrics(fam)
        metrics = list(fam.families.values())
        self._static.metrics = metrics
        self._text = generate_latest(self._registry)
        if self.shared_dir is not None:
            write_atomic(Path(self.shared_dir) / "gpu.prom", self._text, sync=False)
        return metrics

    def _collector_metrics(self, fam: _Families) -> None:
        fam.add(
            "custos_gpu_collector_up",
            "gauge",
            "1 when GPU telemetry works (NVML loaded), else 0",
            {"source": self.source},
            1 if self.up else 0,
        )
        fam.add(
            "custos_gpu_count",
            "gauge",
            "GPUs found",
            {},
            sum(1 for d in self.devices if not d.mig) if self.up else 0,
        )
        fam.add(
            "custos_gpu_sample_duration_seconds",
            "gauge",
            "Time the last GPU sample took",
            {},
            self.last_sample_duration,
        )
        fam.add(
            "custos_gpu_last_sample_timestamp_seconds",
            "gauge",
            "Unix time of the last GPU sample",
            {},
            time.time(),
        )
        for kind, n in sorted(self.errors.items()):
            fam.add(
                "custos_gpu_collector_errors_total",
                "counter",
                "NVML calls that failed, by field",
                {"kind": kind},
                n,
            )

    def _sample_device(self, dev: Device, fam: _Families) -> None:
        base = dev.labels
        if self.custos_names:
            fam.add(
                "custos_gpu_info",
                "gauge",
                "Always 1; GPU identity and driver version as labels",
                {**base, "driver_version": self.driver_version, "mig_profile": dev.mig_profile},
                1,
            )
        if not dev.mig and self.xid_events:
            # XIDs stay visible when the GPU is lost: XID 79 is often the reason it is.
            xids = [(("xid", str(x)), float(n)) for x, n in sorted(dev.xid_counts.items())]
            self._emit(fam, dev, {"last_xid": dev.last_xid}, xids)
        lost_doc = "1 when NVML reports the GPU lost (fallen off the bus)"
        try:
            readings, labelled, processes = self._read_device(dev)
        except _GpuLost as exc:
            if not dev.lost:
                dev.lost = True
                log.error(
                    "GPU %d (%s, %s) is lost (fell off the bus?): %s. Its metrics stop; "
                    "custos_gpu_lost=1. The sidecar keeps running.",
                    dev.index,
                    dev.uuid,
                    dev.name,
                    exc,
                )
            fam.add("custos_gpu_lost", "gauge", lost_doc, base, 1)
            return
        if dev.lost:
            dev.lost = False
            log.warning("GPU %d (%s) answers again", dev.index, dev.uuid)
        fam.add("custos_gpu_lost", "gauge", lost_doc, base, 0)
        self._emit(fam, dev, readings, labelled)
        if self.custos_names:
            for pid, used in processes:
                fam.add(
                    "custos_gpu_process_memory_bytes",
                    "gauge",
                    "GPU memory used per process",
                    {**base, "pid": str(pid), "process": self._process_name(pid)},
                    used,
                )

    def _emit(
        self,
        fam: _Families,
        dev: Device,
        readings: dict[str, float | None],
        labelled: list[tuple[tuple[str, ...], float]],
    ) -> None:
        base = dev.labels
        dcgm_labels = self._dcgm_labels(dev) if self.dcgm_names else {}
        for key, value in readings.items():
            if value is None:
                continue
            name, kind, scale, doc, dcgm, dscale = READINGS[key]
            if self.custos_names:
                fam.add(name, kind, doc, base, value * scale)
            if self.dcgm_names and dcgm is not None:
                # DCGM's counters carry no _total suffix, which prometheus-client adds to every
                # counter it renders: they go out as gauges (rate() works the same).
                fam.add(dcgm, "gauge", f"{doc} (DCGM-exporter compatible)", dcgm_labels, value * dscale)
        for (key, *sub), value in labelled:
            name, kind, label, doc = LABELLED[key]
            if self.custos_names:
                extra = {label: sub[0]}
                if key == "ecc":
                    extra["counter"] = sub[1]
                fam.add(name, kind, doc, {**base, **extra}, value)
            dcgm = DCGM_LABELLED.get((key, *sub))
            if self.dcgm_names and dcgm is not None:
                fam.add(dcgm, "gauge", f"{doc} (DCGM-exporter compatible)", dcgm_labels, value)

    def _read_device(
        self, dev: Device
    ) -> tuple[dict[str, float | None], list[tuple[tuple[str, ...], float]], list[tuple[int, int]]]:
        r = self._read
        readings: dict[str, float | None] = {}
        labelled: list[tuple[tuple[str, ...], float]] = []
        mem = r(dev, "memory", "nvmlDeviceGetMemoryInfo")
        if mem is not None:
            readings.update(mem_used=mem.used, mem_free=mem.free, mem_total=mem.total)
        processes: list[tuple[int, int]] = []
        if self.per_process_memory:
            for p in r(dev, "processes", "nvmlDeviceGetComputeRunningProcesses") or ():
                if getattr(p, "usedGpuMemory", None) is not None:
                    processes.append((int(p.pid), int(p.usedGpuMemory)))
        if dev.mig:
            return readings, labelled, processes  # NVML reports little else per MIG instance
        util = r(dev, "utilization", "nvmlDeviceGetUtilizationRates")
        if util is not None:
            readings.update(util_gpu=util.gpu, util_mem=util.memory)
        readings["temp_gpu"] = r(dev, "temperature", "nvmlDeviceGetTemperature", C.NVML_TEMPERATURE_GPU)
        fv = r(dev, "memory_temperature", "nvmlDeviceGetFieldValues", [C.NVML_FI_DEV_MEMORY_TEMP])
        if fv:
            v = fv[0]
            if v.nvmlReturn == 0:
                readings["temp_mem"] = (
                    v.value.uiVal if v.valueType == C.NVML_VALUE_TYPE_UNSIGNED_INT else v.value.dVal
                )
            else:
                dev.unsupported.add("memory_temperature")
        readings["power"] = r(dev, "power", "nvmlDeviceGetPowerUsage")
        readings["power_limit"] = r(dev, "power_limit", "nvmlDeviceGetEnforcedPowerLimit")
        readings["energy"] = r(dev, "energy", "nvmlDeviceGetTotalEnergyConsumption")
        readings["sm_clock"] = r(dev, "sm_clock", "nvmlDeviceGetClockInfo", C.NVML_CLOCK_SM)
        readings["mem_clock"] = r(dev, "mem_clock", "nvmlDeviceGetClockInfo", C.NVML_CLOCK_MEM)
        fn = (
            "nvmlDeviceGetCurrentClocksEventReasons"
            if hasattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons")
            else "nvmlDeviceGetCurrentClocksThrottleReasons"
        )
        mask = r(dev, "clock_reasons", fn)
        readings["clock_reasons"] = mask
        if mask is not None:
            for reason, bit in CLOCK_EVENT_REASONS.items():
                labelled.append((("reason", reason), 1 if mask & bit else 0))
        readings["pcie_tx"] = r(dev, "pcie_tx", "nvmlDeviceGetPcieThroughput", C.NVML_PCIE_UTIL_TX_BYTES)
        readings["pcie_rx"] = r(dev, "pcie_rx", "nvmlDeviceGetPcieThroughput", C.NVML_PCIE_UTIL_RX_BYTES)
        readings["pcie_replay"] = r(dev, "pcie_replay", "nvmlDeviceGetPcieReplayCounter")
        readings["fan"] = r(dev, "fan", "nvmlDeviceGetFanSpeed")
        for err, etype in (
            ("single_bit", C.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ("double_bit", C.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        ):
            for counter, ctype in (("volatile", C.NVML_VOLATILE_ECC), ("aggregate", C.NVML_AGGREGATE_ECC)):
                v = r(dev, f"ecc_{err}_{counter}", "nvmlDeviceGetTotalEccErrors", etype, ctype)
                if v is not None:
                    labelled.append((("ecc", err, counter), v))
        for cause, ctype in (
            ("single_bit", C.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS),
            ("double_bit", C.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR),
        ):
            pages = r(dev, f"retired_{cause}", "nvmlDeviceGetRetiredPages", ctype)
            if pages is not None:
                labelled.append((("retired", cause), len(pages)))
        pending = r(dev, "retired_pending", "nvmlDeviceGetRetiredPagesPendingStatus")
        readings["retired_pending"] = None if pending is None else int(pending == C.NVML_FEATURE_ENABLED)
        rows = r(dev, "remapped_rows", "nvmlDeviceGetRemappedRows")
        if rows is not None:
            corr, unc, pend, fail = rows
            labelled.append((("remapped", "correctable"), corr))
            labelled.append((("remapped", "uncorrectable"), unc))
            readings.update(remap_pending=int(bool(pend)), remap_failure=int(bool(fail)))
        return readings, labelled, processes

    def _dcgm_labels(self, dev: Device) -> dict[str, str]:
        labels = {
            "gpu": str(dev.index),
            "UUID": dev.uuid if not dev.parent else dev.parent.uuid,
            "device": f"nvidia{dev.minor}",
            "modelName": dev.name if not dev.parent else dev.parent.name,
        }
        if self.hostname:
            labels["Hostname"] = self.hostname
        if dev.mig:
            labels.update(GPU_I_PROFILE=dev.mig_profile, GPU_I_ID=dev.mig)
        return labels

    def _process_name(self, pid: int) -> str:
        name = self._proc_names.get(pid)
        if name is None:
            simulated = getattr(self.nvml, "simulated_process_name", None)
            if simulated is not None:
                name = simulated(pid)
            else:
                try:
                    with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                        name = f.read().strip()
                except OSError:
                    name = "unknown"  # another PID namespace (container) or already gone
            if len(self._proc_names) > 4096:
                self._proc_names.clear()
            self._proc_names[pid] = name
        return name


def _handle_key(handle: Any) -> int:
    """pynvml handles are ctypes pointers (equal only when the same object): compare addresses."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value or 0
    except (TypeError, ctypes.ArgumentError):
        return id(handle)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def collector_from_config(gc: GpuConfig, *, shared_dir: str | None = None) -> GpuCollector | None:
    if not gc.enabled:
        return None
    if gc.simulation is not None:
        from .sim import SimulatedNvml, load_scenario

        nvml: Any = SimulatedNvml(load_scenario(gc.simulation))
        source = "simulation"
    else:
        nvml = real_nvml()
        source = "nvml"
    return GpuCollector(
        nvml,
        source=source,
        interval_s=gc.interval_s,
        names=gc.names,
        per_process_memory=gc.per_process_memory,
        xid_events=gc.xid_events,
        hostname=socket.gethostname() if gc.hostname_label else None,
        shared_dir=shared_dir,
    )


def start_from_config(gc: GpuConfig, shared_dir: str | None = None) -> GpuCollector | None:
    """``shared_dir``: the metrics multiprocess directory when several workers share one sampler."""
    collector = collector_from_config(gc, shared_dir=shared_dir)
    if collector is not None:
        collector.start()
    return collector
