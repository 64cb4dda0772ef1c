"""What a streaming worker writes to: the documents events carry, and the write targets of a batch.

A target is one entry of the routing record (collection, model and its optional settings), with
its own embedder, chunker, writer and version-ledger namespace; an upsert event's document is its
content parsed in place, or its uri read through the batch sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tributary_workers.contract.routing import RoutingError, Target
from tributary_workers.documents import (
    Document,
    DocumentError,
    DocumentRef,
    RawDocument,
)
from tributary_workers.errors import PermanentError, one_line
from tributary_workers.ledger import open_ledger
from tributary_workers.pipeline.chunker import ChunkerConfig
from tributary_workers.pipeline.indexer import DocResult, DocumentIndexer
from tributary_workers.pipeline.parsers import Parser
from tributary_workers.pipeline.settings import PipelineSettings
from tributary_workers.pipeline.sources import SourceError, open_source
from tributary_workers.pipeline.writer import AliasTargetError, CollectionNotFoundError, MilvusWriter
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


class TargetRefused(RoutingError):
    """A routing target no write may go to (an alias, a missing active collection, settings the
    model cannot honour): like an invalid record, the worker holds its batches until it is fixed."""


@dataclass(frozen=True)
class StageSettings:
    """How a target's documents become vectors: its own settings, else the worker's."""

    model: str | None
    backend: str
    quantize: str
    dimension: int | None
    chunking: ChunkerConfig


def stage_settings(target: Target | None, cfg: PipelineSettings) -> StageSettings:
    """A target's settings over the worker's configured ones. The configured dimension is expected
    of the configured model only; an int8 target without a backend runs onnx (int8 needs it), a
    torch one without a quantization runs full precision."""
    if target is None:
        return StageSettings(cfg.model, cfg.backend, cfg.quantize, cfg.dimension, cfg.chunking)
    backend = target.backend or ("onnx" if target.quantize == "int8" else cfg.backend)
    quantize = target.quantize or ("none" if backend == "torch" else cfg.quantize)
    dimension = target.dimension
    if dimension is None and target.model == cfg.model:
        dimension = cfg.dimension
    chunking = ChunkerConfig(
        max_tokens=target.max_tokens if target.max_tokens is not None else cfg.chunking.max_tokens,
        overlap_tokens=target.overlap_tokens if target.overlap_tokens is not None else cfg.chunking.overlap_tokens)
    return StageSettings(target.model, backend, quantize, dimension, chunking)


class WriteTarget:
    """One target: its own embedder, chunker, writer and ledger namespace.

    ``routed``: from a routing record (else the worker's configured collection, created when
    missing as always). A routed target is refused when its name is an alias, and its collection
    is created only when it is a secondary with ``create`` (the candidate); ``active`` is set by
    the worker from the target's position at every batch."""

    def __init__(self, spec: Target, worker: StreamWorker, routed: bool = True):
        self.spec = spec
        self.collection = spec.collection
        self.model = spec.model
        self.routed = routed
        self.active = True
        self.settings = stage_settings(spec if routed else None, worker.config)
        self.worker = worker
        self.indexer: DocumentIndexer | None = None

    @property
    def ready(self) -> bool:
        """Warmed up: embedder loaded, collection reachable (created when allowed and missing)."""
        return self.indexer is not None

    @property
    def may_create(self) -> bool:
        return not self.routed or (self.spec.create and not self.active)

    def warm_up(self) -> None:
        if self.indexer is not None:
            return
        cfg = self.worker.config
        try:
            embedder, chunker = self.worker.stages(self.settings)
        except PermanentError as exc:  # the record's settings: the active holds, a secondary fails alone
            if self.routed and self.active:
                raise TargetRefused(f"routing target {self.collection}: {one_line(exc)}") from None
            raise
        writer = MilvusWriter(cfg.writer_config(cfg.milvus_uri, self.collection, embedder,
                                                create_if_missing=self.may_create, refuse_alias=self.routed))
        try:
            writer.warm_up()
        except AliasTargetError as exc:
            writer.close()
            raise TargetRefused(f"routing target {exc}") from None
        except CollectionNotFoundError as exc:
            writer.close()
            if self.active:
                raise TargetRefused(f"routing target {self.collection}: {exc} (the active collection is never "
                                    "created by a write)") from None
            raise CollectionNotFoundError(f"{exc} (a write creates only a target with create: true)") from None
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
