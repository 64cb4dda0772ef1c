"""The HTTP ingest gateway and the producers' backpressure, against a real redis-server (and, end to
end, a real `milvus-lite server` with a streaming worker)."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness.servers import free_port
from harness.waiting import wait_for
from tributary_workers.documents import Document
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import default_model_path
from tributary_workers.pipeline.writer import open_client
from tributary_workers.streaming.config import StreamConfig
from tributary_workers.streaming.events import parse_event_json
from tributary_workers.streaming.gateway import GatewayConfig, GatewayServer
from tributary_workers.streaming.producer import (
    BackpressureError,
    GatewayClient,
    GatewayError,
    Producer,
)
from tributary_workers.streaming.queue import RedisStream, StreamNames
from tributary_workers.streaming.worker import StreamWorker

TRIBUTARY = str(Path(sys.executable).parent / "tributary")
CHUNKING = ChunkerConfig(max_tokens=48, overlap_tokens=8)


def event(doc: str, version: int = 1) -> dict:
    return {"op": "upsert", "doc_id": doc, "version": version,
            "content": f"Gateway document {doc} version {version}: notes on rivers, deltas and estuaries. " * 3}


@contextmanager
def gateway(redis_server, index: str, **overrides):
    config = GatewayConfig(index=index, redis_url=redis_server.url, port=free_port(), **overrides)
    server = GatewayServer(config).start()
    try:
        yield server
    finally:
        server.stop()


def request(url: str, method: str, path: str, body=None, raw: bytes | None = None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError:
        parsed = data.decode()
    return response.status, dict(response.getheaders()), parsed


def entries(stream: RedisStream):
    return [(i.decode(), parse_event_json(f[b"event"])) for i, f in stream.client.xrange(stream.names.stream)]


def test_gateway_api(redis_server, collection_name):
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(collection_name))
    with gateway(redis_server, collection_name, max_events_per_request=3) as gw:
        assert request(gw.url, "GET", "/healthz")[0] == 200
        assert request(gw.url, "GET", "/readyz")[:3:2] == (200, {"status": "ready"})
        assert stream.group_state() is not None, "the gateway creates the stream and its group"

        status, _, body = request(gw.url, "POST", "/v1/events", event("one"))
        assert status == 202 and body["accepted"] == 1 and len(body["ids"]) == 1
        status, _, body = request(gw.url, "POST", "/v1/events", [event("two"), event("three", 4)])
        assert status == 202 and body["accepted"] == 2

        status, _, body = request(gw.url, "POST", "/v1/events", [event("four"), {"op": "upsert", "doc_id": "x"},
                                                                  {"op": "nope"}])
        assert status == 400 and "none was queued" in body["error"]
        assert [e["index"] for e in body["errors"]] == [1, 2]
        assert "version: Field required" in body["errors"][0]["reason"]
        assert request(gw.url, "POST", "/v1/events", raw=b"{nope")[0] == 400
        assert request(gw.url, "POST", "/v1/events", [])[0] == 400
        assert request(gw.url, "POST", "/v1/events", [event(str(i)) for i in range(4)])[0] == 413

        status, _, body = request(gw.url, "DELETE", "/v1/documents/guides%2Ftides%20%26%20moon.md?version=9")
        assert status == 202 and body["accepted"] == 1
        assert request(gw.url, "DELETE", "/v1/documents/x")[0] == 400
        assert request(gw.url, "DELETE", "/v1/documents/x?version=abc")[0] == 400
        assert request(gw.url, "DELETE", "/v1/documents/x?version=-1")[0] == 400

        with GatewayClient(gw.url) as client:
            assert client.delete("a/b.md", 3)
            with pytest.raises(GatewayError, match="400"):
                client._request("POST", "/v1/events", b'{"op": "upsert"}')

        status, headers, metrics = request(gw.url, "GET", "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert 'tributary_gateway_events_total{result="accepted"}' in metrics
        assert 'tributary_gateway_requests_total{route="/v1/events",status="202"}' in metrics

    got = entries(stream)
    assert [(e.op, e.doc_id, e.version) for _, e in got] == [
        ("upsert", "one", 1), ("upsert", "two", 1), ("upsert", "three", 4), ("delete", "guides/tides & moon.md", 9),
        ("delete", "a/b.md", 3)]
    now = time.time_ns()
    assert all(now - 60e9 < e.produced_at <= now for _, e in got), "the gateway stamps produced_at"
    stream.close()


def acknowledge(stream: RedisStream, count: int) -> None:
    """A stand-in consumer: read and acknowledge count entries."""
    for entry in stream.read_new("stand-in", count, None):
        stream.ack([entry.id])


def test_backpressure_has_hysteresis(redis_server, collection_name):
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(collection_name))
    with gateway(redis_server, collection_name, high_watermark=5, low_watermark=2, backlog_refresh_s=0) as gw:
        for i in range(5):
            assert request(gw.url, "POST", "/v1/events", event(f"d{i}"))[0] == 202
        status, headers, body = request(gw.url, "POST", "/v1/events", event("over"))
        assert status == 429 and headers["Retry-After"] == "1"
        assert body["backlog"] == 5 and body["high_watermark"] == 5 and body["low_watermark"] == 2
        assert request(gw.url, "DELETE", "/v1/documents/d0?version=2")[0] == 429

        acknowledge(stream, 2)  # backlog 3: under the high watermark, still above the low one
        assert request(gw.url, "POST", "/v1/events", event("still-over"))[0] == 429
        acknowledge(stream, 1)  # backlog 2: the low watermark releases producers
        assert request(gw.url, "POST", "/v1/events", event("released"))[0] == 202
        assert request(gw.url, "POST", "/v1/events", event("more"))[0] == 202  # backlog 3 < 5: accepting
        _, _, metrics = request(gw.url, "GET", "/metrics")
        assert 'tributary_gateway_events_total{result="throttled"}' in metrics
    assert stream.length() == 7
    stream.close()


def test_producers_give_up_with_a_clear_error_when_nobody_consumes(redis_server, collection_name):
    with gateway(redis_server, collection_name, high_watermark=2, low_watermark=1, backlog_refresh_s=0) as gw:
        client = GatewayClient(gw.url, timeout_s=1.5)
        client.publish_many([event("a"), event("b")])
        started = time.monotonic()
        with pytest.raises(BackpressureError) as caught:
            client.publish(event("c"))
        assert time.monotonic() - started < 3
        message = str(caught.value)
        assert "gave up after" in message and "429" in message and "high watermark 2" in message
        assert client.stats.throttled >= 1
        client.close()

    producer = Producer(redis_server.url, collection_name, high_watermark=2, low_watermark=1, timeout_s=1.0,
                        refresh_s=0)
    with pytest.raises(BackpressureError, match=r"consumers of index .* are behind .*backlog 2 reached the high"):
        producer.publish(event("d"))
    producer.close()


def test_gateway_cli_serves_until_sigterm(redis_server, worker_env):
    port = free_port()
    proc = subprocess.Popen([TRIBUTARY, "--redis", redis_server.url, "gateway", "--index", "gateway_cli",
                             "--port", str(port)], env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or request(url, "GET", "/readyz")[0] == 200, timeout=60,
                 message="the gateway did not become ready")
        assert proc.poll() is None, proc.stderr.read()
        with GatewayClient(url) as client:
            assert client.publish(event("cli"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    bad = subprocess.run([TRIBUTARY, "gateway", "--index", "x", "--high-watermark", "5", "--low-watermark", "5"],
                         env=worker_env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip().endswith("--low-watermark must be at least 0 and below "
                                                              "--high-watermark")


def test_gateway_cli_takes_the_pipelines_stream_and_group(redis_server, worker_env):
    """--stream / --group: the gateway appends to that stream and is throttled by that group only."""
    port = free_port()
    names = StreamNames("events:custom_stream", "pipeline-b")
    proc = subprocess.Popen([TRIBUTARY, "--redis", redis_server.url, "gateway", "--index", "gateway_names",
                             "--port", str(port), "--stream", names.stream, "--group", names.group,
                             "--high-watermark", "2", "--low-watermark", "1"],
                            env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    stream = RedisStream.from_url(redis_server.url, names)
    try:
        wait_for(lambda: proc.poll() is not None or request(url, "GET", "/readyz")[0] == 200, timeout=60,
                 message="the gateway did not become ready")
        assert proc.poll() is None, proc.stderr.read()
        assert [g.name for g in stream.group_states()] == ["pipeline-b"], "the group is created on that stream"
        assert request(url, "POST", "/v1/events", [event("a"), event("b")])[0] == 202
        assert request(url, "POST", "/v1/events", event("c"))[0] == 429, "pipeline-b's backlog of 2 throttles"
        assert stream.length() == 2
        assert RedisStream.from_url(redis_server.url, StreamNames.for_index("gateway_names")).length() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        stream.close()


def test_a_fast_producer_is_slowed_down_and_every_event_is_written(redis_server, milvus_server, collection_name):
    """40 events posted as fast as the gateway lets them in, with a consumer that is slower: the
    producer gets 429s and waits, the backlog stays near the high watermark, nothing is lost."""
    high, low, total = 6, 2, 40
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(collection_name))
    config = StreamConfig(index=collection_name, redis_url=redis_server.url, milvus_uri=milvus_server.uri,
                          chunking=CHUNKING, max_batch_size=2, maintenance_interval_s=0.2)
    worker = StreamWorker(config)
    worker.warm_up()
    thread = threading.Thread(target=worker.run, daemon=True)
    backlog_seen = []
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            backlog_seen.append(stream.backlog())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    with gateway(redis_server, collection_name, high_watermark=high, low_watermark=low, backlog_refresh_s=0) as gw:
        thread.start()
        sampler.start()
        try:
            with GatewayClient(gw.url, timeout_s=120, chunk_size=1) as client:
                ids = client.publish_many(event(f"fast-{i:02d}") for i in range(total))
                assert len(ids) == total
                assert client.stats.throttled >= 2, "a producer faster than the consumer must get 429s"
            wait_for(lambda: stream.group_state().lag == 0 and stream.group_state().pending == 0, timeout=120)
        finally:
            sampling.set()
            worker.stop()
            thread.join(timeout=60)
            worker.close()
    assert max(backlog_seen) <= high + 1, f"backlog went up to {max(backlog_seen)}"
    assert worker.report.events.get("written") == total

    chunker = Chunker.for_model_path(default_model_path(), CHUNKING, 256)
    want = {c.pk for i in range(total)
            for c in chunker.run(Document(f"fast-{i:02d}", 1, event(f"fast-{i:02d}")["content"]))}

    def query():  # retried: milvus-lite's server drops idle shared gRPC channels ("too many pings")
        client = open_client(milvus_server.uri)
        try:
            return ([r["pk"] for r in client.query(collection_name, filter="", output_fields=["pk"], limit=16384)],)
        finally:
            client.close()

    got = wait_for(query, timeout=30)[0]
    assert len(got) == len(set(got)) and set(got) == want
    assert stream.length() == 0, "processed entries are trimmed, unprocessed never"
    stream.close()
