"""The streaming worker's report and Prometheus metrics (served on /metrics by the entry points)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from tributary_workers.pipeline.indexer import Status
from tributary_workers.streaming.events import Event

EVENTS = Counter("tributary_stream_events_total", "Stream events acknowledged, by result", ["result"])
LATENCY = Histogram(
    "tributary_stream_latency_seconds",
    "End-to-end latency from an event's produced_at to its acknowledged write",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
BATCH_SIZE = Histogram("tributary_stream_batch_size", "Stream entries per batch",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
BATCH_SECONDS = Histogram("tributary_stream_batch_seconds", "Seconds from a batch's read to its acknowledgement",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
LAG = Gauge("tributary_stream_lag", "Entries not yet delivered to the consumer group (XINFO GROUPS lag)",
            ["stream", "group"])
PENDING = Gauge("tributary_stream_pending", "Entries delivered to the group but not yet acknowledged",
                ["stream", "group"])
DEAD_LETTERED = Counter("tributary_stream_dead_lettered_total", "Entries moved to the dead-letter stream, by cause",
                        ["cause"])
RECLAIMED = Counter("tributary_stream_reclaimed_total", "Pending entries claimed from idle consumers (XAUTOCLAIM)")
RETRIES = Counter("tributary_stream_retries_total", "Batch attempts retried after a transient error")
TRIMMED = Counter("tributary_stream_trimmed_total", "Acknowledged entries trimmed from the stream")

RESULT_OF_STATUS = {
    Status.SUCCEEDED: "written",
    Status.DELETED: "deleted",
    Status.UNCHANGED: "unchanged",
    Status.SUPERSEDED: "superseded",
}


@dataclass
class Handled:
    """What became of one stream entry (passed to the observer after the acknowledgement)."""

    entry_id: str
    event: Event | None
    result: str  # written | deleted | unchanged | superseded | dead_lettered
    latency_s: float | None = None
    reason: str = ""


@dataclass
class StreamReport:
    batches: int = 0
    events: dict[str, int] = field(default_factory=dict)
    reclaimed: int = 0
    retries: int = 0
    repairs: int = 0  # documents recorded in a secondary target's repair set
    failed_batches: int = 0
    latency_count: int = 0
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0
    drained: bool = False

    def add(self, handled: Handled) -> None:
        self.events[handled.result] = self.events.get(handled.result, 0) + 1
        if handled.latency_s is not None:
            self.latency_count += 1
            self.latency_sum_s += handled.latency_s
            self.latency_max_s = max(self.latency_max_s, handled.latency_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches, "events": dict(sorted(self.events.items())), "reclaimed": self.reclaimed,
            "retries": self.retries, "repairs": self.repairs, "failed_batches": self.failed_batches, "latency_count": self.latency_count,
            "latency_mean_s": round(self.latency_sum_s / self.latency_count, 4) if self.latency_count else None,
            "latency_max_s": round(self.latency_max_s, 4), "drained": self.drained,
        }
