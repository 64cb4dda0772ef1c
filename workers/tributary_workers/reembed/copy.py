"""The two sides of a re-embedding, and the one way a document goes from the active to the candidate.

    ReembedConfig  the settings of the backfill and catch-up steps
    Reembedding    the active collection (its rows and ledger: read only) and the candidate
                   (written through a DocumentIndexer with the candidate's model, fenced by the
                   candidate's own ledger namespace, created in bulk-load mode: validate builds
                   the index later)
    copy()         a live document's stored chunk texts, re-embedded as they are, and its parsed
                   text (the active's text store) copied to the candidate's, so a later re-chunk
                   of the candidate works too

When the chunking changed (``rechunk``), stored chunks can't be reused: the document's parsed text
is read from the active's text store (pipeline.texts) at its live version and content hash, and
goes through the candidate's own chunker and embedder as a fresh write would (the rows' content
hash kept, so the ledgers decide alike). A document whose text is not stored (a collection
written before the store existed) fails with RECHUNK_UNAVAILABLE, before any ledger decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tributary_workers.contract import defaults
from tributary_workers.documents import Chunk, Document, DocumentError
from tributary_workers.errors import PermanentError
from tributary_workers.ledger import LedgerRecord, Outcome, open_ledger
from tributary_workers.pipeline.chunker import Chunker
from tributary_workers.pipeline.embedder import Embedder
from tributary_workers.pipeline.indexer import (
    DocResult,
    DocumentIndexer,
    PreparedDoc,
    Status,
)
from tributary_workers.pipeline.settings import PipelineSettings
from tributary_workers.pipeline.texts import TextStore
from tributary_workers.pipeline.writer import (
    MilvusUnavailableError,
    MilvusWriter,
    WriterConfig,
    open_client,
)
from tributary_workers.reembed.source import LiveDocument

RECHUNK_UNAVAILABLE = "chunking changed and the collection stores no parsed text: re-ingest from the source"
CHUNKS_PER_WRITE = 512  # chunks embedded and written together: bounds the vectors held at once


class ActiveCollectionNotFoundError(PermanentError, LookupError):
    """The collection to copy from does not exist."""


class LedgerUnavailableError(RuntimeError):
    """Redis does not answer: fatal for this run, retried by the Job."""


class RedisLedgerRequiredError(PermanentError, ValueError):
    """The steps compare ledgers and read repair sets, both in Redis."""


@dataclass
class ReembedConfig(PipelineSettings):
    active_collection: str
    collection: str  # the candidate
    milvus_uri: str
    ledger_url: str  # redis://...: both namespaces, and the repair sets
    job_id: str = "local"  # names the bulk load and the checkpoints
    index: str | None = None  # the routing index whose repair set catch-up drains
    shard_index: int = 0
    shard_count: int = 1
    checkpoint_url: str | None = None
    rechunk: bool = False
    embed_batch_size: int = defaults.BATCH_EMBED_BATCH_SIZE
    max_passes: int = 5

    def __post_init__(self):
        if not 0 <= self.shard_index < self.shard_count:
            raise PermanentError(f"shard index {self.shard_index} is not in [0, {self.shard_count})")
        if self.active_collection == self.collection:
            raise PermanentError(f"the candidate collection {self.collection!r} is the active one")
        if not self.ledger_url.startswith(("redis://", "rediss://", "unix://")):
            scheme = self.ledger_url.partition("://")[0] if "://" in self.ledger_url else "a file path"
            raise RedisLedgerRequiredError(f"re-embedding needs a Redis ledger (redis://...), got {scheme}")


def copy_version(doc: LiveDocument, record: LedgerRecord | None) -> int:
    """The version a document is written at in the candidate: the active's fence, so the candidate
    refuses exactly what the active refuses (a fence moved by an unchanged newer version included)."""
    return max(doc.version, record.fence) if record is not None else doc.version


class Reembedding:
    def __init__(self, config: ReembedConfig):
        self.config = config
        self.embedder = Embedder(config.embedder_config(config.embed_batch_size))
        self.active_client = None
        self.active_texts: TextStore | None = None
        self.active_ledger = None
        self.ledger = None  # the candidate's
        self.writer: MilvusWriter | None = None
        self.indexer: DocumentIndexer | None = None
        self.chunker: Chunker | None = None

    def warm_up(self, writer_id: str) -> None:
        cfg = self.config
        # Unreachable Redis or Milvus fails first, before the model loads.
        self.active_ledger = open_ledger(cfg.ledger_url, cfg.active_collection)
        self.ledger = open_ledger(cfg.ledger_url, cfg.collection)
        try:
            self.ledger.client.ping()
        except Exception as exc:  # redis' ConnectionError / TimeoutError; their text names host and port only
            raise LedgerUnavailableError(f"cannot reach the ledger's Redis: {exc}") from exc
        self.active_client = open_client(cfg.milvus_uri, db_name=cfg.db_name)
        try:
            exists = self.active_client.has_collection(cfg.active_collection)
        except Exception as exc:
            raise MilvusUnavailableError(f"cannot reach Milvus at {cfg.milvus_uri}: {exc}") from exc
        if not exists:
            raise ActiveCollectionNotFoundError(f"active collection {cfg.active_collection!r} does not exist")
        self.active_texts = TextStore(WriterConfig(uri=cfg.milvus_uri, collection=cfg.active_collection, model_id="",
                                                   dimension=0, db_name=cfg.db_name), self.active_client)
        self.embedder.warm_up()
        self.chunker = Chunker.for_model_path(self.embedder.model_path, cfg.chunking, self.embedder.max_seq_length)
        # Streamed events may reach the candidate too (routing): a non-empty one is expected.
        self.writer = MilvusWriter(cfg.writer_config(cfg.milvus_uri, cfg.collection, self.embedder, bulk_load=True,
                                                     bulk_load_run=cfg.job_id, bulk_load_requires_empty=False))
        self.writer.warm_up()
        self.indexer = DocumentIndexer(self.chunker, self.embedder, self.writer, self.ledger, writer_id)

    def active_records(self, keep: Callable[[str], bool] = lambda doc_id: True) -> dict[str, LedgerRecord]:
        return {doc_id: record for doc_id, record in self.active_ledger.records() if keep(doc_id)}

    def chunks_of(self, doc: LiveDocument) -> Callable[[Document], list[Chunk]]:
        """How the candidate gets a document's chunks: its stored ones, unless the chunking changed."""
        def make(document: Document) -> list[Chunk]:
            chunks = doc.chunks_at(document.version, self.chunker.count_tokens)
            for chunk in chunks:
                if chunk.token_count > self.chunker.token_budget:
                    raise DocumentError(
                        f"chunk {chunk.chunk_index} has {chunk.token_count} tokens, more than the candidate "
                        f"model reads ({self.chunker.token_budget}): the chunking must change")
            return chunks
        return make

    def copy(self, docs: Sequence[LiveDocument], versions: Mapping[str, int]) -> list[DocResult]:
        """Decide, embed and write each document at versions[doc_id] (else its rows' version)."""
        results: list[DocResult] = []
        group: list[PreparedDoc] = []
        texts = self.texts_of(docs)
        for doc in docs:
            version = versions.get(doc.doc_id, doc.version)
            text = texts.get(doc.doc_id)
            if self.config.rechunk:
                if text is None:
                    results.append(DocResult(doc.doc_id, version, Status.FAILED, reason=RECHUNK_UNAVAILABLE))
                    continue
                document = Document(doc.doc_id, version, text, dict(doc.metadata))
                outcome = self.indexer.prepare_chunks(document, doc.content_hash, self.chunker.run, text)
            else:
                outcome = self.indexer.prepare_chunks(doc.as_document(version), doc.content_hash,
                                                      self.chunks_of(doc), text)
            if isinstance(outcome, DocResult):
                results.append(outcome)
                continue
            group.append(outcome)
            if sum(len(p.chunks) for p in group) >= CHUNKS_PER_WRITE:
                results.extend(self._write(group))
                group = []
        results.extend(self._write(group))
        return results

    def texts_of(self, docs: Sequence[LiveDocument]) -> dict[str, str]:
        """The active's stored parsed texts of docs at their rows' version and content hash (those
        stored whole); none read when neither re-chunking nor storing texts in the candidate."""
        if not self.config.rechunk and self.writer.texts is None:
            return {}
        return self.active_texts.read_many({doc.doc_id: (doc.version, doc.content_hash) for doc in docs})

    def _write(self, group: list[PreparedDoc]) -> list[DocResult]:
        if not group:
            return []
        self.indexer.embed(group)
        return self.indexer.write(group)

    def delete(self, doc_id: str, version: int) -> DocResult:
        return self.indexer.delete(doc_id, version)

    def seed_tombstones(self, tombstones: Mapping[str, int]) -> int:
        """The active's tombstones copied as tombstones, so a late older upsert can't resurrect a
        deleted document in the candidate; rows a streamed write left are removed in few requests.
        Returns how many the candidate now holds (seeded now or before)."""
        held, cleanup = 0, []
        for doc_id, version in sorted(tombstones.items()):
            outcome = self.ledger.tombstone(doc_id, version, self.indexer.writer_id).outcome
            if outcome in (Outcome.COMMITTED, Outcome.ALREADY):
                held += 1
                cleanup.append(MilvusWriter.up_to(doc_id, version))
        self.writer.delete_where(cleanup)
        return held

    def close(self) -> None:
        for resource in (self.writer, self.ledger, self.active_ledger, self.active_client):
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # closing is best effort
                    pass


def tally(results: Sequence[DocResult]) -> dict[str, int]:
    """written / unchanged / superseded / failed / deleted of a list of results, and without_text:
    the failed ones whose parsed text a re-chunk found missing."""
    counts = {"written": 0, "unchanged": 0, "superseded": 0, "failed": 0, "deleted": 0, "without_text": 0}
    names = {Status.SUCCEEDED: "written", Status.UNCHANGED: "unchanged", Status.SUPERSEDED: "superseded",
             Status.FAILED: "failed", Status.DELETED: "deleted"}
    for result in results:
        counts[names[result.status]] += 1
        counts["without_text"] += result.reason == RECHUNK_UNAVAILABLE
    return counts
