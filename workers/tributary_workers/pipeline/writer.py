"""Milvus writes through pymilvus' MilvusClient: one code path for a Milvus Lite file, a
``milvus-lite server`` (gRPC) and a real Milvus.

Rows are upserted (idempotent: a retried or resumed write never duplicates a primary key) in
requests bounded by row count and payload size. The collection records the embedding model and
dimension in its description, so a write with another model is refused instead of mixing spaces.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tributary_workers.contract import env as ENV
from tributary_workers.documents import Chunk
from tributary_workers.errors import PermanentError

# Bounds for one request: well under Milvus' 64 MiB gRPC message limit.
MAX_ROWS_PER_REQUEST = 512
MAX_BYTES_PER_REQUEST = 8 * 1024 * 1024
CREATE_RACE_WAIT_S = 10.0  # how long a writer that lost the race to create a collection waits for it
# Milvus VARCHAR limits are in bytes.
DOC_ID_MAX_LENGTH = 2048
TEXT_MAX_LENGTH = 65535
OUTPUT_FIELDS = ["doc_id", "chunk_index", "version", "text", "metadata"]
# pymilvus pings idle connections every 10 s; a gRPC server with default settings (milvus-lite
# server, proxies in between) answers that with GOAWAY "too many pings" and the next call fails.
# Keepalive pings only while calls are in flight are accepted everywhere; an idle connection that
# died is noticed, and reconnected, on its next call.
GRPC_OPTIONS = {"grpc.keepalive_permit_without_calls": False, "grpc.keepalive_time_ms": 60_000}


class MilvusUnavailableError(RuntimeError):
    """Milvus cannot be reached or refuses the collection; fatal for a run, one line."""


class IncompatibleCollectionError(PermanentError, RuntimeError):
    """The collection holds another model's embeddings, or vectors of another dimension."""


class CollectionNotFoundError(LookupError):
    """A reader asked for a collection that does not exist."""


class AliasTargetError(PermanentError, ValueError):
    """A writer refusing aliases was given one: after a swap it would write into another model's collection."""


class CollectionNotEmptyError(PermanentError, RuntimeError):
    """Bulk-load mode asked for on a collection that already holds data."""


@dataclass(frozen=True)
class WriterConfig:
    uri: str
    collection: str
    model_id: str
    dimension: int
    token: str | None = None  # from a Secret (env TRIBUTARY_MILVUS_TOKEN), never a flag
    db_name: str | None = None
    metric_type: str = "COSINE"
    index_type: str = "AUTOINDEX"
    index_params: dict[str, Any] = field(default_factory=dict)
    replicas: int = 1
    bulk_load: bool = False  # defer index building and loading to finish_bulk_load()
    # Names the bulk load, so the shards of one run share the new collection while any other
    # writer in bulk-load mode is still refused once it holds data.
    bulk_load_run: str = ""
    # False: bulk load into a collection other writers may fill meanwhile (a re-embedding's
    # candidate, which streamed events reach too): no empty-collection check.
    bulk_load_requires_empty: bool = True
    create_if_missing: bool = True  # False for readers: a missing collection is an error
    refuse_alias: bool = False  # the name must be a collection's own, not an alias (routing targets)
    # Keep each written document's parsed text in the companion text store (pipeline.texts), so a
    # re-embedding can re-chunk it. Default on: a collection made before the store existed gets its
    # companion from its next write that stores a text, whatever create_if_missing says (the chunk
    # collection exists by then; readers never write, so never create it).
    store_texts: bool = True
    max_rows_per_request: int = MAX_ROWS_PER_REQUEST
    max_bytes_per_request: int = MAX_BYTES_PER_REQUEST
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk_index: int
    score: float
    text: str
    version: int
    metadata: dict[str, Any]


def milvus_literal(value: str) -> str:
    """A Milvus expression string literal (JSON escaping is accepted by Milvus' parser)."""
    return json.dumps(value, ensure_ascii=False)


def open_client(uri: str, token: str | None = None, db_name: str | None = None, timeout_s: float = 30.0):
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    token = token if token is not None else os.environ.get(ENV.MILVUS_TOKEN, "")
    kwargs: dict[str, Any] = {"uri": uri, "token": token, "timeout": timeout_s, "grpc_options": GRPC_OPTIONS}
    if db_name:
        kwargs["db_name"] = db_name
    try:
        return MilvusClient(**kwargs)
    except MilvusException as exc:
        raise MilvusUnavailableError(f"cannot connect to Milvus at {uri}: {exc.message}") from exc
    except Exception as exc:  # grpc/OS errors surface with many types
        raise MilvusUnavailableError(f"cannot connect to Milvus at {uri}: {exc}") from exc


def _missing(exc: Exception) -> bool:
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text or "not exist" in text


