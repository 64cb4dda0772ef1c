"""The streaming path when things go wrong, against real redis-server and `milvus-lite server`
processes: Redis not up yet at start, a failover that makes Redis read-only, an abandoned consumer
group, a stream with deleted entries (nil lag), and a stop while a batch lingers or is held."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from harness.servers import free_port
from harness.waiting import wait_for
from tributary_workers.contract.keys import routing_key
from tributary_workers.contract.routing import clear_routing, write_routing
from tributary_workers.localservers import start_milvus, start_redis
from tributary_workers.pipeline.chunker import ChunkerConfig
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig, open_client
from tributary_workers.streaming.config import StreamConfig
from tributary_workers.streaming.gateway import GatewayConfig, GatewayServer
from tributary_workers.streaming.producer import Producer
from tributary_workers.streaming.queue import RedisStream, StreamNames
from tributary_workers.streaming.worker import StreamWorker

WORKER = str(Path(sys.executable).parent / "tributary-stream-worker")
CHUNKING = ChunkerConfig(max_tokens=48, overlap_tokens=8)


def upsert(doc: str, version: int = 1) -> dict:
    return {"op": "upsert", "doc_id": doc, "version": version,
            "content": f"Robustness document {doc} version {version}: notes on tides, shoals and lighthouses. " * 3}


def config(redis_url: str, milvus_server, collection: str, **overrides) -> StreamConfig:
    values = dict(index=collection, redis_url=redis_url, milvus_uri=milvus_server.uri, chunking=CHUNKING,
                  consumer="robust", maintenance_interval_s=0.3, retry_initial_s=0.05, failure_backoff_max_s=0.5)
    values.update(overrides)
    return StreamConfig(**values)


@contextmanager
def running_worker(cfg: StreamConfig):
    """A StreamWorker on a thread; yields (worker, handled outcomes, the run's result holder)."""
    handled, result, errors = [], {}, []
    worker = StreamWorker(cfg, observer=handled.extend)
    worker.warm_up()

    def run():
        try:
            result["report"] = worker.run()
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=run, name="stream-worker", daemon=True)
    thread.start()
    try:
        yield worker, handled, result
    finally:
        worker.stop()
        thread.join(timeout=60)
        worker.close()
    assert not thread.is_alive(), "the worker did not stop"
    assert not errors, errors


def doc_ids(milvus_uri: str, collection: str) -> set[str]:
    def attempt():
        client = open_client(milvus_uri)
        try:
            return (client.query(collection, filter="", output_fields=["doc_id"], limit=1000),)
        finally:
            client.close()

    return {row["doc_id"] for row in wait_for(attempt, timeout=30, message=f"query of {collection}")[0]}


def consume_all(stream: RedisStream, consumer: str = "c") -> int:
    """Read and acknowledge everything the group has not seen (what a caught-up pipeline did)."""
    done = 0
    while entries := stream.read_new(consumer, 1000, None):
        done += stream.ack([e.id for e in entries])
    return done


# --- backpressure counts the pipeline's own group only -----------------------------------------


def test_an_abandoned_group_with_a_big_lag_does_not_throttle(redis_server, collection_name):
    names = StreamNames.for_index(collection_name)
    stream = RedisStream.from_url(redis_server.url, names)
    stream.ensure_group()
    abandoned = RedisStream.from_url(redis_server.url, StreamNames(names.stream, "abandoned-pipeline"))
    abandoned.ensure_group()
    stream.add_many([{"event": json.dumps(upsert(f"old-{i}"))} for i in range(300)])
    assert consume_all(stream) == 300  # the pipeline caught up; the abandoned group never reads
    lags = {g.name: g.backlog for g in stream.group_states()}
    assert lags == {names.group: 0, "abandoned-pipeline": 300}, lags

    with Producer(redis_server.url, collection_name, high_watermark=100, low_watermark=50, timeout_s=2) as producer:
        producer.publish_many([upsert(f"new-{i}", 2) for i in range(80)])
        assert producer.stats.throttled == 0, "the abandoned group's lag throttled the producer"
    with gateway(redis_server.url, collection_name, high_watermark=100, low_watermark=50) as gw:
        status, body = post(gw.url, [upsert("via-gateway", 3)])
        assert (status, body["accepted"]) == (202, 1), body
        # Control: the pipeline's own group falling behind does throttle.
        with Producer(redis_server.url, collection_name, high_watermark=100, low_watermark=50,
                      timeout_s=0.5) as producer:
            producer.publish_many([upsert(f"more-{i}", 4) for i in range(40)])
        wait_for(lambda: post(gw.url, [upsert("held", 5)])[0] == 429, timeout=10,
                 message="the own group's backlog of 121 never throttled the gateway")
    stream.close()
    abandoned.close()


