"""Queries through an index's alias while it is re-embedded and swapped, measured in one run on one machine.

1. an active collection of --docs small documents (bundled model, Redis ledger) behind an alias;
2. a paced query load (--rate/s, open loop: each query has a scheduled send time and its latency
   counts from then, so a stall shows as latency, not as fewer queries) through the alias;
3. meanwhile the re-embedding steps as the operator's Jobs run them, as `tributary-index-admin`
   subprocesses with the derived 256-dim model: backfill (2 shards at once), catchup, validate;
   then swap, called in this process (main([...])) so its window is the call alone. The step
   processes run at nice 10 (--step-nice): on one shared machine, batch work yields to serving as
   it would on separate nodes; with --step-nice 0 the queries queue behind the embedding.

The client does what a real one must: it embeds a query with the model of the collection the
alias points at (queries are embedded ahead of time with both models; a poller reads
describe_alias every --alias-poll-s). A query that errors (a dimension mismatch right after the
swap: the client's view is stale, or alter_alias is not atomic, milvus-io/milvus#52351) makes the
client re-read the alias and retry once; it counts as failed only when the retry errors too.

Prints queries sent, first-try errors, retried, failed, p50/p99 latency before / during the
re-embedding / in the swap window / after (from the scheduled time, queueing included, and of the
search call alone), each step's and the swap's duration, and the machine. Not a test.
Usage: python bench/swap_queries.py [--docs 300] [--rate 50] [--before 8] [--after 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PHASES = ("before", "re-embedding", "swap", "after")
WORDS = ("river delta sediment current estuary basin channel flood meander tributary watershed spring "
         "glacier valley canyon rapids lake wetland aquifer drought rainfall erosion bank bridge").split()


@dataclass
class Sample:
    scheduled: float  # monotonic time the query was due
    latency: float  # seconds from scheduled to answered (or failed): queueing included
    service: float  # seconds of the search call(s) alone
    first_try_error: bool
    failed: bool
    error: str = ""
    stale: bool = False  # the first try used the vectors of the collection the alias served before


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def phase_of(at: float, marks: dict[str, float]) -> str:
    """The phase a scheduled time falls in; marks: the start of each phase after "before"."""
    current = PHASES[0]
    for phase in PHASES[1:]:
        if phase in marks and at >= marks[phase]:
            current = phase
    return current


def summarise(samples: list[Sample], marks: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per phase (by scheduled time): n, first-try errors, failed, and p50/p99 in ms of the answered
    queries' latency from their scheduled time (p50_ms, p99_ms) and of their search calls alone
    (service_p50_ms, service_p99_ms)."""
    out: dict[str, dict[str, float]] = {p: {"n": 0, "errors": 0, "failed": 0} for p in PHASES}
    answered: dict[str, list[Sample]] = {p: [] for p in PHASES}
    for s in samples:
        row = out[phase_of(s.scheduled, marks)]
        row["n"] += 1
        row["errors"] += s.first_try_error
        row["failed"] += s.failed
        if not s.failed:
            answered[phase_of(s.scheduled, marks)].append(s)
    for p in PHASES:
        for name, values in (("", [s.latency for s in answered[p]]), ("service_", [s.service for s in answered[p]])):
            out[p][f"{name}p50_ms"] = percentile(values, 0.5) * 1000
            out[p][f"{name}p99_ms"] = percentile(values, 0.99) * 1000
    return out


def text_for(n: int, words: int) -> str:
    return f"Report {n}: " + " ".join(WORDS[(n * 7 + i * i) % len(WORDS)] for i in range(words)) + f". Reading {n}."


