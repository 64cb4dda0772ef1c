"""Routing targets against a real redis-server and `milvus-lite server`: each target's own chunking,
a changed target rebuilt, alias and missing-collection targets refused, only a ``create`` candidate
created by a write, and the indexer's cleanup of another chunking's rows at the same version."""

from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager

import pytest
from harness.waiting import wait_for
from tributary_workers.contract.keys import routing_key
from tributary_workers.contract.routing import clear_routing, repairs, write_routing
from tributary_workers.documents import Document
from tributary_workers.ledger import SQLiteLedger
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import DEFAULT_MODEL_ID, Embedder, EmbedderConfig, default_model_path
from tributary_workers.pipeline.indexer import DocumentIndexer, Status
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig, open_client
from tributary_workers.streaming.config import StreamConfig
from tributary_workers.streaming.producer import Producer
from tributary_workers.streaming.queue import RedisStream, StreamNames
from tributary_workers.streaming.worker import StreamWorker

CHUNKING = ChunkerConfig(max_tokens=48, overlap_tokens=8)


def text_of(doc: str, version: int) -> str:
    return "\n\n".join(f"Routing document {doc} version {version}, part {n}: notes about harbours, tides and "
                       f"the lighthouses along the coast, measurement {version * 10 + n}." for n in range(6))


def upsert(doc: str, version: int) -> dict:
    return {"op": "upsert", "doc_id": doc, "version": version, "content": text_of(doc, version)}


def chunker_for(max_tokens: int, overlap_tokens: int) -> Chunker:
    return Chunker.for_model_path(default_model_path(), ChunkerConfig(max_tokens, overlap_tokens), 256)


def pks(chunker: Chunker, doc: str, version: int) -> set[str]:
    return {c.pk for c in chunker.run(Document(doc, version, text_of(doc, version)))}


def rows(uri: str, collection: str) -> dict[str, set[str]]:
    def attempt():
        client = open_client(uri)
        try:
            return (client.query(collection, filter="", output_fields=["pk", "doc_id"], limit=16384),)
        finally:
            client.close()

    by_doc: dict[str, set[str]] = {}
    for row in wait_for(attempt, timeout=30, message=f"query of {collection}")[0]:
        by_doc.setdefault(row["doc_id"], set()).add(row["pk"])
    return by_doc


def has_collection(uri: str, name: str) -> bool:
    client = open_client(uri)
    try:
        return client.has_collection(name)
    finally:
        client.close()


def drained(stream: RedisStream) -> bool:
    state = stream.group_state()
    return state is not None and state.lag == 0 and state.pending == 0


def config(redis_server, milvus_server, collection: str, **overrides) -> StreamConfig:
    values = dict(index=collection, redis_url=redis_server.url, milvus_uri=milvus_server.uri, chunking=CHUNKING,
                  consumer="routing", maintenance_interval_s=0.3, retry_initial_s=0.05, failure_backoff_max_s=0.3)
    values.update(overrides)
    return StreamConfig(**values)


@contextmanager
def running_worker(cfg: StreamConfig):
    """A StreamWorker on a thread, started without a routing record (its configured collection
    is created); yields (worker, handled outcomes); drained on exit."""
    handled, errors = [], []
    worker = StreamWorker(cfg, observer=handled.extend)
    worker.warm_up()

    def run():
        try:
            worker.run()
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=run, name="stream-worker", daemon=True)
    thread.start()
    try:
        yield worker, handled
    finally:
        worker.stop()
        thread.join(timeout=60)
        worker.close()
    assert not thread.is_alive(), "the worker did not drain"
    assert not errors, errors


@pytest.fixture
def stream(redis_server, collection_name):
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(collection_name))
    yield stream
    clear_routing(stream.client, collection_name)
    stream.close()


