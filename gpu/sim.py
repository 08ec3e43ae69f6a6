"""NVML simulation driven by a scenario file (format: docs/gpu-simulation.md).

``SimulatedNvml`` has the same functions, arguments, units and errors as ``pynvml`` for everything
the collector calls, so the collector code that runs on real GPUs runs unchanged here. Values are a
pure function of the scenario time, which comes from an injectable ``clock`` (plus ``time_offset``):
the alerting tests step through a scenario without waiting for it.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    model_validator,
)

from custos.errors import ConfigError
from custos.yamlfile import FileError, YamlDocument, field_error, read_yaml

from .nvml_api import CLOCK_EVENT_REASONS, C, NVMLError

SCENARIO_DIR = Path(__file__).parent / "scenarios"

# Parameters a scenario can set, ramp or spike, with their defaults (units in the names).
PARAMS: dict[str, float] = {
    "utilization": 0.0,  # percent
    "memory_utilization": 0.0,  # percent
    "memory_used_gib": 1.0,
    "temperature": 35.0,  # celsius
    "memory_temperature": 40.0,
    "power_w": 60.0,
    "sm_clock_mhz": 1410.0,
    "memory_clock_mhz": 1593.0,
    "pcie_tx_kbps": 0.0,
    "pcie_rx_kbps": 0.0,
    "fan_percent": 30.0,
}


class ScenarioError(FileError):
    """Problems in a scenario file, one ``file:line:col: field: problem`` line each."""


@dataclass
class MigSpec:
    profile: str
    memory_total_gib: float
    memory_used_gib: float = 0.0


@dataclass
class GpuSpec:
    index: int
    name: str
    uuid: str
    memory_total_gib: float
    power_limit_w: float
    fan: bool
    baseline: dict[str, float]
    processes: list[dict[str, Any]]
    mig: list[MigSpec]
    jitter: float


@dataclass
class Event:
    at: float
    gpus: tuple[int, ...]
    set: dict[str, float] = field(default_factory=dict)
    ramp: dict[str, float] = field(default_factory=dict)
    over: float = 0.0
    duration: float | None = None  # "for"
    xid: int | None = None
    ecc: dict[str, int] = field(default_factory=dict)
    retired_pages: dict[str, int] = field(default_factory=dict)
    remapped_rows: dict[str, int] = field(default_factory=dict)
    pcie_replay: int = 0
    throttle: tuple[str, ...] = ()
    lost: bool = False

    def active(self, t: float) -> bool:
        return self.at <= t and (self.duration is None or t < self.at + self.duration)


@dataclass
class Scenario:
    name: str
    description: str
    driver_version: str
    nvml_present: bool
    gpus: list[GpuSpec]
    events: list[Event]
    duration: float | None
    loop: bool
    path: Path | None = None


# -- the scenario file -----------------------------------------------------------------------------
Number = Annotated[float, Strict()]  # a YAML number: not a boolean, not a quoted string
Text = Annotated[str, BeforeValidator(str)]  # any scalar, as text (``driver_version: 550.54`` too)
Flag = Annotated[bool, BeforeValidator(bool)]  # YAML truthiness, as the format always had it
_OR_EMPTY_LIST = BeforeValidator(lambda value: value or [])  # null (or left empty): none
_OR_EMPTY_DICT = BeforeValidator(lambda value: value or {})


def _known_params(value: dict[str, float]) -> dict[str, float]:
    for key in value:
        if key not in PARAMS:
            raise field_error((key,), f"unknown parameter (known: {', '.join(PARAMS)})", value[key])
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value or []


def _known_reasons(value: list[str]) -> list[str]:
    for i, reason in enumerate(value):
        if reason not in CLOCK_EVENT_REASONS:
            known = ", ".join(CLOCK_EVENT_REASONS)
            raise field_error((i,), f"unknown reason {reason!r} (known: {known})", reason)
    return value


Params = Annotated[dict[str, Number], _OR_EMPTY_DICT, AfterValidator(_known_params)]
Throttle = Annotated[list[str], BeforeValidator(_as_list), AfterValidator(_known_reasons)]
BitCounts = Annotated[dict[Literal["single_bit", "double_bit"], int], _OR_EMPTY_DICT]
RowKind = Literal["correctable", "uncorrectable", "pending", "failure"]
RowCounts = Annotated[dict[RowKind, int], _OR_EMPTY_DICT]


class _Lenient(BaseModel):
    """GPU entries have always ignored keys they do not know."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MigEntry(_Lenient):
    profile: Text
    memory_total_gib: Number = 10.0
    memory_used_gib: Number = 0.0


