"""What the operator reads and writes in Redis (a pipeline's queue and records, a run's checkpoints), against a
real redis-server."""

from __future__ import annotations

import uuid

import pytest
import redis
from tributary_operator import queues
from tributary_operator.core.streampipeline.scaling import estimate_backlog
from tributary_workers.contract.backpressure import BackpressureRecord, read_backpressure
from tributary_workers.contract.keys import backpressure_key
from tributary_workers.contract.routing import read_routing, report_applied


@pytest.fixture
def conn(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def stream() -> str:
    return f"t:{uuid.uuid4().hex[:8]}"


def add(conn, stream, n):
    return [conn.xadd(stream, {"event": "{}"}) for _ in range(n)]


def test_backlog_is_lag_plus_pending_of_the_pipelines_own_group(conn, stream):
    add(conn, stream, 5)
    first = queues.observe(conn, stream, "g", count_limit=100)  # creates the group at the stream's start
    assert (first.lag, first.pending, first.stream_length) == (5, 0, 5)
    conn.xreadgroup("g", "c1", {stream: ">"}, count=2)
    conn.xgroup_create(stream, "abandoned", id="0")  # another group's backlog is not this pipeline's
    later = queues.observe(conn, stream, "g", count_limit=100)
    assert (later.lag, later.pending) == (3, 2)
    assert estimate_backlog(later).value == 5


def test_nil_lag_is_counted_not_zero(conn, stream):
    ids = add(conn, stream, 6)
    queues.observe(conn, stream, "g", count_limit=100)
    conn.xreadgroup("g", "c1", {stream: ">"}, count=2)
    conn.xack(stream, "g", *ids[:2])
    conn.xdel(stream, ids[3])  # a deletion after last-delivered-id: Redis reports lag nil
    seen = queues.observe(conn, stream, "g", count_limit=100)
    assert seen.lag is None and seen.counted == 3
    backlog = estimate_backlog(seen)
    assert (backlog.value, backlog.source) == (3, "counted")


def test_unreachable_redis_is_one_line_without_the_url():
    dead = queues.client_for("redis://:s3cret@127.0.0.1:1/0")
    seen = queues.observe(dead, "s", "g", count_limit=10)
    assert not seen.reachable and seen.error and "\n" not in seen.error
    assert "s3cret" not in seen.error
    assert estimate_backlog(seen).value is None


def test_routing_record_is_written_once_per_change(conn):
    index = f"idx_{uuid.uuid4().hex[:8]}"
    first, written = queues.sync_routing(conn, index, [{"collection": "a_1", "model": None}])
    assert written
    assert queues.sync_routing(conn, index, [{"collection": "a_1", "model": None}]) == (first, False)  # unchanged
    second, written = queues.sync_routing(conn, index, [{"collection": "a_1"}, {"collection": "a_2", "model": "/m"}])
    assert written and second > first
    assert [t.collection for t in read_routing(conn, index).targets] == ["a_1", "a_2"]
    conn.set(f"tributary:routing:{index}", "not json")  # an invalid record is replaced
    assert queues.sync_routing(conn, index, [{"collection": "a_1"}])[1] is True
    assert [t.collection for t in read_routing(conn, index).targets] == ["a_1"]


def test_routing_is_applied_once_every_live_worker_reported_it(conn):
    index = f"idx_{uuid.uuid4().hex[:8]}"
    generation, _ = queues.sync_routing(conn, index, [{"collection": "a_1"}, {"collection": "a_2"}])
    assert queues.routing_applied(conn, index, set(), generation)  # no worker: nothing in flight
    report_applied(conn, index, "pod-a", generation)
    report_applied(conn, index, "pod-b", generation - 1)
    assert not queues.routing_applied(conn, index, {"pod-a", "pod-b"}, generation)
    assert queues.routing_applied(conn, index, {"pod-a"}, generation)  # pod-b is gone
    report_applied(conn, index, "pod-b", generation)
    assert queues.routing_applied(conn, index, {"pod-a", "pod-b"}, generation)


def test_gone_consumers_are_deleted_only_without_pending_entries(conn, stream):
    add(conn, stream, 3)
    queues.observe(conn, stream, "g", count_limit=10)
    conn.xreadgroup("g", "gone-busy", {stream: ">"}, count=1)  # keeps one pending entry
    conn.xreadgroup("g", "gone-idle", {stream: ">"}, count=1)
    conn.xack(stream, "g", conn.xpending_range(stream, "g", "-", "+", 10, consumername="gone-idle")[0]["message_id"])
    conn.xreadgroup("g", "live-pod", {stream: ">"}, count=1)
    conn.xack(stream, "g", conn.xpending_range(stream, "g", "-", "+", 10, consumername="live-pod")[0]["message_id"])
    deleted = queues.delete_gone_consumers(conn, stream, "g", live={"live-pod"}, idle_ms=0)
    assert deleted == ["gone-idle"]
    names = {c["name"] for c in conn.xinfo_consumers(stream, "g")}
    assert names == {"gone-busy", "live-pod"}  # its pending entry waits to be claimed, not dropped
    assert conn.xpending(stream, "g")["pending"] == 1


def test_recently_active_consumers_survive_a_brief_gap(conn, stream):
    add(conn, stream, 1)
    queues.observe(conn, stream, "g", count_limit=10)
    conn.xreadgroup("g", "someone-else", {stream: ">"}, count=1)
    conn.xack(stream, "g", conn.xpending_range(stream, "g", "-", "+", 10)[0]["message_id"])
    assert queues.delete_gone_consumers(conn, stream, "g", live=set()) == []  # idle < GONE_IDLE_MS
    assert {c["name"] for c in conn.xinfo_consumers(stream, "g")} == {"someone-else"}


def state(**overrides) -> BackpressureRecord:
    return BackpressureRecord(**{"high": 20, "low": 5, "on": False, "backlog": 3, "group": "g",
                                 "pipeline": "ns/live", "at": 1_800_000_000.0, "ttl": 30, **overrides})


def test_the_backpressure_record_is_written_with_a_ttl_and_only_when_it_changed(conn, stream):
    key = backpressure_key(stream)
    assert queues.publish_backpressure(conn, stream, state(), ttl=30)
    assert read_backpressure(conn, stream) == state()
    assert 29_000 < conn.pttl(key) <= 30_000

    # the same state with a newer backlog and time, a pass later: not written again
    assert not queues.publish_backpressure(conn, stream, state(backlog=4, at=1_800_000_001.0), ttl=30)
    assert read_backpressure(conn, stream).backlog == 3
    # the state changes: written at once, with a fresh TTL
    conn.pexpire(key, 20_000)
    assert queues.publish_backpressure(conn, stream, state(on=True, backlog=25), ttl=30)
    assert read_backpressure(conn, stream).on is True and conn.pttl(key) > 29_000
    # half the TTL spent: rewritten, so a live operator's record never expires
    conn.pexpire(key, 14_000)
    assert queues.publish_backpressure(conn, stream, state(on=True, backlog=26), ttl=30)
    assert read_backpressure(conn, stream).backlog == 26 and conn.pttl(key) > 29_000
    # a new TTL (pollingIntervalSeconds changed) is written into the record too
    assert queues.publish_backpressure(conn, stream, state(on=True), ttl=45)
    assert read_backpressure(conn, stream).ttl == 45 and conn.pttl(key) > 44_000
    # gone (expired, deleted, a Redis without persistence restarted) or invalid: written again
    conn.delete(key)
    assert queues.publish_backpressure(conn, stream, state(), ttl=30)
    conn.set(key, "not json", ex=30)
    assert queues.publish_backpressure(conn, stream, state(), ttl=30)
    assert read_backpressure(conn, stream) == state()


def test_a_deleted_pipeline_forgets_only_its_own_record(conn, stream):
    queues.publish_backpressure(conn, stream, state(pipeline="ns/other"), ttl=30)
    queues.forget_backpressure(conn, stream, "ns/live")
    assert read_backpressure(conn, stream).pipeline == "ns/other"  # the stream's record is another's now
    queues.publish_backpressure(conn, stream, state(), ttl=30)
    queues.forget_backpressure(conn, stream, "ns/live")
    assert not conn.exists(backpressure_key(stream))
    queues.forget_backpressure(conn, stream, "ns/live")  # nothing there: nothing to do


def test_publishing_backpressure_to_an_unreachable_redis_is_one_line_without_the_url():
    dead = queues.client_for("redis://:s3cret@127.0.0.1:1/0")
    with pytest.raises(queues.RedisUnavailable) as caught:
        queues.publish_backpressure(dead, "s", state(), ttl=30)
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_the_operator_reads_the_checkpoints_batch_shards_saved_in_redis(redis_url):
    """Both planes' halves: the batch worker's store writes, the operator reads them back keyed as
    a checkpoint ConfigMap's data and parses each shard's progress; another run's are left out."""
    from tributary_operator.core.ingestion import shard_progress
    from tributary_workers.batch.checkpoint import open_checkpoint_store
    from tributary_workers.contract.checkpoints import CheckpointState
    from tributary_workers.contract.keys import checkpoint_key

    run = f"docs-{uuid.uuid4().hex[:6]}"
    store = open_checkpoint_store(redis_url)
    try:
        store.save(checkpoint_key(run, "docs", 0, 2), CheckpointState(sources_total=4, sources_done=4, completed=True))
        store.save(checkpoint_key(run, "docs", 1, 2), CheckpointState(sources_total=5, sources_done=2))
        store.save(checkpoint_key(run + "x", "docs", 0, 1), CheckpointState(sources_total=9))
    finally:
        store.close()
    found = queues.checkpoints(redis_url, run)
    assert sorted(found) == [f"{run}.docs.shard-0-of-2", f"{run}.docs.shard-1-of-2"]
    shards = shard_progress(found, run)
    assert [(s.sources_done, s.sources_total, s.completed) for _, s in sorted(shards.items())] == \
        [(4, 4, True), (2, 5, False)]
