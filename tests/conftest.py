"""Fixtures shared by every test area: the real CPU engine with the tiny model, and real sidecars.

Every sidecar a test starts is a real `custos serve` process on a free local port (``bench/stack.py``
starts them, for the benchmarks too). Tests send ``sidecar.headers`` with every proxied request, so
stages that need credentials (JWT) get them from this one place.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import stack
from bench.procs import CACHE
from bench.stack import Engine, Sidecar, launch_sidecar, start_engine
from bench.upstream import RecordingUpstream

# Tests stop what they start with SIGINT, as a terminal's Ctrl-C would. A suite started in the
# background of a non-interactive shell (``make test &``) inherits SIGINT ignored, Python then keeps
# it ignored, and so would every process the tests start: reinstate Python's handler, so that they
# start with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny random-weight model, built once per machine into the cache (seconds on a CPU)."""
    return stack.tiny_model_dir()


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Iterator[Engine]:
    """The project's own CPU inference server with the tiny model, shared by the whole session."""
    eng = start_engine(tiny_model_dir)
    yield eng
    eng.process.stop()


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    """Factory: ``start_sidecar(upstream_url, config={...}, env={...})`` starts a real sidecar process."""
    started: list[Sidecar] = []

    def _start(
        upstream_url: str,
        config: dict[str, Any] | None = None,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        name: str = "sidecar",
        wait: bool = True,
    ) -> Sidecar:
        sc = launch_sidecar(tmp_path, upstream_url, config, env=env, port=port, name=name, wait=wait)
        started.append(sc)
        return sc

    yield _start
    for sc in started:
        sc.stop()


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    """A recording upstream (``bench/upstream.py``): a real HTTP server that records what a sidecar
    forwarded and answers as the test says, for tests that need no model."""
    up = RecordingUpstream()
    yield up
    up.close()


@pytest.fixture
def sidecar(engine: Engine, start_sidecar: Callable[..., Sidecar]) -> Sidecar:
    """A sidecar with every default stage, in front of the real CPU engine."""
    return start_sidecar(engine.url)


def pytest_report_header(config: pytest.Config) -> str:
    return f"custos cache: {CACHE}; test logs: {os.environ.get('CUSTOS_TEST_LOGS', '/tmp/custos-test-logs')}"
