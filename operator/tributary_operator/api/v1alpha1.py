"""The tributary.dev/v1alpha1 API: IngestionJob, StreamPipeline and EmbeddingIndex.

These pydantic models are the single source of truth for the API. The CRD manifests in crds/ are
generated from them (``python -m tributary_operator.crdgen crds/``), the operator parses custom
resource bodies with them (``IngestionJob.from_body(body)``), and every field description here is
what ``kubectl explain`` prints.

Conventions: Python attributes are snake_case, the JSON/YAML names camelCase. Cross-field rules are
declared once per model as ``CelRule``s: the generator emits them as ``x-kubernetes-validations``
(enforced by the API server) and the models enforce the same rule in Python, so a manifest that
parses here is one the API server accepts. Credentials are only ever referenced through Secrets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "tributary.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "tributary"

# Kubernetes object names (DNS-1123 subdomain), Secret keys, and Milvus collection/alias names.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
MILVUS_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Five cron fields, or one of the macros cron understands. croniter checks the values in Python.
CRON = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|([0-9A-Za-z*?/,#-]+\s+){4}[0-9A-Za-z*?/,#-]+)$"
)

ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
SecretKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=SECRET_KEY)]
MilvusName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=MILVUS_NAME)]
Uri = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Text = Annotated[str, StringConstraints(max_length=1024)]


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule, kept next to the model it constrains.

    ``rule`` is the CEL expression the API server evaluates with ``self`` bound to the object;
    ``check`` is the same rule over the Python model, so both paths reject the same manifests with
    the same ``message``. ``field_path`` (e.g. ``".min"``) points the API server's error at a field.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        schema = {"rule": self.rule, "message": self.message}
        if self.field_path:
            schema["fieldPath"] = self.field_path
        return schema


def _add_cel_rules(schema: dict[str, Any], model: type) -> None:
    rules = getattr(model, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, CEL rules applied."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_add_cel_rules,
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self


# --------------------------------------------------------------------------- shared building blocks


class SecretRef(ApiModel):
    """A Secret in the resource's namespace whose keys are handed to the workers as environment
    variables."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace as this resource.")
    keys: list[SecretKey] | None = Field(
        None,
        max_length=64,
        description="Keys of the Secret to use; every key of the Secret when omitted.",
    )


class RedisSecretRef(ApiModel):
    """A Secret key holding a Redis URL, so the URL (and any password in it) never sits in a spec."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace as this resource.")
    key: SecretKey = Field(
        "url",
        description="Key of the Secret whose value is the Redis URL (redis:// or rediss://).",
    )


class EmbeddingIndexRef(ApiModel):
    """A reference to an EmbeddingIndex in the same namespace."""

    name: ObjectName = Field(description="Name of the EmbeddingIndex, in the same namespace.")


class ImagePullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class WorkerTemplate(ApiModel):
    """How the worker pods run; everything not set here comes from the operator's defaults."""

    image: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Worker container image; the operator's default worker image when omitted.",
    )
    image_pull_policy: ImagePullPolicy | None = Field(
        None,
        description="Image pull policy of the worker container (Always, IfNotPresent or Never); "
        "Kubernetes' default for the image tag when omitted.",
    )
    resources: dict[str, Any] | None = Field(
        None,
        description="Compute resources of the worker container, in the shape of a Kubernetes "
        "ResourceRequirements (requests, limits); passed through unchanged.",
    )
    env: dict[str, Annotated[str, StringConstraints(max_length=32768)]] | None = Field(
        None,
        description="Extra environment variables for the worker container, name to value. Never "
        "put credentials here: use the credentialsSecretRef fields.",
    )
    service_account_name: ObjectName | None = Field(
        None,
        description="ServiceAccount the worker pods run as; the operator's worker account "
        "(tributary-worker, created by the Helm chart) when omitted.",
    )


