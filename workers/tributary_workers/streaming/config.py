"""The streaming worker's configuration: every setting, its default from the shared contract."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from tributary_workers.contract import defaults
from tributary_workers.pipeline.settings import PipelineSettings
from tributary_workers.streaming.queue import StreamNames


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class StreamConfig(PipelineSettings):
    index: str
    redis_url: str
    milvus_uri: str
    collection: str | None = None  # where events go without a routing record; default: index
    ledger_url: str | None = None  # redis://... or a SQLite path; default: redis_url
    stream: str | None = None  # default tributary:stream:{index}
    group: str | None = None  # default "tributary"
    dead_letter_stream: str | None = None  # default {stream}:dead
    consumer: str | None = None  # default {hostname}-{pid}
    max_batch_size: int = defaults.MAX_BATCH_SIZE
    max_wait_ms: int = defaults.MAX_WAIT_MS  # how long the first entry of a batch waits for others to join it
    block_ms: int = 500  # longest idle wait for new entries (bounds how fast stop() is noticed)
    claim_idle_ms: int = defaults.CLAIM_IDLE_MS
    max_deliveries: int = defaults.MAX_DELIVERIES
    retry_attempts: int = defaults.RETRY_ATTEMPTS
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    failure_backoff_max_s: float = 30.0
    drain_timeout_s: float = defaults.DRAIN_TIMEOUT_S
    maintenance_interval_s: float = 2.0  # lag/pending gauges, safe trimming, routing generation
    dead_letter_maxlen: int = 100_000
    embed_batch_size: int = defaults.STREAM_EMBED_BATCH_SIZE
    # Fault injection for tests only: a pause between the writes and the acknowledgement, so a test
    # can kill or stop a worker while a written batch is still unacknowledged.
    ack_delay_s: float = field(default_factory=lambda: float(os.environ.get("TRIBUTARY_STREAM_ACK_DELAY_S") or 0))

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_deliveries < 1 or self.retry_attempts < 1:
            raise ValueError("max_batch_size, max_deliveries and retry_attempts must be at least 1")
        if self.max_wait_ms < 0 or self.claim_idle_ms < 1 or self.block_ms < 1:
            raise ValueError("max_wait_ms must be >= 0, claim_idle_ms and block_ms >= 1")
        self.collection = self.collection or self.index
        self.consumer = self.consumer or default_consumer_name()
        self.ledger_url = self.ledger_url or self.redis_url

    @property
    def names(self) -> StreamNames:
        return StreamNames.for_index(self.index, self.stream, self.group, self.dead_letter_stream)

    @property
    def writer_id(self) -> str:
        return f"stream:{self.consumer}"
