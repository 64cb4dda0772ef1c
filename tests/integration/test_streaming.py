"""The streaming worker against a real redis-server and `milvus-lite server`.

Worker processes are real subprocesses where the process itself is the point (SIGKILL, SIGTERM);
elsewhere the worker runs on a thread of the test process (the model then loads once per session).
Expected chunk ids are computed independently of the worker, from the events' text.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness.servers import free_port
from harness.waiting import wait_for
from tributary_workers.contract.exits import EXIT_PERMANENT
from tributary_workers.contract.keys import applied_key, routing_key
from tributary_workers.contract.routing import (
    all_applied,
    applied_generations,
    applied_reports,
    clear_routing,
    prune_applied,
    read_routing,
    repairs,
    report_applied,
    write_routing,
)
from tributary_workers.documents import Document
from tributary_workers.ledger import RedisLedger
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import DEFAULT_MODEL_ID, default_model_path
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig, open_client
from tributary_workers.streaming.config import StreamConfig
from tributary_workers.streaming.events import parse_event, parse_event_json
from tributary_workers.streaming.producer import Producer
from tributary_workers.streaming.queue import RedisStream, StreamNames
from tributary_workers.streaming.worker import StreamWorker

BIN = Path(sys.executable).parent
WORKER = [str(BIN / "tributary-stream-worker")]
TRIBUTARY = str(BIN / "tributary")
CHUNKING = ChunkerConfig(max_tokens=48, overlap_tokens=8)
CHUNK_FLAGS = ["--max-tokens", "48", "--overlap-tokens", "8"]


def text_of(doc: str, version: int, paragraphs: int = 3) -> str:
    topics = ["harbours", "glaciers", "orchards", "comets", "bridges", "lichens", "kites", "tides"]
    return "\n\n".join(
        f"Document {doc} at version {version}, paragraph {n}: notes about {topics[(version + n) % len(topics)]} "
        f"and how they change over the seasons, with measurement {version * 100 + n} recorded each spring."
        for n in range(paragraphs)
    )


def upsert(doc: str, version: int, **extra) -> dict:
    return {"op": "upsert", "doc_id": doc, "version": version, "content": text_of(doc, version), **extra}


def delete(doc: str, version: int) -> dict:
    return {"op": "delete", "doc_id": doc, "version": version}


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker.for_model_path(default_model_path(), CHUNKING, 256)


def final_state(events: list[dict]) -> dict[str, tuple[int, str | None]]:
    """doc_id -> (version, text or None for a delete): the highest version wins, the first of a tie."""
    final: dict[str, tuple[int, str | None]] = {}
    for event in events:
        current = final.get(event["doc_id"])
        if current is None or event["version"] > current[0]:
            final[event["doc_id"]] = (event["version"], event.get("content") if event["op"] == "upsert" else None)
    return final


def expected_pks(chunker: Chunker, final: dict[str, tuple[int, str | None]]) -> dict[str, set[str]]:
    return {
        doc_id: {c.pk for c in chunker.run(Document(doc_id, version, text))} if text is not None else set()
        for doc_id, (version, text) in final.items()
    }


def query(milvus_uri: str, collection: str, **kwargs) -> list[dict]:
    """A query, retried: milvus-lite's server drops idle shared gRPC channels ("too many pings")."""

    def attempt():
        client = open_client(milvus_uri)
        try:
            return (client.query(collection, **kwargs),)
        finally:
            client.close()

    return wait_for(attempt, timeout=30, message=f"query of {collection}")[0]


