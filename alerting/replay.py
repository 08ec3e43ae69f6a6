"""Replay a metrics scenario through rules, routing and receivers in accelerated (virtual) time.

A scenario is one of:
- a Custos scenario: ``interval``, ``duration``, ``series`` in promtool's expanding notation
  (``'0+1x60 60x30'``), optionally ``gpu_scenario`` (a GPU simulation file, see docs/gpu-simulation.md)
  and ``silences`` (matchers with ``start``/``end`` offsets);
- a GPU simulation scenario file itself (it has ``gpus:``);
- a promtool unit-test file (its first test's ``input_series`` and ``interval``).

The engine, dispatcher and notification log are the production ones; only the clock is virtual. By
default notifications are recorded, not sent (``deliver=True`` sends them to the configured receivers).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from custos.yamlfile import FileError, YamlDocument, read_yaml
from gpu.collector import GpuCollector
from gpu.sim import SCENARIO_DIR, SimulatedNvml, scenario_from
from gpu.sim import load_scenario as load_gpu_scenario

from .config import AlertingConfig
from .dispatch import Notification
from .model import parse_iso
from .promql import format_duration, parse_duration
from .receivers import Integration, Notifier
from .rules import Group
from .service import AlertingService
from .tsdb import MISSING, expand_values, parse_exposition, parse_series_selector

GPU_SCENARIO_DIR = SCENARIO_DIR  # the bundled GPU simulation scenarios
ALERT_SCENARIO_DIR = Path(__file__).parent / "scenarios"  # the bundled alert scenarios
DEFAULT_START = 1_767_258_000.0  # 2026-01-01T09:00:00Z: a fixed, reproducible virtual start


class ScenarioError(FileError):
    """Problems in a scenario file, one ``file:line:col: field: problem`` line each."""


@dataclass
class Series:
    labels: tuple[tuple[str, str], ...]
    values: list[Any]


@dataclass
class Scenario:
    interval_s: float = 15.0
    evaluation_interval_s: float | None = None
    duration_s: float | None = None
    start: float = DEFAULT_START
    series: list[Series] = field(default_factory=list)
    gpu_scenario: Path | None = None
    gpu_sample_interval_s: float = 5.0
    silences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def length_s(self) -> float:
        if self.duration_s is not None:
            return self.duration_s
        longest = max((len(s.values) for s in self.series), default=0) * self.interval_s
        gpu = 0.0
        if self.gpu_scenario is not None:
            gpu = float(load_gpu_scenario(self.gpu_scenario).duration or 0)
        return max(longest, gpu, self.interval_s)


# -- scenario files --------------------------------------------------------------------------------
def _unless_empty(convert: Callable[[Any], Any]) -> BeforeValidator:
    """A key left empty (or 0) means its default, as it always has."""
    return BeforeValidator(lambda value: convert(value) if value else None)


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


Interval = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
_OR_EMPTY_LIST = BeforeValidator(lambda value: value or [])


class SeriesEntry(BaseModel):
    series: str  # a plain series: name{label="value"}
    values: Annotated[str, BeforeValidator(str)]  # promtool's expanding notation: 0+1x60 60x30

    @field_validator("series")
    @classmethod
    def _plain_series(cls, value: str) -> str:
        parse_series_selector(value)
        return value

    @field_validator("values")
    @classmethod
    def _notation(cls, value: str) -> str:
        expand_values(value)
        return value

    def to_series(self) -> Series:
        return Series(parse_series_selector(self.series), expand_values(self.values))


class ScenarioFile(BaseModel):
    """A Custos scenario."""

    model_config = ConfigDict(extra="forbid")

    interval: Interval = 15.0
    evaluation_interval: Annotated[float | None, _unless_empty(parse_duration)] = None
    duration: Duration | None = None
    start: Annotated[float | None, _unless_empty(lambda value: parse_iso(str(value)))] = None
    series: Annotated[list[SeriesEntry], _OR_EMPTY_LIST] = Field(default_factory=list)
    gpu_scenario: Annotated[str | None, _unless_empty(str)] = None
    gpu_sample_interval: Annotated[float | None, _unless_empty(parse_duration)] = None
    silences: Annotated[list[dict[str, Any]], _OR_EMPTY_LIST] = Field(default_factory=list)
    description: Any = None
    name: Any = None


class PromtoolFile(BaseModel):
    """A promtool unit-test file: its first test is replayed; the rest is promtool's business."""

    evaluation_interval: Interval = 60.0
    tests: Annotated[list[Any], _OR_EMPTY_LIST] = Field(default_factory=list)