@contextmanager
def gateway(redis_url: str, index: str, **overrides):
    server = GatewayServer(GatewayConfig(index=index, redis_url=redis_url, port=free_port(),
                                         backlog_refresh_s=0.01, **overrides)).start()
    try:
        yield server
    finally:
        server.stop()


def post(url: str, events: list[dict]) -> tuple[int, dict]:
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/v1/events", body=json.dumps(events).encode(), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


# --- nil lag after XDEL -------------------------------------------------------------------------


def nil_lag_stream(redis_url: str, index: str, entries: int, consumed: int) -> RedisStream:
    """A stream whose group read `consumed` entries, then one unread entry was deleted (XDEL)."""
    stream = RedisStream.from_url(redis_url, StreamNames.for_index(index))
    stream.ensure_group()
    ids = stream.add_many([{"event": json.dumps(upsert(f"d{i}"))} for i in range(entries)])
    got = stream.read_new("c", consumed, None)
    stream.ack([e.id for e in got])
    stream.client.xdel(stream.names.stream, ids[consumed + 2])
    (info,) = stream.client.xinfo_groups(stream.names.stream)
    assert info["lag"] is None, "precondition: Redis reports the lag as nil after XDEL"
    return stream


def test_nil_lag_is_counted_exactly_when_small(redis_server, collection_name):
    stream = nil_lag_stream(redis_server.url, collection_name, entries=50, consumed=10)
    assert stream.backlog() == 39  # 40 unread, one of them deleted
    stream.close()


def test_nil_lag_of_a_long_stream_is_a_close_upper_bound_not_zero_and_not_a_full_read(redis_server,
                                                                                       collection_name):
    stream = nil_lag_stream(redis_server.url, collection_name, entries=3000, consumed=10)
    calls = []
    original = stream.client.xrange
    stream.client.xrange = lambda *a, **kw: calls.append(kw) or original(*a, **kw)
    backlog = stream.backlog()
    assert 2989 <= backlog <= 2990, backlog  # entries-added − entries-read, capped by XLEN
    assert calls == [], "a long nil-lag stream is never read to count it"
    stream.close()


# --- warm-up: Redis not listening yet, SIGTERM during warm-up, warm-up timeout ------------------


def start_worker(redis_url: str, milvus_uri: str, index: str, env: dict, log: Path, **extra_env) -> subprocess.Popen:
    return subprocess.Popen(
        [WORKER, "--index", index, "--redis-url", redis_url, "--milvus-uri", milvus_uri,
         "--max-tokens", "48", "--overlap-tokens", "8", "--max-wait-ms", "0"],
        env={**env, "TRIBUTARY_CONSUMER": "late-starter", **extra_env},
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
    )


