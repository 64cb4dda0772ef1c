"""The Document an upsert event carries: its content parsed in place, or its uri read through the
batch sources."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from tributary_workers.documents import Document, DocumentError, DocumentRef, RawDocument
from tributary_workers.pipeline.parsers import Parser
from tributary_workers.pipeline.sources import SourceError, open_source
from tributary_workers.streaming.events import Event


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