class PromtoolTest(BaseModel):
    interval: Interval | None = None
    input_series: Annotated[list[SeriesEntry], _OR_EMPTY_LIST] = Field(default_factory=list)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    return _scenario(read_yaml(p, what="scenario file", error=ScenarioError), p.parent)


def parse_scenario(doc: dict[str, Any], base: Path = Path(), source: str = "scenario") -> Scenario:
    return _scenario(YamlDocument.from_data(doc, source, error=ScenarioError), base)


def _scenario(doc: YamlDocument, base: Path) -> Scenario:
    if not isinstance(doc.data, dict):
        raise doc.error([doc.problem((), "a scenario is a mapping")])
    if "gpus" in doc.data:
        return _gpu_only(doc)
    if "tests" in doc.data:
        return _promtool(doc)
    spec = doc.validate(ScenarioFile)
    return Scenario(
        interval_s=spec.interval,
        evaluation_interval_s=spec.evaluation_interval,
        duration_s=spec.duration,
        start=DEFAULT_START if spec.start is None else spec.start,
        series=[s.to_series() for s in spec.series],
        gpu_scenario=None if spec.gpu_scenario is None else _resolve_gpu(doc, spec.gpu_scenario, base),
        gpu_sample_interval_s=spec.gpu_sample_interval or 5.0,
        silences=spec.silences,
    )


def _gpu_only(doc: YamlDocument) -> Scenario:
    """A GPU simulation scenario on its own: checked here (problems name this file), replayed from
    a copy."""
    scenario_from(doc, doc.source)
    tmp = Path(tempfile.mkdtemp(prefix="custos-replay-")) / "gpu.yaml"
    tmp.write_text(yaml.safe_dump(doc.data))
    return Scenario(gpu_scenario=tmp, interval_s=15.0)


def _promtool(doc: YamlDocument) -> Scenario:
    spec = doc.validate(PromtoolFile)
    test = doc.validate(PromtoolTest, at=("tests", 0)) if spec.tests else PromtoolTest()
    return Scenario(
        interval_s=spec.evaluation_interval if test.interval is None else test.interval,
        series=[s.to_series() for s in test.input_series],
    )