class ProcessEntry(_Lenient):
    pid: StrictInt
    name: Text = "python"
    memory_gib: Number = 1.0


class GpuEntry(_Lenient):
    name: Text = "NVIDIA H100 80GB HBM3"
    uuid: Text | None = None  # default: stable, derived from the file name and the index
    memory_total_gib: Number = 80.0
    power_limit_w: Number = 700.0
    fan: Flag = False
    baseline: Params = Field(default_factory=dict)
    processes: Annotated[list[ProcessEntry], _OR_EMPTY_LIST] = Field(default_factory=list)
    mig: Annotated[list[MigEntry], _OR_EMPTY_LIST] = Field(default_factory=list)
    jitter: Number = 0.0


class EventEntry(_Strict):
    at: Number  # seconds from the start
    gpu: StrictInt | Literal["all"] = 0
    set: Params = Field(default_factory=dict)
    ramp: Params = Field(default_factory=dict)
    over: Number = 0.0
    for_: Number | None = Field(None, alias="for")
    xid: Annotated[StrictInt, Field(gt=0)] | None = None
    ecc: BitCounts = Field(default_factory=dict)
    retired_pages: BitCounts = Field(default_factory=dict)
    remapped_rows: RowCounts = Field(default_factory=dict)
    pcie_replay: int = 0
    throttle: Throttle = Field(default_factory=list)
    lost: Flag = False
    note: Any = None


class ScenarioFile(_Strict):
    name: Text | None = None  # default: the file name
    description: Text = ""
    driver_version: Text = "550.54.15"
    nvml: Literal["present", "absent"] = "present"
    gpus: list[GpuEntry] | None = None
    events: Annotated[list[EventEntry], _OR_EMPTY_LIST] = Field(default_factory=list)
    duration: Number | None = None
    loop: Flag = False

    @model_validator(mode="after")
    def _gpus_and_targets(self) -> ScenarioFile:
        if self.gpus is None:
            if self.nvml != "absent" or "gpus" in self.model_fields_set:
                raise field_error(("gpus",), "expected a list of GPUs")
            self.gpus = []  # no driver, no GPUs
        for i, event in enumerate(self.events):
            if event.gpu != "all" and not 0 <= event.gpu < len(self.gpus):
                message = f"{event.gpu!r} is not a GPU index of this scenario or 'all'"
                raise field_error(("events", i, "gpu"), message, event.gpu)
        return self


def _gpu(index: int, entry: GpuEntry, file_name: str) -> GpuSpec:
    seed = f"{file_name}:{index}:{entry.name}".encode()
    return GpuSpec(
        index=index,
        name=entry.name,
        uuid=entry.uuid if entry.uuid is not None else f"GPU-{uuidlib.UUID(hashlib.md5(seed).hexdigest())}",
        memory_total_gib=entry.memory_total_gib,
        power_limit_w=entry.power_limit_w,
        fan=entry.fan,
        baseline={**PARAMS, **entry.baseline},
        processes=[{"pid": p.pid, "name": p.name, "memory_gib": p.memory_gib} for p in entry.processes],
        mig=[MigSpec(m.profile, m.memory_total_gib, m.memory_used_gib) for m in entry.mig],
        jitter=entry.jitter,
    )


