"""A stream worker's warm-up against services that may not be up yet: Redis and Milvus started
after the worker (a fresh cluster, a rollout of everything at once) or failing over.

A worker that exits instead would crash-loop (CrashLoopBackOff delays grow to minutes), so each
warm-up step is retried with capped exponential back-off, one log line per attempt, until the
warm-up timeout (TRIBUTARY_WARM_UP_TIMEOUT_S; 0: forever). What no retry can fix (a wrong model,
an incompatible collection, a refused password, a non-transient error reply) is raised at once.
The wait between attempts ends when the worker is stopped, so SIGTERM during warm-up exits promptly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tributary_workers.errors import PermanentError, one_line
from tributary_workers.streaming.decisions import backoff_delay, transient_redis_reply, warm_up_expired

log = logging.getLogger("tributary.stream")
T = TypeVar("T")
# A bug, not an outage: retrying would only hide it for the whole warm-up timeout.
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, ImportError, AssertionError)


class StoppedDuringWarmUp(Exception):
    """SIGTERM/SIGINT came before the worker was ready: nothing was read, nothing is in flight."""


class WarmUpTimeout(RuntimeError):
    """Redis or Milvus stayed unreachable for the whole warm-up timeout."""


def redacted(url: str) -> str:
    """A URL without its credentials (user:password@), fit for a log line."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


class Retrier:
    """Runs warm-up steps until they succeed; the timeout counts from the Retrier's creation."""

    def __init__(self, timeout_s: float, initial_s: float, max_s: float, stop: threading.Event):
        self.timeout_s = timeout_s
        self.initial_s = initial_s
        self.max_s = max_s
        self.stop = stop
        self.started = time.monotonic()

    def __call__(self, what: str, step: Callable[[], T]) -> T:
        import redis

        attempt = 0
        while True:
            if self.stop.is_set():
                raise StoppedDuringWarmUp(f"stopped while waiting for {what}")
            attempt += 1
            try:
                return step()
            except (PermanentError, redis.AuthenticationError, *PROGRAMMING_ERRORS):
                raise
            except redis.ResponseError as exc:
                if not transient_redis_reply(str(exc), type(exc).__name__):
                    raise
                error: Exception = exc
            except Exception as exc:  # connection refused or reset, timeouts, Milvus unavailable
                error = exc
            elapsed = time.monotonic() - self.started
            if warm_up_expired(elapsed, self.timeout_s):
                raise WarmUpTimeout(f"{what} still unreachable after {elapsed:.0f}s (warm-up timeout "
                                    f"{self.timeout_s:g}s): {one_line(error)}") from error
            delay = backoff_delay(attempt, self.initial_s, self.max_s)
            if self.timeout_s > 0:
                delay = max(0.0, min(delay, self.timeout_s - elapsed))
            log.warning("warm-up attempt %d: %s is not reachable: %s; retrying in %.1fs", attempt, what,
                        one_line(error), delay)
            self.stop.wait(delay)
