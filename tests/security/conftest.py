"""Fixtures for the security suite: a recording upstream behind a real sidecar.

What the upstream received is the evidence: a test sends an attack through a real ``custos serve``
process and then reads ``upstream.requests`` to prove what was (or was not) forwarded. The recording
upstream lives in ``bench/upstream.py``; the ``upstream`` fixture in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.stack import Sidecar
from bench.upstream import MODEL, Recorded, RecordingUpstream, Reply, chat_answer

__all__ = ["MODEL", "Recorded", "RecordingUpstream", "Reply", "chat_answer"]


@pytest.fixture
def guarded(upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]) -> Sidecar:
    """A sidecar with every default stage in front of the recording upstream."""
    return start_sidecar(upstream.url)