def _event(entry: EventEntry, gpu_count: int) -> Event:
    return Event(
        at=entry.at,
        gpus=tuple(range(gpu_count)) if entry.gpu == "all" else (entry.gpu,),
        set=dict(entry.set),
        ramp=dict(entry.ramp),
        over=entry.over,
        duration=entry.for_,
        xid=entry.xid,
        ecc=dict(entry.ecc),
        retired_pages=dict(entry.retired_pages),
        remapped_rows=dict(entry.remapped_rows),
        pcie_replay=entry.pcie_replay,
        throttle=tuple(entry.throttle),
        lost=entry.lost,
    )


def scenario_from(doc: YamlDocument, file_name: str) -> Scenario:
    """The scenario in ``doc`` (problems raise ``doc.error``); ``file_name`` is the default name and
    the seed of the default GPU UUIDs."""
    spec = doc.validate(ScenarioFile)
    gpus = [_gpu(i, g, file_name) for i, g in enumerate(spec.gpus or [])]
    return Scenario(
        name=file_name if spec.name is None else spec.name,
        description=spec.description,
        driver_version=spec.driver_version,
        nvml_present=spec.nvml == "present",
        gpus=gpus,
        events=sorted((_event(e, len(gpus)) for e in spec.events), key=lambda ev: ev.at),
        duration=spec.duration,
        loop=spec.loop,
    )


def parse_scenario(doc: Any, source: str = "scenario") -> Scenario:
    """A scenario given as data (not read from a file): problems name ``source``, without lines."""
    return scenario_from(YamlDocument.from_data(doc, source, error=ScenarioError), source)


def bundled_scenarios() -> list[str]:
    """Names of the bundled scenarios (``custos gpu scenarios``)."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def resolve_scenario(path: str | Path) -> str:
    """An absolute path for a scenario file, or the bundled file for a bare name (``gpu-lost``)."""
    p = Path(path).expanduser()
    if not p.exists() and "/" not in str(path):
        bundled = SCENARIO_DIR / f"{str(path).removesuffix('.yaml')}.yaml"
        if bundled.exists():
            return str(bundled)
    return str(p.absolute())


def read_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; a bare name (``thermal-spike``) means a bundled scenario.
    Problems raise ``ScenarioError`` (a ``ValueError``: config validation reports it per field)."""
    p = Path(resolve_scenario(path))
    names = ", ".join(bundled_scenarios())
    bare = "/" not in str(path)  # a bare name the user may have meant as a bundled scenario
    hint = f"and {str(path)!r} is no bundled scenario: {names}" if bare else f"bundled scenarios: {names}"
    doc = read_yaml(p, what="scenario file", missing_hint=hint, error=ScenarioError)
    scenario = scenario_from(doc, p.name)
    scenario.path = p
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """``read_scenario`` for callers outside config validation: problems raise ``ConfigError``."""
    try:
        return read_scenario(path)
    except ScenarioError as exc:
        raise ConfigError(str(exc)) from None


class _Device:
    __slots__ = ("mig", "parent", "spec")

    def __init__(self, spec: GpuSpec, mig: MigSpec | None = None, parent: _Device | None = None) -> None:
        self.spec = spec
        self.mig = mig
        self.parent = parent


