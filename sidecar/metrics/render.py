"""Rendering /metrics, in one process or summed over several worker processes.

With ``server.workers > 1`` ``custos serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers
start (``prepare_multiprocess_dir``); every worker's metrics then live in shared mmap files and any
worker answering /metrics reads them all, so counts are totals, not per-worker values.
Other features' metrics made with prometheus-client (Counter, Gauge, ...) land in the same files;
custom collectors registered in the default registry are rendered too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("custos.metrics")

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live(?:all|sum|max|min|mostrecent)_(\d+)\.db$")


def prepare_multiprocess_dir(configured: Path | None) -> Path:
    """Called by ``custos serve`` before workers start: an empty directory for the metric files.

    Stale files from an earlier run would be summed into the new one, so a configured directory is
    emptied; the default is a fresh directory in memory-backed /dev/shm where available (reading the
    files on each scrape then touches no disk).
    """
    if configured is not None:
        path = Path(configured).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        for child in path.iterdir():
            if child.suffix in (".db", ".prom", ".lock") and child.is_file():
                child.unlink()
    else:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        path = Path(tempfile.mkdtemp(prefix="custos-metrics-", dir=base))
    os.environ[ENV] = str(path)
    return path


def remove_multiprocess_dir(path: Path, configured: Path | None) -> None:
    if configured is None:
        shutil.rmtree(path, ignore_errors=True)


def multiprocess_dir() -> str | None:
    return os.environ.get(ENV) or None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_workers(path: str) -> None:
    """Drop live-gauge files of worker processes that died (killed workers never clean up), so
    ``custos_requests_in_flight`` does not count their requests forever. Counters stay: totals must
    not go down when a worker is replaced.

    Every worker answering /metrics reaps, so two may remove the same file at once: a file already
    gone is what was wanted (prometheus-client's ``mark_process_dead`` would raise, and the scrape
    answer 500)."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    alive: dict[int, bool] = {}
    for name in names:
        m = _LIVE_GAUGE_FILE.match(name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid not in alive:
            alive[pid] = _pid_alive(pid)
        if not alive[pid]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(path, name))


class _CustomCollectors:
    """The default registry's collectors that are not value-backed metrics (those are read from
    the multiprocess files instead); process/GC collectors would only describe one worker."""

    def collect(self) -> Iterator[object]:
        from prometheus_client import REGISTRY, GCCollector, ProcessCollector
        from prometheus_client.metrics import MetricWrapperBase

        collectors = list(getattr(REGISTRY, "_collector_to_names", {}))
        for collector in collectors:
            if isinstance(collector, MetricWrapperBase | ProcessCollector | GCCollector):
                continue
            yield from collector.collect()


def build_renderer(extra: list[Callable[[], bytes]] | None = None) -> Callable[[], bytes]:
    """The /metrics body: the process's (or all workers') metrics, then each ``extra`` text block."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    extras = list(extra or ())
    path = multiprocess_dir()
    if path is None:

        def render() -> bytes:
            body = generate_latest(REGISTRY)
            return body + b"".join(f() for f in extras) if extras else body

        return render

    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path)
    custom = CollectorRegistry(auto_describe=False)
    custom.register(_CustomCollectors())  # type: ignore[arg-type]

    def render_multiprocess() -> bytes:
        reap_dead_workers(path)
        parts = [generate_latest(registry), generate_latest(custom)]
        parts.extend(f() for f in extras)
        return b"".join(parts)

    return render_multiprocess
