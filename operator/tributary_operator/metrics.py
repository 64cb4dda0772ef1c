"""Operator metrics: reconciles, errors and durations by kind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram, start_http_server

RECONCILES = Counter("tributary_operator_reconciles_total", "Reconciles, by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram("tributary_operator_reconcile_seconds", "Reconcile duration, by kind", ["kind"])


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILES.labels(kind, "error").inc()
        raise
    else:
        RECONCILES.labels(kind, "success").inc()
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
