"""End-to-end streaming latency next to its floor, measured in one run on one machine.

1. floor: one event's document embedded and written alone (ledger decide, chunk, embed, upsert,
   ledger commit, superseded-row cleanup) by the streaming worker's own indexer, no queue involved;
2. steady: events published at a low steady rate (default 5/s) through the Python producer into
   Redis Streams, consumed by the streaming worker; latency is produced_at -> acknowledged write;
3. burst: 500 events published at once; per-event latency and the time to drain the burst
   (first publish -> last acknowledgement), next to the model's own rate on the same texts.

Prints p50/p99 of each and the ratio p50/floor at the steady rate (target <= 2). Real redis-server
and `milvus-lite server` processes; the worker runs on a thread of this process. Not a test.
Usage: python bench/stream_latency.py [--rate 5] [--duration 30] [--burst 500] [--max-batch-size 32]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tributary_workers.documents import Document  # noqa: E402
from tributary_workers.localservers import start_milvus, start_redis  # noqa: E402
from tributary_workers.streaming.config import StreamConfig
from tributary_workers.streaming.producer import Producer  # noqa: E402
from tributary_workers.streaming.worker import StreamWorker  # noqa: E402

WORDS = ("river delta sediment current estuary basin channel flood meander tributary watershed spring "
         "glacier valley canyon rapids lake wetland aquifer drought rainfall erosion bank bridge").split()


def text_for(n: int, words: int) -> str:
    return f"Event {n}: " + " ".join(WORDS[(n * 7 + i * i) % len(WORDS)] for i in range(words)) + f". Reading {n}."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


class Collector:
    """Latencies of acknowledged events, by doc_id prefix."""

    def __init__(self):
        self.latency: dict[str, float] = {}
        self.acked_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def __call__(self, handled) -> None:
        now = time.monotonic()
        with self.changed:
            for h in handled:
                if h.event is not None and h.latency_s is not None:
                    self.latency[h.event.doc_id] = h.latency_s
                    self.acked_at[h.event.doc_id] = now
            self.changed.notify_all()

    def wait(self, doc_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(d in self.latency for d in doc_ids):
                if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    missing = [d for d in doc_ids if d not in self.latency]
                    raise TimeoutError(f"{len(missing)} events were not acknowledged in {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="events per second in the steady phase")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady publishing")
    parser.add_argument("--burst", type=int, default=500, help="events published at once")
    parser.add_argument("--floor-samples", type=int, default=30)
    parser.add_argument("--words", type=int, default=120, help="words per event (about one chunk)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        redis_server, milvus_server = start_redis(tmp / "redis"), start_milvus(tmp / "milvus")
        try:
            return run(args, redis_server.url, milvus_server.uri)
        finally:
            redis_server.stop()
            milvus_server.stop()


def run(args, redis_url: str, milvus_uri: str) -> int:
    collector = Collector()
    config = StreamConfig(index="bench_stream", redis_url=redis_url, milvus_uri=milvus_uri,
                          max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, device=args.device,
                          consumer="bench")
    worker = StreamWorker(config, observer=collector)
    worker.warm_up()

    # 1. the floor: the worker's own indexer, one fresh document at a time, no queue. Half the
    # samples before the streaming phases and half after, so drift in machine load hits both alike.
    target = next(iter(worker.targets.values()))
    target.warm_up()
    for n in range(3):  # warm the paths once
        target.apply([Document(f"warm-{n}", 1, text_for(10_000 + n, args.words))], [])
    floor: list[float] = []

    def measure_floor(first: int, count: int) -> None:
        for n in range(first, first + count):
            document = Document(f"floor-{n}", 1, text_for(20_000 + n, args.words))
            started = time.perf_counter()
            target.apply([document], [])
            floor.append(time.perf_counter() - started)

    measure_floor(0, args.floor_samples // 2)

    thread = threading.Thread(target=worker.run, name="stream-worker", daemon=True)
    thread.start()
    producer = Producer(redis_url, "bench_stream", high_watermark=10 * args.burst, low_watermark=5 * args.burst)
    try:
        # 2. steady low rate.
        steady_ids = []
        interval = 1.0 / args.rate
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < args.duration:
            doc_id = f"steady-{n}"
            producer.publish({"op": "upsert", "doc_id": doc_id, "version": 1, "content": text_for(n, args.words)})
            steady_ids.append(doc_id)
            n += 1
            next_at = started + n * interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        collector.wait(steady_ids, timeout=120)

        # 3. a burst.
        burst_ids = [f"burst-{i}" for i in range(args.burst)]
        burst_started = time.monotonic()
        producer.publish_many({"op": "upsert", "doc_id": doc_id, "version": 1,
                               "content": text_for(50_000 + i, args.words)} for i, doc_id in enumerate(burst_ids))
        published = time.monotonic() - burst_started
        collector.wait(burst_ids, timeout=600)
        drain = max(collector.acked_at[d] for d in burst_ids) - burst_started
    finally:
        worker.stop()
        thread.join(timeout=60)
    try:
        measure_floor(args.floor_samples // 2, args.floor_samples - args.floor_samples // 2)
        # The model alone on the burst's texts, in batches of the same size: the burst's ceiling.
        embedder = target.indexer.embedder
        texts = [text_for(50_000 + i, args.words) for i in range(args.burst)]
        started = time.perf_counter()
        for first in range(0, len(texts), args.max_batch_size):
            embedder.run(texts[first:first + args.max_batch_size])
        raw_rate = len(texts) / (time.perf_counter() - started)
    finally:
        worker.close()
        producer.close()

    import torch

    steady = [collector.latency[d] for d in steady_ids]
    burst = [collector.latency[d] for d in burst_ids]
    floor_p50 = statistics.median(floor)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"device {worker.model_stages(None)[0].device}, python {platform.python_version()}")
    print(f"events: ~{args.words} words each (one chunk), max_batch_size {args.max_batch_size}, "
          f"max_wait_ms {args.max_wait_ms}; redis-server + milvus-lite server on localhost")
    print(f"floor (one event embedded and written alone, n={len(floor)}): p50 {ms(floor_p50)}   "
          f"p99 {ms(percentile(floor, 0.99))}")
    print(f"steady {args.rate:g} events/s for {args.duration:g}s (n={len(steady)}):  "
          f"p50 {ms(percentile(steady, 0.5))}   p99 {ms(percentile(steady, 0.99))}")
    print(f"burst of {args.burst} (published in {published * 1000:.0f} ms):  p50 {ms(percentile(burst, 0.5))}   "
          f"p99 {ms(percentile(burst, 0.99))}   drained in {drain:.2f}s ({args.burst / drain:.1f} events/s; "
          f"the model alone embeds {raw_rate:.1f} of these texts/s)")
    print(f"batches: {worker.report.batches}, events {worker.report.events}")
    ratio = percentile(steady, 0.5) / floor_p50
    print(f"ratio steady p50 / floor: {ratio:.2f}   (target <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
