"""What ``custos top`` knows between frames: recent scrapes (for rates), GPU history (sparklines),
the alerts and denials last read, and per endpoint why it could not be read."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .client import ENDPOINTS, Client, Reply, why_not
from .series import Scrape
from .thresholds import Thresholds

RATE_WINDOW_S = 10.0  # rates and latency quantiles: over the last 10 s
KEEP_RECENT_S = 30.0  # every scrape of the last 30 s (rate windows)
KEEP_SPARSE_S = 330.0  # one scrape per SPARSE_EVERY_S over 5 min (+ slack): the rules' "in 5 minutes"
SPARSE_EVERY_S = 30.0
GPU_HISTORY = 600  # GPU samples kept per series (at gpu.interval_s = 5 s: 50 minutes)
RETRY_DENIED_S = 30.0  # an endpoint we may not read is asked again this often, not every refresh
RULES_EVERY_S = 60.0
GPU_FIELDS = ("util", "mem", "temp", "power")


@dataclass
class Gpu:
    index: str
    name: str = ""
    lost: bool = False
    values: dict[str, float] = field(default_factory=dict)
    throttle: list[str] = field(default_factory=list)
    history: dict[str, deque[float]] = field(
        default_factory=lambda: {f: deque(maxlen=GPU_HISTORY) for f in GPU_FIELDS}
    )


class TopState:
    def __init__(self, has_token: bool) -> None:
        self.has_token = has_token
        self.lock = threading.Lock()
        self.scrapes: deque[Scrape] = deque()
        self.sparse: deque[Scrape] = deque()  # few, older scrapes: counts over the last minutes
        self.upstream: deque[Scrape] = deque()
        self.gpus: dict[str, Gpu] = {}
        self._gpu_sample_ts: float | None = None
        self.alerts: list[dict[str, Any]] | None = None
        self.denials: list[dict[str, Any]] | None = None
        self.last_verification: dict[str, Any] | None = None  # the last `custos audit verify` here
        self.problems: dict[str, str] = {}  # endpoint name -> why its pane cannot show it
        self.thresholds = Thresholds.builtin()
        self.updated_at: float | None = None  # wall time of the last successful /metrics read
        self.unreachable: str | None = None
        self.polls = 0

    # -- the newest scrapes -----------------------------------------------------------------------
    def latest(self) -> Scrape | None:
        return self.scrapes[-1] if self.scrapes else None

    def before(self, seconds: float, upstream: bool = False) -> Scrape | None:
        """The oldest scrape no more than ``seconds`` older than the newest (not the newest itself)."""
        q = self.upstream if upstream else self.scrapes
        if len(q) < 2:
            return None
        newest = q[-1].t
        for s in q:
            if s is not q[-1] and newest - s.t <= seconds + 0.5:
                return s
        return q[-2]

    def latest_upstream(self) -> Scrape | None:
        return self.upstream[-1] if self.upstream else None

    # -- applying one poll ------------------------------------------------------------------------
    def apply(self, replies: dict[str, Reply], t: float, wall: float) -> None:
        with self.lock:
            self.polls += 1
            for name, reply in replies.items():
                problem = why_not(name, reply, self.has_token)
                if problem is None:
                    self.problems.pop(name, None)
                else:
                    self.problems[name] = problem
            m = replies.get("metrics")
            if m is not None:
                if m.status is None:
                    self.unreachable = m.error
                else:
                    self.unreachable = None
                if m.ok:
                    self.updated_at = wall
                    scrape = Scrape.parse(t, m.body.decode("utf-8", "replace"))
                    self._add(self.scrapes, scrape, KEEP_RECENT_S)
                    if not self.sparse or scrape.t - self.sparse[-1].t >= SPARSE_EVERY_S:
                        self._add(self.sparse, scrape, KEEP_SPARSE_S)
                    self._update_gpus()
            u = replies.get("upstream")
            if u is not None and not u.ok:
                self.upstream.clear()  # no stale engine figures next to "cannot read"
            if u is not None and u.ok:
                try:
                    self._add(
                        self.upstream, Scrape.parse(t, u.body.decode("utf-8", "replace")), KEEP_RECENT_S
                    )
                except ValueError:
                    self.problems["upstream"] = "the engine's metrics are not Prometheus text"
            a = replies.get("alerts")
            if a is not None:
                self.alerts = _list(a, "alerts") if a.ok else None
            d = replies.get("denials")
            if d is not None:
                self.denials = _list(d, "records") if d.ok else None
                self.last_verification = _object(d, "last_verification") if d.ok else None
            r = replies.get("rules")
            if r is not None and r.ok:
                try:
                    found = Thresholds.from_api(r.json())
                except ValueError:
                    found = None
                if found is not None and found.items:
                    self.thresholds = found

    @staticmethod
    def _add(q: deque[Scrape], scrape: Scrape, keep_s: float) -> None:
        q.append(scrape)
        while len(q) > 2 and scrape.t - q[0].t > keep_s:
            q.popleft()

    def oldest(self) -> Scrape | None:
        """The oldest scrape kept (up to about 5 minutes back), for counts over the last minutes."""
        first = self.sparse[0] if self.sparse else None
        if first is None or (self.scrapes and first is self.scrapes[-1]):
            return None
        return first

    def _update_gpus(self) -> None:
        s = self.scrapes[-1]
        seen: set[str] = set()
        fields = {
            "util": "custos_gpu_utilization_ratio",
            "mem_used": "custos_gpu_memory_used_bytes",
            "mem_total": "custos_gpu_memory_total_bytes",
            "temp": "custos_gpu_temperature_celsius",
            "mem_temp": "custos_gpu_memory_temperature_celsius",
            "power": "custos_gpu_power_watts",
            "power_limit": "custos_gpu_power_limit_watts",
            "sm_clock": "custos_gpu_sm_clock_hertz",
            "lost": "custos_gpu_lost",
            "xid": "custos_gpu_last_xid",
        }
        for key, metric in fields.items():
            for labels, value in s.series(metric, {"mig": ""}):
                idx = labels.get("gpu", "?")
                gpu = self.gpus.setdefault(idx, Gpu(idx))
                gpu.name = labels.get("name", gpu.name)
                if idx not in seen:
                    seen.add(idx)
                    gpu.values = {}
                    gpu.throttle = []
                gpu.values[key] = value
        for idx in list(self.gpus):
            if idx not in seen:
                del self.gpus[idx]
        for labels, value in s.series("custos_gpu_clock_event_reason", {"mig": ""}):
            gpu = self.gpus.get(labels.get("gpu", "?"))
            if gpu is not None and value == 1 and labels.get("reason") != "gpu_idle":
                gpu.throttle.append(labels.get("reason", "?"))
        for gpu in self.gpus.values():
            gpu.lost = gpu.values.get("lost") == 1
        # History grows once per GPU sample (gpu.interval_s), not once per refresh.
        stamp = s.value("custos_gpu_last_sample_timestamp_seconds")
        if stamp is None or stamp == self._gpu_sample_ts:
            return
        self._gpu_sample_ts = stamp
        for gpu in self.gpus.values():
            v = gpu.values
            total = v.get("mem_total")
            points = {
                "util": v.get("util"),
                "mem": (v["mem_used"] / total) if total and "mem_used" in v else None,
                "temp": v.get("temp"),
                "power": v.get("power"),
            }
            for f, value in points.items():
                if value is not None:
                    gpu.history[f].append(value)


def _object(reply: Reply, key: str) -> dict[str, Any] | None:
    try:
        doc = reply.json()
    except ValueError:
        return None
    found = doc.get(key) if isinstance(doc, dict) else None
    return found if isinstance(found, dict) else None


def _list(reply: Reply, key: str) -> list[dict[str, Any]] | None:
    try:
        doc = reply.json()
    except ValueError:
        return None
    items = doc.get(key) if isinstance(doc, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else None


class Poller:
    """Reads every endpoint once per call; an endpoint the token may not read (403, 404) is asked
    again only every ``RETRY_DENIED_S`` (each refused read is an audited denial on the sidecar)."""

    def __init__(self, client: Client, state: TopState) -> None:
        self.client = client
        self.state = state
        self._next: dict[str, float] = {}

    def poll(self) -> dict[str, Reply]:
        now = time.monotonic()
        replies: dict[str, Reply] = {}
        for name in ENDPOINTS:
            if now < self._next.get(name, 0.0):
                continue
            reply = self.client.get(name)
            replies[name] = reply
            if reply.status in (403, 404):
                self._next[name] = now + RETRY_DENIED_S
            elif name == "rules" and reply.ok:
                self._next[name] = now + RULES_EVERY_S
            if name == "metrics" and reply.status is None:
                break  # the sidecar is not there: do not wait for every other endpoint to time out
        self.state.apply(replies, time.monotonic(), time.time())
        return replies