class SimulatedNvml:
    """NVML-shaped: ``nvmlInit``, ``nvmlDeviceGet*`` ... with pynvml's units and ``NVMLError``s."""

    NVMLError = NVMLError

    def __init__(
        self,
        scenario: Scenario | str | Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        time_offset: float = 0.0,
        start: float | None = None,
    ) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.clock = clock
        self.time_offset = time_offset
        self.start = clock() if start is None else start
        self._initialized = False
        self._lock = threading.Lock()
        self._devices = [_Device(g) for g in self.scenario.gpus]
        self._mig = {d.spec.index: [_Device(d.spec, m, d) for m in d.spec.mig] for d in self._devices}
        self._energy_mj = [0.0] * len(self._devices)
        self._energy_t: list[float | None] = [None] * len(self._devices)
        self._xid_delivered: set[int] = set()
        self._event_sets: list[set[int]] = []

    # -- scenario time and state ----------------------------------------------------------------
    def now(self) -> float:
        t = self.clock() - self.start + self.time_offset
        sc = self.scenario
        if sc.loop and sc.duration:
            t = t % sc.duration
        return t

    def value(self, gpu: int, param: str, t: float | None = None) -> float:
        """A parameter's value at scenario time ``t``: baseline, then each event folded in order."""
        t = self.now() if t is None else t
        spec = self.scenario.gpus[gpu]
        v = spec.baseline[param]
        for ev in self.scenario.events:
            if ev.at > t:
                break
            if gpu not in ev.gpus or not ev.active(t):
                continue
            if param in ev.set:
                v = ev.set[param]
            elif param in ev.ramp:
                frac = 1.0 if ev.over <= 0 else min(1.0, (t - ev.at) / ev.over)
                v = v + (ev.ramp[param] - v) * frac
        if spec.jitter and param not in ("sm_clock_mhz", "memory_clock_mhz"):
            v *= 1 + spec.jitter / 100 * math.sin(t * 0.7 + gpu * 1.3 + len(param))
        return v

    def _cumulative(self, gpu: int, key: str, sub: str | None = None, t: float | None = None) -> int:
        t = self.now() if t is None else t
        total = 0
        for ev in self.scenario.events:
            if ev.at > t:
                break
            if gpu in ev.gpus:
                total += ev.pcie_replay if key == "pcie_replay" else getattr(ev, key).get(sub, 0)
        return total

    def lost(self, gpu: int, t: float | None = None) -> bool:
        t = self.now() if t is None else t
        return any(ev.lost and gpu in ev.gpus and ev.active(t) for ev in self.scenario.events)

    def _check(self, handle: _Device, *, mig_ok: bool = False) -> int:
        if not self._initialized:
            raise NVMLError(getattr(C, "NVML_ERROR_UNINITIALIZED", 1))
        gpu = handle.spec.index
        if self.lost(gpu):
            raise NVMLError(C.NVML_ERROR_GPU_IS_LOST)
        if handle.mig is not None and not mig_ok:
            raise NVMLError(C.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    # -- library ------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if not self.scenario.nvml_present:
            raise NVMLError(C.NVML_ERROR_LIBRARY_NOT_FOUND)
        self._initialized = True

    def nvmlShutdown(self) -> None:
        self._initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.scenario.driver_version

    def nvmlDeviceGetCount(self) -> int:
        if not self._initialized:
            raise NVMLError(getattr(C, "NVML_ERROR_UNINITIALIZED", 1))
        return len(self._devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Device:
        if not 0 <= index < len(self._devices):
            raise NVMLError(getattr(C, "NVML_ERROR_INVALID_ARGUMENT", 2))
        return self._devices[index]

    # -- identity -----------------------------------------------------------------------------
    def nvmlDeviceGetName(self, h: _Device) -> str:
        self._check(h, mig_ok=True)
        return h.spec.name if h.mig is None else f"{h.spec.name} MIG {h.mig.profile}"

    def nvmlDeviceGetUUID(self, h: _Device) -> str:
        self._check(h, mig_ok=True)
        if h.mig is None:
            return h.spec.uuid
        return "MIG-" + str(
            uuidlib.UUID(hashlib.md5(f"{h.spec.uuid}:{h.mig.profile}:{id(h.mig)}".encode()).hexdigest())
        )

    def nvmlDeviceGetIndex(self, h: _Device) -> int:
        return self._check(h)

    def nvmlDeviceGetMinorNumber(self, h: _Device) -> int:
        return self._check(h)

    # -- readings -----------------------------------------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, h: _Device) -> SimpleNamespace:
        g = self._check(h)
        t = self.now()
        return SimpleNamespace(
            gpu=_pct(self.value(g, "utilization", t)), memory=_pct(self.value(g, "memory_utilization", t))
        )

    def nvmlDeviceGetMemoryInfo(self, h: _Device) -> SimpleNamespace:
        g = self._check(h, mig_ok=True)
        gib = 1 << 30
        if h.mig is not None:
            total, used = h.mig.memory_total_gib * gib, h.mig.memory_used_gib * gib
        else:
            total = h.spec.memory_total_gib * gib
            used = min(total, max(0.0, self.value(g, "memory_used_gib") * gib))
        return SimpleNamespace(total=int(total), used=int(used), free=int(total - used))

    def nvmlDeviceGetTemperature(self, h: _Device, sensor: int) -> int:
        return round(self.value(self._check(h), "temperature"))

    def nvmlDeviceGetFieldValues(self, h: _Device, field_ids: list[int]) -> list[SimpleNamespace]:
        g = self._check(h)
        out = []
        for fid in field_ids:
            if fid == C.NVML_FI_DEV_MEMORY_TEMP:
                v = round(self.value(g, "memory_temperature"))
                out.append(
                    SimpleNamespace(
                        fieldId=fid,
                        nvmlReturn=0,
                        valueType=C.NVML_VALUE_TYPE_UNSIGNED_INT,
                        value=SimpleNamespace(uiVal=v, ullVal=v, dVal=float(v)),
                    )
                )
            else:
                out.append(
                    SimpleNamespace(
                        fieldId=fid, nvmlReturn=C.NVML_ERROR_NOT_SUPPORTED, valueType=0, value=None
                    )
                )
        return out

    def nvmlDeviceGetPowerUsage(self, h: _Device) -> int:
        return round(self.value(self._check(h), "power_w") * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: _Device) -> int:
        self._check(h)
        return round(h.spec.power_limit_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: _Device) -> int:
        g = self._check(h)
        with self._lock:
            t = self.now()
            last = self._energy_t[g]
            if last is not None and t > last:
                # Energy is the integral of the power draw: trapezoids of at most 1 s (bounded count),
                # so ramps and spikes between two reads are counted whatever the sampling interval.
                steps = min(10_000, max(1, math.ceil(t - last)))
                dt = (t - last) / steps
                p0 = self.value(g, "power_w", last)
                for k in range(1, steps + 1):
                    p1 = self.value(g, "power_w", last + k * dt)
                    self._energy_mj[g] += (p0 + p1) / 2 * dt * 1000
                    p0 = p1
            self._energy_t[g] = t
            return int(self._energy_mj[g])

    def nvmlDeviceGetClockInfo(self, h: _Device, clock_type: int) -> int:
        g = self._check(h)
        return round(self.value(g, "sm_clock_mhz" if clock_type == C.NVML_CLOCK_SM else "memory_clock_mhz"))

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: _Device) -> int:
        g = self._check(h)
        t = self.now()
        mask = 0
        for ev in self.scenario.events:
            if g in ev.gpus and ev.active(t):
                for reason in ev.throttle:
                    mask |= CLOCK_EVENT_REASONS[reason]
        if mask == 0 and self.value(g, "utilization", t) < 1:
            mask = CLOCK_EVENT_REASONS["gpu_idle"]
        return mask

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons

    def nvmlDeviceGetPcieThroughput(self, h: _Device, counter: int) -> int:
        g = self._check(h)
        return round(
            self.value(g, "pcie_tx_kbps" if counter == C.NVML_PCIE_UTIL_TX_BYTES else "pcie_rx_kbps")
        )

    def nvmlDeviceGetPcieReplayCounter(self, h: _Device) -> int:
        return self._cumulative(self._check(h), "pcie_replay")

    def nvmlDeviceGetTotalEccErrors(self, h: _Device, error_type: int, counter_type: int) -> int:
        g = self._check(h)
        sub = "single_bit" if error_type == C.NVML_MEMORY_ERROR_TYPE_CORRECTED else "double_bit"
        return self._cumulative(g, "ecc", sub)

    def nvmlDeviceGetRetiredPages(self, h: _Device, cause: int) -> list[int]:
        g = self._check(h)
        sub = (
            "single_bit"
            if cause == C.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
            else "double_bit"
        )
        return [0x1000 * (i + 1) for i in range(self._cumulative(g, "retired_pages", sub))]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: _Device) -> int:
        self._check(h)
        return 0

    def nvmlDeviceGetRemappedRows(self, h: _Device) -> tuple[int, int, int, int]:
        g = self._check(h)
        c = {
            k: self._cumulative(g, "remapped_rows", k)
            for k in ("correctable", "uncorrectable", "pending", "failure")
        }
        return c["correctable"], c["uncorrectable"], int(c["pending"] > 0), int(c["failure"] > 0)

    def nvmlDeviceGetFanSpeed(self, h: _Device) -> int:
        g = self._check(h)
        if not h.spec.fan:
            raise NVMLError(C.NVML_ERROR_NOT_SUPPORTED)  # passively cooled data-centre boards
        return _pct(self.value(g, "fan_percent"))

    def nvmlDeviceGetComputeRunningProcesses(self, h: _Device) -> list[SimpleNamespace]:
        self._check(h, mig_ok=True)
        procs = h.spec.processes if h.mig is None else []
        return [
            SimpleNamespace(
                pid=p["pid"],
                usedGpuMemory=int(p["memory_gib"] * (1 << 30)),
                gpuInstanceId=0xFFFFFFFF,
                computeInstanceId=0xFFFFFFFF,
            )
            for p in procs
        ]

    def simulated_process_name(self, pid: int) -> str:
        """Not NVML: the collector reads names from /proc, where simulated pids do not exist."""
        for g in self.scenario.gpus:
            for p in g.processes:
                if p["pid"] == pid:
                    return p["name"]
        return "unknown"

    # -- MIG ----------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, h: _Device) -> tuple[int, int]:
        self._check(h)
        on = int(bool(h.spec.mig))
        return on, on

    def nvmlDeviceGetMaxMigDeviceCount(self, h: _Device) -> int:
        self._check(h)
        return len(h.spec.mig)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: _Device, index: int) -> _Device:
        self._check(h)
        devices = self._mig[h.spec.index]
        if not 0 <= index < len(devices):
            raise NVMLError(C.NVML_ERROR_NOT_FOUND)
        return devices[index]

    def nvmlDeviceGetGpuInstanceId(self, h: _Device) -> int:
        self._check(h, mig_ok=True)
        if h.mig is None:
            raise NVMLError(C.NVML_ERROR_NOT_SUPPORTED)
        return self._mig[h.spec.index].index(h) + 1

    # -- events -------------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> set[int]:
        s: set[int] = set()
        self._event_sets.append(s)
        return s

    def nvmlDeviceRegisterEvents(self, h: _Device, event_types: int, event_set: set[int]) -> None:
        event_set.add(self._check(h))

    def nvmlEventSetWait_v2(self, event_set: set[int], timeout_ms: int) -> SimpleNamespace:
        """Delivers each scenario XID once, when its time has come; else NVML's timeout error."""
        t = self.now()
        with self._lock:
            for i, ev in enumerate(self.scenario.events):
                if ev.at > t:
                    break
                if ev.xid is None or i in self._xid_delivered:
                    continue
                for g in ev.gpus:
                    if g in event_set:
                        self._xid_delivered.add(i)
                        return SimpleNamespace(
                            device=self._devices[g],
                            eventType=C.nvmlEventTypeXidCriticalError,
                            eventData=ev.xid,
                            gpuInstanceId=0xFFFFFFFF,
                            computeInstanceId=0xFFFFFFFF,
                        )
        raise NVMLError(C.NVML_ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set: set[int]) -> None:
        return None


def _pct(v: float) -> int:
    return max(0, min(100, round(v)))
