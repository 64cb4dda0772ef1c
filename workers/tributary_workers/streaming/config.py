"""The streaming worker's configuration: every setting, its default from the shared contract."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV
from tributary_workers.pipeline.settings import PipelineSettings
from tributary_workers.streaming.queue import StreamNames


MAX_CONSUMER_NAME = 63  # a pod name is at most 63 characters; the fallback is kept as short


def default_consumer_name(hostname: str | None = None, pid: int | None = None) -> str:
    """{hostname}-{pid} in at most 63 characters: the hostname is cut, never the pid (what tells two
    processes on one host apart)."""
    host = socket.gethostname() if hostname is None else hostname
    suffix = f"-{os.getpid() if pid is None else pid}"
    return host[:MAX_CONSUMER_NAME - len(suffix)] + suffix


def consumer_name(environ: Mapping[str, str], hostname: str | None = None, pid: int | None = None) -> str:
    """The consumer name: TRIBUTARY_CONSUMER, else POD_NAME (the Downward API: a pod restarted
    under its name recovers its own pending entries at once), else {hostname}-{pid}. Empty counts as unset;
    only the fallback is truncated (an explicit name is used as given)."""
    return environ.get(ENV.CONSUMER) or environ.get(ENV.POD_NAME) or default_consumer_name(hostname, pid)


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
    consumer: str | None = None  # default {hostname}-{pid} (the CLI passes TRIBUTARY_CONSUMER, else POD_NAME)
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
    warm_up_timeout_s: float = defaults.WARM_UP_TIMEOUT_S  # retrying unreachable Redis/Milvus at start; 0: forever
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
        if self.warm_up_timeout_s < 0 or self.drain_timeout_s < 0:
            raise ValueError("warm_up_timeout_s and drain_timeout_s must be >= 0")
        self.collection = self.collection or self.index
        self.consumer = self.consumer or default_consumer_name()
        self.ledger_url = self.ledger_url or self.redis_url

    @property
    def names(self) -> StreamNames:
        return StreamNames.for_index(self.index, self.stream, self.group, self.dead_letter_stream)

    @property
    def writer_id(self) -> str:
        return f"stream:{self.consumer}"
