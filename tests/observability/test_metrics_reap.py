"""Reaping a dead worker's live gauges from the multiprocess metric files, as every worker answering
/metrics does: two scrapes at once (two workers, or Prometheus and the alert engine) must not make
either answer 500 because the other removed a file first."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from sidecar.metrics.render import reap_dead_workers

MODES = ("liveall", "livesum", "livemax", "livemin", "livemostrecent")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_concurrent_reaps_of_one_dead_worker(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    errors: list[BaseException] = []
    for _ in range(150):
        for mode in MODES:
            (tmp_path / f"gauge_{mode}_{dead}.db").write_bytes(b"")
        (tmp_path / f"gauge_livesum_{alive}.db").write_bytes(b"")
        (tmp_path / f"counter_{dead}.db").write_bytes(b"")
        barrier = threading.Barrier(6)

        def reap(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                reap_dead_workers(str(tmp_path))
            except BaseException as exc:  # any failure is what the test looks for
                errors.append(exc)

        threads = [threading.Thread(target=reap) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        names = set(os.listdir(tmp_path))
        assert not {f"gauge_{mode}_{dead}.db" for mode in MODES} & names  # the dead worker's gauges
        assert {f"gauge_livesum_{alive}.db", f"counter_{dead}.db"} <= names  # a live one's, counters
    assert errors == []
