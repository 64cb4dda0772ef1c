"""The batch pipeline against a real `milvus-lite server` (and redis-server where the store is Redis)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from harness.batch import run_batch
from harness.corpus import make_corpus, write_doc
from tributary_workers import metrics
from tributary_workers.batch.worker import BatchWorker, shard_of
from tributary_workers.cli.demo import sample_corpus
from tributary_workers.documents import Document
from tributary_workers.pipeline.chunker import ChunkerConfig
from tributary_workers.pipeline.indexer import Status
from tributary_workers.pipeline.search import Searcher
from tributary_workers.pipeline.writer import CollectionNotEmptyError, open_client


def rows_by_doc(worker: BatchWorker) -> dict[str, list[dict]]:
    client = open_client(worker.config.milvus_uri)
    result: dict[str, list[dict]] = {}
    for row in client.query(worker.config.collection, filter="", output_fields=["doc_id", "chunk_index", "version", "pk"]):
        result.setdefault(row["doc_id"], []).append(row)
    client.close()
    return result


def embed_calls() -> float:
    return metrics.EMBED_SECONDS._sum.get(), sum(b.get() for b in metrics.EMBED_SECONDS._buckets)


def test_ingest_then_reingest_unchanged_embeds_nothing(tmp_path, milvus_server, collection_name):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 20)
    _, first = run_batch(tmp_path, milvus_server, collection_name, corpus)
    assert (first.documents_total, first.documents_succeeded, first.documents_failed) == (20, 20, 0)
    assert first.chunks_written >= 20

    calls_before = embed_calls()[1]
    started = time.monotonic()
    worker, second = run_batch(tmp_path, milvus_server, collection_name, corpus)
    assert (second.documents_unchanged, second.documents_succeeded, second.chunks_written) == (20, 0, 0)
    assert embed_calls()[1] == calls_before, "an unchanged corpus must not reach the model"
    assert time.monotonic() - started < 30
    rows = rows_by_doc(worker)
    assert sum(len(r) for r in rows.values()) == first.chunks_written


def test_shrinking_document_leaves_no_orphans(tmp_path, milvus_server, collection_name):
    corpus = tmp_path / "corpus"
    chunking = ChunkerConfig(max_tokens=40, overlap_tokens=0)
    write_doc(corpus, "shrinks.txt", 1, paragraphs=10, version_ns=1_000_000_000)
    worker, first = run_batch(tmp_path, milvus_server, collection_name, corpus, chunking=chunking)
    before = rows_by_doc(worker)["shrinks.txt"]
    write_doc(corpus, "shrinks.txt", 1, paragraphs=4, version_ns=2_000_000_000)
    worker, second = run_batch(tmp_path, milvus_server, collection_name, corpus, chunking=chunking)
    after = rows_by_doc(worker)["shrinks.txt"]
    assert len(before) == first.chunks_written > len(after) == second.chunks_written
    assert {r["version"] for r in after} == {2_000_000_000}
    assert sorted(r["chunk_index"] for r in after) == list(range(len(after)))


def test_versions_never_regress_and_tombstones_hold(tmp_path, milvus_server, collection_name):
    worker, _ = run_batch(tmp_path, milvus_server, collection_name, make_corpus(tmp_path / "c", 1)[0].parent)
    worker.writer.warm_up()
    indexer = worker.indexer
    new = Document("x.md", 20, "The newest text about harbours and lighthouses.")
    old = Document("x.md", 10, "An old text about something else entirely, deserts.")
    assert [r.status for r in indexer.index([new])] == [Status.SUCCEEDED]
    assert [r.status for r in indexer.index([old])] == [Status.SUPERSEDED]
    rows = worker.writer.chunks_of("x.md")
    assert rows and {r["version"] for r in rows} == {20} and "harbours" in rows[0]["text"]

    assert indexer.delete("x.md", 30).status is Status.DELETED
    assert worker.writer.chunks_of("x.md") == []
    assert indexer.index([Document("x.md", 25, "A late edit that lost the race.")])[0].status is Status.SUPERSEDED
    assert worker.writer.chunks_of("x.md") == []
    assert indexer.delete("x.md", 29).status is Status.SUPERSEDED
    revived = indexer.index([Document("x.md", 31, "Re-created after the delete.")])
    assert revived[0].status is Status.SUCCEEDED
    assert {r["version"] for r in worker.writer.chunks_of("x.md")} == {31}
    worker.writer.close()


def test_racing_writers_of_one_document_end_at_the_newest(tmp_path, milvus_server, collection_name):
    worker, _ = run_batch(tmp_path, milvus_server, collection_name, make_corpus(tmp_path / "c", 1)[0].parent)
    worker.writer.warm_up()
    indexer = worker.indexer
    texts = {v: f"Version {v} of the race document. " + "More words about tides. " * (v % 5 + 1) for v in range(1, 14)}
    barrier = threading.Barrier(len(texts))

    def write(version):
        barrier.wait()
        if version % 4 == 0:
            indexer.delete("race.md", version)
        else:
            indexer.index([Document("race.md", version, texts[version])])

    threads = [threading.Thread(target=write, args=(v,)) for v in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    rows = worker.writer.chunks_of("race.md")
    # 12 is a delete, 13 the newest operation: whatever the interleaving, only 13's rows remain
    assert rows and {r["version"] for r in rows} == {13}
    assert worker.ledger.get("race.md").fence == 13
    worker.writer.close()


def test_bulk_load_builds_index_at_the_end_and_refuses_a_non_empty_collection(tmp_path, milvus_server,
                                                                              collection_name):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 8)
    total = 0
    for shard in (0, 1):  # two shards of one run share the new collection
        _, report = run_batch(tmp_path, milvus_server, collection_name, corpus, bulk_load=True,
                              job_id="load-1", shard_index=shard, shard_count=2)
        total += report.documents_succeeded
    assert total == 8
    client = open_client(milvus_server.uri)
    assert client.list_indexes(collection_name)
    assert str(client.get_load_state(collection_name)["state"]).endswith("Loaded")
    client.close()
    with pytest.raises(CollectionNotEmptyError, match="bulk-load mode needs an empty collection"):
        run_batch(tmp_path / "again", milvus_server, collection_name, corpus, bulk_load=True, job_id="load-2")


def test_shards_partition_the_source(tmp_path, milvus_server, collection_name):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 24, paragraphs=2)
    totals = []
    for shard in range(3):
        worker, report = run_batch(tmp_path, milvus_server, collection_name, corpus,
                                   shard_index=shard, shard_count=3, job_id="sharded")
        totals.append(report.documents_succeeded)
        assert report.documents_total == sum(1 for p in corpus.iterdir() if shard_of(p.name, 3) == shard)
    assert sum(totals) == 24 and all(totals)
    assert len(rows_by_doc(worker)) == 24


def test_redis_ledger_and_checkpoints(tmp_path, milvus_server, redis_server, collection_name):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 5, paragraphs=2)
    kwargs = dict(ledger_url=redis_server.url, checkpoint_url=redis_server.url, job_id=collection_name)
    _, first = run_batch(tmp_path, milvus_server, collection_name, corpus, **kwargs)
    _, second = run_batch(tmp_path, milvus_server, collection_name, corpus, **kwargs)
    assert first.documents_succeeded == 5 and second.documents_unchanged == 5


def test_retrieval_sanity_on_the_sample_corpus(tmp_path, milvus_server, collection_name):
    corpus = sample_corpus()
    _, report = run_batch(tmp_path, milvus_server, collection_name, corpus, include=["*.md"],
                          exclude=["updates/*"])
    assert report.documents_succeeded == 12
    searcher = Searcher(milvus_server.uri, collection_name)
    searcher.warm_up()
    queries = json.loads((corpus / "queries.json").read_text())
    misses = []
    for case in queries:
        top5 = [hit.doc_id for hit in searcher.run(case["query"], 5)]
        if case["expected_doc_id"] not in top5:
            misses.append((case["query"], case["expected_doc_id"], top5))
    searcher.close()
    assert len(queries) == 24 and not misses


def test_a_collection_refuses_another_models_embeddings(milvus_server, collection_name):
    from tributary_workers.pipeline.writer import (
        IncompatibleCollectionError,
        MilvusWriter,
        WriterConfig,
    )

    first = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name, model_id="model-a",
                                      dimension=8))
    first.warm_up()
    first.close()
    other = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name, model_id="model-b",
                                      dimension=8))
    with pytest.raises(IncompatibleCollectionError, match="holds embeddings of model 'model-a'"):
        other.warm_up()
    wrong_dim = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name, model_id="model-a",
                                          dimension=16))
    with pytest.raises(IncompatibleCollectionError, match="dimension 8"):
        wrong_dim.warm_up()


@pytest.mark.parametrize("bulk_load", [False, True])
def test_writers_racing_to_create_one_collection_all_start(milvus_server, collection_name, bulk_load):
    from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig

    writers = [MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name, model_id="m",
                                         dimension=8, bulk_load=bulk_load, bulk_load_run="run-1"))
               for _ in range(4)]
    barrier = threading.Barrier(len(writers))
    errors = []

    def start(writer):
        barrier.wait()
        try:
            writer.warm_up()
        except Exception as exc:  # collected: the assertion below shows them all
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    if bulk_load:
        writers[0].finish_bulk_load()
    assert str(writers[0].client.get_load_state(collection_name)["state"]).endswith("Loaded")
    for writer in writers:
        writer.close()
