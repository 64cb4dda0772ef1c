"""IngestionJob: a batch ingestion run (or a schedule of runs) as checkpointed, sharded Indexed Jobs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from croniter import croniter
from pydantic import Field, StringConstraints, field_validator
from tributary_workers.contract import defaults as shared

from tributary_operator.api.v1alpha1.schema import (
    AGE,
    CRON,
    KIND_DESCRIPTION,
    ApiModel,
    CelRule,
    Chunking,
    CrdNames,
    CustomResource,
    EmbeddingIndexRef,
    EmbeddingModel,
    Glob,
    MilvusName,
    ObservedStatus,
    PrinterColumn,
    RedisSecretRef,
    SecretRef,
    Text,
    Uri,
    WorkerTemplate,
    name_fits,
)


class SourceType(StrEnum):
    LOCAL = "local"
    HTTP = "http"
    S3 = "s3"


class IngestionSource(ApiModel):
    """Where the documents come from."""

    cel_rules = (
        CelRule(
            rule="has(self.uri) != has(self.urls)",
            message="exactly one of source.uri or source.urls must be set",
            check=lambda s: (s.uri is None) != (s.urls is None),
        ),
        CelRule(
            rule="!has(self.urls) || self.type == 'http'",
            message="source.urls is only allowed when source.type is http",
            check=lambda s: s.urls is None or s.type == SourceType.HTTP,
            field_path=".urls",
        ),
        CelRule(
            rule="self.type != 's3' || !has(self.uri) || self.uri.startsWith('s3://')",
            message="source.uri must start with s3:// when source.type is s3",
            check=lambda s: s.type != SourceType.S3 or s.uri is None or s.uri.startswith("s3://"),
            field_path=".uri",
        ),
        CelRule(
            rule="self.type != 'local' || !has(self.uri) || !self.uri.contains('://') || self.uri.startsWith('file://')",
            message="source.uri must be a path (or file://) when source.type is local",
            check=lambda s: s.type != SourceType.LOCAL or s.uri is None or "://" not in s.uri
            or s.uri.startswith("file://"),
            field_path=".uri",
        ),
        CelRule(
            rule="self.type != 'http' || !has(self.uri) || self.uri.matches('^https?://')",
            message="source.uri must start with http:// or https:// when source.type is http",
            check=lambda s: s.type != SourceType.HTTP
            or s.uri is None
            or s.uri.startswith(("http://", "https://")),
            field_path=".uri",
        ),
    )

    type: SourceType = Field(
        description="Kind of source: local (a directory inside the worker pod), http (web pages or "
        "files by URL) or s3 (objects under an S3 prefix)."
    )
    uri: Uri | None = Field(
        None,
        description="Root of the documents: a directory path for local, an s3://bucket/prefix for "
        "s3, or a single URL for http. Exactly one of uri and urls is set.",
    )
    urls: list[Annotated[Uri, StringConstraints(pattern=r"^https?://")]] | None = Field(
        None,
        min_length=1,
        max_length=10000,
        description="Explicit list of http(s) URLs to fetch (type http only). Exactly one of uri "
        "and urls is set.",
    )
    include: list[Glob] | None = Field(
        None,
        max_length=64,
        description="Glob patterns relative to uri (e.g. **/*.md); only matching documents are "
        "ingested. Everything is included when omitted.",
    )
    exclude: list[Glob] | None = Field(
        None,
        max_length=64,
        description="Glob patterns relative to uri of documents to skip; applied after include.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        None,
        description="Secret with the source's credentials, passed to the workers as environment "
        "variables: for s3 AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally "
        "AWS_SESSION_TOKEN and AWS_ENDPOINT_URL; for http HTTP_AUTHORIZATION, sent as the "
        "Authorization header. Credentials are never accepted inline.",
    )


class InlineTarget(ApiModel):
    """A Milvus collection written to directly, without an EmbeddingIndex managing it."""

    milvus_uri: Annotated[Uri, StringConstraints(pattern=r"^[a-z][a-z0-9+.-]*://")] = Field(
        description="Milvus endpoint, e.g. http://milvus.milvus.svc:19530."
    )
    collection: MilvusName = Field(
        description="Name of the collection to write; created on first use if it does not exist."
    )
    model: EmbeddingModel = Field(description="Embedding model the chunks are encoded with.")
    chunking: Chunking = Field(
        Chunking(), description="How documents are split into chunks before embedding."
    )
    credentials_secret_ref: SecretRef | None = Field(
        None,
        description="Secret with key MILVUS_TOKEN (a Milvus token or user:password); no "
        "authentication when omitted.",
    )


class IngestionTarget(ApiModel):
    """Where the chunks go: an EmbeddingIndex, or an inline Milvus collection."""

    cel_rules = (
        CelRule(
            rule="has(self.indexRef) != has(self.inline)",
            message="exactly one of target.indexRef or target.inline must be set",
            check=lambda t: (t.index_ref is None) != (t.inline is None),
        ),
    )

    index_ref: EmbeddingIndexRef | None = Field(
        None,
        description="EmbeddingIndex to ingest into; its model, chunking and active collection are "
        "used. Exactly one of indexRef and inline is set.",
    )
    inline: InlineTarget | None = Field(
        None,
        description="A Milvus collection described in place. Exactly one of indexRef and inline is "
        "set.",
    )


class IngestionMode(StrEnum):
    INITIAL_LOAD = "initialLoad"
    UPDATE = "update"


class ConcurrencyPolicy(StrEnum):
    FORBID = "Forbid"
    REPLACE = "Replace"


class CheckpointBackend(StrEnum):
    CONFIG_MAP = "configMap"
    REDIS = "redis"


class Checkpoint(ApiModel):
    """Where workers record finished documents, so a restarted shard resumes instead of redoing."""

    cel_rules = (
        CelRule(
            rule="(self.backend == 'redis') == has(self.redisSecretRef)",
            message="checkpoint.redisSecretRef must be set when, and only when, checkpoint.backend "
            "is redis",
            check=lambda c: (c.backend == CheckpointBackend.REDIS) == (c.redis_secret_ref is not None),
        ),
    )

    backend: CheckpointBackend = Field(
        CheckpointBackend.CONFIG_MAP,
        description="configMap (one ConfigMap per run, no extra infrastructure) or redis (for large "
        "runs with many shards).",
    )
    redis_secret_ref: RedisSecretRef | None = Field(
        None, description="Secret key holding the Redis URL; required when backend is redis."
    )


class Ledger(ApiModel):
    """The per-document version ledger the workers fence their writes with."""

    redis_secret_ref: RedisSecretRef = Field(
        description="Secret key holding the URL of the Redis that keeps the ledger. Use the same "
        "Redis as the StreamPipelines writing to this collection, so batch runs never regress a "
        "newer streamed edit or resurrect a deleted document."
    )


class Prune(ApiModel):
    """Sync semantics: documents gone from the source are removed, with a guard rail."""

    enabled: bool = Field(
        False,
        description="After a run's listing completed without a source error, remove every document "
        "this IngestionJob wrote earlier whose file (object, URL) is no longer listed, with a "
        "versioned delete (a newer stream update still wins). Documents written by another "
        "IngestionJob or by a StreamPipeline are never removed.",
    )
    max_fraction: float = Field(
        shared.PRUNE_MAX_FRACTION,
        ge=0,
        le=1,
        description="Largest share of this IngestionJob's documents (per shard) one run may remove; "
        "over it nothing is removed and the run ends PartiallySucceeded saying how many would "
        "have gone. 1 allows removing everything.",
    )


class IngestionJobSpec(ApiModel):
    """Desired state of an IngestionJob: what to ingest, where to, and how to run the workers."""

    cel_rules = (
        CelRule(
            rule="!(has(self.schedule) && self.mode == 'initialLoad')",
            message="mode initialLoad cannot be combined with a schedule: an initial load only "
            "goes into an empty collection, so it cannot repeat",
            check=lambda s: s.schedule is None or s.mode != IngestionMode.INITIAL_LOAD,
            field_path=".mode",
        ),
        CelRule(
            rule="!has(self.prune) || !self.prune.enabled || has(self.ledger)",
            message="prune.enabled needs spec.ledger: only a shared ledger remembers what earlier runs wrote",
            check=lambda s: s.prune is None or not s.prune.enabled or s.ledger is not None,
            field_path=".prune",
        ),
    )

    source: IngestionSource = Field(description="Where the documents come from.")
    target: IngestionTarget = Field(description="Where the embedded chunks are written.")
    mode: IngestionMode = Field(
        IngestionMode.UPDATE,
        description="update (the default) upserts changed documents and skips unchanged ones, "
        "fenced by version. initialLoad is the bulk-load path for a new, empty collection: index "
        "building and replica loading are deferred to the end of the run; it fails on a "
        "collection that already holds data and cannot be combined with a schedule.",
    )
    parallelism: int = Field(
        shared.PARALLELISM,
        ge=1,
        le=256,
        description="Number of shards: the documents are split across this many worker pods, each "
        "processing its own shard.",
    )
    max_concurrency: int = Field(
        shared.MAX_CONCURRENCY,
        ge=1,
        le=1024,
        description="Documents each worker fetches and parses concurrently.",
    )
    embed_batch_size: int = Field(
        shared.BATCH_EMBED_BATCH_SIZE, ge=1, le=4096, description="Chunks sent to the embedding model per batch."
    )
    worker: WorkerTemplate | None = Field(
        None, description="Worker pod settings; the operator's defaults when omitted."
    )
    backoff_limit_per_index: int = Field(
        3,
        ge=0,
        le=100,
        description="Retries of a failed shard before that shard is marked failed; other shards "
        "keep running.",
    )
    active_deadline_seconds: int | None = Field(
        None,
        ge=1,
        description="Maximum duration of one run in seconds, after which it is stopped and marked "
        "failed; unlimited when omitted.",
    )
    suspend: bool = Field(
        False,
        description="Pauses the job: a running run's workers are stopped (finished documents stay "
        "checkpointed) and no scheduled run starts until it is set back to false.",
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description="Seconds after a run finishes before its worker pods and Job are deleted; kept "
        "until the next run or the IngestionJob's deletion when omitted.",
    )
    schedule: str | None = Field(
        None,
        max_length=128,
        pattern=CRON,
        description="Cron schedule for recurring runs, five fields (e.g. '0 2 * * *') or one of "
        "@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually. Runs once when omitted.",
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        ConcurrencyPolicy.FORBID,
        description="What a scheduled run does while the previous run is still going: Forbid "
        "skips it, Replace stops the previous run and starts the new one.",
    )
    successful_runs_history_limit: int = Field(
        3, ge=0, le=100, description="Finished successful runs (worker Jobs) to keep."
    )
    failed_runs_history_limit: int = Field(
        1, ge=0, le=100, description="Finished failed runs (worker Jobs) to keep."
    )
    checkpoint: Checkpoint | None = Field(
        None, description="Where progress is checkpointed; a ConfigMap per run when omitted."
    )
    ledger: Ledger | None = Field(
        None,
        description="Shared version ledger (Redis). When omitted, a run into an indexRef uses the "
        "EmbeddingIndex's spec.ledger; otherwise each shard keeps a private ledger on its pod's "
        "disk: versions are fenced within the run only, and a later run re-embeds every document "
        "instead of skipping unchanged ones.",
    )

    prune: Prune | None = Field(
        None, description="Remove documents gone from the source (off when omitted)."
    )

    @field_validator("schedule")
    @classmethod
    def _schedule_is_valid_cron(cls, schedule: str | None) -> str | None:
        if schedule is not None and not croniter.is_valid(schedule):
            raise ValueError(f"{schedule!r} is not a valid cron schedule")
        return schedule


class IngestionPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ShardPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ShardStatus(ApiModel):
    """Progress of one shard (one worker pod's share of the documents)."""

    index: int = Field(ge=0, le=255, description="Shard index, from 0 to parallelism-1.")
    phase: ShardPhase | None = Field(None, description="Phase of the shard.")
    documents_done: int | None = Field(
        None, ge=0, description="Documents of this shard processed so far, failed ones included."
    )
    documents_failed: int | None = Field(
        None, ge=0, description="Documents of this shard that failed."
    )
    chunks_written: int | None = Field(
        None, ge=0, description="Chunks this shard has written to Milvus."
    )
    message: str | None = Field(
        None, max_length=1024,
        description="Why the shard's last attempt failed: its worker's fatal error (the pod's termination "
        "message); unset while it has not failed.",
    )


class DocumentFailure(ApiModel):
    """A sample failed document, for a first look without reading worker logs."""

    doc_id: str = Field(max_length=2048, description="Id of the document (path, object key or URL).")
    reason: Text = Field(description="Why the document failed, truncated.")


class IngestionJobStatus(ObservedStatus):
    """Observed state of an IngestionJob, written by the operator."""

    phase: IngestionPhase | None = Field(
        None,
        description="Pending, Running, Succeeded, PartiallySucceeded (finished with some failed "
        "documents, or a prune refused over prune.maxFraction), Failed or Suspended.",
    )
    progress: str | None = Field(
        None, max_length=64, description="Documents done out of the total, e.g. 42/100."
    )
    eta: str | None = Field(
        None, max_length=32, description="Time left of the running run at the rate measured so far, "
        "e.g. 4m10s; unset when no run is going or no document is done yet."
    )
    documents_total: int | None = Field(
        None, ge=0, description="Documents the source listed for the current or last run."
    )
    documents_succeeded: int | None = Field(
        None, ge=0, description="Documents ingested successfully in the current or last run."
    )
    documents_failed: int | None = Field(
        None, ge=0, description="Documents that failed in the current or last run."
    )
    documents_unchanged: int | None = Field(
        None, ge=0, description="Documents skipped because their content had not changed."
    )
    documents_pruned: int | None = Field(
        None, ge=0, description="Documents removed in the current or last run because they are gone "
        "from the source (spec.prune)."
    )
    chunks_written: int | None = Field(
        None, ge=0, description="Chunks written to Milvus in the current or last run."
    )
    shards: list[ShardStatus] = Field(
        default_factory=list,
        max_length=256,
        description="Per-shard progress of the current or last run.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["index"]},
    )
    failures: list[DocumentFailure] = Field(
        default_factory=list,
        max_length=20,
        description="A bounded sample of failed documents of the current or last run.",
    )
    start_time: datetime | None = Field(None, description="When the current or last run started.")
    completion_time: datetime | None = Field(None, description="When the last run finished.")
    last_schedule_time: datetime | None = Field(
        None, description="When a run was last started by the schedule."
    )
    active_run: str | None = Field(
        None, max_length=253, description="Name of the run in progress; unset when idle."
    )
    job_name: str | None = Field(
        None, max_length=253, description="Name of the Kubernetes Job running the current or last run."
    )


class IngestionJob(CustomResource):
    """IngestionJob loads documents from a source into Milvus, once or on a schedule, sharded
    across worker pods."""

    # The name is the label value tributary.dev/ingestionjob on every run's Job and pods.
    cel_rules = (name_fits(63, "it labels the runs' Jobs and pods"),)

    crd = CrdNames(
        kind="IngestionJob",
        plural="ingestionjobs",
        short_names=("ij",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase", "string", "Phase of the current or last run."),
            PrinterColumn("Progress", ".status.progress", "string", "Documents done out of the total."),
            PrinterColumn("ETA", ".status.eta", "string", "Time left of the running run, at the rate so far."),
            PrinterColumn("Succeeded", ".status.documentsSucceeded", "integer", "Documents ingested."),
            PrinterColumn("Failed", ".status.documentsFailed", "integer", "Documents that failed."),
            PrinterColumn("Schedule", ".spec.schedule", "string", "Cron schedule.", priority=1),
            PrinterColumn("Mode", ".spec.mode", "string", "initialLoad or update.", priority=1),
            AGE,
        ),
    )

    kind: Literal["IngestionJob"] = Field("IngestionJob", description=KIND_DESCRIPTION)
    spec: IngestionJobSpec = Field(description="Desired state of the IngestionJob.")
    status: IngestionJobStatus = Field(
        default_factory=IngestionJobStatus, description="Observed state, written by the operator."
    )