def rows_by_doc(milvus_uri: str, collection: str) -> dict[str, set[str]]:
    rows = query(milvus_uri, collection, filter="", output_fields=["pk", "doc_id"], limit=16384)
    count = query(milvus_uri, collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
    assert len(rows) == count == len({r["pk"] for r in rows}), "duplicated chunk rows"
    result: dict[str, set[str]] = {}
    for row in rows:
        result.setdefault(row["doc_id"], set()).add(row["pk"])
    return result


def assert_exact(milvus_uri: str, collection: str, want: dict[str, set[str]]) -> None:
    got = rows_by_doc(milvus_uri, collection)
    for doc_id, pks in want.items():
        assert got.get(doc_id, set()) == pks, f"{doc_id}: {len(got.get(doc_id, set()))} rows, want {len(pks)}"
    assert set(got) <= set(want), f"unexpected documents {set(got) - set(want)}"


def drained(stream: RedisStream) -> bool:
    state = stream.group_state()
    return state is not None and state.lag == 0 and state.pending == 0


def config(redis_server, milvus_server, collection: str, **overrides) -> StreamConfig:
    values = dict(index=collection, redis_url=redis_server.url, milvus_uri=milvus_server.uri, chunking=CHUNKING,
                  consumer="in-process", maintenance_interval_s=0.3)
    values.update(overrides)
    return StreamConfig(**values)


@contextmanager
def running_worker(cfg: StreamConfig):
    """A StreamWorker on a thread; yields (worker, handled outcomes); drains it on exit."""
    handled = []
    worker = StreamWorker(cfg, observer=handled.extend)
    worker.warm_up()
    errors = []

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


def stream_of(redis_server, collection: str) -> RedisStream:
    return RedisStream.from_url(redis_server.url, StreamNames.for_index(collection))


# --------------------------------------------------------------------------------------------------


def test_upserts_edits_deletes_and_uri_events_end_exact(tmp_path, redis_server, milvus_server, collection_name,
                                                        chunker):
    page = tmp_path / "pages" / "field-notes.md"
    page.parent.mkdir()
    page.write_text("# Field notes\n\n" + text_of("field-notes", 1))
    first = [upsert(f"doc-{i}", 1) for i in range(8)] + [
        upsert("doc-1", 2), upsert("doc-2", 3), delete("doc-3", 2),
        {"op": "upsert", "doc_id": "pages/field-notes.md", "version": 5, "uri": str(page),
         "metadata": {"team": "survey"}},
    ]
    second = [
        upsert("doc-1", 1),  # stale: superseded by version 2 in the index
        upsert("doc-3", 1),  # older than the delete: must not resurrect it
        delete("doc-4", 7), upsert("doc-5", 4), upsert("doc-8", 1),
        upsert("doc-6", 9), upsert("doc-6", 8),  # out of order in one batch: 9 wins
    ]
    stream = stream_of(redis_server, collection_name)
    with Producer(redis_server.url, collection_name) as producer:
        producer.publish_many(first)
        with running_worker(config(redis_server, milvus_server, collection_name)) as (worker, handled):
            wait_for(lambda: drained(stream), timeout=120, message="the first wave was not consumed")
            producer.publish_many(second)
            wait_for(lambda: drained(stream), timeout=60, message="the second wave was not consumed")

    events = first + second
    final = final_state(events)
    final["pages/field-notes.md"] = (5, page.read_text())
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final))

    results = {}
    for h in handled:
        results[h.result] = results.get(h.result, 0) + 1
    assert sum(results.values()) == len(events) and "dead_lettered" not in results
    assert results["superseded"] >= 3 and results["deleted"] == 2
    row = query(milvus_server.uri, collection_name, filter='doc_id == "pages/field-notes.md"',
                output_fields=["metadata"], limit=1)[0]
    assert row["metadata"]["team"] == "survey" and row["metadata"]["content_type"] == "text/markdown"
    assert all(h.latency_s is not None and h.latency_s < 60 for h in handled)
    assert stream.length() == 0, "acknowledged entries are trimmed"
    stream.close()


