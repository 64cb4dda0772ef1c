"""What the validate, swap and retire steps read from Milvus about one collection, and making it servable.

Small wrappers over MilvusClient calls whose answers differ a little between Milvus and
milvus-lite (list_aliases' shape, load states as enums or strings); every step uses these.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from tributary_workers.errors import PermanentError
from tributary_workers.pipeline.collections import existing_alias
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig

ITERATOR_BATCH = 1000


class CollectionMissingError(PermanentError, LookupError):
    """A step was told about a collection that does not exist (a setting no retry fixes)."""


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model_id: str | None  # tributary.model_id, as the writer recorded it
    dimension: int | None  # the vector field's dim


def describe(client: Any, name: str) -> CollectionInfo:
    if not client.has_collection(name):
        raise CollectionMissingError(f"collection {name} does not exist")
    info = client.describe_collection(name)
    dims = [f.get("params", {}).get("dim") for f in info.get("fields", []) if f.get("name") == "vector"]
    return CollectionInfo(name, (info.get("properties") or {}).get("tributary.model_id"),
                          int(dims[0]) if dims and dims[0] is not None else None)


def alias_target(client: Any, alias: str) -> str | None:
    """The collection the alias points at; None when there is no such alias."""
    return existing_alias(client, alias).collection


def aliases_of(client: Any, collection: str) -> list[str]:
    answer = client.list_aliases(collection_name=collection)
    aliases = answer.get("aliases", []) if isinstance(answer, dict) else answer  # pymilvus: a dict
    return sorted(str(a) for a in aliases or ())


def vector_metric(client: Any, collection: str) -> str | None:
    """The metric of the vector field's index; None when it has no index yet."""
    names = client.list_indexes(collection, field_name="vector") or []
    if not names:
        return None
    return str(client.describe_index(collection, names[0]).get("metric_type") or "").upper() or None


def is_loaded(client: Any, collection: str) -> bool:
    return str(client.get_load_state(collection).get("state")).endswith("Loaded")


def index_writer(client: Any, info: CollectionInfo, config: WriterConfig) -> MilvusWriter:
    """A writer over an open client, only for its index building and loading (finish_bulk_load)."""
    from dataclasses import replace

    writer = MilvusWriter(replace(config, collection=info.name, model_id=info.model_id or "",
                                  dimension=info.dimension or 0, create_if_missing=False))
    writer.client = client
    return writer


def ensure_servable(client: Any, info: CollectionInfo, config: WriterConfig) -> bool:
    """Index built and loaded with the configured replicas; True when this call had to load it."""
    if is_loaded(client, info.name) and vector_metric(client, info.name) is not None:
        return False
    index_writer(client, info, config).finish_bulk_load()
    return True


def row_count(client: Any, collection: str) -> int:
    return int(client.get_collection_stats(collection)["row_count"])


@dataclass(frozen=True)
class Scan:
    documents: set[str]  # distinct doc_ids of the live rows
    rows: int
    sample_pks: list[str]  # the sample_size smallest primary keys, ascending


def scan(client: Any, collection: str, sample_size: int = 0) -> Scan:
    """One pass over a loaded collection's (pk, doc_id): its documents, rows and a deterministic
    sample. Primary keys are blake2b hashes, so the smallest ones are a uniform sample that is the
    same on every run, kept in O(sample) memory however large the collection."""
    documents: set[str] = set()
    rows = 0
    smallest: list[str] = []  # the sample_size smallest pks seen so far
    iterator = client.query_iterator(collection, batch_size=ITERATOR_BATCH, filter="",
                                     output_fields=["pk", "doc_id"])
    try:
        while batch := iterator.next():
            rows += len(batch)
            for row in batch:
                documents.add(row["doc_id"])
            if sample_size:
                smallest = heapq.nsmallest(sample_size, smallest + [row["pk"] for row in batch])
    finally:
        iterator.close()
    return Scan(documents, rows, sorted(smallest))
