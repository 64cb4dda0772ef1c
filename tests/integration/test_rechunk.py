"""Parsed texts stored with the collection, and a re-embedding that re-chunks them, against a real
redis-server and `milvus-lite server`: the text read back is the parsed text byte for byte (one
over Milvus' VARCHAR limit too, in parts), it is cleaned like the rows, and a ``rechunk`` backfill
and catch-up give the candidate exactly the chunks its own chunking makes of the original text."""

from __future__ import annotations


import pytest
from harness.models import DERIVED_DIMENSION
from tributary_workers.documents import Document
from tributary_workers.ledger import RedisLedger
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig
from tributary_workers.pipeline.indexer import DocumentIndexer, Status
from tributary_workers.pipeline.texts import TextStore, companion_name
from tributary_workers.pipeline.writer import TEXT_MAX_LENGTH, MilvusWriter, WriterConfig, open_client
from tributary_workers.reembed.backfill import backfill
from tributary_workers.reembed.catchup import catchup
from tributary_workers.reembed.copy import ReembedConfig

ACTIVE_CHUNKING = ChunkerConfig(max_tokens=64, overlap_tokens=8)
NEW_CHUNKING = ChunkerConfig(max_tokens=32, overlap_tokens=4)
WORDS = "river delta, stone harbour; lantern meadow copper violet engine garden signal orbit".split()
GAPS = [" ", "  ", "\n", "\n\n\n", "\t", " \t ", "   \n  "]


def irregular(seed: int, words: int = 560) -> str:
    """About 600 tokens with irregular whitespace, leading and trailing included."""
    body = "".join(WORDS[(seed * 7 + i * 5) % len(WORDS)] + GAPS[(seed + i * i) % len(GAPS)] for i in range(words))
    return "\n \t" + body + f"doc {seed} ends here.  \n\n"


def huge(seed: int) -> str:
    """Over 65535 UTF-8 bytes in few tokens: 150-character words of 2-byte letters (one [UNK] each)."""
    return "  ".join(("é" * 149 + str(i % 10)) + ("\n" if i % 7 == 0 else "") for i in range(260)) + f" {seed}\n"


@pytest.fixture
def active(redis_server, milvus_server, bundled, collection_name):
    writer = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name,
                                       model_id=bundled.model_id, dimension=bundled.dimension))
    writer.warm_up()
    chunker = Chunker.for_model_path(bundled.model_path, ACTIVE_CHUNKING, bundled.max_seq_length)
    ledger = RedisLedger.from_url(redis_server.url, collection_name)
    yield DocumentIndexer(chunker, bundled, writer, ledger, "ingest")
    writer.close()
    ledger.close()


def index(indexer: DocumentIndexer, doc_id: str, version: int, text: str) -> None:
    result = indexer.index([Document(doc_id, version, text, {"doc": doc_id})])[0]
    assert result.status is Status.SUCCEEDED, result


def store_of(uri: str, collection: str) -> TextStore:
    store = TextStore(WriterConfig(uri=uri, collection=collection, model_id="", dimension=0))
    store.warm_up()
    return store


def test_the_parsed_text_is_stored_exactly_in_parts_and_cleaned_like_the_rows(active, milvus_server):
    text, big = irregular(1), huge(2)
    assert len(big.encode()) > TEXT_MAX_LENGTH and text != text.strip()
    assert 500 <= active.chunker.count_tokens(text) <= 700
    index(active, "a.md", 10, text)
    index(active, "big.md", 10, big)
    store = store_of(milvus_server.uri, active.writer.config.collection)
    try:
        assert store.name == f"{active.writer.config.collection}_texts"
        assert store.read("a.md", 10) == text
        assert store.read("big.md", 10) == big
        assert store.read("a.md", 10, content_hash="another") is None
        parts = store._parts('doc_id == "big.md"')
        assert sorted(r["part"] for r in parts) == list(range(len(parts))) and len(parts) >= 2
        assert store.read_many({"a.md": (10, None), "big.md": (10, None), "none.md": (10, None)}) == {
            "a.md": text, "big.md": big}

        # A newer version replaces the text; an older one arriving late is refused and leaves none.
        index(active, "a.md", 20, text + " edited")
        assert (store.read("a.md", 10), store.read("a.md", 20)) == (None, text + " edited")
        late = active.index([Document("a.md", 15, "late")])[0]
        assert late.status is Status.SUPERSEDED and store.read("a.md", 15) is None
        # A tombstone takes every version up to it.
        assert active.delete("a.md", 30).status is Status.DELETED
        assert store.read("a.md", 20) is None and store.read("big.md", 10) == big
    finally:
        store.close()


