"""Version-fenced indexing of parsed documents: ledger decide -> chunk -> embed -> write -> commit.

Both workers use this: the batch worker feeds it documents from a source, the streaming worker
(later) from queue events. Three steps, so callers can overlap them across threads:

    prepare(doc)        ledger decision + chunking; cheap, thread-safe
    embed(prepared)     one batched model call for all chunks of many documents
    write(embedded)     upsert rows (and the parsed texts, into the writer's text store), commit
                        each document in the ledger, remove superseded rows and texts (older
                        versions, and this version's rows past its last chunk)

See ledger.py for why this order keeps every document at its newest version.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tributary_workers import metrics
from tributary_workers.documents import Chunk, Document, DocumentError
from tributary_workers.ledger import Outcome, VersionLedger
from tributary_workers.pipeline.chunker import Chunker
from tributary_workers.pipeline.embedder import Embedder
from tributary_workers.pipeline.writer import (
    DOC_ID_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    MilvusWriter,
)
from tributary_workers.pipeline.texts import TextStore


class Status(str, enum.Enum):
    SUCCEEDED = "succeeded"
    UNCHANGED = "unchanged"  # the index already holds this content at this or a newer version
    SUPERSEDED = "superseded"  # a newer version (or a newer delete) is already in the index
    FAILED = "failed"
    DELETED = "deleted"


@dataclass(frozen=True)
class DocResult:
    doc_id: str
    version: int
    status: Status
    chunks_written: int = 0
    reason: str = ""


@dataclass
class PreparedDoc:
    document: Document
    content_hash: str
    chunks: list[Chunk]
    vectors: np.ndarray | None = None
    text: str | None = None  # the parsed text to store with the rows; None: none to store


@dataclass
class IndexerContext:
    """Who is writing: recorded in the ledger so a resumed run recognises its own commits."""

    writer_id: str
    results: list[DocResult] = field(default_factory=list)


class DocumentIndexer:
    def __init__(self, chunker: Chunker, embedder: Embedder, writer: MilvusWriter, ledger: VersionLedger,
                 writer_id: str):
        self.chunker = chunker
        self.embedder = embedder
        self.writer = writer
        self.ledger = ledger
        self.writer_id = writer_id

    def prepare(self, document: Document) -> PreparedDoc | DocResult:
        """Decide whether the document needs embedding; chunk it if so. Never raises per document."""
        return self.prepare_chunks(document, document.content_hash, self.chunker.run, document.text)

    def prepare_chunks(self, document: Document, content_hash: str,
                       make_chunks: Callable[[Document], list[Chunk]], text: str | None) -> PreparedDoc | DocResult:
        """prepare() with the chunks from elsewhere (a re-embedding copies a collection's stored chunks)
        and the parsed text to store (None: not known, none stored)."""
        try:
            if len(document.doc_id.encode()) > DOC_ID_MAX_LENGTH:
                raise DocumentError(f"doc_id is longer than {DOC_ID_MAX_LENGTH} bytes")
            decision = self.ledger.decide(document.doc_id, document.version, content_hash)
            if decision.outcome is Outcome.UNCHANGED:
                record = decision.record
                if record is not None and record.writer == self.writer_id:
                    # Committed by this same run before a crash: it counts as this run's success.
                    return DocResult(document.doc_id, document.version, Status.SUCCEEDED, record.chunk_count)
                return DocResult(document.doc_id, document.version, Status.UNCHANGED)
            if decision.outcome is Outcome.STALE:
                return DocResult(document.doc_id, document.version, Status.SUPERSEDED,
                                 reason=f"index holds version {decision.record.fence}")
            chunks = make_chunks(document)
            for chunk in chunks:
                if len(chunk.text.encode()) > TEXT_MAX_LENGTH:
                    raise DocumentError(
                        f"chunk {chunk.chunk_index} is over {TEXT_MAX_LENGTH} bytes of text in "
                        f"{chunk.token_count} tokens (very long unsplittable words?)"
                    )
            return PreparedDoc(document, content_hash, chunks, text=text)
        except DocumentError as exc:
            return DocResult(document.doc_id, document.version, Status.FAILED, reason=str(exc))

    def embed(self, prepared: Sequence[PreparedDoc]) -> None:
        """Embed the chunks of many documents in one batched call (never one call per document)."""
        texts = [chunk.text for doc in prepared for chunk in doc.chunks]
        started = time.perf_counter()
        vectors = self.embedder.run(texts)
        metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
        offset = 0
        for doc in prepared:
            doc.vectors = vectors[offset:offset + len(doc.chunks)]
            offset += len(doc.chunks)

    def write(self, prepared: Sequence[PreparedDoc]) -> list[DocResult]:
        """Upsert, then commit each document in the ledger and remove rows the commit superseded."""
        if not prepared:
            return []
        started = time.perf_counter()
        rows = [
            row
            for doc in prepared
            for row in self.writer.rows(doc.chunks, doc.vectors, doc.content_hash, doc.document.metadata)
        ]
        self.writer.run(rows)
        texts = self.writer.texts
        # Before the commit, like the rows: a committed version always has its text (one more
        # upsert per batch; the text's bytes once more, next to its chunks').
        parts = texts.write_many((doc.document.doc_id, doc.document.version, doc.content_hash, doc.text)
                                 for doc in prepared if doc.text is not None) if texts is not None else {}

        results: list[DocResult] = []
        cleanup: list[str] = []
        text_cleanup: list[str] = []  # the same clauses over the text store's fields
        for doc in prepared:
            d = doc.document
            decision = self.ledger.commit(d.doc_id, d.version, doc.content_hash, self.writer_id, len(doc.chunks))
            if decision.outcome in (Outcome.COMMITTED, Outcome.ALREADY):
                cleanup.append(MilvusWriter.older_than(d.doc_id, d.version))
                # Another chunking of this very version (a crash between its upsert and commit, then
                # a restart with other settings) may have left rows past our last chunk.
                cleanup.append(MilvusWriter.beyond_chunks(d.doc_id, d.version, len(doc.chunks)))
                text_cleanup.append(MilvusWriter.older_than(d.doc_id, d.version))
                if (d.doc_id, d.version) in parts:
                    text_cleanup.append(TextStore.beyond_parts(d.doc_id, d.version, parts[(d.doc_id, d.version)]))
                results.append(DocResult(d.doc_id, d.version, Status.SUCCEEDED, len(doc.chunks)))
            else:
                # A newer version won while we embedded: our rows must go, unless ours are live.
                if decision.record is None or decision.record.data_version != d.version:
                    cleanup.append(MilvusWriter.at_version(d.doc_id, d.version))
                    text_cleanup.append(MilvusWriter.at_version(d.doc_id, d.version))
                results.append(DocResult(d.doc_id, d.version, Status.SUPERSEDED,
                                         reason=f"index holds version {decision.record.fence}"))
        self.writer.delete_where(cleanup)
        if texts is not None:
            texts.delete_where(text_cleanup)
        metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
        return results

    def index(self, documents: Sequence[Document]) -> list[DocResult]:
        """All three steps for a small batch, in order (the streaming path)."""
        results: list[DocResult] = []
        prepared: list[PreparedDoc] = []
        for document in documents:
            outcome = self.prepare(document)
            (prepared if isinstance(outcome, PreparedDoc) else results).append(outcome)
        if prepared:
            self.embed(prepared)
            results.extend(self.write(prepared))
        return results

    def delete(self, doc_id: str, version: int) -> DocResult:
        """A versioned delete: a tombstone in the ledger, then the document's rows up to it."""
        decision = self.ledger.tombstone(doc_id, version, self.writer_id)
        if decision.outcome in (Outcome.COMMITTED, Outcome.ALREADY):
            self.writer.delete_where([MilvusWriter.up_to(doc_id, version)])
            if self.writer.texts is not None:
                self.writer.texts.delete_up_to(doc_id, version)
            return DocResult(doc_id, version, Status.DELETED)
        return DocResult(doc_id, version, Status.SUPERSEDED, reason=f"index holds version {decision.record.fence}")
