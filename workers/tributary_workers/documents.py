"""The records that flow between pipeline stages.

source -> RawDocument -> parser -> Document -> chunker -> Chunk -> embedder -> EmbeddedChunk -> writer

Identity rules (the whole product relies on them):
- ``doc_id`` is stable: a path relative to the source root, an object key, a URL, or a record id.
- ``version`` is a monotonic integer per document (modification time in ns, LastModified, or the
  producer's own counter); the version ledger fences on it.
- ``chunk_pk`` is derived from (doc_id, version, chunk_index), so the same document version always
  yields the same primary keys, and two writers of different versions never overwrite each other's
  rows (the ledger decides which one stays; see ledger.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_pk(doc_id: str, version: int, chunk_index: int) -> str:
    """Deterministic primary key of one chunk row (32 hex chars, fits any VARCHAR pk)."""
    key = f"{doc_id}\x00{version}\x00{chunk_index}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def content_hash_of(text: str, metadata: dict[str, Any]) -> str:
    """Hash of what gets embedded and stored: a change in either means re-embedding."""
    canonical = json.dumps({"text": text, "metadata": metadata}, sort_keys=True, ensure_ascii=False)
    return sha256_hex(canonical.encode())


@dataclass(frozen=True)
class DocumentRef:
    """A document a source has listed but not yet read."""

    doc_id: str
    uri: str
    version: int
    size: int | None = None


@dataclass(frozen=True)
class RawDocument:
    """The bytes of one source object, before parsing."""

    doc_id: str
    uri: str
    version: int
    data: bytes
    content_type: str | None = None

    @property
    def content_hash(self) -> str:
        return sha256_hex(self.data)


@dataclass
class Document:
    """Parsed text of one logical document (a file, or one JSONL record)."""

    doc_id: str
    version: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source_uri: str = ""

    @property
    def content_hash(self) -> str:
        return content_hash_of(self.text, self.metadata)


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    version: int
    chunk_index: int
    text: str
    token_count: int

    @property
    def pk(self) -> str:
        return chunk_pk(self.doc_id, self.version, self.chunk_index)


class DocumentError(Exception):
    """A per-document failure: the document is reported with this reason and the batch goes on."""
