"""Operator metrics: reconciles, errors and durations by kind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("tributary_operator_reconciles_total", "Reconciles, by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram("tributary_operator_reconcile_seconds", "Reconcile duration, by kind", ["kind"])

# StreamPipeline autoscaling, per pipeline: what it was scaled on and what it decided.
_PIPELINE = ["namespace", "pipeline"]
STREAM_BACKLOG = Gauge("tributary_operator_stream_backlog", "Lag + pending of the pipeline's group (NaN: unknown)",
                       _PIPELINE)
STREAM_DESIRED = Gauge("tributary_operator_stream_desired_replicas", "Replicas the scaling decision asked for",
                       _PIPELINE)
STREAM_REPLICAS = Gauge("tributary_operator_stream_replicas", "Worker replicas the Deployment reports", _PIPELINE)
SCALE_DECISIONS = Counter("tributary_operator_scale_decisions_total",
                          "Scaling decisions, by reason (ScaledUp, ScaledDown, Steady, ...)", [*_PIPELINE, "reason"])


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


def pipeline_observed(namespace: str, name: str, backlog: int | None, desired: int, replicas: int,
                      reason: str) -> None:
    STREAM_BACKLOG.labels(namespace, name).set(float("nan") if backlog is None else backlog)
    STREAM_DESIRED.labels(namespace, name).set(desired)
    STREAM_REPLICAS.labels(namespace, name).set(replicas)
    SCALE_DECISIONS.labels(namespace, name, reason).inc()


def pipeline_forgotten(namespace: str, name: str) -> None:
    """A deleted pipeline's series go (a stale gauge would read as a live backlog)."""
    for gauge in (STREAM_BACKLOG, STREAM_DESIRED, STREAM_REPLICAS):
        try:
            gauge.remove(namespace, name)
        except KeyError:
            pass


# EmbeddingIndex lifecycle: the phase it is in, how far the re-embedding got, how long swaps take.
_INDEX = ["namespace", "index"]
INDEX_PHASES = ("Pending", "Backfilling", "CatchingUp", "Validating", "Swapping", "Ready", "RollingBack", "Failed")
INDEX_PHASE = Gauge("tributary_operator_index_phase", "1 for the EmbeddingIndex's current phase, else 0",
                    [*_INDEX, "phase"])
REEMBED_DONE = Gauge("tributary_operator_reembed_documents_done", "Documents the candidate holds", _INDEX)
REEMBED_TOTAL = Gauge("tributary_operator_reembed_documents_total", "Live documents of the active collection", _INDEX)
SWAP_SECONDS = Histogram("tributary_operator_swap_seconds", "Duration of the alias swap call (alter_alias)",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def index_observed(namespace: str, name: str, phase: str | None, progress: dict | None,
                   swap_ms: int | None = None) -> None:
    for each in INDEX_PHASES:
        INDEX_PHASE.labels(namespace, name, each).set(1 if each == phase else 0)
    progress = progress or {}
    for gauge, key in ((REEMBED_DONE, "documentsDone"), (REEMBED_TOTAL, "documentsTotal")):
        value = progress.get(key)
        gauge.labels(namespace, name).set(float("nan") if value is None else value)
    if swap_ms is not None:
        SWAP_SECONDS.observe(swap_ms / 1000)