def test_sigkill_mid_batch_then_another_worker_reclaims_and_the_collection_is_exact(
        tmp_path, redis_server, milvus_server, collection_name, worker_env, chunker):
    events = (
        [upsert(f"d{i:02d}", 1) for i in range(10)]  # the victim's first two batches
        + [upsert(f"d{i:02d}", 2) for i in range(5)]
        + [delete(f"d{i:02d}", 3) for i in range(5, 8)]
        + [upsert("d00", 1)]
        + [upsert(f"d{i:02d}", 1) for i in range(10, 17)]
        + [upsert("d10", 2), delete("d11", 5), upsert("d11", 4), upsert("d08", 9)]
    )
    stream = stream_of(redis_server, collection_name)
    with Producer(redis_server.url, collection_name) as producer:
        ids = producer.publish_many(events)
    by_id = dict(zip(ids, events, strict=True))
    ledger = RedisLedger.from_url(redis_server.url, collection_name)

    # The victim writes each batch of 5, then waits 2 s before acknowledging it.
    log = (tmp_path / "victim.log").open("w")
    victim = subprocess.Popen(
        WORKER + ["--index", collection_name, "--redis-url", redis_server.url, "--milvus-uri", milvus_server.uri,
                  "--consumer", "victim", "--max-batch-size", "5", "--max-wait-ms", "0", *CHUNK_FLAGS],
        env={**worker_env, "TRIBUTARY_STREAM_ACK_DELAY_S": "2"}, stdout=log, stderr=subprocess.STDOUT,
    )

    def victim_pending() -> list[str]:
        details = stream.client.xpending_range(stream.names.stream, stream.names.group, "-", "+", 100,
                                               consumername="victim")
        return [d["message_id"].decode() for d in details]

    def second_batch_written_not_acked() -> bool:
        pending = victim_pending()
        return pending == ids[5:10] and all(ledger.get(by_id[i]["doc_id"]) is not None for i in pending)

    try:
        wait_for(lambda: victim.poll() is not None or second_batch_written_not_acked(), timeout=120, interval=0.05,
                 message="the victim never had a written, unacknowledged batch")
        victim.kill()
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
        log.close()
    assert victim.returncode == -signal.SIGKILL, (tmp_path / "victim.log").read_text()[-3000:]
    orphaned = victim_pending()
    assert orphaned == ids[5:10]

    # Once the orphans have been idle for claim_idle_ms, the rescuer's first XAUTOCLAIM takes them.
    wait_for(lambda: all(d["time_since_delivered"] > 1100 for d in stream.client.xpending_range(
        stream.names.stream, stream.names.group, "-", "+", 100, consumername="victim")), timeout=10)
    cfg = config(redis_server, milvus_server, collection_name, consumer="rescuer", claim_idle_ms=1000,
                 max_batch_size=8)
    with running_worker(cfg) as (worker, handled):
        wait_for(lambda: drained(stream), timeout=120, message="the rescuer did not drain the stream")
    assert worker.report.reclaimed == len(orphaned)
    outcome = {h.entry_id: h.result for h in handled}
    # At least once: the orphans were delivered again; exactly once in effect: nothing re-embedded.
    assert [outcome[i] for i in orphaned] == ["unchanged"] * len(orphaned)
    assert set(outcome) == set(ids[10:]) | set(orphaned)
    assert not stream.dead_letters()
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final_state(events)))
    ledger.close()
    stream.close()


