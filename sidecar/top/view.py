"""The panes of ``custos top`` as rich renderables, from a ``TopState``.

Colours follow the thresholds of the alert rules (``thresholds.Thresholds``): a value that reaches a
rule's ``critical`` number is bold red, ``warning`` yellow, below every number green. Latency figures
are of successful (2xx) requests, like the latency rule's; rates and quantiles are over the last
``RATE_WINDOW_S`` seconds, and a figure marked ``*`` is since the sidecar started (no request in the
window).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..context import proxied
from . import series as S
from .state import RATE_WINDOW_S, TopState

PANES = ("overview", "traffic", "gpu", "alerts", "audit")
PANE_KEYS = {"1": "overview", "2": "traffic", "3": "gpu", "4": "alerts", "5": "audit"}
PANE_LETTERS = {"o": "overview", "t": "traffic", "g": "gpu", "a": "alerts", "d": "audit"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
OK_STYLE = "green"
SPARKS = "▁▂▃▄▅▆▇█"
HEADER_ONE_LINE = 130  # narrower terminals get the pane keys on a line of their own


# -- formatting ------------------------------------------------------------------------------------
def style_for(level: str | None, ok: str = OK_STYLE) -> str:
    return SEVERITY_STYLE.get(level or "", "yellow") if level else ok


def fmt_num(v: float | None, digits: int = 1) -> str:
    if v is None or math.isnan(v):
        return "-"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.{digits}f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.{digits}f}k"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.{digits}f}"


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else fmt_num(v, 1)


def fmt_seconds(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    if v < 1:
        return f"{v * 1000:.0f}ms" if v >= 0.01 else f"{v * 1000:.1f}ms"
    if v < 120:
        return f"{v:.2f}s"
    if v < 7200:
        return f"{v / 60:.0f}m"
    return f"{v / 3600:.1f}h"


def fmt_bytes(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if v >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


def fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def fmt_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def parse_iso(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def sparkline(values: Sequence[float], width: int, lo: float, hi: float) -> str:
    """The last ``width`` values as block characters scaled to [lo, hi] (padded on the left)."""
    tail = list(values)[-width:]
    if hi <= lo:
        hi = lo + 1
    out = []
    for v in tail:
        frac = min(1.0, max(0.0, (v - lo) / (hi - lo)))
        out.append(SPARKS[min(len(SPARKS) - 1, int(frac * (len(SPARKS) - 1) + 0.5))])
    return " " * (width - len(out)) + "".join(out)


# What a pane's "cannot show" line names: the data it lacks.
_SOURCE = {"Engine & tokens": "engine metrics", "Alerts": "alerts", "Denials (401/403/429)": "denials"}


def _panel(body: RenderableType, title: str, problem: str | None = None) -> Panel:
    if problem is not None:
        body = Group(Text(f"{_SOURCE.get(title, 'metrics')}: {problem}", style="yellow"), body)
    return Panel(body, title=f"[b]{title}[/b]", title_align="left", box=box.ROUNDED, padding=(0, 1))


def _note(text: str, style: str = "dim") -> Text:
    return Text(text, style=style)


# -- header ----------------------------------------------------------------------------------------
def header(
    state: TopState,
    url: str,
    pane: str,
    interval: float,
    now: float | None = None,
    width: int = 160,
    keys: bool = True,
) -> Text:
    now = time.time() if now is None else now
    t = Text()
    t.append("custos top ", style="bold")
    t.append(url, style="cyan")
    t.append(f"  {datetime.fromtimestamp(now).strftime('%H:%M:%S')}  every {interval:g}s  ")
    if keys:
        if width < HEADER_ONE_LINE:
            t.append("\n")
        for key, name in PANE_KEYS.items():
            t.append(f" {key} {name} ", style="reverse bold" if name == pane else "")
        t.append("  q quit")
    t.append("\n")
    if state.unreachable is not None:
        last = f" (last data {fmt_age(now - state.updated_at)} ago)" if state.updated_at else ""
        t.append(f"sidecar unreachable: {state.unreachable}{last}", style="bold red")
    elif state.updated_at is not None:
        build = state.latest()
        version = ""
        if build is not None:
            info = build.series("custos_build_info")
            if info:
                version = f"custos {info[0][0].get('version', '?')}  "
        t.append(f"{version}updated {fmt_age(now - state.updated_at)} ago", style="dim")
        t.append(f"  colours: {state.thresholds.source}", style="dim")
    else:
        t.append(state.problems.get("metrics", "waiting for the first scrape ..."), style="yellow")
    return t


# -- traffic ---------------------------------------------------------------------------------------
def _route_order(route: str) -> tuple[int, str]:
    return (0 if proxied(route) else 1, route)


def traffic(state: TopState, detail: bool = False) -> Panel:
    new = state.latest()
    if new is None:
        return _panel(_note("no metrics yet"), "Traffic", state.problems.get("metrics"))
    old = state.before(RATE_WINDOW_S)
    th = state.thresholds
    totals = new.by("custos_requests_total", ("route", "status_class"))
    rates = S.rate(new, old, "custos_requests_total", ("route", "status_class"))
    window = S.increase(new, old, "custos_requests_total", ("route", "status_class")) if old else {}
    ok = {"status_class": "2xx"}
    lat_w = S.histogram(new, old, "custos_request_duration_seconds", ("route",), ok) if old else {}
    lat_all = S.histogram(new, None, "custos_request_duration_seconds", ("route",), ok)
    ttft_w = S.histogram(new, old, "custos_time_to_first_token_seconds", ("route",)) if old else {}
    ttft_all = S.histogram(new, None, "custos_time_to_first_token_seconds", ("route",))
    routes = sorted({r for r, _ in totals}, key=_route_order)

    cols = [
        "req/s",
        "2xx/s",
        "4xx/s",
        "5xx/s",
        "5xx %",
        "4xx %",
        "p50",
        "p95",
        "TTFT p50",
        "TTFT p95",
        "total",
    ]
    if not detail:
        cols = ["req/s", "5xx %", "4xx %", "p50", "p95", "TTFT p95", "total"]
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False)
    table.add_column("route", no_wrap=True, min_width=20, ratio=1)
    for col in cols:
        table.add_column(col, justify="right", no_wrap=True)

    def row(name: str, members: list[str], style: str = "") -> None:
        def per(source: dict[S.Key, float] | None, cls: str | None = None) -> float | None:
            if source is None:
                return None
            return sum(v for (r, c), v in source.items() if r in members and (cls is None or c == cls))

        total = per(totals) or 0.0
        in_window = per(window) or 0.0
        base, mark = (window, "") if in_window > 0 else (totals, "*")
        counted = sum(v for (r, c), v in base.items() if r in members and c != "cancelled")
        e5 = (per(base, "5xx") or 0.0) / counted if counted else None
        e4 = (per(base, "4xx") or 0.0) / counted if counted else None
        err_level = th.level("custos_requests_total", e5) if e5 is not None else None

        def q(win: dict[S.Key, Any], cum: dict[S.Key, Any]) -> tuple[list[float | None], str]:
            b = S.merge_buckets(v for (r,), v in win.items() if r in members)
            if S.count_of(b) > 0:
                return S.quantiles(b, (0.5, 0.95)), ""
            b = S.merge_buckets(v for (r,), v in cum.items() if r in members)
            return S.quantiles(b, (0.5, 0.95)), "*"

        (p50, p95), lmark = q(lat_w, lat_all)
        (t50, t95), tmark = q(ttft_w, ttft_all)
        labels = {"route": members[0], "status_class": "2xx"} if len(members) == 1 else None
        p95_level = th.level("custos_request_duration_seconds_bucket", p95, labels, quantile=0.95)
        if labels is None:
            p95_level = None  # the rule is per route group; the "all" row mixes routes
        cells: dict[str, RenderableType] = {
            "req/s": fmt_rate(per(rates)),
            "2xx/s": fmt_rate(per(rates, "2xx")),
            "4xx/s": fmt_rate(per(rates, "4xx")),
            "5xx/s": Text(fmt_rate(per(rates, "5xx")), style="red" if (per(rates, "5xx") or 0) > 0 else ""),
            "5xx %": Text(fmt_pct(e5) + mark if e5 is not None else "-", style=style_for(err_level)),
            "4xx %": (fmt_pct(e4) + mark) if e4 is not None else "-",
            "p50": fmt_seconds(p50) + (lmark if p50 is not None else ""),
            "p95": Text(
                fmt_seconds(p95) + (lmark if p95 is not None else ""), style=style_for(p95_level, "")
            ),
            "TTFT p50": fmt_seconds(t50) + (tmark if t50 is not None else ""),
            "TTFT p95": fmt_seconds(t95) + (tmark if t95 is not None else ""),
            "total": fmt_num(total, 0),
        }
        table.add_row(Text(name, style=style), *(cells[c] for c in cols))

    for r in routes:
        row(r, [r])
    if len(routes) > 1:
        row("all", routes, "bold")
    if not routes:
        table.add_row(_note("no requests yet"), *([""] * len(cols)))
    span = f"{new.t - old.t:.0f}s" if old else "-"
    legend = (
        f"rates over the last {span}; latency of 2xx answers; * = since the sidecar started; "
        f"5xx % {th.limits('custos_requests_total') or 'no rule'}; "
        f"p95 {th.limits('custos_request_duration_seconds_bucket', quantile=0.95) or 'no rule'}"
    )
    parts: list[RenderableType] = [table, _note(legend)]
    if detail:
        parts.append(_errors_by_kind(new, old))
    return _panel(Group(*parts), "Traffic", state.problems.get("metrics"))


def _errors_by_kind(new: S.Scrape, old: S.Scrape | None) -> RenderableType:
    totals = new.by("custos_errors_total", ("kind",))
    if not totals:
        return _note("no errors")
    inc = S.increase(new, old, "custos_errors_total", ("kind",)) if old else {}
    text = Text("errors by kind (total, last window): ", style="dim")
    for (kind,), v in sorted(totals.items(), key=lambda kv: -kv[1]):
        text.append(f"{kind} {fmt_num(v, 0)} (+{fmt_num(inc.get((kind,), 0.0), 0)})  ")
    return text


# -- engine and tokens -----------------------------------------------------------------------------
def engine(state: TopState, detail: bool = False) -> Panel:
    new = state.latest()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(no_wrap=True)
    if new is not None:
        old = state.before(RATE_WINDOW_S)
        inflight = new.value("custos_requests_in_flight", {"route": proxied})
        table.add_row("in flight (sidecar)", fmt_num(inflight or 0.0, 0))
        rin = S.rate(new, old, "custos_input_tokens_total")
        rout = S.rate(new, old, "custos_output_tokens_total")
        tin = new.value("custos_input_tokens_total")
        tout = new.value("custos_output_tokens_total")
        table.add_row(
            "tokens/s in / out",
            f"{fmt_rate(sum(rin.values()) if rin is not None else None)} / "
            f"{fmt_rate(sum(rout.values()) if rout is not None else None)}"
            f"   (total {fmt_num(tin or 0.0, 0)} / {fmt_num(tout or 0.0, 0)})",
        )
        if detail:
            per_model = new.by("custos_output_tokens_total", ("model",))
            for (model,), v in sorted(per_model.items()):
                tin_m = new.value("custos_input_tokens_total", {"model": model}) or 0.0
                table.add_row(f"  {model}", f"total in {fmt_num(tin_m, 0)} / out {fmt_num(v, 0)}")
    up = state.latest_upstream()
    if up is not None:
        uold = state.before(RATE_WINDOW_S, upstream=True)
        running = up.value("vllm:num_requests_running")
        waiting = up.value("vllm:num_requests_waiting")
        kv = up.value("vllm:kv_cache_usage_perc")
        table.add_row(
            "engine running / queued", Text(f"{fmt_num(running, 0)} / {fmt_num(waiting, 0)}", style="bold")
        )
        if kv is not None:
            table.add_row("engine KV cache", fmt_pct(kv))
        gen = S.rate(up, uold, "vllm:generation_tokens_total")
        pre = S.rate(up, uold, "vllm:prompt_tokens_total")
        if gen is not None and pre is not None:
            table.add_row(
                "engine tokens/s prefill / gen",
                f"{fmt_rate(sum(pre.values()))} / {fmt_rate(sum(gen.values()))}",
            )
        win = S.histogram(up, uold, "vllm:time_to_first_token_seconds") if uold else {}
        b = S.merge_buckets(win.values())
        mark = ""
        if S.count_of(b) == 0:
            b, mark = S.merge_buckets(S.histogram(up, None, "vllm:time_to_first_token_seconds").values()), "*"
        p50, p95 = S.quantiles(b, (0.5, 0.95))
        if p50 is not None:
            table.add_row("engine TTFT p50 / p95", f"{fmt_seconds(p50)} / {fmt_seconds(p95)}{mark}")
    elif "upstream" not in state.problems:
        table.add_row("engine", _note("no engine metrics yet"))
    return _panel(table, "Engine & tokens", state.problems.get("upstream"))


# -- GPUs ------------------------------------------------------------------------------------------
def gpus(state: TopState, detail: bool = False, width: int = 120) -> Panel:
    new = state.latest()
    problem = state.problems.get("metrics")
    if new is None:
        return _panel(_note("no metrics yet"), "GPUs", problem)
    up = new.series("custos_gpu_collector_up")
    if up and all(v == 0 for _, v in up):
        source = up[0][0].get("source", "nvml")
        why = f"no GPU telemetry: the collector is down (source {source}; see the sidecar log)"
        return _panel(_note(why, "yellow"), "GPUs")
    if not state.gpus:
        return _panel(_note("no GPU metrics (gpu.enabled is off, or no sample yet)"), "GPUs", problem)
    th = state.thresholds
    order = sorted(state.gpus, key=lambda i: (len(i), i))
    body = _gpu_detail(state, order, width) if detail else _gpu_table(state, order, width)
    legend = (
        f"temp {th.limits('custos_gpu_temperature_celsius') or 'no rule'}; "
        f"util {th.limits('custos_gpu_utilization_ratio') or 'no rule'}; "
        f"memory {th.limits('custos_gpu_memory_used_bytes', 'custos_gpu_memory_total_bytes') or 'no rule'}; "
        "history: one mark per GPU sample, newest right"
    )
    return _panel(Group(body, _note(legend)), "GPUs", problem)


def _gpu_cells(state: TopState, idx: str) -> dict[str, Any]:
    """Per GPU: the formatted figures and their threshold levels."""
    th = state.thresholds
    g = state.gpus[idx]
    v = g.values
    util = v.get("util")
    used, total = v.get("mem_used"), v.get("mem_total")
    ratio = used / total if used is not None and total else None
    temp = v.get("temp")
    power, limit = v.get("power"), v.get("power_limit")
    throttle = Text()
    for reason in g.throttle:
        level = th.level("custos_gpu_clock_event_reason", 1.0, {"reason": reason})
        throttle.append(reason + " ", style=style_for(level, "cyan"))
    if not g.throttle:
        throttle.append("none", style="dim")
    sm = v.get("sm_clock")
    return {
        "gpu": g,
        "util": (fmt_pct(util) if util is not None else "-", th.level("custos_gpu_utilization_ratio", util)),
        "mem": (
            f"{fmt_bytes(used)} / {fmt_bytes(total)}"
            + (f" ({ratio * 100:.0f}%)" if ratio is not None else ""),
            th.level(("custos_gpu_memory_used_bytes", "custos_gpu_memory_total_bytes"), ratio),
        ),
        "temp": (
            f"{temp:.0f}°C" if temp is not None else "-",
            th.level("custos_gpu_temperature_celsius", temp),
        ),
        "mem_short": (
            f"{used / 2**30:.0f}/{total / 2**30:.0f} GiB {ratio * 100:.0f}%"
            if used is not None and total and ratio is not None
            else "-"
        ),
        "power": (f"{fmt_num(power, 0)} / {fmt_num(limit, 0)} W", None),
        "power_limit": limit,
        "clock": f"{sm / 1e6:.0f} MHz" if sm else "-",
        "throttle": throttle,
    }


def _gpu_table(state: TopState, order: list[str], width: int) -> Table:
    wide = width >= 140
    spark = max(8, min(30, (width - 110) // 2))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("GPU", no_wrap=True)
    if wide:
        table.add_column("model", no_wrap=True, overflow="ellipsis", max_width=22)
    table.add_column("util", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True, width=spark)
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("temp", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True, width=spark)
    table.add_column("power", justify="right", no_wrap=True)
    table.add_column("throttling", overflow="fold")
    for idx in order:
        c = _gpu_cells(state, idx)
        g = c["gpu"]
        name = [g.name] if wide else []
        if g.lost:
            lost = Text("LOST", style="bold red")
            table.add_row(idx, *name, lost, *([""] * 5), Text("fallen off the bus", style="bold red"))
            continue
        table.add_row(
            idx,
            *name,
            Text(c["util"][0], style=style_for(c["util"][1])),
            Text(sparkline(g.history["util"], spark, 0.0, 1.0), style=style_for(c["util"][1])),
            Text(c["mem_short"], style=style_for(c["mem"][1], "")),
            Text(c["temp"][0], style=style_for(c["temp"][1])),
            Text(sparkline(g.history["temp"], spark, 20.0, 100.0), style=style_for(c["temp"][1])),
            c["power"][0],
            c["throttle"],
        )
    return table


def _gpu_detail(state: TopState, order: list[str], width: int) -> Group:
    spark = max(10, min(120, width - 40))
    parts: list[RenderableType] = []
    for idx in order:
        c = _gpu_cells(state, idx)
        g = c["gpu"]
        title = Text(f"GPU {idx}  {g.name}", style="bold")
        if g.lost:
            parts.append(title.append("  LOST (fallen off the bus)", style="bold red"))
            continue
        title.append("   throttling: ", style="dim").append_text(c["throttle"])
        title.append(f"   SM clock {c['clock']}", style="dim")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(justify="right", no_wrap=True, min_width=22)
        grid.add_column(no_wrap=True)
        limit = c["power_limit"] or max(g.history["power"] or [1.0])
        for label, key, hist, lo, hi in (
            ("util", "util", "util", 0.0, 1.0),
            ("memory", "mem", "mem", 0.0, 1.0),
            ("temp", "temp", "temp", 20.0, 100.0),
            ("power", "power", "power", 0.0, limit),
        ):
            text, level = c[key]
            style = style_for(level, "")
            grid.add_row(
                label, Text(text, style=style), Text(sparkline(g.history[hist], spark, lo, hi), style=style)
            )
        parts.extend([title, grid])
    return Group(*parts)


# -- alerts ----------------------------------------------------------------------------------------
_STATE_ORDER = {"firing": 0, "pending": 1, "suppressed": 2, "resolved": 3}
_HIDDEN_LABELS = {"alertname", "severity", "team", "name", "uuid", "mig", "job"}


def alerts(state: TopState, detail: bool = False, now: float | None = None) -> Panel:
    now = time.time() if now is None else now
    problem = state.problems.get("alerts")
    if state.alerts is None:
        return _panel(_note("-" if problem else "not read yet"), "Alerts", problem)
    active = [a for a in state.alerts if a.get("state") in ("firing", "pending", "suppressed")]
    resolved = len(state.alerts) - len(active)
    if not active:
        body: RenderableType = Text("no alerts pending or firing", style=OK_STYLE)
        if resolved:
            body = Group(body, _note(f"{resolved} resolved recently"))
        return _panel(body, "Alerts", problem)
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False)
    table.add_column("state", no_wrap=True)
    table.add_column("alert", no_wrap=True)
    table.add_column("labels", no_wrap=False, max_width=30)
    table.add_column("severity", no_wrap=True)
    table.add_column("since", justify="right", no_wrap=True)
    table.add_column("receivers", no_wrap=False)
    if detail:
        table.add_column("summary", no_wrap=False, ratio=2)
    active.sort(key=lambda a: (_STATE_ORDER.get(str(a.get("state")), 9), str(a.get("activeAt"))))
    for a in active:
        labels = a.get("labels") or {}
        sev = str(labels.get("severity", ""))
        st = str(a.get("state"))
        if st == "firing":
            style = style_for(sev) if sev in ("critical", "warning") else "bold"
        elif st == "pending":
            style = "yellow"
        else:
            style = "dim"
        since_t = parse_iso(a.get("firedAt") if st == "firing" else a.get("activeAt"))
        where = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in _HIDDEN_LABELS)
        receivers = ", ".join(a.get("receivers") or []) or "-"
        if st == "suppressed" and a.get("suppressedBy"):
            receivers = f"(suppressed: {a['suppressedBy']})"
        row: list[RenderableType] = [
            Text(st.upper() if st == "firing" else st, style=style),
            Text(str(labels.get("alertname", "?")), style=style),
            where,
            Text(sev, style=style_for(sev) if sev else ""),
            fmt_age(now - since_t) if since_t else "-",
            receivers,
        ]
        if detail:
            row.append(str((a.get("annotations") or {}).get("summary", "")))
        table.add_row(*row)
    parts: list[RenderableType] = [table]
    if resolved:
        parts.append(_note(f"{resolved} resolved recently"))
    return _panel(Group(*parts), "Alerts", problem)


# -- audit -----------------------------------------------------------------------------------------
def audit(state: TopState, detail: bool = False) -> Panel:
    new = state.latest()
    problem = state.problems.get("metrics")
    if new is None:
        return _panel(_note("no metrics yet"), "Audit", problem)
    if not new.has("custos_audit_records_total"):
        return _panel(_note("the audit stage is off on this sidecar (no custos_audit_* metrics)"), "Audit")
    th = state.thresholds
    old = state.before(RATE_WINDOW_S)

    def val(name: str) -> float:
        return new.value(name) or 0.0

    grid = Table.grid(padding=(0, 2))
    for _ in range(4):
        grid.add_column(no_wrap=True)
    recs = S.rate(new, old, "custos_audit_records_total")
    backlog, lag = val("custos_audit_backlog_records"), val("custos_audit_ship_lag_seconds")
    dead = val("custos_audit_dead_letters_total")
    werr, dropped = val("custos_audit_write_errors_total"), val("custos_audit_dropped_total")
    lost = val("custos_audit_records_lost_total")

    def cell(value: str, level: str | None) -> Text:
        return Text(value, style=style_for(level))

    grid.add_row(
        _note("records"),
        f"{fmt_num(val('custos_audit_records_total'), 0)} "
        f"({fmt_rate(sum(recs.values()) if recs else None)}/s)",
        _note("spool"),
        fmt_bytes(val("custos_audit_spool_bytes")),
    )
    grid.add_row(
        _note("backlog"),
        cell(
            f"{fmt_num(backlog, 0)} records, {fmt_bytes(val('custos_audit_backlog_bytes'))}",
            th.level("custos_audit_backlog_records", backlog),
        ),
        _note("ship lag"),
        cell(fmt_seconds(lag) if lag else "0", th.level("custos_audit_ship_lag_seconds", lag)),
    )
    grid.add_row(
        _note("dead letters"),
        cell(fmt_num(dead, 0), th.level("custos_audit_dead_letters_total", dead)),
        _note("write err/dropped/lost"),
        cell(
            f"{fmt_num(werr, 0)} / {fmt_num(dropped, 0)} / {fmt_num(lost, 0)}",
            th.level("custos_audit_write_errors_total", werr)
            or th.level("custos_audit_dropped_total", dropped)
            or ("critical" if lost else None),
        ),
    )
    shipped = new.by("custos_audit_shipped_total", ("result",))
    grid.add_row(
        _note("shipped"),
        ", ".join(f"{r} {fmt_num(v, 0)}" for (r,), v in sorted(shipped.items())) or "0 (no Elasticsearch?)",
        _note("checkpoints"),
        fmt_num(val("custos_audit_checkpoints_total"), 0),
    )
    grid.add_row(_note("last verify"), _last_verification(state), "", "")
    if detail:
        fails = new.by("custos_audit_ship_failures_total", ("reason",))
        refused = new.by("custos_audit_refused_total", ("reason",))
        grid.add_row(
            _note("ship failures"),
            ", ".join(f"{r} {fmt_num(v, 0)}" for (r,), v in sorted(fails.items())) or "0",
            _note("refused (503)"),
            ", ".join(f"{r} {fmt_num(v, 0)}" for (r,), v in sorted(refused.items())) or "0",
        )
    return _panel(grid, "Audit", problem)


def _last_verification(state: TopState) -> Text:
    """The outcome of the last `custos audit verify` on the sidecar's host (read with audit:read)."""
    if "denials" in state.problems:
        return Text("unknown", style=style_for(None))  # the denials pane says why (audit:read)
    found = state.last_verification
    if not found:
        return Text("never", style=style_for("warning"))
    age = fmt_seconds(max(0.0, time.time() - float(found.get("at") or 0)))
    if found.get("ok"):
        return Text(f"OK {age} ago", style=OK_STYLE)
    return Text(f"FAILED ({found.get('problems')}) {age} ago", style=style_for("critical"))


