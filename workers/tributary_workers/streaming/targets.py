"""What a streaming worker writes to: the documents events carry, and the write targets of a batch.

A target is one {collection, model} of the routing record, with its own embedder, chunker, writer
and version-ledger namespace; an upsert event's document is its content parsed in place, or its
uri read through the batch sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tributary_workers.documents import (
    Document,
    DocumentError,
    DocumentRef,
    RawDocument,
)
from tributary_workers.ledger import open_ledger
from tributary_workers.pipeline.indexer import DocResult, DocumentIndexer
from tributary_workers.pipeline.parsers import Parser
from tributary_workers.pipeline.sources import SourceError, open_source
from tributary_workers.pipeline.writer import MilvusWriter
from tributary_workers.streaming.events import Event

if TYPE_CHECKING:
    from tributary_workers.streaming.worker import StreamWorker


# --- documents of events ------------------------------------------------------------------------


class EventDocuments:
    """The Document an upsert event carries: its content parsed in place, or its uri read through
    the same sources and parsers as batch. doc_id and version are always the event's."""

    def __init__(self, parser: Parser):
        self.parser = parser
        self._sources: dict[tuple[str, str], Any] = {}

    def resolve(self, event: Event) -> Document:
        if event.content is not None:
            raw = RawDocument(event.doc_id, "", event.version, event.content.encode(), event.content_type)
        else:
            raw = self._read(event)
        parsed = self.parser.run(raw)
        if parsed.failures:
            raise DocumentError(parsed.failures[0][1])
        if len(parsed.documents) != 1:
            raise DocumentError(f"the content holds {len(parsed.documents)} records; an event carries one document")
        document = parsed.documents[0]
        return Document(event.doc_id, event.version, document.text, {**document.metadata, **event.metadata},
                        document.source_uri)

    def _read(self, event: Event) -> RawDocument:
        uri = event.uri or ""
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        key = (scheme, parts.netloc if scheme in ("http", "https", "s3") else "")
        try:
            source = self._sources.get(key)
            if source is None:
                source = self._sources[key] = open_source(uri)
            raw = source.read(DocumentRef(event.doc_id, uri, event.version))
        except SourceError as exc:
            raise DocumentError(str(exc)) from None
        return replace(raw, doc_id=event.doc_id, version=event.version,
                       content_type=event.content_type or raw.content_type)


# --- write targets ------------------------------------------------------------------------------


class WriteTarget:
    """One {collection, model}: its own embedder, chunker, writer and ledger namespace."""

    def __init__(self, collection: str, model: str | None, worker: StreamWorker):
        self.collection = collection
        self.model = model
        self.worker = worker
        self.indexer: DocumentIndexer | None = None

    @property
    def ready(self) -> bool:
        """Warmed up: embedder loaded, collection reachable (created when missing)."""
        return self.indexer is not None

    def warm_up(self) -> None:
        if self.indexer is not None:
            return
        cfg = self.worker.config
        embedder, chunker = self.worker.model_stages(self.model)
        writer = MilvusWriter(cfg.writer_config(cfg.milvus_uri, self.collection, embedder))
        try:
            writer.warm_up()  # creates the collection when it does not exist
        except BaseException:
            writer.close()
            raise
        ledger = open_ledger(cfg.ledger_url, namespace=self.collection)
        self.indexer = DocumentIndexer(chunker, embedder, writer, ledger, cfg.writer_id)

    def apply(self, upserts: Sequence[Document], deletes: Sequence[tuple[str, int]]) -> list[DocResult]:
        self.warm_up()
        results = self.indexer.index(upserts) if upserts else []
        results += [self.indexer.delete(doc_id, version) for doc_id, version in deletes]
        return results

    def close(self) -> None:
        if self.indexer is not None:
            for resource in (self.indexer.writer, self.indexer.ledger):
                try:
                    resource.close()
                except Exception:  # closing is best effort
                    pass
            self.indexer = None
