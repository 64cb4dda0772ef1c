"""Wait on a condition with a timeout: the only way tests wait (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
# Called on every poll and never swallowed: the cluster fixture registers one that fails at once
# when a control-plane process (the controller-manager...) has died, instead of waiting it out.
health_checks: list[Callable[[], None]] = []


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.2, message: str = "") -> T:
    """Poll predicate until it returns something truthy; return that value or fail after timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        for check in health_checks:
            check()
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may not be observable yet
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s: {message or predicate}{detail}")
        time.sleep(interval)
