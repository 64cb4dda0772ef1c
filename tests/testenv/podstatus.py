"""Pure pieces of kubelet's Pod status logic, as the process kubelet applies them.

Table-tested in tests/unit/test_podstatus.py. Times are RFC 3339 strings (metav1.Time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MAX_MESSAGE_BYTES = 4096  # kubelet's cap on one container's termination message
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048  # terminationMessagePolicy: FallbackToLogsOnError
INITIAL_BACKOFF, MAX_BACKOFF = 10.0, 300.0  # kubelet's CrashLoopBackOff: 10 s doubling up to 5 min
BACKOFF_RESET = 600.0  # a container that ran this long restarts without back-off again


def rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ContainerView:
    """What the phase depends on, for one container."""

    running: bool
    exit_code: int | None  # of the last run, None while running or never run
    will_restart: bool  # it ended and restartPolicy (and no deletion) says it runs again


def restart_wanted(policy: str, exit_code: int) -> bool:
    """restartPolicy Always restarts any exit, OnFailure a non-zero one, Never none."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def backoff_delay(consecutive_restarts: int, initial: float = INITIAL_BACKOFF, cap: float = MAX_BACKOFF) -> float:
    """kubelet restarts a container at once the first time, then after 10 s, 20 s, 40 s... 5 min."""
    return 0.0 if consecutive_restarts == 0 else min(initial * 2 ** (consecutive_restarts - 1), cap)


def pod_phase(containers: Sequence[ContainerView]) -> str:
    """As kubelet's getPhase: Pending while a container has not started yet; Running while one runs
    or will restart; then Succeeded when every container exited 0, else Failed."""
    if any(not c.running and c.exit_code is None for c in containers):
        return "Pending"
    if any(c.running or c.will_restart for c in containers):
        return "Running"
    return "Succeeded" if all(c.exit_code == 0 for c in containers) else "Failed"


def terminated_reason(exit_code: int, start_error: bool) -> str:
    if start_error:
        return "StartError"
    return "Completed" if exit_code == 0 else "Error"


def termination_message(message_file: Path, log_file: Path, policy: str, exit_code: int) -> str:
    """The file at terminationMessagePath (capped at 4 KiB); with FallbackToLogsOnError and an empty
    file, a failed container's last log lines instead."""
    try:
        message = message_file.read_bytes()[:MAX_MESSAGE_BYTES].decode(errors="replace")
    except OSError:
        message = ""
    if message or policy != "FallbackToLogsOnError" or exit_code == 0:
        return message
    try:
        lines = log_file.read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
    except OSError:
        return ""
    return b"\n".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")


def pod_conditions(phase: str, ready: bool, now: str, previous: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kubelet-owned conditions; a condition's lastTransitionTime moves only when its status does.
    (PodScheduled is the scheduler's: a strategic merge patch keeps it.)"""
    old = {c["type"]: c for c in previous}
    wanted = {
        "PodReadyToStartContainers": True,  # no sandbox to wait for
        "Initialized": True,
        "ContainersReady": ready,
        "Ready": ready,
    }
    conditions = []
    for kind, value in wanted.items():
        status = "True" if value else "False"
        before = old.get(kind)
        transition = before["lastTransitionTime"] if before and before.get("status") == status else now
        condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": transition}
        if not value and kind in ("ContainersReady", "Ready"):
            condition["reason"] = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        conditions.append(condition)
    return conditions
