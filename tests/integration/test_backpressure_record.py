"""Producers follow the operator's backpressure record of their stream over their own flags, against a
real redis-server: the record is written as the operator writes it (queues.publish_backpressure)."""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from harness.servers import free_port
from harness.waiting import wait_for
from tributary_operator import queues
from tributary_workers.contract import defaults
from tributary_workers.contract.backpressure import BackpressureRecord
from tributary_workers.contract.keys import backpressure_key
from tributary_workers.streaming.gateway import GatewayConfig, GatewayServer
from tributary_workers.streaming.producer import BackpressureError, Producer
from tributary_workers.streaming.queue import RedisStream, StreamNames


@pytest.fixture
def conn(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def event(doc: str) -> dict:
    return {"op": "upsert", "doc_id": doc, "version": 1, "content": f"Document {doc} on tides."}


def acknowledge(stream: RedisStream, count: int) -> None:
    """A stand-in consumer of the group: read and acknowledge count entries."""
    for entry in stream.read_new("stand-in", count, None):
        stream.ack([entry.id])


@contextmanager
def gateway(redis_server, index: str, **overrides):
    server = GatewayServer(GatewayConfig(index=index, redis_url=redis_server.url, port=free_port(),
                                         **overrides)).start()
    try:
        yield server
    finally:
        server.stop()


def request(url: str, method: str, path: str, body=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    payload = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError:
        parsed = data.decode()
    return response.status, dict(response.getheaders()), parsed


def operator_writes(conn, stream: str, *, high=5, low=2, on=False, group=defaults.CONSUMER_GROUP) -> None:
    record = BackpressureRecord(high=high, low=low, on=on, backlog=None, group=group, pipeline="ns/live",
                                at=time.time(), ttl=30)
    assert queues.publish_backpressure(conn, stream, record, ttl=30)


def test_a_producer_with_default_flags_follows_the_record_and_falls_back_without_it(
        redis_server, conn, collection_name, caplog):
    names = StreamNames.for_index(collection_name)
    operator_writes(conn, names.stream, high=5, low=2)
    stream = RedisStream.from_url(redis_server.url, names)
    producer = Producer(redis_server.url, collection_name, timeout_s=30, chunk_size=1, refresh_s=0,
                        initial_backoff_s=0.02, max_backoff_s=0.1)  # flags: 10 000 / 5 000
    assert producer.monitor.flags.high == defaults.HIGH_WATERMARK
    with caplog.at_level(logging.INFO, logger="tributary.backpressure"):
        producer.publish_many([event(f"d{i}") for i in range(5)])
        assert stream.length() == 5 and producer.stats.throttled == 0

        done = threading.Event()
        worker = threading.Thread(target=lambda: (producer.publish(event("held")), done.set()), daemon=True)
        worker.start()
        wait_for(lambda: producer.stats.throttled == 1, timeout=10, message="held at the record's high watermark 5")
        acknowledge(stream, 2)  # backlog 3: under high, above low: still held
        assert not done.wait(0.5) and stream.length() == 5
        acknowledge(stream, 1)  # backlog 2: the record's low watermark releases it
        wait_for(done.is_set, timeout=10, message="released at the record's low watermark 2")
        worker.join(timeout=10)
    assert stream.length() == 6
    lines = [r.getMessage() for r in caplog.records if r.name == "tributary.backpressure"]
    assert lines == [f"backpressure of stream {names.stream}: following StreamPipeline ns/live "
                     "(high watermark 5, low 2)"], "one line when the source changed, not one a check"

    # the record expires (no operator): the flags again, so 5 more go through without a hold
    conn.delete(backpressure_key(names.stream))
    producer.publish_many([event(f"e{i}") for i in range(5)])
    assert stream.length() == 11 and producer.stats.throttled == 1
    assert producer.monitor.rule.source == "flags"
    producer.close()
    stream.close()


def test_a_new_producer_adopts_the_pipelines_backpressured_state(redis_server, conn, collection_name):
    """Backlog 3 is between the record's watermarks: only the operator's on decides, and it is on."""
    names = StreamNames.for_index(collection_name)
    stream = RedisStream.from_url(redis_server.url, names)
    stream.ensure_group()
    stream.add_many([{"event": "{}"}] * 3)
    operator_writes(conn, names.stream, high=5, low=2, on=True)
    with Producer(redis_server.url, collection_name, timeout_s=0.5, refresh_s=0) as producer:
        with pytest.raises(BackpressureError, match="backlog 3 is above 2 since it reached the high watermark 5 "
                                                    "of StreamPipeline ns/live; publishing resumes at 2 or below"):
            producer.publish(event("x"))
    # a record about another consumer group is not this producer's: its flags apply
    operator_writes(conn, names.stream, high=5, low=2, on=True, group="someone-else")
    with Producer(redis_server.url, collection_name, timeout_s=0.5, refresh_s=0) as producer:
        producer.publish(event("y"))
        assert producer.monitor.rule.source == "flags"
    assert stream.length() == 4
    stream.close()


def test_the_gateway_answers_429_under_the_record(redis_server, conn, collection_name):
    names = StreamNames.for_index(collection_name)
    operator_writes(conn, names.stream, high=5, low=2)
    stream = RedisStream.from_url(redis_server.url, names)
    with gateway(redis_server, collection_name, backlog_refresh_s=0) as gw:  # flags: the defaults
        for i in range(5):
            assert request(gw.url, "POST", "/v1/events", event(f"d{i}"))[0] == 202
        status, headers, body = request(gw.url, "POST", "/v1/events", event("over"))
        assert status == 429 and headers["Retry-After"] == "1"
        assert (body["backlog"], body["high_watermark"], body["low_watermark"], body["source"]) == (
            5, 5, 2, "operator")
        _, _, metrics = request(gw.url, "GET", "/metrics")
        assert "tributary_gateway_watermarks_from_operator 1.0" in metrics
        assert 'tributary_gateway_watermark{bound="high"} 5.0' in metrics
        acknowledge(stream, 2)  # backlog 3
        assert request(gw.url, "POST", "/v1/events", event("still-over"))[0] == 429
        acknowledge(stream, 1)  # backlog 2
        assert request(gw.url, "POST", "/v1/events", event("released"))[0] == 202

        conn.delete(backpressure_key(names.stream))  # expired: the gateway's flags again
        for i in range(4):
            assert request(gw.url, "POST", "/v1/events", event(f"e{i}"))[0] == 202
        _, _, metrics = request(gw.url, "GET", "/metrics")
        assert "tributary_gateway_watermarks_from_operator 0.0" in metrics
        assert f'tributary_gateway_watermark{{bound="high"}} {float(defaults.HIGH_WATERMARK)}' in metrics
    assert stream.length() == 10
    stream.close()


def test_tributary_publish_says_it_follows_the_record_and_gives_up_under_it(redis_server, conn, collection_name,
                                                                             worker_env, tmp_path):
    names = StreamNames.for_index(collection_name)
    stream = RedisStream.from_url(redis_server.url, names)
    stream.ensure_group()
    stream.add_many([{"event": "{}"}] * 3)
    operator_writes(conn, names.stream, high=3, low=1)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(event("a")) + "\n")
    run = subprocess.run([str(Path(sys.executable).parent / "tributary"), "--redis", redis_server.url, "publish",
                          "--index", collection_name, "--timeout", "1", str(events)],
                         env=worker_env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[0] == (f"tributary publish: backpressure of stream {names.stream}: following StreamPipeline "
                        "ns/live (high watermark 3, low 1)")
    assert len(lines) == 2 and "gave up after" in lines[1] and "backlog 3 reached the high watermark 3" in lines[1]
    assert stream.length() == 3
    stream.close()
