"""The companion text store of a chunk collection: each document version's parsed text, in Milvus.

A chunk collection's rows can't give a document back (overlaps, the whitespace between chunks and
around the text are lost), so a change of chunking (a re-embedding with ``--rechunk``) needs the
parsed text itself. It is kept next to the collection, in Milvus, so it lives and goes with it and
needs no other store:

    collection  ``companion_name(chunks)``: ``<chunks>_texts``, or for a name too long for that a
                shortened one with a hash of the full name (deterministic, within 255 characters)
    rows        (doc_id, version, part) -> text, one row per part of at most 65535 UTF-8 bytes
                (Milvus' VARCHAR limit), cut on character boundaries; ``parts`` is the count and
                ``content_hash`` the document's, so a reader knows it has the whole text
    cleanup     as the chunk rows: older versions go when a version commits, a superseded version
                goes, a tombstone removes everything up to it (DocumentIndexer does it)

The store is created by the first write into it (a collection created before this module has no
companion until a writer stores a text; readers never create it), always indexed and loaded (it is
small, and Milvus queries and deletes by filter need a loaded collection), with Strong consistency
so a re-embedding reads what a writer has just stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tributary_workers.pipeline.writer import (
    DOC_ID_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    MilvusUnavailableError,
    WriterConfig,
    bounded_requests,
    milvus_literal,
    open_client,
)

SUFFIX = "_texts"
MAX_NAME_LENGTH = 255  # Milvus' default proxy.maxNameLength
NAME_HASH_CHARS = 16
# Every Milvus collection needs a vector field: a constant 2-dim zero vector under a FLAT index
# costs 8 bytes a row and nothing to build. Nobody searches it.
DUMMY_VECTOR = [0.0, 0.0]
PARTS_PER_PAGE = 16  # parts per query page when reading: at most about 1 MiB
IDS_PER_QUERY = 100  # doc ids per `doc_id in [...]` filter


def companion_name(collection: str) -> str:
    """The text store of ``collection``: ``<collection>_texts`` when that fits Milvus' 255 characters,
    else the name cut short, ``_``, 16 hex characters of blake2b of the full name, and ``_texts``."""
    name = collection + SUFFIX
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.blake2b(collection.encode(), digest_size=NAME_HASH_CHARS // 2).hexdigest()
    keep = MAX_NAME_LENGTH - len(SUFFIX) - 1 - NAME_HASH_CHARS
    return f"{collection[:keep]}_{digest}{SUFFIX}"


def split_parts(text: str, max_bytes: int = TEXT_MAX_LENGTH) -> list[str]:
    """text cut into pieces of at most max_bytes UTF-8 bytes, never inside a character (pure).
    ``"".join(split_parts(t)) == t``; an empty text is one empty part."""
    if max_bytes < 4:
        raise ValueError("a part must hold at least one character (4 bytes)")
    data = text.encode()
    parts: list[str] = []
    start = 0
    while True:
        end = min(start + max_bytes, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # a continuation byte: back to the char's start
            end -= 1
        parts.append(data[start:end].decode())
        if end >= len(data):
            return parts
        start = end


def part_pk(doc_id: str, version: int, part: int) -> str:
    key = f"{doc_id}\x00{version}\x00{part}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


class TextStore:
    """The parsed texts of one chunk collection (``config.collection``), in its companion collection."""

    def __init__(self, config: WriterConfig, client: Any = None):
        self.config = config
        self.name = companion_name(config.collection)
        self.client = client
        self._owns_client = client is None
        self._exists: bool | None = None  # known after the first check; created on the first write

    def warm_up(self) -> None:
        if self.client is None:
            cfg = self.config
            self.client = open_client(cfg.uri, cfg.token, cfg.db_name, cfg.timeout_s)

    def exists(self) -> bool:
        if not self._exists:
            try:
                self._exists = bool(self.client.has_collection(self.name))
            except Exception as exc:
                raise MilvusUnavailableError(f"cannot reach Milvus at {self.config.uri}: {exc}") from exc
            if self._exists:
                self._ensure_loaded()
        return self._exists

    def _schema(self):
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description=f"Tributary parsed texts of {self.config.collection}")
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64,
                         description="derived from (doc_id, version, part)")
        schema.add_field("doc_id", DataType.VARCHAR, max_length=DOC_ID_MAX_LENGTH)
        schema.add_field("version", DataType.INT64)
        schema.add_field("part", DataType.INT64)
        schema.add_field("parts", DataType.INT64)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=len(DUMMY_VECTOR))
        return schema

    def _index_params(self):
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
        params.add_index(field_name="doc_id", index_type="INVERTED")
        return params

    def _create(self) -> None:
        try:
            self.client.create_collection(self.name, schema=self._schema(), index_params=self._index_params(),
                                          consistency_level="Strong",
                                          properties={"tributary.texts_of": self.config.collection})
        except Exception:
            # Several writers of one collection race to create it: the losers use the winner's.
            if not self.client.has_collection(self.name):
                raise
        self._exists = True
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        state = self.client.get_load_state(self.name).get("state")
        if not str(state).endswith("Loaded"):
            if not self.client.list_indexes(self.name):
                self.client.create_index(self.name, self._index_params())
            self.client.load_collection(self.name)

    # -- writes ----------------------------------------------------------------------------------

    @staticmethod
    def rows(doc_id: str, version: int, content_hash: str, text: str) -> list[dict[str, Any]]:
        parts = split_parts(text)
        return [{"pk": part_pk(doc_id, version, i), "doc_id": doc_id, "version": int(version), "part": i,
                 "parts": len(parts), "content_hash": content_hash, "text": piece, "vector": DUMMY_VECTOR}
                for i, piece in enumerate(parts)]

    def write_many(self, documents: Iterable[tuple[str, int, str, str]]) -> dict[tuple[str, int], int]:
        """Upsert (doc_id, version, content_hash, text) of many documents in bounded requests;
        returns each (doc_id, version)'s part count."""
        rows: list[dict[str, Any]] = []
        counts: dict[tuple[str, int], int] = {}
        for doc_id, version, content_hash, text in documents:
            found = self.rows(doc_id, version, content_hash, text)
            counts[(doc_id, int(version))] = len(found)
            rows.extend(found)
        if rows:
            if not self.exists():
                self._create()
            for request in bounded_requests(rows, self.config.max_rows_per_request, self.config.max_bytes_per_request):
                self.client.upsert(self.name, request)
        return counts

    def write(self, doc_id: str, version: int, content_hash: str, text: str) -> int:
        return self.write_many([(doc_id, version, content_hash, text)])[(doc_id, int(version))]

    def delete_where(self, clauses: Iterable[str]) -> None:
        """Delete the parts matching any clause (nothing to do while the store does not exist)."""
        clauses = list(clauses)
        if not clauses or not self.exists():
            return
        for start in range(0, len(clauses), 64):
            self.client.delete(self.name, filter=" or ".join(f"({c})" for c in clauses[start:start + 64]))

    @staticmethod
    def beyond_parts(doc_id: str, version: int, parts: int) -> str:
        """Parts of this version past its count: left by an earlier, longer text at the same version."""
        return f"doc_id == {milvus_literal(doc_id)} and version == {int(version)} and part >= {int(parts)}"

    def delete_older(self, doc_id: str, version: int) -> None:
        self.delete_where([f"doc_id == {milvus_literal(doc_id)} and version < {int(version)}"])

    def delete_up_to(self, doc_id: str, version: int) -> None:
        self.delete_where([f"doc_id == {milvus_literal(doc_id)} and version <= {int(version)}"])

    # -- reads -----------------------------------------------------------------------------------

    def read(self, doc_id: str, version: int, content_hash: str | None = None) -> str | None:
        """The parsed text of (doc_id, version); None when it is not stored whole (no store, no parts,
        a part missing, or, with content_hash, another content)."""
        if not self.exists():
            return None
        return join_parts(self._parts(f"doc_id == {milvus_literal(doc_id)} and version == {int(version)}"),
                          content_hash)

    def read_many(self, wanted: Mapping[str, tuple[int, str | None]]) -> dict[str, str]:
        """The texts of many documents, doc_id -> (version, content_hash or None), in few queries;
        a document whose text is not stored whole is left out."""
        if not wanted or not self.exists():
            return {}
        ids = sorted(wanted)
        texts: dict[str, str] = {}
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start:start + IDS_PER_QUERY]
            by_doc: dict[str, list[dict[str, Any]]] = {}
            for row in self._parts(f"doc_id in [{', '.join(milvus_literal(d) for d in chunk)}]"):
                if int(row["version"]) == wanted[row["doc_id"]][0]:
                    by_doc.setdefault(row["doc_id"], []).append(row)
            for doc_id, rows in by_doc.items():
                text = join_parts(rows, wanted[doc_id][1])
                if text is not None:
                    texts[doc_id] = text
        return texts

    def _parts(self, filter: str) -> list[dict[str, Any]]:
        iterator = self.client.query_iterator(self.name, batch_size=PARTS_PER_PAGE, filter=filter,
                                              output_fields=["doc_id", "version", "part", "parts", "content_hash",
                                                             "text"])
        found: list[dict[str, Any]] = []
        try:
            while page := iterator.next():
                found.extend(page)
        finally:
            iterator.close()
        return found

    def close(self) -> None:
        if self.client is not None and self._owns_client:
            self.client.close()
        self.client = None


def join_parts(rows: Sequence[dict[str, Any]], content_hash: str | None = None) -> str | None:
    """The text of one version's part rows, or None unless they are all there and agree (pure)."""
    if not rows:
        return None
    by_part = {int(r["part"]): r for r in rows}
    counts = {int(r["parts"]) for r in rows}
    hashes = {r["content_hash"] for r in rows}
    if len(counts) != 1 or len(hashes) != 1 or set(by_part) != set(range(counts.pop())):
        return None
    if content_hash is not None and hashes.pop() != content_hash:
        return None
    return "".join(by_part[i]["text"] for i in range(len(by_part)))