# -- denials ---------------------------------------------------------------------------------------
def denials(state: TopState, detail: bool = False) -> Panel:
    problem = state.problems.get("denials")
    parts: list[RenderableType] = []
    new = state.latest()
    if new is not None:
        parts.append(_denial_counts(state, new))
    rows = state.denials
    if rows is None:
        parts.append(_note("-" if problem else "not read yet"))
        return _panel(Group(*parts), "Denials (401/403/429)", problem)
    if not rows:
        parts.append(Text("no denials in the recent audit records", style=OK_STYLE))
        return _panel(Group(*parts), "Denials (401/403/429)", problem)
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False)
    table.add_column("time", no_wrap=True)
    table.add_column("status", justify="right", no_wrap=True)
    table.add_column("subject", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("path", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("reason", overflow="ellipsis", no_wrap=not detail, ratio=1)
    for r in rows[: 30 if detail else 8]:
        ts = parse_iso(r.get("timestamp"))
        status = r.get("status")
        style = "red" if status == 401 else "yellow" if status == 403 else "magenta"
        reason = r.get("reason") or r.get("error_type") or ""
        if r.get("error_type") and r.get("error_type") not in str(reason):
            reason = f"{r['error_type']}: {reason}"
        table.add_row(
            datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-",
            Text(str(status), style=style),
            str(r.get("user_id") or "(no identity)"),
            str(r.get("path") or "-"),
            str(reason),
        )
    parts.append(table)
    return _panel(Group(*parts), "Denials (401/403/429)", problem)


def _denial_counts(state: TopState, new: S.Scrape) -> Text:
    """Authentication failures, RBAC denials and rate limiting over the last 5 minutes (the span of
    the spike rules), or since the first scrape when top has run for less."""
    th = state.thresholds
    old = state.oldest()
    span = f"last {fmt_age(new.t - old.t)}" if old else "since start"
    auth = S.increase(new, old, "custos_auth_failures_total", ("reason",))
    rbac = S.increase(new, old, "custos_rbac_denials_total", ("permission",))
    limited = S.increase(
        new, old, "custos_errors_total", ("kind",), {"kind": lambda k: k.startswith("ratelimit_")}
    )
    t = Text(f"{span}: ", style="dim")
    n_auth = sum(auth.values())
    t.append(
        f"auth failures {fmt_num(n_auth, 0)}", style=style_for(th.level("custos_auth_failures_total", n_auth))
    )
    if n_auth:
        t.append(
            " (" + ", ".join(f"{k[0]} {fmt_num(v, 0)}" for k, v in sorted(auth.items()) if v) + ")",
            style="dim",
        )
    worst = max(rbac.values(), default=0.0)
    t.append(
        f"  RBAC denials {fmt_num(sum(rbac.values()), 0)}",
        style=style_for(th.level("custos_rbac_denials_total", worst)),
    )
    t.append(f"  rate limited {fmt_num(sum(limited.values()), 0)}")
    return t


# -- frames ----------------------------------------------------------------------------------------
def layout(state: TopState, url: str, pane: str, interval: float, width: int = 160) -> Layout:
    root = Layout(name="root")
    head = Layout(header(state, url, pane, interval, width=width), name="header", size=2)
    if width < HEADER_ONE_LINE:
        head.size = 3
    root.split_column(head, Layout(name="body"))
    body = root["body"]
    if pane == "traffic":
        body.split_column(Layout(traffic(state, True), ratio=3), Layout(engine(state, True), ratio=2))
    elif pane == "gpu":
        body.update(gpus(state, True, width))
    elif pane == "alerts":
        body.update(alerts(state, True))
    elif pane == "audit":
        body.split_column(Layout(audit(state, True), size=10), Layout(denials(state, True)))
    else:
        new = state.latest()
        n_routes = (
            len({r for r, _ in new.by("custos_requests_total", ("route", "status_class"))}) if new else 0
        )
        top_size = max(8, min(16, n_routes + (8 if n_routes > 1 else 7)))
        gpu_size = max(6, min(14, len(state.gpus) + 6))
        if width < 140:  # narrow terminals: one pane per row, the essentials first
            body.split_column(
                Layout(traffic(state), size=top_size),
                Layout(gpus(state, False, width), size=gpu_size),
                Layout(alerts(state), ratio=1),
                Layout(engine(state), size=8),
                Layout(denials(state), ratio=1),
            )
            return root
        body.split_column(
            Layout(name="top", size=top_size),
            Layout(gpus(state, False, width), name="gpus", size=gpu_size),
            Layout(name="bottom"),
        )
        body["top"].split_row(Layout(traffic(state), ratio=3), Layout(engine(state), ratio=2))
        body["bottom"].split_row(
            Layout(alerts(state), ratio=1),
            Layout(name="right", ratio=1),
        )
        body["bottom"]["right"].split_column(Layout(audit(state), size=8), Layout(denials(state)))
    return root


def plain_frame(state: TopState, url: str, interval: float, width: int = 140) -> Group:
    """Everything at once, stacked: the ``--once`` output."""
    return Group(
        header(state, url, "overview", interval, width=width, keys=False),
        traffic(state, True),
        engine(state, True),
        gpus(state, True, width),
        alerts(state, True),
        audit(state, True),
        denials(state, True),
    )


def pane_for_key(key: str, current: str) -> str | None:
    """The pane a key selects (``None``: not a pane key). Tab cycles."""
    if key == "\t":
        return PANES[(PANES.index(current) + 1) % len(PANES)]
    return PANE_KEYS.get(key) or PANE_LETTERS.get(key.lower())
