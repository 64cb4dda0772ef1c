"""The live documents of a collection, read back from its rows (what a re-embedding copies).

A collection's rows carry doc_id, chunk_index, version, content_hash, text and metadata, so a
document's chunks can be re-embedded with another model without its source. A document may hold
rows of several versions for a moment (a writer commits, then deletes the older rows): the live
version is the ledger's ``data_version`` when the collection's ledger has a record, else the
highest version present. A tombstoned document is not live, even while its rows await deletion.

Memory: ``read_live`` holds the rows of what it reads (one shard of the collection, or the
documents asked for) until they are grouped; a shard of a few GiB of text needs more shards.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tributary_workers.documents import Chunk, Document
from tributary_workers.ledger import LedgerRecord
from tributary_workers.pipeline.writer import milvus_literal

ROW_FIELDS = ["doc_id", "chunk_index", "version", "content_hash", "text", "metadata"]
QUERY_BATCH = 1000  # rows per query_iterator page
IDS_PER_QUERY = 100  # doc ids per `doc_id in [...]` filter


@dataclass(frozen=True)
class StoredChunk:
    chunk_index: int
    text: str


@dataclass(frozen=True)
class LiveDocument:
    """One document at its live version, as the collection stores it."""

    doc_id: str
    version: int  # the version its rows carry
    content_hash: str
    metadata: dict[str, Any]
    chunks: tuple[StoredChunk, ...]  # by chunk_index

    def as_document(self, version: int) -> Document:
        """The Document to write at ``version`` (its parsed text is not stored: text stays empty)."""
        return Document(self.doc_id, version, "", dict(self.metadata))

    def chunks_at(self, version: int, count_tokens: Callable[[str], int]) -> list[Chunk]:
        return [Chunk(self.doc_id, version, c.chunk_index, c.text, count_tokens(c.text)) for c in self.chunks]


def group_live(rows: Iterable[Mapping[str, Any]], records: Mapping[str, LedgerRecord]) -> list[LiveDocument]:
    """Rows -> live documents, by doc_id (pure). ``records``: the collection's ledger records.

    A tombstoned document is left out; a record's data_version picks the live rows (a document
    whose rows of that version are gone, because a newer one committed meanwhile, is left out
    too: the next read finds the newer one); without a record the highest version is live."""
    by_doc: dict[str, dict[int, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_doc[row["doc_id"]][int(row["version"])].append(row)
    live: list[LiveDocument] = []
    for doc_id in sorted(by_doc):
        versions = by_doc[doc_id]
        record = records.get(doc_id)
        if record is not None and (record.deleted or record.data_version is None):
            continue
        version = record.data_version if record is not None else max(versions)
        chosen = versions.get(version)
        if not chosen:
            continue
        chosen = sorted(chosen, key=lambda r: int(r["chunk_index"]))
        live.append(LiveDocument(
            doc_id, version, chosen[0]["content_hash"], dict(chosen[0].get("metadata") or {}),
            tuple(StoredChunk(int(r["chunk_index"]), r["text"]) for r in chosen)))
    return live


def iterate_rows(client, collection: str, filter: str = "") -> Iterator[dict[str, Any]]:
    """Every row matching filter, page by page (query_iterator: no result-window limit)."""
    iterator = client.query_iterator(collection, batch_size=QUERY_BATCH, filter=filter, output_fields=ROW_FIELDS)
    try:
        while page := iterator.next():
            yield from page
    finally:
        iterator.close()


def read_live(client, collection: str, records: Mapping[str, LedgerRecord],
              keep: Callable[[str], bool] = lambda doc_id: True) -> list[LiveDocument]:
    """The live documents of a whole collection whose doc_id passes ``keep`` (one shard, say)."""
    return group_live((row for row in iterate_rows(client, collection) if keep(row["doc_id"])), records)


def read_documents(client, collection: str, doc_ids: Iterable[str],
                   records: Mapping[str, LedgerRecord]) -> list[LiveDocument]:
    """The live documents among doc_ids (those without live rows are left out)."""
    ids = sorted(set(doc_ids))
    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), IDS_PER_QUERY):
        literal = ", ".join(milvus_literal(doc_id) for doc_id in ids[start:start + IDS_PER_QUERY])
        rows.extend(iterate_rows(client, collection, f"doc_id in [{literal}]"))
    return group_live(rows, records)
