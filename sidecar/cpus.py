"""How many CPUs this process may use: ``server.workers: auto`` starts one worker per usable core.

``os.cpu_count()`` counts the host's cores; a container (Kubernetes ``resources.limits.cpu``, Docker
``--cpus``) or a CPU affinity mask usually allows fewer, and more workers than usable cores only add
context switches and memory. So: the affinity mask, bounded by the cgroup CPU quota when one is set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def usable_cpus() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_quota() -> float | None:
    """The CPU quota of this cgroup in cores (``1.5`` for ``--cpus 1.5``), or None when unlimited."""
    try:
        quota, period = _CGROUP_V2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = (int(p.read_text()) for p in _CGROUP_V1)
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