def test_poison_messages_go_to_the_dead_letter_stream_and_the_others_flow_on(
        redis_server, milvus_server, collection_name, chunker, tmp_path):
    stream = stream_of(redis_server, collection_name)
    stream.ensure_group()
    raw = stream.client
    good_before = [upsert(f"ok-{i}", 1) for i in range(3)]
    good_after = [upsert(f"ok-{i}", 1) for i in range(3, 6)]
    with Producer(redis_server.url, collection_name) as producer:
        # A message its consumers keep crashing on: delivered 4 times already, never acknowledged.
        crasher = producer.publish(upsert("crasher", 1))
        raw.xreadgroup(stream.names.group, "ghost", {stream.names.stream: ">"}, count=1)
        for _ in range(3):
            raw.xclaim(stream.names.stream, stream.names.group, "ghost", 0, [crasher])
        producer.publish_many(good_before)
        broken_json = raw.xadd(stream.names.stream, {"event": "{broken"}).decode()
        no_event = raw.xadd(stream.names.stream, {"op": "upsert", "doc_id": "x"}).decode()
        bad_version = raw.xadd(stream.names.stream, {"event": json.dumps(
            {"op": "upsert", "doc_id": "v", "version": "seven", "content": "text"})}).decode()
        missing_file = producer.publish({"op": "upsert", "doc_id": "gone.md", "version": 1,
                                         "uri": str(tmp_path / "gone.md")})
        binary = producer.publish({"op": "upsert", "doc_id": "bin.txt", "version": 1, "content": "\x00\x01\x02 x"})
        producer.publish_many(good_after)

    cfg = config(redis_server, milvus_server, collection_name, claim_idle_ms=200, max_deliveries=3)
    with running_worker(cfg) as (worker, handled):
        wait_for(lambda: drained(stream) and len(stream.dead_letters()) == 6, timeout=120,
                 message="the poison messages were not all dead-lettered")
    dead = {fields["original_id"]: fields for _, fields in stream.dead_letters()}
    assert set(dead) == {crasher, broken_json, no_event, bad_version, missing_file, binary}
    assert dead[crasher]["reason"].startswith("delivered 5 times without being acknowledged")
    assert dead[crasher]["deliveries"] == "5"
    assert "invalid JSON" in dead[broken_json]["reason"] and dead[broken_json]["event"] == "{broken"
    assert "no 'event' field" in dead[no_event]["reason"] and dead[no_event]["doc_id"] == "x"
    assert "version: Input should be a valid integer" in dead[bad_version]["reason"]
    assert "file not found" in dead[missing_file]["reason"]
    assert "binary content" in dead[binary]["reason"]
    assert all(parse_event_json(dead[i]["event"]) for i in (crasher, missing_file, binary))
    assert all(dead[i]["deliveries"] == "1" for i in (broken_json, no_event, missing_file, binary))
    assert worker.report.events["dead_lettered"] == 6
    final = final_state(good_before + good_after)
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final))
    stream.close()


def foreign_collection(milvus_server, collection_name: str) -> str:
    """A collection of another model and dimension: every write of ours to it fails."""
    foreign = f"{collection_name}_foreign"
    other = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=foreign, model_id="someone/else", dimension=16))
    other.warm_up()
    other.close()
    return foreign


def test_an_active_target_failure_that_outlasts_retries_is_redelivered_then_dead_lettered(
        redis_server, milvus_server, collection_name, chunker):
    """The active (first) target keeps failing (another model and dimension): retried with
    backoff, left pending, redelivered by XAUTOCLAIM, dead-lettered on the max_deliveries-th
    delivery; the secondary target is not written while the active fails."""
    stream = stream_of(redis_server, collection_name)
    foreign = foreign_collection(milvus_server, collection_name)
    write_routing(stream.client, collection_name, [{"collection": foreign}, {"collection": collection_name}])
    cfg = config(redis_server, milvus_server, collection_name, claim_idle_ms=300, max_deliveries=3, retry_attempts=2,
                 retry_initial_s=0.01, failure_backoff_max_s=0.2)
    with Producer(redis_server.url, collection_name) as producer, running_worker(cfg) as (worker, handled):
        doomed = producer.publish(upsert("doomed", 1))
        wait_for(lambda: drained(stream), timeout=120, message="the failing event was not dead-lettered")
        clear_routing(stream.client, collection_name)
        producer.publish(upsert("fine", 1))
        wait_for(lambda: drained(stream), timeout=60)
    (_, dead), = stream.dead_letters()
    assert dead["original_id"] == doomed and dead["deliveries"] == "3"
    assert dead["reason"].startswith("failed on delivery 3 of 3:") and repr(foreign) in dead["reason"]
    assert worker.report.retries >= 3 and worker.report.reclaimed == 2 and worker.report.failed_batches == 3
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final_state([upsert("fine", 1)])))
    assert repairs(stream.client, collection_name, collection_name) == {}
    stream.close()