class QueryLoad:
    """Open-loop paced queries through the alias, with the vectors of the model the alias serves."""

    def __init__(self, uri: str, alias: str, vectors: dict[str, list[list[float]]], rate: float,
                 poll_s: float, workers: int = 4):
        from tributary_workers.pipeline.writer import open_client

        self.alias, self.vectors, self.rate, self.poll_s = alias, vectors, rate, poll_s
        self.client = open_client(uri)  # gRPC channels are thread-safe
        self.serving = self.resolve()
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="query")
        self.threads = [threading.Thread(target=self.pace, daemon=True),
                        threading.Thread(target=self.poll, daemon=True)]

    def resolve(self) -> str:
        return self.client.describe_alias(alias=self.alias)["collection_name"]

    def poll(self) -> None:
        while not self.stopping.wait(self.poll_s):
            try:
                self.serving = self.resolve()
            except Exception:  # noqa: BLE001 - a failed look keeps the last answer
                pass

    def pace(self) -> None:
        started, n = time.monotonic(), 0
        while not self.stopping.is_set():
            due = started + n / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            self.pool.submit(self.query, due, n)
            n += 1

    def search(self, n: int) -> str:
        """One search with the vectors of the collection the client believes the alias serves; that name."""
        serving = self.serving
        vectors = self.vectors[serving]
        self.client.search(self.alias, data=[vectors[n % len(vectors)]], limit=5, output_fields=["doc_id"])
        return serving

    def query(self, due: float, n: int) -> None:
        first_error, failed, error, stale = False, False, "", False
        began = time.monotonic()
        believed = self.serving
        try:
            self.search(n)
        except Exception as exc:  # noqa: BLE001 - any Milvus error is the figure
            first_error, error = True, " ".join(str(exc).split())[:160]
            try:
                self.serving = self.resolve()  # what a client does on a mismatch: look again
                # stale: the client used the old model's vectors; else Milvus itself served another
                # collection than its alias names (the non-atomic switch)
                stale = self.serving != believed
                self.search(n)
            except Exception as again:  # noqa: BLE001
                failed, error = True, " ".join(str(again).split())[:160]
        now = time.monotonic()
        sample = Sample(due, now - due, now - began, first_error, failed, error, stale)
        with self.lock:
            self.samples.append(sample)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> list[Sample]:
        self.stopping.set()
        for t in self.threads:
            t.join()
        self.pool.shutdown(wait=True)
        self.client.close()
        return sorted(self.samples, key=lambda s: s.scheduled)


def build_active(uri: str, redis_url: str, collection: str, docs: int, words: int, embedder) -> None:
    from tributary_workers.documents import Document
    from tributary_workers.ledger import RedisLedger
    from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
    from tributary_workers.pipeline.indexer import DocumentIndexer, Status
    from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig

    writer = MilvusWriter(WriterConfig(uri=uri, collection=collection, model_id=embedder.model_id,
                                       dimension=embedder.dimension))
    writer.warm_up()
    ledger = RedisLedger.from_url(redis_url, collection)
    chunker = Chunker.for_model_path(embedder.model_path, ChunkerConfig(), embedder.max_seq_length)
    try:
        indexer = DocumentIndexer(chunker, embedder, writer, ledger, "bench")
        for first in range(0, docs, 64):
            batch = [Document(f"doc-{i:05d}", 1, text_for(i, words)) for i in range(first, min(docs, first + 64))]
            statuses = {r.status for r in indexer.index(batch)}
            assert statuses == {Status.SUCCEEDED}, statuses
    finally:
        writer.close()
        ledger.close()


STEP_ENV: dict[str, str] = {}
STEP_PREFIX: list[str] = []


def admin(*argv: str) -> dict:
    """One step as its Job would run it: a `tributary-index-admin` process; its JSON report."""
    binary = str(Path(sys.executable).parent / "tributary-index-admin")
    done = subprocess.run([*STEP_PREFIX, binary, *argv], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **STEP_ENV})
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--words", type=int, default=40, help="words per document (one chunk)")
    parser.add_argument("--rate", type=float, default=50.0, help="queries per second, paced")
    parser.add_argument("--before", type=float, default=8.0, help="seconds of queries before the re-embedding")
    parser.add_argument("--after", type=float, default=8.0, help="seconds of queries after the swap")
    parser.add_argument("--alias-poll-s", type=float, default=1.0, help="how often the client reads describe_alias")
    parser.add_argument("--queries", type=int, default=64, help="distinct query texts, embedded ahead of time")
    parser.add_argument("--step-threads", type=int, default=None,
                        help="torch threads of each step process (OMP_NUM_THREADS; default: torch's own choice)")
    parser.add_argument("--step-nice", type=int, default=10,
                        help="niceness of the step processes: batch work yields to serving, as on a shared node")
    parser.add_argument("--model-dir", default=None, help="where the derived model is built (default: a temp dir)")
    args = parser.parse_args()
    if args.step_threads:
        STEP_ENV["OMP_NUM_THREADS"] = str(args.step_threads)
    STEP_PREFIX[:] = ["nice", "-n", str(args.step_nice)] if args.step_nice else []
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    from tributary_workers.localservers import start_milvus, start_redis

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        redis_server, milvus_server = start_redis(tmp / "redis"), start_milvus(tmp / "milvus")
        try:
            return run(args, tmp, redis_server.url, milvus_server.uri)
        finally:
            redis_server.stop()
            milvus_server.stop()