def _resolve_gpu(doc: YamlDocument, path: str, base: Path) -> Path:
    for candidate in (base / path, Path(path), GPU_SCENARIO_DIR / path, GPU_SCENARIO_DIR / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    message = f"{path!r} not found (relative to {base} or in {GPU_SCENARIO_DIR})"
    raise doc.error([doc.problem(("gpu_scenario",), message)])


@dataclass
class Event:
    at: float  # seconds since the scenario start
    kind: str  # pending | firing | resolved | notify | notify-failed
    alert: str
    labels: dict[str, str]
    detail: str = ""


class RecordingNotifier:
    """Stands in for the real notifier in dry runs: same receivers and integrations, nothing sent."""

    def __init__(
        self, config: AlertingConfig, events: list[Event], start: float, deliver: Notifier | None = None
    ) -> None:
        self.real = deliver or Notifier(config)
        self.deliver = deliver is not None
        self.events = events
        self.start = start

    def integrations(self, receiver: str) -> list[Integration]:
        return self.real.integrations(receiver)

    async def send(self, integration: Integration, note: Notification) -> bool:
        ok = await self.real.send(integration, note) if self.deliver else True
        for alert in note.alerts:
            status = "resolved" if alert.resolved(note.at) else "firing"
            self.events.append(
                Event(
                    note.at - self.start,
                    "notify" if ok else "notify-failed",
                    alert.name,
                    alert.labels,
                    f"{status} -> {note.receiver} via {integration.name}",
                )
            )
        return ok

    async def close(self) -> None:
        await self.real.close()


class Replay:
    def __init__(
        self,
        config: AlertingConfig,
        groups: list[Group],
        scenario: Scenario,
        *,
        state_dir: Path | None = None,
        deliver: bool = False,
    ) -> None:
        self.config = config
        self.scenario = scenario
        self.events: list[Event] = []
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="custos-alerts-test-")
            state_dir = Path(self._tmp.name)
        self.notifier = RecordingNotifier(
            config, self.events, scenario.start, Notifier(config) if deliver else None
        )
        self.service = AlertingService(
            config, state_dir, groups=groups, notifier=self.notifier, clock=lambda: self.now
        )
        if scenario.evaluation_interval_s is None and not config.model_fields_set & {"evaluation_interval"}:
            self.service.interval_s = scenario.interval_s
        elif scenario.evaluation_interval_s is not None:
            self.service.interval_s = scenario.evaluation_interval_s
        self.now = scenario.start
        self._states: dict[str, str] = {}
        self._gpu: Any = None
        self._gpu_next = scenario.start
        if scenario.gpu_scenario is not None:
            nvml = SimulatedNvml(scenario.gpu_scenario, clock=lambda: self.now, start=scenario.start)
            self._gpu = GpuCollector(nvml, source="simulation", interval_s=scenario.gpu_sample_interval_s)
        for s in scenario.silences:
            start = scenario.start + parse_duration(s.get("start", 0))
            end = scenario.start + parse_duration(s.get("end", "1h"))
            self.service.silences.add(
                list(s["matchers"]),
                end,
                created_by=s.get("created_by", "scenario"),
                comment=s.get("comment", ""),
                starts_at=start,
                now=scenario.start,
            )

    def _feed(self, until: float) -> None:
        sc = self.scenario
        store = self.service.store
        for series in sc.series:
            for i, value in enumerate(series.values):
                t = sc.start + i * sc.interval_s
                if t > until:
                    break
                if value is MISSING:
                    continue
                store.add(series.labels, t, value)  # type: ignore[arg-type]
        while self._gpu is not None and self._gpu_next <= until:
            saved = self.now
            self.now = self._gpu_next
            self._gpu.sample()
            text = self._gpu.exposition().decode()
            store.ingest("gpu", parse_exposition(text), self._gpu_next)
            self.now = saved
            self._gpu_next += sc.gpu_sample_interval_s

    async def run(self, until: float | None = None, *, from_s: float = 0.0) -> list[Event]:
        """Replay ``[from_s, until]`` seconds of the scenario (a restart test resumes at ``from_s``)."""
        sc = self.scenario
        end = sc.start + (sc.length_s if until is None else until)
        step = self.service.interval_s
        self.now = self._gpu_next = sc.start + from_s
        while self.now <= end + 1e-9:
            await self.step_to(self.now)
            self.now += step
        await self.service.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
        return self.events

    async def step_to(self, t: float) -> None:
        self.now = t
        self._feed(t)
        await self.service.step(t)
        for st in self.service.engine.alert_states():
            key = f"{st.group}/{st.rule}/{sorted(st.labels.items())}"
            state = {"inactive": "resolved"}.get(st.state, st.state)
            if self._states.get(key) != state:
                self._states[key] = state
                detail = ""
                if state != "resolved":
                    detail = f"value={st.value:.4g}"
                    muted = self.service.dispatcher.muted_reason(
                        self.service.dispatcher.alerts.get(_fp(st.labels, self.service)) or _mk(st.labels), t
                    )
                    if muted and state == "firing":
                        detail += f" ({muted})"
                self.events.append(Event(t - self.scenario.start, state, st.rule, st.labels, detail))


def _mk(labels: dict[str, str]) -> Any:
    from .model import Alert

    return Alert(dict(labels))


def _fp(labels: dict[str, str], service: AlertingService) -> str:
    from .model import fingerprint

    return fingerprint({**service.engine.external_labels, **labels})


def format_events(events: list[Event]) -> str:
    lines = []
    for e in events:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(e.labels.items()) if k not in ("alertname",))
        when = "+" + format_duration(e.at) if e.at > 0 else "+0s"
        kind = {"notify": "NOTIFY", "notify-failed": "FAILED"}.get(e.kind, e.kind.upper())
        lines.append(f"{when:>10}  {kind:<8}  {e.alert}{{{labels}}}  {e.detail}".rstrip())
    return "\n".join(lines)