def test_a_secondary_target_that_cannot_warm_up_holds_nothing_back_and_gets_repairs(
        redis_server, milvus_server, collection_name, chunker):
    """The second target fails as a whole (another dimension): the active holds every event, each
    entry is acknowledged, the repair set of the secondary holds every document at its newest
    version, and the worker never reports the generation whose target it could not warm up."""
    stream = stream_of(redis_server, collection_name)
    foreign = foreign_collection(milvus_server, collection_name)
    cfg = config(redis_server, milvus_server, collection_name, consumer="w1", retry_initial_s=0.01)
    events = [upsert("a", 1), upsert("b", 2), upsert("a", 3), delete("c", 4)]
    with Producer(redis_server.url, collection_name) as producer, running_worker(cfg) as (worker, handled):
        wait_for(lambda: applied_generations(stream.client, collection_name).get("w1") == 0, timeout=30,
                 message="the worker did not report its configured generation")
        record = write_routing(stream.client, collection_name,
                               [{"collection": collection_name}, {"collection": foreign}])
        producer.publish_many(events)
        wait_for(lambda: drained(stream), timeout=120, message="the events were not acknowledged")
        since = time.time()
        wait_for(lambda: (applied_reports(stream.client, collection_name)["w1"].at or 0) > since, timeout=30,
                 message="the worker's report was not refreshed")
        assert applied_generations(stream.client, collection_name)["w1"] == 0 < record.generation
        clear_routing(stream.client, collection_name)
    assert not stream.dead_letters() and worker.report.repairs >= 3
    assert len(handled) == 4 and "dead_lettered" not in {h.result for h in handled}
    assert repairs(stream.client, collection_name, foreign) == {"a": 3, "b": 2, "c": 4}
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final_state(events)))
    stream.close()


def test_a_secondary_per_document_failure_is_acknowledged_and_recorded_for_repair(
        redis_server, milvus_server, collection_name, chunker, monkeypatch):
    """One document fails in the candidate only (simulated at the target): the active and the
    candidate hold everything else, the entry is acknowledged, the document is in the candidate's
    repair set with its version, and nothing is dead-lettered."""
    from tributary_workers.pipeline.indexer import DocResult, Status
    from tributary_workers.streaming import worker as stream_module

    candidate = f"{collection_name}_v2"
    real_apply = stream_module.WriteTarget.apply

    def apply(self, upserts, deletes):
        results = real_apply(self, [d for d in upserts if not (self.collection == candidate and d.doc_id == "bad")],
                             deletes)
        if self.collection == candidate:
            results += [DocResult(d.doc_id, d.version, Status.FAILED, reason="simulated")
                        for d in upserts if d.doc_id == "bad"]
        return results

    monkeypatch.setattr(stream_module.WriteTarget, "apply", apply)
    stream = stream_of(redis_server, collection_name)
    cfg = config(redis_server, milvus_server, collection_name)
    events = [upsert("good", 1), upsert("bad", 2)]
    # Started without a record: the configured (active) collection is created; the candidate by its write.
    with Producer(redis_server.url, collection_name) as producer, running_worker(cfg) as (worker, handled):
        write_routing(stream.client, collection_name,
                      [{"collection": collection_name}, {"collection": candidate, "create": True}])
        producer.publish_many(events)
        wait_for(lambda: drained(stream), timeout=120)
    clear_routing(stream.client, collection_name)
    assert not stream.dead_letters() and sorted(h.result for h in handled) == ["written", "written"]
    assert repairs(stream.client, collection_name, candidate) == {"bad": 2}
    assert repairs(stream.client, collection_name, collection_name) == {}
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final_state(events)))
    assert_exact(milvus_server.uri, candidate, expected_pks(chunker, final_state([upsert("good", 1)])))
    stream.close()