def aliased_collection(client: Any, name: str) -> str | None:
    """The collection ``name`` is an alias of; None when no alias has that name."""
    try:
        if name in client.list_collections():  # a collection's own name is never an alias too
            return None
    except Exception as exc:
        raise MilvusUnavailableError(f"cannot list collections: {' '.join(str(exc).split())}") from exc
    try:
        collection = client.describe_alias(name).get("collection_name")
    except Exception as exc:  # pymilvus raises MilvusException for a missing alias
        if _missing(exc):
            return None
        raise MilvusUnavailableError(f"cannot describe alias {name}: {' '.join(str(exc).split())}") from exc
    return collection or None


def bounded_requests(rows: Sequence[dict], max_rows: int, max_bytes: int) -> Iterator[list[dict]]:
    """Split rows into requests of at most max_rows rows and about max_bytes bytes each."""
    batch: list[dict] = []
    size = 0
    for row in rows:
        row_bytes = len(row["text"].encode()) + len(row["doc_id"]) + 4 * len(row["vector"]) + 256
        if batch and (len(batch) >= max_rows or size + row_bytes > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row_bytes
    if batch:
        yield batch


class MilvusWriter:
    def __init__(self, config: WriterConfig):
        self.config = config
        self.client = None
        self.texts = None  # the TextStore, over the same client, when config.store_texts

    # -- set-up --------------------------------------------------------------------------------

    def warm_up(self) -> None:
        cfg = self.config
        self.client = open_client(cfg.uri, cfg.token, cfg.db_name, cfg.timeout_s)
        try:
            exists = self.client.has_collection(cfg.collection)
        except Exception as exc:
            raise MilvusUnavailableError(f"cannot reach Milvus at {cfg.uri}: {exc}") from exc
        if cfg.refuse_alias and (points_at := aliased_collection(self.client, cfg.collection)):
            raise AliasTargetError(f"{cfg.collection} is an alias (of collection {points_at}), not a collection; "
                                   "name the collection itself")
        if exists:
            self._check_compatible()
            if not cfg.bulk_load:
                self._ensure_loaded()
            sibling_shard = cfg.bulk_load and self._recorded().get("bulk_load_run") == cfg.bulk_load_run
            if cfg.bulk_load and cfg.bulk_load_requires_empty and not sibling_shard and self.row_count() > 0:
                raise CollectionNotEmptyError(
                    f"bulk-load mode needs an empty collection, but {cfg.collection!r} already holds "
                    f"{self.row_count()} rows; use update mode for an existing collection"
                )
        elif cfg.create_if_missing:
            self._create()
        else:
            raise CollectionNotFoundError(f"collection {cfg.collection} does not exist")
        if cfg.store_texts:
            from tributary_workers.pipeline.texts import TextStore  # texts builds on this module

            self.texts = TextStore(cfg, self.client)

    def _properties(self) -> dict[str, str]:
        """What the collection records about itself (collection properties; every Milvus keeps them)."""
        recorded = {"tributary.model_id": self.config.model_id, "tributary.dimension": str(self.config.dimension)}
        if self.config.bulk_load:
            recorded["tributary.bulk_load_run"] = self.config.bulk_load_run
        return recorded

    def _recorded(self) -> dict[str, str]:
        properties = self.client.describe_collection(self.config.collection).get("properties") or {}
        return {key.removeprefix("tributary."): value for key, value in properties.items()
                if key.startswith("tributary.")}

    def _check_compatible(self) -> None:
        info = self.client.describe_collection(self.config.collection)
        recorded = self._recorded()
        model = recorded.get("model_id")
        if model is not None and model != self.config.model_id:
            raise IncompatibleCollectionError(
                f"collection {self.config.collection!r} holds embeddings of model {model!r}; "
                f"refusing to write {self.config.model_id!r} into it (re-embed into a new collection)"
            )
        dims = [f.get("params", {}).get("dim") for f in info.get("fields", []) if f.get("name") == "vector"]
        if dims and dims[0] is not None and int(dims[0]) != self.config.dimension:
            raise IncompatibleCollectionError(
                f"collection {self.config.collection!r} has vectors of dimension {dims[0]}, "
                f"the model produces {self.config.dimension}"
            )

    def _schema(self):
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description="Tributary chunks (see docs/architecture.md)")
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64,
                         description="chunk primary key, derived from (doc_id, version, chunk_index)")
        schema.add_field("doc_id", DataType.VARCHAR, max_length=DOC_ID_MAX_LENGTH)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("version", DataType.INT64)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_LENGTH)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("model_id", DataType.VARCHAR, max_length=256)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.config.dimension)
        return schema

    def _index_params(self):
        params = self.client.prepare_index_params()
        params.add_index(
            field_name="vector",
            index_type=self.config.index_type,
            metric_type=self.config.metric_type,
            params=dict(self.config.index_params),
        )
        params.add_index(field_name="doc_id", index_type="INVERTED")
        return params

    def _create(self) -> None:
        cfg = self.config
        # Bulk load: no index and no load yet, so rows stream in without index maintenance or
        # replicas; finish_bulk_load() builds the index and loads with the configured replicas.
        try:
            self.client.create_collection(cfg.collection, schema=self._schema(), properties=self._properties(),
                                          index_params=None if cfg.bulk_load else self._index_params())
        except Exception:
            # The shards of a run (or several workers) race to create it: the losers use the winner's.
            # A loser can fail before the winner's collection is visible (milvus-lite answers
            # "File exists"): wait for it to appear before giving up.
            if not self._appears(cfg.collection, within_s=CREATE_RACE_WAIT_S):
                raise
            self._check_compatible()
            if not cfg.bulk_load:
                self._ensure_loaded()
            return
        if not cfg.bulk_load:
            self._load()

    def _appears(self, collection: str, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while not self.client.has_collection(collection):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _create_index_if_missing(self) -> None:
        if self.client.list_indexes(self.config.collection):
            return
        try:
            self.client.create_index(self.config.collection, self._index_params())
        except Exception:
            if not self.client.list_indexes(self.config.collection):  # not just a sibling's race
                raise

    def _ensure_loaded(self) -> None:
        # A collection can be released (Milvus Lite releases on restart, an admin may release):
        # searches and delete-by-filter need it loaded.
        state = self.client.get_load_state(self.config.collection).get("state")
        if not str(state).endswith("Loaded"):
            self._create_index_if_missing()
            self._load()

    def _load(self) -> None:
        self.client.load_collection(self.config.collection, replica_number=self.config.replicas)

    def finish_bulk_load(self) -> None:
        """Build the index and load with the configured replicas; the first shard done does it."""
        self._create_index_if_missing()
        self._load()

    # -- writes ----------------------------------------------------------------------------------

    def rows(self, chunks: Sequence[Chunk], vectors: np.ndarray, content_hash: str,
             metadata: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows of one document version."""
        return [
            {
                "pk": chunk.pk,
                "doc_id": chunk.doc_id,
                "chunk_index": chunk.chunk_index,
                "version": chunk.version,
                "content_hash": content_hash,
                "text": chunk.text,
                "metadata": metadata,
                "model_id": self.config.model_id,
                "vector": vector.tolist(),
            }
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]

    def run(self, rows: Sequence[dict[str, Any]]) -> int:
        """Upsert rows in bounded requests; returns the number of rows written."""
        for request in bounded_requests(rows, self.config.max_rows_per_request, self.config.max_bytes_per_request):
            self.client.upsert(self.config.collection, request)
        return len(rows)

    def delete_where(self, clauses: Iterable[str]) -> None:
        """Delete rows matching any clause; clauses are OR-ed a bounded number per request."""
        clauses = list(clauses)
        for start in range(0, len(clauses), 64):
            expression = " or ".join(f"({c})" for c in clauses[start:start + 64])
            self.client.delete(self.config.collection, filter=expression)

    @staticmethod
    def older_than(doc_id: str, version: int) -> str:
        return f"doc_id == {milvus_literal(doc_id)} and version < {int(version)}"

    @staticmethod
    def beyond_chunks(doc_id: str, version: int, chunk_count: int) -> str:
        """Rows of this version past its chunk count: left by another chunking of the same version."""
        return (f"doc_id == {milvus_literal(doc_id)} and version == {int(version)} "
                f"and chunk_index >= {int(chunk_count)}")

    @staticmethod
    def at_version(doc_id: str, version: int) -> str:
        return f"doc_id == {milvus_literal(doc_id)} and version == {int(version)}"

    @staticmethod
    def up_to(doc_id: str, version: int) -> str:
        return f"doc_id == {milvus_literal(doc_id)} and version <= {int(version)}"

    # -- reads -----------------------------------------------------------------------------------

    def row_count(self) -> int:
        """Rows in the collection; works on a collection that is not loaded (bulk load)."""
        return int(self.client.get_collection_stats(self.config.collection)["row_count"])

    def chunks_of(self, doc_id: str) -> list[dict[str, Any]]:
        return self.client.query(
            self.config.collection,
            filter=f"doc_id == {milvus_literal(doc_id)}",
            output_fields=["pk", *OUTPUT_FIELDS],
        )

    def all_pks(self) -> set[str]:
        pks: set[str] = set()
        iterator = self.client.query_iterator(self.config.collection, batch_size=1000, filter="", output_fields=["pk"])
        while batch := iterator.next():
            pks.update(row["pk"] for row in batch)
        iterator.close()
        return pks

    def search(self, vector: np.ndarray, limit: int) -> list[Hit]:
        results = self.client.search(
            self.config.collection,
            data=[vector.tolist()],
            limit=limit,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": self.config.metric_type},
        )
        return [
            Hit(
                doc_id=hit["entity"]["doc_id"],
                chunk_index=int(hit["entity"]["chunk_index"]),
                score=float(hit["distance"]),
                text=hit["entity"]["text"],
                version=int(hit["entity"]["version"]),
                metadata=hit["entity"].get("metadata") or {},
            )
            for hit in results[0]
        ]

    def close(self) -> None:
        self.texts = None  # shares the client
        if self.client is not None:
            self.client.close()
            self.client = None
