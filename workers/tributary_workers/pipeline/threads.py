"""Intra-op threads from the container's CPU limit (cgroup quota), not the host's core count.

A pod limited to 2 CPUs on a 64-core node that starts 64 threads spends its quota on contention
and gets throttled; the quota, rounded up, is what it can really run at once.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 cpu.max, else v1 cfs files); None: unlimited or unknown."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100_000)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def available_cpus() -> int:
    """CPUs this process may be scheduled on (affinity, which follows cpusets), else the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def intra_op_threads(limit: float | None = None, cpus: int | None = None) -> int:
    """Threads for one model call: the quota rounded up, never more than the CPUs we may run on."""
    cpus = available_cpus() if cpus is None else cpus
    limit = cgroup_cpu_limit() if limit is None else limit
    if limit is None:
        return max(1, cpus)
    return max(1, min(cpus, math.ceil(limit - 1e-9)))