def test_each_target_is_chunked_by_its_own_settings_and_rebuilt_when_they_change(
        redis_server, milvus_server, collection_name, stream):
    candidate = f"{collection_name}_v2"
    active_chunks, wide, mid = chunker_for(48, 8), chunker_for(96, 16), chunker_for(64, 0)
    with Producer(redis_server.url, collection_name) as producer, \
            running_worker(config(redis_server, milvus_server, collection_name)) as (worker, handled):
        write_routing(stream.client, collection_name, [
            {"collection": collection_name},
            {"collection": candidate, "max_tokens": 96, "overlap_tokens": 16, "create": True}])
        producer.publish_many([upsert("a", 1), upsert("b", 1)])
        wait_for(lambda: drained(stream), timeout=120, message="the first events were not acknowledged")
        # Same collection, other chunking: the target is another one, rebuilt with it.
        write_routing(stream.client, collection_name, [
            {"collection": collection_name},
            {"collection": candidate, "max_tokens": 64, "overlap_tokens": 0, "create": True}])
        producer.publish_many([upsert("b", 2)])
        wait_for(lambda: drained(stream), timeout=120, message="the second event was not acknowledged")
        assert sorted(t.settings.chunking.max_tokens for t in worker.targets.open) == [48, 64], \
            "the replaced target was closed and forgotten"
    assert wide.max_tokens == 96 and len(pks(wide, "a", 1)) < len(pks(active_chunks, "a", 1))
    assert rows(milvus_server.uri, collection_name) == {"a": pks(active_chunks, "a", 1),
                                                        "b": pks(active_chunks, "b", 2)}
    assert rows(milvus_server.uri, candidate) == {"a": pks(wide, "a", 1), "b": pks(mid, "b", 2)}
    assert repairs(stream.client, collection_name, candidate) == {}
    raw = json.loads(stream.client.get(routing_key(collection_name)))
    assert raw["targets"][0] == {"collection": collection_name}, "unset settings are not written"


def test_an_alias_target_holds_consumption_until_the_record_is_fixed(
        redis_server, milvus_server, collection_name, stream, caplog):
    """After a swap an alias target would write old-model vectors into the new model's collection:
    refused at warm-up, the batch held (pending, nothing written anywhere) until the record changes."""
    alias = f"{collection_name}_alias"
    caplog.set_level(logging.WARNING, logger="tributary.stream")
    with Producer(redis_server.url, collection_name) as producer, \
            running_worker(config(redis_server, milvus_server, collection_name)) as (worker, handled):
        admin = open_client(milvus_server.uri)
        admin.create_alias(collection_name, alias)
        write_routing(stream.client, collection_name,
                      [{"collection": collection_name}, {"collection": alias, "create": True}])
        producer.publish(upsert("held", 1))
        wait_for(lambda: f"routing target {alias} is an alias (of collection {collection_name})" in caplog.text,
                 timeout=60, message="the alias target was not refused")
        wait_for(lambda: stream.own_pending("routing") == 1, timeout=30, message="the entry was never read")
        assert handled == [] and rows(milvus_server.uri, collection_name) == {}
        write_routing(stream.client, collection_name, [{"collection": collection_name}])
        wait_for(lambda: drained(stream), timeout=120, message="the held batch was not written once fixed")
        admin.drop_alias(alias)
        admin.close()
    assert [h.result for h in handled] == ["written"]
    assert set(rows(milvus_server.uri, collection_name)) == {"held"}
    assert not stream.dead_letters()


