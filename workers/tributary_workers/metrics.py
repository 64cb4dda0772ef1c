"""Prometheus metrics of the data plane (served on /metrics by the worker entry points)."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

DOCUMENTS = Counter("tributary_documents_total", "Documents processed, by result", ["result"])
CHUNKS_WRITTEN = Counter("tributary_chunks_written_total", "Chunk rows upserted into Milvus")
EMBED_SECONDS = Histogram(
    "tributary_embedding_batch_seconds", "Seconds per batched embedding call",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WRITE_SECONDS = Histogram(
    "tributary_write_seconds", "Seconds per Milvus write (upsert, ledger commits, superseded-row cleanup)",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHECKPOINT_POSITION = Gauge(
    "tributary_checkpoint_documents", "Source documents covered by the last committed checkpoint", ["shard"]
)


def serve(port: int) -> None:
    """Expose /metrics on a background thread; port 0 disables it.

    A port that is taken is logged, not fatal: losing metrics must not stop an ingestion run.
    """
    if port:
        try:
            start_http_server(port)
        except OSError as exc:
            logging.getLogger(__name__).warning("metrics disabled: cannot listen on port %d: %s", port, exc)
