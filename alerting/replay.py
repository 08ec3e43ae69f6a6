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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import AlertingConfig
from .dispatch import Notification
from .promql import format_duration, parse_duration
from .receivers import Integration, Notifier
from .rules import Group
from .service import AlertingService
from .tsdb import MISSING, expand_values, parse_exposition, parse_series_selector

GPU_SCENARIO_DIR = Path(__file__).resolve().parents[1] / "sidecar" / "gpu" / "scenarios"
DEFAULT_START = 1_767_258_000.0  # 2026-01-01T09:00:00Z: a fixed, reproducible virtual start


class ScenarioError(ValueError):
    pass


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
            from sidecar.gpu.sim import load_scenario

            gpu = float(load_scenario(self.gpu_scenario).duration or 0)
        return max(longest, gpu, self.interval_s)


def _resolve_gpu(path: str, base: Path) -> Path:
    for candidate in (base / path, Path(path), GPU_SCENARIO_DIR / path, GPU_SCENARIO_DIR / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    raise ScenarioError(f"gpu_scenario {path!r} not found (relative to {base} or in {GPU_SCENARIO_DIR})")


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{p}: scenario file not found") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ScenarioError(f"{p}: a scenario is a mapping")
    return parse_scenario(doc, p.parent, str(p))


def parse_scenario(doc: dict[str, Any], base: Path = Path(), source: str = "scenario") -> Scenario:
    try:
        if "gpus" in doc:  # a GPU simulation scenario on its own
            sc = Scenario(gpu_scenario=None, interval_s=15.0)
            from sidecar.gpu.sim import parse_scenario as parse_gpu

            parse_gpu(doc, source)
            tmp = Path(tempfile.mkdtemp(prefix="custos-replay-")) / "gpu.yaml"
            tmp.write_text(yaml.safe_dump(doc))
            sc.gpu_scenario = tmp
            return sc
        if "tests" in doc:  # promtool unit-test file
            test = (doc.get("tests") or [{}])[0]
            doc = {
                "interval": test.get("interval", doc.get("evaluation_interval", "1m")),
                "series": test.get("input_series", []),
            }
        unknown = set(doc) - {
            "interval",
            "evaluation_interval",
            "duration",
            "start",
            "series",
            "gpu_scenario",
            "gpu_sample_interval",
            "silences",
            "description",
            "name",
        }
        if unknown:
            raise ScenarioError(f"{source}: unknown field(s) {sorted(unknown)}")
        sc = Scenario(interval_s=parse_duration(doc.get("interval", "15s")))
        if doc.get("evaluation_interval"):
            sc.evaluation_interval_s = parse_duration(doc["evaluation_interval"])
        if doc.get("duration") is not None:
            sc.duration_s = parse_duration(doc["duration"])
        if doc.get("start"):
            from .model import parse_iso

            sc.start = parse_iso(str(doc["start"]))
        for i, item in enumerate(doc.get("series") or []):
            if not isinstance(item, dict) or "series" not in item or "values" not in item:
                raise ScenarioError(f"{source}: series[{i}] needs 'series' and 'values'")
            sc.series.append(
                Series(parse_series_selector(item["series"]), expand_values(str(item["values"])))
            )
        if doc.get("gpu_scenario"):
            sc.gpu_scenario = _resolve_gpu(str(doc["gpu_scenario"]), base)
        if doc.get("gpu_sample_interval"):
            sc.gpu_sample_interval_s = parse_duration(doc["gpu_sample_interval"])
        sc.silences = list(doc.get("silences") or [])
        if sc.interval_s <= 0:
            raise ScenarioError(f"{source}: interval must be positive")
        return sc
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(f"{source}: {exc}") from None


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
            from sidecar.gpu.collector import GpuCollector
            from sidecar.gpu.sim import SimulatedNvml

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
