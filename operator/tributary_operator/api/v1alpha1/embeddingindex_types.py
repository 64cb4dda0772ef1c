"""EmbeddingIndex: the served Milvus alias and its blue-green lifecycle."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints
from tributary_workers.contract import defaults as shared

from tributary_operator.api.v1alpha1.schema import (
    AGE,
    KIND_DESCRIPTION,
    ApiModel,
    CelRule,
    Chunking,
    CrdNames,
    CustomResource,
    EmbeddingModel,
    MilvusName,
    ObservedStatus,
    PrinterColumn,
    RedisSecretRef,
    SecretRef,
    Text,
    Uri,
    name_fits,
)


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
        MetricType(shared.METRIC_TYPE), description="Similarity metric: COSINE, IP (inner product) or L2."
    )
    index_type: IndexType = Field(
        IndexType(shared.INDEX_TYPE), description="Milvus index type: AUTOINDEX, HNSW, IVF_FLAT or FLAT."
    )
    params: dict[str, Any] | None = Field(
        None,
        description="Index build parameters passed to Milvus unchanged, e.g. {M: 16, "
        "efConstruction: 200} for HNSW.",
    )


class Serving(ApiModel):
    """How the active collection is served."""

    replicas: int = Field(
        shared.REPLICAS,
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
        shared.MIN_DOCUMENT_RATIO,
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
    top_k: int = Field(shared.TOP_K, ge=1, le=1000, description="k of recall@k.")
    min_self_recall: float = Field(
        shared.MIN_SELF_RECALL,
        ge=0,
        le=1,
        description="Smallest share of sampled chunks of the candidate that, queried by their own "
        "text, find their own document in the candidate's top-k.",
    )
    sample_size: int = Field(
        shared.SAMPLE_SIZE, ge=1, le=1000, description="Chunks sampled for the self-retrieval gate."
    )
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


class IndexLedger(ApiModel):
    """The version ledger of the index's collections, in Redis."""

    redis_secret_ref: RedisSecretRef = Field(
        description="Secret key holding the URL of the Redis that keeps the ledgers of the index's "
        "collections: the same Redis its StreamPipelines use. A re-embedding needs it: the backfill "
        "is fenced by the candidate's ledger, and the catch-up compares the two ledgers there."
    )


class Reembedding(ApiModel):
    """How a candidate collection is built when the model, chunking or index changes."""

    parallelism: int = Field(
        shared.BACKFILL_SHARDS,
        ge=1,
        le=64,
        description="Shards (pods) of the backfill Indexed Job that re-embeds the active collection "
        "into the candidate.",
    )


class DriftCheck(ApiModel):
    """A periodic check of the active collection, shown as status.drift and condition Drifted."""

    interval_seconds: int = Field(
        3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Seconds between checks. Each runs a Job (tributary-index-admin drift) that counts "
        "rows without a live ledger record (orphans) and rows of another model than the collection "
        "records (foreign).",
    )


class EmbeddingIndexSpec(ApiModel):
    """Desired state of an EmbeddingIndex: the served alias, the model, and how collections are
    built and swapped."""

    cel_rules = (
        CelRule(
            rule="!has(self.drift) || has(self.ledger)",
            message="drift needs spec.ledger: orphans are rows the shared ledger does not fence",
            check=lambda s: s.drift is None or s.ledger is not None,
            field_path=".drift",
        ),
    )

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
    ledger: IndexLedger | None = Field(
        None,
        description="Shared version ledger (Redis) of the index's collections. Without it a change "
        "of the model, chunking or index is not re-embedded: condition ReembedPending says so.",
    )
    reembedding: Reembedding = Field(
        Reembedding(), description="How a candidate collection is backfilled."
    )
    drift: DriftCheck | None = Field(
        None, description="Check the active collection for drift periodically (off when omitted)."
    )


class CollectionSpec(ApiModel):
    """What a collection was built with: the spec's model, chunking and index at the time."""

    model: EmbeddingModel = Field(description="Embedding model of the collection's vectors.")
    chunking: Chunking = Field(Chunking(), description="How its documents were chunked.")
    index: VectorIndex = Field(VectorIndex(), description="Its vector index.")