def test_generations_are_monotonic_and_applied_reports_are_timestamped_and_pruned(redis_server, collection_name):
    client = stream_of(redis_server, collection_name).client
    index = collection_name
    first = write_routing(client, index, [{"collection": "docs_v1"}])
    second = write_routing(client, index, [{"collection": "docs_v1"}, {"collection": "docs_v2"}])
    clear_routing(client, index)
    assert read_routing(client, index) is None
    third = write_routing(client, index, [{"collection": "docs_v2"}])
    assert (first.generation, second.generation, third.generation) == (1, 2, 3)
    assert write_routing(client, index, [{"collection": "docs_v2"}], generation=10).generation == 10
    assert write_routing(client, index, [{"collection": "docs_v2"}]).generation == 11
    client.set(routing_key(index), b"{broken")  # an unparsable record does not reset the counter either
    assert write_routing(client, index, [{"collection": "docs_v2"}]).generation == 12

    before = time.time()
    report_applied(client, index, "pod-a", 12)
    report_applied(client, index, "pod-b", 11)
    client.hset(applied_key(index), "pod-old", 3)  # the plain integer of an older worker
    reports = applied_reports(client, index)
    assert reports["pod-a"].generation == 12 and before <= reports["pod-a"].at <= time.time()
    assert reports["pod-old"].generation == 3 and reports["pod-old"].at is None
    assert applied_generations(client, index) == {"pod-a": 12, "pod-b": 11, "pod-old": 3}
    assert not all_applied(client, index, {"pod-a", "pod-b"}, 12)
    assert all_applied(client, index, {"pod-a", "pod-b"}, 11)
    assert not all_applied(client, index, {"pod-a", "pod-new"}, 1), "a live pod that never reported"
    assert prune_applied(client, index, {"pod-a", "pod-b"}) == ["pod-old"]
    assert sorted(applied_generations(client, index)) == ["pod-a", "pod-b"]
    assert prune_applied(client, index, {"pod-a", "pod-b"}) == []


def test_a_transient_failure_is_retried_and_redelivered_until_it_succeeds(
        redis_server, milvus_server, collection_name, chunker, monkeypatch):
    """Milvus unavailable for a while (simulated for one document): the batch is retried with
    backoff, left pending when the retries run out, redelivered, and written once it recovers."""
    from tributary_workers.streaming import worker as stream_module

    calls = []
    real_apply = stream_module.WriteTarget.apply

    def flaky_apply(self, upserts, deletes):
        if any(d.doc_id == "flaky" for d in upserts):
            calls.append(time.monotonic())
            if len(calls) <= 3:
                raise ConnectionError("milvus unavailable (simulated)")
        return real_apply(self, upserts, deletes)

    monkeypatch.setattr(stream_module.WriteTarget, "apply", flaky_apply)
    stream = stream_of(redis_server, collection_name)
    cfg = config(redis_server, milvus_server, collection_name, claim_idle_ms=300, max_deliveries=3, retry_attempts=2,
                 retry_initial_s=0.05, failure_backoff_max_s=0.2)
    events = [upsert("flaky", 1), upsert("steady", 1)]
    with Producer(redis_server.url, collection_name) as producer, running_worker(cfg) as (worker, handled):
        producer.publish_many(events)
        wait_for(lambda: drained(stream), timeout=60, message="the flaky event was never written")
    assert len(calls) == 4 and calls[1] - calls[0] >= 0.05, "2 attempts, redelivery, 1 failed + 1 good attempt"
    assert worker.report.reclaimed == 2 and worker.report.failed_batches == 1 and worker.report.retries == 2
    assert sorted(h.result for h in handled) == ["written", "written"] and not stream.dead_letters()
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final_state(events)))
    stream.close()


