"""Where workers write: a Milvus collection with the model, chunking and index settings it needs.

Both an IngestionJob run and a StreamPipeline's workers resolve an indexRef the same way, through
the EmbeddingIndex's active collection (``index_target``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tributary_workers.contract import defaults as shared
from tributary_workers.contract import env as ENV

from tributary_operator.api.v1alpha1 import CollectionSpec, EmbeddingIndex
from tributary_operator.core.pods import env_var


def active_spec(index: EmbeddingIndex) -> CollectionSpec:
    """What the active collection was built with (status.activeSpec); the spec's own for an index
    provisioned before the status recorded it. During a re-embedding the spec already names the
    candidate's model and chunking, never the active's."""
    spec = index.spec
    return index.status.active_spec or CollectionSpec(model=spec.model, chunking=spec.chunking, index=spec.index)

@dataclass(frozen=True)
class ResolvedTarget:
    """Where a run writes, after an indexRef was looked up (or straight from an inline target)."""

    milvus_uri: str
    collection: str
    model: str
    max_tokens: int | None
    overlap_tokens: int
    credentials_secret: str | None = None
    replicas: int = shared.REPLICAS
    metric_type: str = shared.METRIC_TYPE
    index_type: str = shared.INDEX_TYPE
    dimension: int | None = None
    max_sequence_length: int | None = None
    index_params: Mapping[str, Any] | None = None
    database: str | None = None
    backend: str | None = None  # None: the workers' default
    quantize: str | None = None
    ledger_secret: tuple[str, str] | None = None  # (Secret, key) of the index's shared ledger, if any


def optional_target_env(target: ResolvedTarget) -> list[dict[str, Any]]:
    """The target's settings a worker takes only when they are set (its defaults stand otherwise)."""
    env = []
    if target.model != shared.DEFAULT_MODEL_ID:
        env.append(env_var(ENV.MODEL, target.model))
    for name, value in ((ENV.BACKEND, target.backend), (ENV.QUANTIZE, target.quantize),
                        (ENV.MAX_SEQUENCE_LENGTH, target.max_sequence_length), (ENV.DIMENSION, target.dimension),
                        (ENV.MAX_TOKENS, target.max_tokens), (ENV.MILVUS_DATABASE, target.database or None)):
        if value is not None:
            env.append(env_var(name, value))
    if target.index_params:
        env.append(env_var(ENV.INDEX_PARAMS, json.dumps(dict(target.index_params), sort_keys=True)))
    return env


def index_target(index: EmbeddingIndex) -> ResolvedTarget | None:
    """The target an indexRef stands for: the index's active collection; None before it has one."""
    collection = index.status.active_collection
    if not collection:
        return None
    spec, built = index.spec, active_spec(index)
    model, chunking = built.model, built.chunking
    return ResolvedTarget(
        milvus_uri=spec.milvus.uri, collection=collection, model=model.name,
        max_tokens=chunking.max_tokens, overlap_tokens=chunking.overlap_tokens,
        credentials_secret=spec.milvus.credentials_secret_ref.name if spec.milvus.credentials_secret_ref else None,
        replicas=spec.serving.replicas, metric_type=built.index.metric_type.value,
        index_type=built.index.index_type.value, dimension=model.dimension,
        max_sequence_length=model.max_sequence_length, index_params=built.index.params,
        database=spec.milvus.database, backend=model.backend, quantize=model.quantize,
        ledger_secret=(spec.ledger.redis_secret_ref.name, spec.ledger.redis_secret_ref.key) if spec.ledger else None,
    )