class ReembedProgress(ApiModel):
    """Progress of the running re-embedding."""

    documents_done: int | None = Field(None, ge=0, description="Documents the candidate holds so far.")
    documents_total: int | None = Field(None, ge=0, description="Live documents of the active collection.")
    backlog: int | None = Field(
        None, ge=0, description="Documents the last catch-up pass found behind in the candidate."
    )


class IndexPhase(StrEnum):
    PENDING = "Pending"
    BACKFILLING = "Backfilling"
    CATCHING_UP = "CatchingUp"
    VALIDATING = "Validating"
    SWAPPING = "Swapping"
    READY = "Ready"
    ROLLING_BACK = "RollingBack"
    FAILED = "Failed"


class DriftStatus(ApiModel):
    """What the last drift check of the active collection found."""

    checked_at: datetime | None = Field(None, description="When the last check finished.")
    collection: MilvusName | None = Field(None, description="The collection checked.")
    documents: int | None = Field(None, ge=0, description="Documents with rows in it.")
    orphans: int | None = Field(None, ge=0, description="Documents whose rows no live ledger record fences.")
    foreign: int | None = Field(None, ge=0, description="Documents with rows of another model than it records.")


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
        None,
        max_length=1024,
        description="The model id the active collection records: the bundled model's name, or a local "
        "model's <folder>@<digest of its files>; with +onnx-int8 when quantized.",
    )
    active_spec_hash: str | None = Field(
        None,
        max_length=64,
        description="Hash of the spec's essence (Milvus, alias, model, chunking, index) the active "
        "collection was provisioned or adopted for; a spec whose hash differs needs a re-embedding.",
    )


    active_spec: CollectionSpec | None = Field(
        None, description="Model, chunking and index the active collection was built with."
    )
    candidate_spec_hash: str | None = Field(
        None, max_length=64, description="activeSpecHash the candidate collection is built for."
    )
    previous_spec: CollectionSpec | None = Field(
        None, description="Model, chunking and index of the previous collection."
    )
    previous_spec_hash: str | None = Field(
        None, max_length=64, description="activeSpecHash of the previous collection: a spec reverted "
        "to it rolls back to that collection without a backfill."
    )
    retiring: bool | None = Field(
        None, description="The previous collection is being dropped: StreamPipelines stop writing to it first."
    )
    swapped_at: datetime | None = Field(None, description="When the alias last moved to another collection.")
    progress: ReembedProgress | None = Field(None, description="Progress of the running re-embedding.")
    drift: DriftStatus | None = Field(None, description="What the last drift check found (spec.drift).")


class EmbeddingIndex(CustomResource):
    """EmbeddingIndex manages a served Milvus alias, and re-embeds blue-green into a new collection
    when the model or chunking changes."""

    cel_rules = (name_fits(63, "it labels the index's children"),)

    crd = CrdNames(
        kind="EmbeddingIndex",
        plural="embeddingindexes",
        short_names=("ei",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase", "string", "Phase of the index."),
            PrinterColumn("Alias", ".spec.alias", "string", "Served Milvus alias."),
            PrinterColumn("Active", ".status.activeCollection", "string", "Collection served."),
            PrinterColumn("Candidate", ".status.candidateCollection", "string", "Collection built."),
            PrinterColumn("Done", ".status.progress.documentsDone", "integer", "Documents re-embedded."),
            PrinterColumn("Previous", ".status.previousCollection", "string", "Collection kept for rollback.", 1),
            PrinterColumn("Model", ".spec.model.name", "string", "Embedding model.", 1),
            AGE,
        ),
    )

    kind: Literal["EmbeddingIndex"] = Field("EmbeddingIndex", description=KIND_DESCRIPTION)
    spec: EmbeddingIndexSpec = Field(description="Desired state of the EmbeddingIndex.")
    status: EmbeddingIndexStatus = Field(
        default_factory=EmbeddingIndexStatus, description="Observed state, written by the operator."
    )