def test_routing_record_writes_every_event_to_every_target(redis_server, milvus_server, collection_name, chunker):
    """During a re-embedding both collections get every event, each through its own ledger
    namespace and embedder (both use the bundled model here: it is the one model available offline)."""
    stream = stream_of(redis_server, collection_name)
    candidate = f"{collection_name}_v2"
    cfg = config(redis_server, milvus_server, collection_name, consumer="router")
    both = [upsert(f"r{i}", 1) for i in range(4)] + [upsert("r0", 2), delete("r1", 3)]
    after = [upsert("r2", 5), upsert("solo", 1)]
    with Producer(redis_server.url, collection_name) as producer, running_worker(cfg) as (worker, handled):
        record = write_routing(stream.client, collection_name, [
            {"collection": collection_name, "model": None},
            {"collection": candidate, "model": DEFAULT_MODEL_ID, "create": True}])
        producer.publish_many(both)
        wait_for(lambda: drained(stream), timeout=120)
        wait_for(lambda: applied_generations(stream.client, collection_name).get("router") == record.generation,
                 timeout=10, message="the worker did not report the routing generation it applied")
        clear_routing(stream.client, collection_name)
        producer.publish_many(after)
        wait_for(lambda: drained(stream), timeout=60)
    assert record.generation == 1
    assert_exact(milvus_server.uri, candidate, expected_pks(chunker, final_state(both)))
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final_state(both + after)))
    for namespace in (collection_name, candidate):
        assert RedisLedger.from_url(redis_server.url, namespace).get("r1").deleted
    stream.close()