def candidate_chunks(uri: str, collection: str) -> dict[str, list[dict]]:
    """The candidate's rows by document, after building its index (validate's job) so it can be queried."""
    writer = MilvusWriter(WriterConfig(uri=uri, collection=collection, model_id="unused", dimension=DERIVED_DIMENSION))
    writer.client = open_client(uri)
    try:
        writer.finish_bulk_load()
        rows = writer.client.query(collection, filter="chunk_index >= 0", limit=16384,
                                   output_fields=["doc_id", "version", "chunk_index", "text"])
    finally:
        writer.close()
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row["doc_id"], []).append(row)
    return {doc_id: sorted(r, key=lambda r: r["chunk_index"]) for doc_id, r in found.items()}


def test_a_rechunk_backfill_and_catchup_give_the_candidate_its_own_chunking_of_the_original_text(
        active, redis_server, milvus_server, derived_path, tmp_path):
    texts = {"a.md": irregular(3), "b.md": irregular(4, words=300), "big.md": huge(5)}
    for i, (doc_id, text) in enumerate(sorted(texts.items())):
        index(active, doc_id, 100 + i, text)
    active_name = active.writer.config.collection
    versions = {doc_id: 100 + i for i, doc_id in enumerate(sorted(texts))}

    def config(candidate: str, job_id: str, **extra) -> ReembedConfig:
        values = dict(active_collection=active_name, collection=candidate, milvus_uri=milvus_server.uri,
                      ledger_url=redis_server.url, model=str(derived_path), device="cpu", job_id=job_id,
                      checkpoint_url=str(tmp_path / "checkpoints.sqlite"))
        return ReembedConfig(**{**values, **extra})

    # A plain copy (same chunking) carries the texts along, so the candidate can be re-chunked later.
    plain = f"{active_name}_plain"
    report = backfill(config(plain, "plain", chunking=ACTIVE_CHUNKING))
    assert (report.ok, report.counts["written"]) == (True, 3), report
    copied = store_of(milvus_server.uri, plain)
    try:
        assert {d: copied.read(d, v) for d, v in versions.items()} == texts
    finally:
        copied.close()

    candidate = f"{active_name}_v2"
    report = backfill(config(candidate, "rechunk", chunking=NEW_CHUNKING, rechunk=True))
    assert (report.ok, report.reason, report.counts["written"], report.counts["without_text"]) == (
        True, "Backfilled", 3, 0), report
    embedder = Embedder(EmbedderConfig(model=str(derived_path), device="cpu"))
    embedder.warm_up()
    chunker = Chunker.for_model_path(embedder.model_path, NEW_CHUNKING, embedder.max_seq_length)

    def assert_rechunked(expected: dict[str, tuple[int, str]]) -> None:
        rows = candidate_chunks(milvus_server.uri, candidate)
        assert set(rows) == set(expected)
        store = store_of(milvus_server.uri, candidate)
        try:
            for doc_id, (version, text) in expected.items():
                want = chunker.run(Document(doc_id, version, text))
                found = rows[doc_id]
                assert [r["text"] for r in found] == [c.text for c in want], doc_id
                assert [r["chunk_index"] for r in found] == list(range(len(want)))
                assert {r["version"] for r in found} == {version}
                assert all(chunker.count_tokens(r["text"]) <= 32 for r in found), doc_id
                assert store.read(doc_id, version) == text
        finally:
            store.close()

    assert_rechunked({d: (versions[d], t) for d, t in texts.items()})
    assert len(candidate_chunks(milvus_server.uri, candidate)["a.md"]) > len(active.chunker.run(
        Document("a.md", 0, texts["a.md"])))  # more, shorter chunks than the active's

    # An edit in the active is re-chunked by catch-up the same way.
    index(active, "b.md", 500, texts["b.md"] + "\n\n  a closing line.\n")
    caught = catchup(config(candidate, "cu", chunking=NEW_CHUNKING, rechunk=True))
    assert (caught.ok, caught.reason, caught.counts["copied"]) == (True, "CaughtUp", 1), caught
    assert_rechunked({**{d: (versions[d], t) for d, t in texts.items()},
                      "b.md": (500, texts["b.md"] + "\n\n  a closing line.\n")})

    # A document written without its text (as before texts were stored) can't be re-chunked: it
    # fails alone, once, and the step says why; a later pass does not retry it.
    texts_store, active.writer.texts = active.writer.texts, None
    index(active, "old.md", 600, irregular(6, words=40))
    active.writer.texts = texts_store
    refused = catchup(config(candidate, "cu-old", chunking=NEW_CHUNKING, rechunk=True))
    assert (refused.ok, refused.reason) == (False, "RechunkUnavailable"), refused
    assert (refused.counts["without_text"], refused.counts["failed"], refused.counts["passes"]) == (1, 1, 1)
    assert "old.md: chunking changed and the collection stores no parsed text" in refused.message
    assert "old.md" not in candidate_chunks(milvus_server.uri, candidate)

    client = open_client(milvus_server.uri)
    try:
        assert client.has_collection(companion_name(candidate))
    finally:
        client.close()