def test_only_a_secondary_target_with_create_is_created_by_a_write(
        redis_server, milvus_server, collection_name, stream, caplog):
    """A missing active collection is never created (even with create true): consumption is held.
    A missing secondary without create (a rollback collection retired meanwhile) is not recreated:
    its documents go to its repair set and the active takes the events."""
    missing, rollback = f"{collection_name}_gone", f"{collection_name}_v0"
    caplog.set_level(logging.WARNING, logger="tributary.stream")
    with Producer(redis_server.url, collection_name) as producer, \
            running_worker(config(redis_server, milvus_server, collection_name)) as (worker, handled):
        write_routing(stream.client, collection_name, [{"collection": missing, "create": True}])
        producer.publish(upsert("first", 1))
        wait_for(lambda: f"routing target {missing}: collection {missing} does not exist" in caplog.text,
                 timeout=60, message="the missing active collection was not refused")
        assert handled == [] and stream.own_pending("routing") == 1
        write_routing(stream.client, collection_name, [{"collection": collection_name}, {"collection": rollback}])
        producer.publish(upsert("second", 1))
        wait_for(lambda: drained(stream), timeout=120, message="the events were not acknowledged")
    assert not has_collection(milvus_server.uri, missing) and not has_collection(milvus_server.uri, rollback)
    assert sorted(h.result for h in handled) == ["written", "written"] and not stream.dead_letters()
    assert set(rows(milvus_server.uri, collection_name)) == {"first", "second"}
    assert repairs(stream.client, collection_name, rollback) == {"first": 1, "second": 1}


def test_a_target_dimension_is_checked_at_warm_up(redis_server, milvus_server, collection_name, stream, caplog):
    """The bundled model makes 384-dimension vectors: an active target expecting 768 holds the
    batch; a candidate expecting 768 fails alone (its repair set), the active takes the event."""
    candidate = f"{collection_name}_v2"
    caplog.set_level(logging.WARNING, logger="tributary.stream")
    with Producer(redis_server.url, collection_name) as producer, \
            running_worker(config(redis_server, milvus_server, collection_name)) as (worker, handled):
        write_routing(stream.client, collection_name, [{"collection": collection_name, "dimension": 768}])
        producer.publish(upsert("doc", 1))
        refused = f"routing target {collection_name}: model {DEFAULT_MODEL_ID} produces 384-dimension vectors, not 768"
        wait_for(lambda: refused in caplog.text, timeout=60, message="the active target's dimension was not checked")
        assert handled == [] and stream.own_pending("routing") == 1
        write_routing(stream.client, collection_name, [
            {"collection": collection_name, "dimension": 384},
            {"collection": candidate, "dimension": 768, "create": True}])
        wait_for(lambda: drained(stream), timeout=120, message="the held event was not written once fixed")
    assert [h.result for h in handled] == ["written"]
    assert set(rows(milvus_server.uri, collection_name)) == {"doc"}
    assert repairs(stream.client, collection_name, candidate) == {"doc": 1}
    assert not has_collection(milvus_server.uri, candidate), "a target that cannot warm up creates nothing"


def test_a_version_rewritten_with_another_chunking_keeps_only_the_new_chunks(tmp_path, milvus_server,
                                                                              collection_name):
    """A crash between the upsert of a fine chunking and its commit, then a restart with coarser
    chunks at the same version: the commit's cleanup removes the fine chunking's surplus rows."""
    embedder = Embedder(EmbedderConfig())
    embedder.warm_up()
    writer = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name,
                                       model_id=embedder.model_id, dimension=embedder.dimension))
    writer.warm_up()
    ledger = SQLiteLedger(tmp_path / "ledger.db", collection_name)
    fine, coarse = chunker_for(32, 0), chunker_for(128, 16)
    document = Document("doc", 3, text_of("doc", 3))
    try:
        crashed = DocumentIndexer(fine, embedder, writer, ledger, "run-1")
        prepared = crashed.prepare(document)
        crashed.embed([prepared])
        writer.run(writer.rows(prepared.chunks, prepared.vectors, prepared.content_hash, {}))  # ...then the crash
        assert rows(milvus_server.uri, collection_name) == {"doc": pks(fine, "doc", 3)}

        (result,) = DocumentIndexer(coarse, embedder, writer, ledger, "run-2").index([document])
        assert result.status is Status.SUCCEEDED and result.chunks_written == len(pks(coarse, "doc", 3))
        assert len(pks(coarse, "doc", 3)) < len(pks(fine, "doc", 3))
        assert rows(milvus_server.uri, collection_name) == {"doc": pks(coarse, "doc", 3)}
    finally:
        writer.close()
        ledger.close()
