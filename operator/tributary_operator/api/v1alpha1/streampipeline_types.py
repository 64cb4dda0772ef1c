"""StreamPipeline: a queue-fed streaming worker Deployment, scaled on queue depth."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field
from tributary_workers.contract import defaults as shared

from tributary_operator.api.v1alpha1.schema import (
    AGE,
    KIND_DESCRIPTION,
    ApiModel,
    CelRule,
    CrdNames,
    CustomResource,
    EmbeddingIndexRef,
    ObservedStatus,
    PrinterColumn,
    RedisSecretRef,
    WorkerTemplate,
    name_fits,
)


class StreamQueue(ApiModel):
    """The Redis stream the pipeline consumes document events from."""

    cel_rules = (
        CelRule(
            rule="!has(self.deadLetterStream) || self.deadLetterStream != self.stream",
            message="queue.deadLetterStream must differ from queue.stream",
            check=lambda q: q.dead_letter_stream != q.stream,
            field_path=".deadLetterStream",
        ),
    )

    redis_secret_ref: RedisSecretRef = Field(description="Secret key holding the Redis URL.")
    stream: str = Field(min_length=1, max_length=512, description="Redis stream key to consume.")
    group: str = Field(
        shared.CONSUMER_GROUP,
        min_length=1,
        max_length=512,
        description="Consumer group name; created at the stream's start if missing.",
    )
    dead_letter_stream: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="Stream that messages exceeding retry.maxDeliveries are moved to; "
        "'<stream>:dead' when omitted.",
    )


class ReplicaRange(ApiModel):
    """Bounds for the autoscaler."""

    cel_rules = (
        CelRule(
            rule="self.min <= self.max",
            message="replicas.min must not exceed replicas.max",
            check=lambda r: r.min <= r.max,
            field_path=".min",
        ),
    )

    min: int = Field(
        1, ge=0, le=1000, description="Fewest worker replicas; 0 needs scaling.scaleToZero."
    )
    max: int = Field(4, ge=1, le=1000, description="Most worker replicas.")


class Scaling(ApiModel):
    """How the replica count follows the stream's backlog."""

    target_lag_per_replica: int = Field(
        1000,
        ge=1,
        description="Backlog each replica is expected to handle, where the backlog is the group's "
        "lag (entries not yet delivered) plus its pending entries (delivered, not yet acknowledged); "
        "desired replicas are backlog / targetLagPerReplica, rounded up and clamped to replicas.",
    )
    polling_interval_seconds: int = Field(
        15, ge=1, le=3600, description="How often the backlog is measured."
    )
    scale_up_stabilization_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        description="Window whose lowest recommendation is used when scaling up, to ride out spikes; "
        "a pipeline at zero replicas wakes to one at once regardless.",
    )
    scale_down_stabilization_seconds: int = Field(
        300,
        ge=0,
        le=3600,
        description="Window whose highest recommendation is used when scaling down, to avoid "
        "flapping; each step down at most halves the replicas.",
    )
    scale_to_zero: bool = Field(
        False,
        description="Allows scaling to zero replicas once the backlog (lag and pending) has been zero "
        "for the whole scaleDownStabilizationSeconds; requires replicas.min 0. Never while the "
        "backlog is unknown or the index is re-embedding.",
    )


class Batching(ApiModel):
    """How stream messages are grouped before embedding."""

    max_batch_size: int = Field(
        shared.MAX_BATCH_SIZE, ge=1, le=10000, description="Most messages read and embedded together."
    )
    max_wait_ms: int = Field(
        shared.MAX_WAIT_MS,
        ge=0,
        le=60000,
        description="Longest time, in milliseconds, a batch's first event waits for others to join "
        "it. Streaming is latency first: every millisecond here is added to an event's latency at "
        "low rates, while under load batches fill on their own.",
    )


class Backpressure(ApiModel):
    """Hysteresis on the backlog, so producers are slowed before Milvus falls behind; the operator
    publishes it to the producers in Redis (tributary:backpressure:{stream})."""

    cel_rules = (
        CelRule(
            rule="self.lowWatermark < self.highWatermark",
            message="backpressure.lowWatermark must be less than backpressure.highWatermark",
            check=lambda b: b.low_watermark < b.high_watermark,
            field_path=".lowWatermark",
        ),
    )

    high_watermark: int = Field(
        shared.HIGH_WATERMARK,
        ge=1,
        description="Backlog (lag + pending of the pipeline's group) at which backpressure turns on: "
        "the Backpressure condition becomes True and producers of the stream (`tributary publish`, "
        "the gateway) hold back. The operator writes it with the condition to the Redis key "
        "tributary:backpressure:{stream}, which producers follow over their --high-watermark and "
        "--low-watermark flags; it is removed with the pipeline and expires after 3 "
        "pollingIntervalSeconds (at least 10 s) without the operator: then producers fall back to "
        "their flags.",
    )
    low_watermark: int = Field(
        shared.LOW_WATERMARK,
        ge=0,
        description="Backlog at or below which backpressure turns off again and producers resume; "
        "must be below highWatermark. Published to producers with highWatermark.",
    )