def test_a_worker_started_before_redis_becomes_ready_and_processes_an_event(tmp_path, milvus_server,
                                                                            collection_name, worker_env):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = tmp_path / "worker.log"
    worker = start_worker(url, milvus_server.uri, collection_name, worker_env, log,
                          TRIBUTARY_WARM_UP_TIMEOUT_S="300")
    redis = None
    try:
        wait_for(lambda: worker.poll() is not None or log.read_text().count("warm-up attempt") >= 2, timeout=60,
                 message="the worker did not retry the missing Redis")
        assert worker.poll() is None, log.read_text()[-3000:]
        redis = start_redis(tmp_path / "redis", port=port)
        wait_for(lambda: worker.poll() is not None or "consuming" in log.read_text(), timeout=180,
                 message="the worker did not become ready once Redis listened")
        assert worker.poll() is None, log.read_text()[-3000:]
        with Producer(url, collection_name) as producer:
            producer.publish(upsert("after-redis-came-up"))
        wait_for(lambda: doc_ids(milvus_server.uri, collection_name) == {"after-redis-came-up"}, timeout=120,
                 message="the event was not written")
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
        if redis is not None:
            redis.stop()
    assert worker.returncode == 0, log.read_text()[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["drained"] and report["events"] == {"written": 1}, report
    attempts = [line for line in log.read_text().splitlines() if "warm-up attempt" in line]
    assert attempts and all(f"Redis at {url}" in line for line in attempts), attempts


def test_a_worker_started_before_milvus_becomes_ready_and_processes_an_event(tmp_path, redis_server,
                                                                             collection_name, worker_env):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = tmp_path / "worker.log"
    worker = start_worker(redis_server.url, uri, collection_name, worker_env, log, TRIBUTARY_WARM_UP_TIMEOUT_S="300")
    milvus = None
    try:
        wait_for(lambda: worker.poll() is not None or log.read_text().count(f"Milvus at {uri}") >= 2, timeout=180,
                 message="the worker did not retry the missing Milvus")
        assert worker.poll() is None, log.read_text()[-3000:]
        milvus = start_milvus(tmp_path / "milvus", port=port)
        wait_for(lambda: worker.poll() is not None or "consuming" in log.read_text(), timeout=120,
                 message="the worker did not become ready once Milvus listened")
        assert worker.poll() is None, log.read_text()[-3000:]
        with Producer(redis_server.url, collection_name) as producer:
            producer.publish(upsert("after-milvus-came-up"))
        wait_for(lambda: doc_ids(uri, collection_name) == {"after-milvus-came-up"}, timeout=120,
                 message="the event was not written")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
            if milvus is not None:
                milvus.stop()
    assert worker.returncode == 0, log.read_text()[-3000:]


def test_sigterm_during_warm_up_exits_promptly(tmp_path, milvus_server, collection_name, worker_env):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    log = tmp_path / "worker.log"
    worker = start_worker(url, milvus_server.uri, collection_name, worker_env, log, TRIBUTARY_WARM_UP_TIMEOUT_S="0")
    try:
        wait_for(lambda: worker.poll() is not None or "warm-up attempt" in log.read_text(), timeout=60,
                 message="the worker never tried Redis")
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=20)
        took = time.monotonic() - signalled
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert took < 5, f"took {took:.1f}s to stop during warm-up"
    assert json.loads(out.strip().splitlines()[-1])["drained"] is True
    assert "hunter2" not in log.read_text(), "the Redis password reached the log"


def test_warm_up_gives_up_after_its_timeout_with_one_line(tmp_path, milvus_server, collection_name, worker_env):
    url = f"redis://127.0.0.1:{free_port()}/0"
    log = tmp_path / "worker.log"
    worker = start_worker(url, milvus_server.uri, collection_name, worker_env, log, TRIBUTARY_WARM_UP_TIMEOUT_S="2")
    try:
        worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 1, log.read_text()[-3000:]
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("tributary-stream-worker: error: Redis at ") and "warm-up timeout 2s" in last, last


# --- transient error replies: a failover that makes Redis read-only ----------------------------