def metric_value(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def test_sigterm_drains_the_batch_in_flight(tmp_path, redis_server, milvus_server, collection_name, worker_env,
                                           chunker):
    """`tributary stream` stops reading on SIGTERM, acknowledges the batch it was writing, exits 0."""
    events = [upsert(f"t{i:02d}", 1) for i in range(16)]
    stream = stream_of(redis_server, collection_name)
    with Producer(redis_server.url, collection_name) as producer:
        ids = producer.publish_many(events)
    port = free_port()
    worker = subprocess.Popen(
        [TRIBUTARY, "--redis", redis_server.url, "--milvus", milvus_server.uri, "--home", str(tmp_path / "home"),
         "stream", "--index", collection_name, "--ledger", "redis", "--consumer", "drainer", "--max-batch-size", "4",
         "--max-wait-ms", "0", "--metrics-port", str(port), "--drain-timeout", "20", "--json", *CHUNK_FLAGS],
        env={**worker_env, "TRIBUTARY_STREAM_ACK_DELAY_S": "2.5"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    ledger = RedisLedger.from_url(redis_server.url, collection_name)

    def second_batch_in_flight() -> bool:
        state = stream.group_state()
        return (state is not None and state.pending == 4 and state.entries_read == 8
                and all(ledger.get(e["doc_id"]) is not None for e in events[4:8]))

    try:
        wait_for(lambda: worker.poll() is not None or second_batch_in_flight(), timeout=120, interval=0.05,
                 message="the worker never had a batch in flight")
        assert metric_value(port, "tributary_stream_latency_seconds_count") == 4  # the first batch
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
        took = time.monotonic() - signalled
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err[-3000:]
    assert took < 20
    report = json.loads(out.strip().splitlines()[-1])
    assert report["drained"] and report["events"] == {"written": 8} and report["latency_count"] == 8
    assert 0 < report["latency_mean_s"] < 60
    state = stream.group_state()
    assert (state.pending, state.entries_read, state.lag) == (0, 8, 8), "stopped reading, acknowledged in flight"
    assert stream.client.xrange(stream.names.stream, count=1)[0][0].decode() == ids[8], "only acked entries trimmed"
    assert_exact(milvus_server.uri, collection_name, expected_pks(chunker, final_state(events[:8])))
    ledger.close()
    stream.close()


def test_publish_cli_reports_bad_lines_and_publishes_the_rest(tmp_path, redis_server, worker_env):
    lines = [
        json.dumps(upsert("p1", 1)),
        "{not json",
        "",
        json.dumps({"op": "upsert", "doc_id": "p2", "content": "no version"}),
        json.dumps(delete("p3", 4)),
        json.dumps(upsert("p4", 2, produced_at=123)),
    ]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join(lines) + "\n")
    index = "publish_cli"
    result = subprocess.run([TRIBUTARY, "--redis", redis_server.url, "publish", "--index", index, str(events_file)],
                            env=worker_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in result.stderr
    assert errors[0].startswith("line 2: invalid JSON")
    assert errors[1] == "line 4: version: Field required"
    assert "published 3 events" in result.stdout and "2 lines rejected" in result.stdout

    stream = stream_of(redis_server, index)
    entries = [parse_event_json(fields[b"event"]) for _, fields in stream.client.xrange(stream.names.stream)]
    assert [(e.op, e.doc_id) for e in entries] == [("upsert", "p1"), ("delete", "p3"), ("upsert", "p4")]
    assert entries[2].produced_at == 123 and entries[0].produced_at > 1e18
    assert stream.group_state() is not None, "publishing creates the stream and its group"

    piped = subprocess.run([TRIBUTARY, "--redis", redis_server.url, "publish", "--index", index, "-"],
                           input=json.dumps(delete("p5", 1)) + "\n", env=worker_env, capture_output=True, text=True,
                           timeout=60)
    assert piped.returncode == 0 and stream.length() == 4
    missing = subprocess.run([TRIBUTARY, "--redis", redis_server.url, "publish", "--index", index,
                              str(tmp_path / "nope.jsonl")], env=worker_env, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "cannot read" in missing.stderr
    stream.close()


def test_publish_cli_takes_the_pipelines_stream_and_group(tmp_path, redis_server, worker_env):
    names = StreamNames("events:publish_custom", "pipeline-c")
    events_file = tmp_path / "events.jsonl"
    events_file.write_text(json.dumps(upsert("s1", 1)) + "\n" + json.dumps(upsert("s2", 1)) + "\n")
    result = subprocess.run([TRIBUTARY, "--redis", redis_server.url, "publish", "--index", "publish_names",
                             "--stream", names.stream, "--group", names.group, str(events_file)],
                            env=worker_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    stream = RedisStream.from_url(redis_server.url, names)
    assert stream.length() == 2 and [g.name for g in stream.group_states()] == ["pipeline-c"]
    assert stream_of(redis_server, "publish_names").length() == 0, "nothing went to the default stream"
    both = subprocess.run([TRIBUTARY, "publish", "--index", "publish_names", "--gateway", "http://127.0.0.1:1",
                           "--stream", names.stream, str(events_file)], env=worker_env, capture_output=True,
                          text=True, timeout=60)
    assert both.returncode == 1 and "--stream and --group go straight to Redis" in both.stderr
    stream.close()


def test_worker_entry_point_needs_its_settings(worker_env):
    env = {k: v for k, v in worker_env.items() if not k.startswith("TRIBUTARY_") or k == "TRIBUTARY_HOME"}
    result = subprocess.run(WORKER, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_PERMANENT, "missing settings are not fixed by a retry"
    assert result.stderr.strip() == ("tributary-stream-worker: error: missing required settings: --index, "
                                     "--redis-url, --milvus-uri (flags or TRIBUTARY_* env)")


def test_events_module_prints_the_schema():
    result = subprocess.run([sys.executable, "-m", "tributary_workers.streaming.events"], capture_output=True, text=True,
                            timeout=60, env={**os.environ})
    assert result.returncode == 0 and json.loads(result.stdout)["title"] == "Tributary document event"
    assert parse_event(upsert("x", 1)).doc_id == "x"