class EmbeddingModel(ApiModel):
    """The sentence-embedding model that turns chunks into vectors."""

    name: str = Field(
        min_length=1,
        max_length=1024,
        description="Hugging Face model id (e.g. sentence-transformers/all-MiniLM-L6-v2) or a path "
        "to a model directory inside the worker image.",
    )
    dimension: int = Field(
        ge=1,
        le=32768,
        description="Length of the model's embedding vectors; the collection's vector field is "
        "created with this dimension.",
    )
    revision: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Model revision (branch, tag or commit) to load; the default branch when omitted.",
    )
    max_sequence_length: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Maximum number of tokens the model reads per chunk; the model's own limit when "
        "omitted.",
    )


class Chunking(ApiModel):
    """How documents are split into chunks before embedding."""

    cel_rules = (
        CelRule(
            rule="!has(self.maxTokens) || self.overlapTokens < self.maxTokens",
            message="chunking.overlapTokens must be less than chunking.maxTokens",
            check=lambda c: c.max_tokens is None or c.overlap_tokens < c.max_tokens,
            field_path=".overlapTokens",
        ),
    )

    max_tokens: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Maximum number of tokens per chunk, counted with the model's own tokenizer. "
        "When omitted, the model's limit (its maximum sequence length minus its special tokens); "
        "a larger value is refused rather than silently truncated.",
    )
    overlap_tokens: int = Field(
        32,
        ge=0,
        le=65535,
        description="Tokens shared by consecutive chunks of a document; must be less than maxTokens.",
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One observation of an aspect of the resource's state, in the Kubernetes condition shape."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="Type of the condition in CamelCase, e.g. Ready, Progressing or Degraded.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str | None = Field(
        None,
        max_length=1024,
        pattern=r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$",
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str | None = Field(
        None, max_length=32768, description="Human-readable details about the last transition."
    )
    last_transition_time: datetime | None = Field(
        None, description="When the condition last changed status."
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the condition was computed from."
    )


class ObservedStatus(ApiModel):
    """Status fields every kind shares."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="Current conditions of the resource, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


@dataclass(frozen=True)
class PrinterColumn:
    """An additionalPrinterColumns entry: what ``kubectl get`` shows."""

    name: str
    json_path: str
    type: str
    description: str
    priority: int = 0


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since the resource was created.")


@dataclass(frozen=True)
class CrdNames:
    """Naming and presentation of a kind's CRD."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


class CustomResource(ApiModel):
    """The envelope of a tributary.dev object; subclasses type ``kind``, ``spec`` and ``status``."""

    crd: ClassVar[CrdNames]

    api_version: Literal["tributary.dev/v1alpha1"] = Field(
        API_VERSION,
        description="APIVersion defines the versioned schema of this representation of an object. "
        "Servers should convert recognized schemas to the latest internal value, and may reject "
        "unrecognized values. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Standard object metadata. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Parse a custom resource body, e.g. kopf's ``body``; ``metadata`` stays a plain dict."""
        return cls.model_validate(plain_data(body))


KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. "
    "More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)


def plain_data(value: Any) -> Any:
    """Copy read-only mapping views (kopf's Body, Spec, ...) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(item) for item in value]
    return value


# ---------------------------------------------------------------------------------- IngestionJob


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
        1,
        ge=1,
        le=256,
        description="Number of shards: the documents are split across this many worker pods, each "
        "processing its own shard.",
    )
    max_concurrency: int = Field(
        4,
        ge=1,
        le=1024,
        description="Documents each worker fetches and parses concurrently.",
    )
    embed_batch_size: int = Field(
        32, ge=1, le=4096, description="Chunks sent to the embedding model per batch."
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
        description="Shared version ledger (Redis). When omitted, each shard keeps a private "
        "ledger on its pod's disk: versions are fenced within the run only, and a later run "
        "re-embeds every document instead of skipping unchanged ones.",
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


class DocumentFailure(ApiModel):
    """A sample failed document, for a first look without reading worker logs."""

    doc_id: str = Field(max_length=2048, description="Id of the document (path, object key or URL).")
    reason: Text = Field(description="Why the document failed, truncated.")


class IngestionJobStatus(ObservedStatus):
    """Observed state of an IngestionJob, written by the operator."""

    phase: IngestionPhase | None = Field(
        None,
        description="Pending, Running, Succeeded, PartiallySucceeded (finished with some failed "
        "documents), Failed or Suspended.",
    )
    progress: str | None = Field(
        None, max_length=64, description="Documents done out of the total, e.g. 42/100."
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

    crd = CrdNames(
        kind="IngestionJob",
        plural="ingestionjobs",
        short_names=("ij",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase", "string", "Phase of the current or last run."),
            PrinterColumn("Progress", ".status.progress", "string", "Documents done out of the total."),
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


# -------------------------------------------------------------------------------- StreamPipeline


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
        "tributary",
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
        description="Pending messages each replica is expected to handle; desired replicas are "
        "lag / targetLagPerReplica, rounded up and clamped to replicas.",
    )
    polling_interval_seconds: int = Field(
        15, ge=1, le=3600, description="How often the lag is measured."
    )
    scale_up_stabilization_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        description="Window whose lowest recommendation is used when scaling up, to ride out spikes.",
    )
    scale_down_stabilization_seconds: int = Field(
        300,
        ge=0,
        le=3600,
        description="Window whose highest recommendation is used when scaling down, to avoid "
        "flapping.",
    )
    scale_to_zero: bool = Field(
        False,
        description="Allows scaling to zero replicas when there is no lag; requires replicas.min 0.",
    )


class Batching(ApiModel):
    """How stream messages are grouped before embedding."""

    max_batch_size: int = Field(
        64, ge=1, le=10000, description="Most messages read and embedded together."
    )
    max_wait_ms: int = Field(
        5,
        ge=0,
        le=60000,
        description="Longest time, in milliseconds, a batch's first event waits for others to join "
        "it. Streaming is latency first: every millisecond here is added to an event's latency at "
        "low rates, while under load batches fill on their own.",
    )


class Backpressure(ApiModel):
    """Hysteresis on the pending backlog, so producers can be slowed before Milvus falls behind."""

    cel_rules = (
        CelRule(
            rule="self.lowWatermark < self.highWatermark",
            message="backpressure.lowWatermark must be less than backpressure.highWatermark",
            check=lambda b: b.low_watermark < b.high_watermark,
            field_path=".lowWatermark",
        ),
    )

    high_watermark: int = Field(
        100000,
        ge=1,
        description="Backlog (messages) at which backpressure turns on: the Backpressure condition "
        "becomes True.",
    )
    low_watermark: int = Field(
        50000,
        ge=0,
        description="Backlog at which backpressure turns off again; must be below highWatermark.",
    )


class Retry(ApiModel):
    """Redelivery of messages whose consumer died or failed."""

    max_deliveries: int = Field(
        5,
        ge=1,
        le=100,
        description="Deliveries of a message before it goes to the dead-letter stream.",
    )
    claim_idle_ms: int = Field(
        60000,
        ge=1000,
        description="Idle time after which a pending message of another consumer is claimed and "
        "retried.",
    )


class StreamPipelineSpec(ApiModel):
    """Desired state of a StreamPipeline: the stream to consume, the index to feed and how to scale."""

    cel_rules = (
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
        Backpressure(), description="When to signal producers to slow down."
    )
    retry: Retry = Field(Retry(), description="Redelivery of failed messages.")
    worker: WorkerTemplate | None = Field(
        None, description="Worker pod settings; the operator's defaults when omitted."
    )


class StreamPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SCALED_TO_ZERO = "ScaledToZero"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class StreamPipelineStatus(ObservedStatus):
    """Observed state of a StreamPipeline, written by the operator."""

    phase: StreamPhase | None = Field(
        None, description="Pending, Running, ScaledToZero, Degraded or Failed."
    )
    replicas: int | None = Field(None, ge=0, description="Worker replicas currently running.")
    desired_replicas: int | None = Field(
        None, ge=0, description="Replicas the autoscaler last asked for."
    )
    lag: int | None = Field(
        None, ge=0, description="Messages in the stream not yet delivered to the consumer group."
    )
    pending: int | None = Field(
        None, ge=0, description="Messages delivered but not yet acknowledged."
    )
    last_scale_time: datetime | None = Field(None, description="When the replica count last changed.")


class StreamPipeline(CustomResource):
    """StreamPipeline keeps an EmbeddingIndex current from a Redis stream of document events, with
    autoscaled workers."""

    crd = CrdNames(
        kind="StreamPipeline",
        plural="streampipelines",
        short_names=("sp",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase", "string", "Phase of the pipeline."),
            PrinterColumn("Replicas", ".status.replicas", "integer", "Worker replicas running."),
            PrinterColumn("Lag", ".status.lag", "integer", "Messages not yet delivered."),
            PrinterColumn("Desired", ".status.desiredReplicas", "integer", "Replicas wanted.", 1),
            PrinterColumn("Index", ".spec.indexRef.name", "string", "Target EmbeddingIndex.", 1),
            AGE,
        ),
    )

    kind: Literal["StreamPipeline"] = Field("StreamPipeline", description=KIND_DESCRIPTION)
    spec: StreamPipelineSpec = Field(description="Desired state of the StreamPipeline.")
    status: StreamPipelineStatus = Field(
        default_factory=StreamPipelineStatus, description="Observed state, written by the operator."
    )


# -------------------------------------------------------------------------------- EmbeddingIndex


class MilvusConnection(ApiModel):
    """How to reach the Milvus instance holding the index's collections."""

    uri: Annotated[Uri, StringConstraints(pattern=r"^[a-z][a-z0-9+.-]*://")] = Field(
        description="Milvus endpoint, e.g. http://milvus.milvus.svc:19530."
    )
    credentials_secret_ref: SecretRef | None = Field(
        None,
        description="Secret with key MILVUS_TOKEN (a Milvus token or user:password); no "
        "authentication when omitted.",
    )
    database: MilvusName | None = Field(
        None, description="Milvus database; the server's default database when omitted."
    )


class MetricType(StrEnum):
    COSINE = "COSINE"
    IP = "IP"
    L2 = "L2"


class IndexType(StrEnum):
    AUTOINDEX = "AUTOINDEX"
    HNSW = "HNSW"
    IVF_FLAT = "IVF_FLAT"
    FLAT = "FLAT"


class VectorIndex(ApiModel):
    """The Milvus vector index built on each collection."""

    metric_type: MetricType = Field(
        MetricType.COSINE, description="Similarity metric: COSINE, IP (inner product) or L2."
    )
    index_type: IndexType = Field(
        IndexType.AUTOINDEX, description="Milvus index type: AUTOINDEX, HNSW, IVF_FLAT or FLAT."
    )
    params: dict[str, Any] | None = Field(
        None,
        description="Index build parameters passed to Milvus unchanged, e.g. {M: 16, "
        "efConstruction: 200} for HNSW.",
    )


class Serving(ApiModel):
    """How the active collection is served."""

    replicas: int = Field(
        1,
        ge=1,
        le=64,
        description="In-memory replicas Milvus loads the active collection with.",
    )


class Validation(ApiModel):
    """Gates a candidate collection must pass before the alias is swapped to it."""

    cel_rules = (
        CelRule(
            rule="!has(self.minRecallAtK) || (has(self.sampleQueries) && size(self.sampleQueries) > 0)",
            message="validation.minRecallAtK needs validation.sampleQueries to measure recall on",
            check=lambda v: v.min_recall_at_k is None or bool(v.sample_queries),
            field_path=".minRecallAtK",
        ),
    )

    min_document_ratio: float = Field(
        0.99,
        ge=0,
        le=1,
        description="Smallest share of the active collection's documents the candidate must hold, "
        "e.g. 0.99.",
    )
    sample_queries: list[Text] | None = Field(
        None,
        max_length=100,
        description="Queries run against both collections to measure recall.",
    )
    top_k: int = Field(10, ge=1, le=1000, description="k of recall@k.")
    min_recall_at_k: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Smallest mean overlap between the candidate's and the active collection's "
        "top-k documents over sampleQueries; not checked when omitted.",
    )


class Retention(ApiModel):
    """What happens to the previous collection after a swap."""

    keep_previous: bool = Field(
        True,
        description="Keep the previous collection after a swap so a rollback is instant; dropped "
        "right after the swap when false.",
    )
    retire_after_seconds: int | None = Field(
        None,
        ge=0,
        description="Seconds after a swap before the kept previous collection is dropped; kept "
        "until the next swap when omitted.",
    )


class EmbeddingIndexSpec(ApiModel):
    """Desired state of an EmbeddingIndex: the served alias, the model, and how collections are
    built and swapped."""

    milvus: MilvusConnection = Field(description="Milvus instance holding the collections.")
    alias: MilvusName = Field(
        description="Milvus alias applications query. It always points at the active collection; "
        "changing the model or chunking builds a candidate collection and swaps the alias to it "
        "once it passes validation."
    )
    model: EmbeddingModel = Field(description="Embedding model the collections are built with.")
    chunking: Chunking = Field(Chunking(), description="How documents are split into chunks.")
    index: VectorIndex = Field(VectorIndex(), description="Vector index built on each collection.")
    serving: Serving = Field(Serving(), description="How the active collection is served.")
    validation: Validation = Field(
        Validation(), description="Gates a candidate collection passes before the swap."
    )
    retention: Retention = Field(Retention(), description="What happens to replaced collections.")


class IndexPhase(StrEnum):
    PENDING = "Pending"
    BACKFILLING = "Backfilling"
    CATCHING_UP = "CatchingUp"
    VALIDATING = "Validating"
    SWAPPING = "Swapping"
    READY = "Ready"
    ROLLING_BACK = "RollingBack"
    FAILED = "Failed"


class EmbeddingIndexStatus(ObservedStatus):
    """Observed state of an EmbeddingIndex, written by the operator."""

    phase: IndexPhase | None = Field(
        None,
        description="Pending, Backfilling, CatchingUp, Validating, Swapping, Ready, RollingBack or "
        "Failed.",
    )
    active_collection: MilvusName | None = Field(
        None, description="Collection the alias points at."
    )
    candidate_collection: MilvusName | None = Field(
        None, description="Collection being built for the next swap; unset when none."
    )
    previous_collection: MilvusName | None = Field(
        None, description="Collection the alias pointed at before the last swap, kept for rollback."
    )
    active_model: str | None = Field(
        None, max_length=1024, description="Model (name@revision) of the active collection."
    )


class EmbeddingIndex(CustomResource):
    """EmbeddingIndex manages a served Milvus alias, and re-embeds blue-green into a new collection
    when the model or chunking changes."""

    crd = CrdNames(
        kind="EmbeddingIndex",
        plural="embeddingindexes",
        short_names=("ei",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase", "string", "Phase of the index."),
            PrinterColumn("Alias", ".spec.alias", "string", "Served Milvus alias."),
            PrinterColumn("Active", ".status.activeCollection", "string", "Collection served."),
            PrinterColumn("Candidate", ".status.candidateCollection", "string", "Collection built."),
            PrinterColumn("Model", ".spec.model.name", "string", "Embedding model.", 1),
            AGE,
        ),
    )

    kind: Literal["EmbeddingIndex"] = Field("EmbeddingIndex", description=KIND_DESCRIPTION)
    spec: EmbeddingIndexSpec = Field(description="Desired state of the EmbeddingIndex.")
    status: EmbeddingIndexStatus = Field(
        default_factory=EmbeddingIndexStatus, description="Observed state, written by the operator."
    )


RESOURCES: tuple[type[CustomResource], ...] = (IngestionJob, StreamPipeline, EmbeddingIndex)