def test_readonly_redis_is_retried_not_fatal(tmp_path, milvus_server, collection_name):
    redis = start_redis(tmp_path / "redis")
    admin = redis.client()
    try:
        with running_worker(config(redis.url, milvus_server, collection_name, block_ms=50)) as (worker, handled, _):
            admin.replicaof("127.0.0.1", free_port())  # demoted, its primary unreachable: writes get READONLY
            wait_for(lambda: worker.report.batches == 0 and worker._failures >= 2, timeout=30,
                     message="the worker never met READONLY")
            admin.replicaof("NO", "ONE")  # promoted again
            with Producer(redis.url, collection_name) as producer:
                producer.publish(upsert("after-failover"))
            wait_for(lambda: [h.result for h in handled] == ["written"], timeout=120,
                     message="the worker did not resume after the failover")
        assert doc_ids(milvus_server.uri, collection_name) == {"after-failover"}
    finally:
        admin.close()
        redis.stop()


# --- stopping: a lingering batch goes at once; a held batch is not "drained" --------------------


def test_stop_ends_the_linger_at_once_and_the_batch_is_written(redis_server, milvus_server, collection_name):
    cfg = config(redis_server.url, milvus_server, collection_name, max_wait_ms=60_000, max_batch_size=100)
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(collection_name))
    with running_worker(cfg) as (worker, handled, result):
        with Producer(redis_server.url, collection_name) as producer:
            producer.publish(upsert("lingering"))
        wait_for(lambda: stream.own_pending("robust") == 1, timeout=30, message="the entry was never read")
        stopped = time.monotonic()
        worker.stop()
        wait_for(lambda: "report" in result, timeout=30, message="the worker kept lingering")
        took = time.monotonic() - stopped
    assert took < 20, f"stop took {took:.1f}s with max_wait_ms 60000"
    assert [h.result for h in handled] == ["written"] and result["report"].drained is True
    assert stream.group_state().pending == 0
    stream.close()


def test_a_batch_held_at_stop_is_reported_as_not_drained(redis_server, milvus_server, collection_name):
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(collection_name))
    with running_worker(config(redis_server.url, milvus_server, collection_name)) as (worker, handled, result):
        stream.client.set(routing_key(collection_name), b"{not json")  # an invalid routing record holds batches
        with Producer(redis_server.url, collection_name) as producer:
            producer.publish(upsert("held"))
        wait_for(lambda: stream.own_pending("robust") == 1, timeout=30, message="the entry was never read")
        worker.stop()
        wait_for(lambda: "report" in result, timeout=30, message="the worker did not stop")
    stream.client.delete(routing_key(collection_name))
    assert handled == [] and result["report"].drained is False
    assert stream.own_pending("robust") == 1, "the held entry stays pending for redelivery"
    stream.close()


def test_retries_stop_at_the_drain_deadline_and_the_batch_is_reported_left_pending(
        redis_server, milvus_server, collection_name):
    """A target that keeps failing (a collection of another dimension) with many retries left:
    stopping cuts the retries at drain_timeout_s; the entry stays pending and drained is false."""
    foreign = f"{collection_name}_foreign"
    other = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=foreign, model_id="someone/else", dimension=16))
    other.warm_up()
    other.close()
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(collection_name))
    cfg = config(redis_server.url, milvus_server, collection_name, retry_attempts=1000, retry_initial_s=0.2,
                 drain_timeout_s=1.0)
    with running_worker(cfg) as (worker, handled, result):
        write_routing(stream.client, collection_name, [{"collection": foreign}])
        with Producer(redis_server.url, collection_name) as producer:
            producer.publish(upsert("stuck"))
        wait_for(lambda: worker.report.retries >= 2, timeout=60, message="the batch was never retried")
        stopped = time.monotonic()
        worker.stop()
        wait_for(lambda: "report" in result, timeout=30, message="the retries outlasted the drain deadline")
        took = time.monotonic() - stopped
    clear_routing(stream.client, collection_name)
    assert took < 5, f"stopping took {took:.1f}s with a 1 s drain timeout"
    assert handled == [] and result["report"].drained is False
    assert stream.own_pending("robust") == 1, "left pending for redelivery"
    stream.close()