class Retry(ApiModel):
    """Redelivery of messages whose consumer died or failed."""

    max_deliveries: int = Field(
        shared.MAX_DELIVERIES,
        ge=1,
        le=100,
        description="Deliveries of a message before it goes to the dead-letter stream.",
    )
    claim_idle_ms: int = Field(
        shared.CLAIM_IDLE_MS,
        ge=1000,
        description="Idle time after which a pending message of another consumer is claimed and "
        "retried.",
    )


class StreamPipelineSpec(ApiModel):
    """Desired state of a StreamPipeline: the stream to consume, the index to feed and how to scale."""

    cel_rules = (
        CelRule(
            rule="!self.scaling.scaleToZero || self.replicas.min == 0",
            message="scaling.scaleToZero needs replicas.min 0",
            check=lambda s: not s.scaling.scale_to_zero or s.replicas.min == 0,
            field_path=".scaling.scaleToZero",
        ),
        CelRule(
            rule="self.replicas.min > 0 || self.scaling.scaleToZero",
            message="replicas.min may be 0 only when scaling.scaleToZero is true",
            check=lambda s: s.replicas.min > 0 or s.scaling.scale_to_zero,
            field_path=".replicas.min",
        ),
    )

    index_ref: EmbeddingIndexRef = Field(description="EmbeddingIndex the pipeline writes into.")
    queue: StreamQueue = Field(description="Redis stream the document events come from.")
    replicas: ReplicaRange = Field(ReplicaRange(), description="Bounds for the worker replica count.")
    scaling: Scaling = Field(Scaling(), description="How the replica count follows the backlog.")
    batching: Batching = Field(Batching(), description="How messages are batched for embedding.")
    backpressure: Backpressure = Field(
        Backpressure(), description="When producers of the stream slow down (the operator publishes "
        "the watermarks and the Backpressure condition to them in Redis)."
    )
    retry: Retry = Field(Retry(), description="Redelivery of failed messages.")
    worker: WorkerTemplate | None = Field(
        None, description="Worker pod settings; the operator's defaults when omitted."
    )


class RoutingStatus(ApiModel):
    """The routing record of the pipeline's index, as the operator last wrote it."""

    targets: list[str] = Field(
        default_factory=list, max_length=8,
        description="Collections every event is written to, the active one first (a re-embedding "
        "adds its candidate; after a swap the previous collection stays until it is retired).",
    )
    generation: int | None = Field(None, ge=0, description="Generation of the routing record.")
    applied: bool | None = Field(
        None, description="Every worker pod (Terminating ones included) reported this generation: "
        "no batch routed by an older record is in flight.",
    )


class StreamPhase(StrEnum):
    PENDING = "Pending"
    IDLE = "Idle"
    RUNNING = "Running"
    SCALING = "Scaling"
    BACKPRESSURED = "Backpressured"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class StreamPipelineStatus(ObservedStatus):
    """Observed state of a StreamPipeline, written by the operator."""

    phase: StreamPhase | None = Field(
        None,
        description="Pending, Idle (zero replicas, nothing to do), Running, Scaling (replicas on "
        "their way to desiredReplicas), Backpressured (backlog above highWatermark), Degraded (Redis "
        "unreachable: replicas held) or Failed.",
    )
    replicas: int | None = Field(None, ge=0, description="Worker replicas currently running.")
    desired_replicas: int | None = Field(
        None, ge=0, description="Replicas the autoscaler last asked for."
    )
    lag: int | None = Field(
        None,
        ge=0,
        description="Messages in the stream not yet delivered to the consumer group; estimated "
        "from entries-added - entries-read when Redis reports no lag, unset when unknown.",
    )
    pending: int | None = Field(
        None, ge=0, description="Messages delivered but not yet acknowledged."
    )
    backlog: int | None = Field(
        None, ge=0, description="lag + pending: what the replicas are scaled on; unset when unknown."
    )
    last_scale_time: datetime | None = Field(None, description="When the replica count last changed.")
    routing: RoutingStatus | None = Field(
        None, description="The routing record the workers write by, and whether every worker applied it."
    )


class StreamPipeline(CustomResource):
    """StreamPipeline keeps an EmbeddingIndex current from a Redis stream of document events, with
    autoscaled workers."""

    # The worker Deployment is <name>-worker, whose name labels its pods (label values: 63 characters).
    cel_rules = (name_fits(56, "the worker Deployment <name>-worker labels its pods"),)

    crd = CrdNames(
        kind="StreamPipeline",
        plural="streampipelines",
        short_names=("sp",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase", "string", "Phase of the pipeline."),
            PrinterColumn("Replicas", ".status.replicas", "integer", "Worker replicas running."),
            PrinterColumn("Desired", ".status.desiredReplicas", "integer", "Replicas wanted."),
            PrinterColumn("Backlog", ".status.backlog", "integer", "Lag + pending messages."),
            PrinterColumn("Index", ".spec.indexRef.name", "string", "Target EmbeddingIndex.", 1),
            AGE,
        ),
    )

    kind: Literal["StreamPipeline"] = Field("StreamPipeline", description=KIND_DESCRIPTION)
    spec: StreamPipelineSpec = Field(description="Desired state of the StreamPipeline.")
    status: StreamPipelineStatus = Field(
        default_factory=StreamPipelineStatus, description="Observed state, written by the operator."
    )
