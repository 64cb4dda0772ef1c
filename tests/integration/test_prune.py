"""Sync semantics of batch runs against a real `milvus-lite server`: documents gone from the source
are removed (prune), with the guard rails of batch/prune.py; S3 on a real moto_server."""

from __future__ import annotations

import pytest
from harness.batch import run_batch as run
from harness.corpus import make_corpus, write_doc
from tributary_workers.documents import Document
from tributary_workers.pipeline.indexer import Status
from tributary_workers.pipeline.sources import SourceError
from tributary_workers.pipeline.writer import open_client


def live_versions(milvus_server, collection) -> dict[str, set[int]]:
    client = open_client(milvus_server.uri)
    found: dict[str, set[int]] = {}
    for row in client.query(collection, filter="", output_fields=["doc_id", "version"]):
        found.setdefault(row["doc_id"], set()).add(row["version"])
    client.close()
    return found


def test_deleted_files_are_pruned_and_an_edit_is_updated(tmp_path, milvus_server, collection_name):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 10)
    _, first = run(tmp_path, milvus_server, collection_name, str(corpus), prune=True)
    assert first.documents_succeeded == 10 and first.documents_pruned == 0
    for name in ("doc-0001.txt", "doc-0004.txt", "doc-0007.txt"):
        (corpus / name).unlink()
    write_doc(corpus, "doc-0002.txt", 99, paragraphs=3, version_ns=4_000_000_000_000_000_000)

    _, second = run(tmp_path, milvus_server, collection_name, str(corpus), prune=True)
    assert (second.documents_pruned, second.documents_succeeded, second.documents_unchanged) == (3, 1, 6)
    assert second.prune_message == "pruned 3 of 10 documents: gone from the source"
    live = live_versions(milvus_server, collection_name)
    assert set(live) == {f"doc-{i:04d}.txt" for i in (0, 2, 3, 5, 6, 8, 9)}
    assert live["doc-0002.txt"] == {4_000_000_000_000_000_000}

    # Idempotent: nothing more to prune, and a file put back (a newer mtime) is indexed again.
    write_doc(corpus, "doc-0004.txt", 4, paragraphs=6)
    _, third = run(tmp_path, milvus_server, collection_name, str(corpus), prune=True)
    assert (third.documents_pruned, third.documents_succeeded) == (0, 1)
    assert "doc-0004.txt" in live_versions(milvus_server, collection_name)


def test_without_prune_nothing_is_removed(tmp_path, milvus_server, collection_name):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 4)
    run(tmp_path, milvus_server, collection_name, str(corpus))
    (corpus / "doc-0000.txt").unlink()
    _, again = run(tmp_path, milvus_server, collection_name, str(corpus))
    assert again.documents_pruned == 0 and len(live_versions(milvus_server, collection_name)) == 4


def test_pruning_most_of_the_source_is_refused_and_says_so(tmp_path, milvus_server, collection_name):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 10)
    run(tmp_path, milvus_server, collection_name, str(corpus), prune=True)
    for i in range(8):
        (corpus / f"doc-{i:04d}.txt").unlink()
    _, refused = run(tmp_path, milvus_server, collection_name, str(corpus), prune=True)
    assert (refused.documents_pruned, refused.prune_refused, refused.exit_code) == (0, 8, 3)
    assert "8 of 10 documents (80%)" in refused.prune_message and "nothing was removed" in refused.prune_message
    assert len(live_versions(milvus_server, collection_name)) == 10

    _, allowed = run(tmp_path, milvus_server, collection_name, str(corpus), prune=True, prune_max_fraction=1.0)
    assert allowed.documents_pruned == 8 and set(live_versions(milvus_server, collection_name)) == {
        "doc-0008.txt", "doc-0009.txt"}


def test_documents_the_stream_or_another_source_wrote_survive(tmp_path, milvus_server, collection_name):
    corpus, other = tmp_path / "corpus", tmp_path / "other"
    make_corpus(corpus, 4)
    write_doc(other, "doc-0000.txt.extra", 50, paragraphs=2)  # same id prefix, another source
    worker, _ = run(tmp_path, milvus_server, collection_name, str(corpus), prune=True)
    run(tmp_path, milvus_server, collection_name, str(other), prune=True)
    # The stream (same ledger) writes doc-0001.txt at a newer version, and a document of its own.
    worker.warm_up()
    stream = worker.indexer
    newer = worker.ledger.get("doc-0001.txt").fence + 1
    assert stream.index([Document("doc-0001.txt", newer, "Edited through the stream.")])[0].status is Status.SUCCEEDED
    assert stream.index([Document("doc-0000.txt.stream", 1, "Only ever streamed.")])[0].status is Status.SUCCEEDED
    worker.close()

    (corpus / "doc-0000.txt").unlink()
    (corpus / "doc-0001.txt").unlink()
    _, report = run(tmp_path, milvus_server, collection_name, str(corpus), prune=True)
    assert report.documents_pruned == 1  # doc-0000.txt only: the stream holds doc-0001.txt now
    live = live_versions(milvus_server, collection_name)
    assert "doc-0000.txt" not in live
    assert live["doc-0001.txt"] == {newer}
    assert {"doc-0000.txt.extra", "doc-0000.txt.stream", "doc-0002.txt", "doc-0003.txt"} <= set(live)


def test_shards_prune_only_their_own_hash_range(tmp_path, milvus_server, collection_name):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 12)
    for shard in (0, 1):
        run(tmp_path, milvus_server, collection_name, str(corpus), prune=True, shard_index=shard, shard_count=2,
            job_id="nightly")
    for i in (0, 1, 2):
        (corpus / f"doc-{i:04d}.txt").unlink()
    pruned = [run(tmp_path, milvus_server, collection_name, str(corpus), prune=True, shard_index=shard,
                  shard_count=2, job_id="nightly2")[1].documents_pruned for shard in (0, 1)]
    assert sum(pruned) == 3 and len(live_versions(milvus_server, collection_name)) == 9


def test_a_source_error_prunes_nothing(tmp_path, milvus_server, collection_name, aws_env, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="prune-corpus")
    for i in range(3):
        s3.put_object(Bucket="prune-corpus", Key=f"docs/d{i}.md", Body=f"# Doc {i}\n\nAbout lighthouses {i}.".encode())
    _, first = run(tmp_path, milvus_server, collection_name, "s3://prune-corpus/docs/", prune=True)
    assert first.documents_succeeded == 3
    for i in range(3):
        s3.delete_object(Bucket="prune-corpus", Key=f"docs/d{i}.md")
    s3.delete_bucket(Bucket="prune-corpus")  # the listing now fails: nothing may be read as "all gone"
    with pytest.raises(SourceError):
        run(tmp_path, milvus_server, collection_name, "s3://prune-corpus/docs/", prune=True, prune_max_fraction=1.0)
    assert len(live_versions(milvus_server, collection_name)) == 3