def run(args, tmp: Path, redis_url: str, uri: str) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from harness.models import derived_model
    from tributary_workers.cli.index_admin import main as admin_main
    from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig
    from tributary_workers.pipeline.writer import open_client

    active, candidate, alias = "bench_active", "bench_candidate", "bench_docs"
    model = str(derived_model(Path(args.model_dir or tmp / "models") / "derived-256"))
    bundled = Embedder(EmbedderConfig(device="cpu"))
    bundled.warm_up()
    derived = Embedder(EmbedderConfig(model=model, device="cpu"))
    derived.warm_up()
    built = time.monotonic()
    build_active(uri, redis_url, active, args.docs, args.words, bundled)
    build_s = time.monotonic() - built
    client = open_client(uri)
    client.create_alias(active, alias)
    client.close()
    texts = [f"which report mentions {WORDS[i % len(WORDS)]} and {WORDS[(i * 5 + 3) % len(WORDS)]}?"
             for i in range(args.queries)]
    vectors = {active: [v.tolist() for v in bundled.run(texts)], candidate: [v.tolist() for v in derived.run(texts)]}
    del bundled, derived  # the steps load their own models, as their pods would

    load = QueryLoad(uri, alias, vectors, args.rate, args.alias_poll_s)
    marks: dict[str, float] = {}
    steps: dict[str, float] = {}
    common = ["--milvus-uri", uri, "--active-collection", active, "--collection", candidate]
    reembed = [*common, "--ledger", redis_url, "--index", alias, "--model", model]
    load.start()
    try:
        time.sleep(args.before)
        marks["re-embedding"] = time.monotonic()
        with ThreadPoolExecutor(2) as shards:  # a Job's two parallel pods
            reports = list(shards.map(lambda i: admin(
                "backfill", *reembed, "--job-id", "bench", "--shard-index", str(i), "--shard-count", "2",
                "--checkpoint-url", str(tmp / "checkpoints.sqlite")), (0, 1)))
        assert all(r["ok"] for r in reports), reports
        steps["backfill"] = time.monotonic() - marks["re-embedding"]
        started = time.monotonic()
        caught = admin("catchup", *reembed)
        assert caught["ok"], caught
        steps["catchup"] = time.monotonic() - started
        started = time.monotonic()
        checked = admin("validate", *common, "--model", model)
        assert checked["ok"], checked
        steps["validate"] = time.monotonic() - started
        marks["swap"] = time.monotonic()
        report_file = tmp / "swap.json"
        with contextlib.redirect_stdout(io.StringIO()):  # its report is read from the file
            code = admin_main(["swap", "--milvus-uri", uri, "--alias", alias, "--collection", candidate,
                               "--expect-collection", active, "--report-file", str(report_file)])
        marks["after"] = time.monotonic()
        swapped = json.loads(report_file.read_text())
        assert code == 0 and swapped["ok"], swapped
        time.sleep(args.after)
    finally:
        samples = load.stop()

    import torch

    end = samples[-1].scheduled - samples[0].scheduled if samples else 0.0
    figures = summarise(samples, marks)
    errors = sum(s.first_try_error for s in samples)
    failed = sum(s.failed for s in samples)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
          f"torch threads {torch.get_num_threads()}, python {platform.python_version()}")
    print(f"index: {args.docs} documents of ~{args.words} words (one chunk each), built in {build_s:.1f}s; "
          f"redis-server + milvus-lite server on localhost; alias polled every {args.alias_poll_s:g}s; "
          f"step processes: {args.step_threads or 'default'} torch threads, nice {args.step_nice}")
    print(f"steps: backfill (2 shards) {steps['backfill']:.1f}s, catchup {steps['catchup']:.1f}s, "
          f"validate {steps['validate']:.1f}s, swap call {(marks['after'] - marks['swap']) * 1000:.0f} ms "
          f"(alter_alias alone {swapped['counts'].get('swap_ms')} ms, collection loaded by swap: "
          f"{swapped['counts'].get('loaded')})")
    stale = sum(s.first_try_error and s.stale for s in samples)
    print(f"queries: {len(samples)} sent at {args.rate:g}/s paced ({len(samples) / max(end, 1e-9):.1f}/s achieved), "
          f"{errors} errored on the first try ({stale} with the client's view of the alias stale, "
          f"{errors - stale} with it current), {errors - failed} of them answered on a retry "
          f"after re-reading the alias, {failed} failed (goal 0)")
    for phase in PHASES:
        row = figures[phase]
        print(f"  {phase:13s} n={row['n']:5d}  first-try errors {row['errors']:3d}  failed {row['failed']:3d}  "
              f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms   "
              f"(search call alone: p50 {row['service_p50_ms']:6.1f} ms  p99 {row['service_p99_ms']:6.1f} ms)")
    for s in [s for s in samples if s.first_try_error][:3]:
        print(f"  e.g. {phase_of(s.scheduled, marks)}: {s.error}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
