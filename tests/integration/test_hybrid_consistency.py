"""Batch and stream on the same documents, in any order: every document ends at its highest version.

A batch ingest and a streaming worker (a separate process, as in a cluster) share the Redis version
ledger. Stream edits and deletes over the batch's doc ids, some newer and some older than the files,
are published before, during and after the batch runs; then a "nightly" batch runs again over
unchanged files, and more events follow. Every document's final chunks are checked against the
highest-versioned operation on it, computed independently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.waiting import wait_for
from tributary_workers.batch.worker import BatchConfig, BatchWorker
from tributary_workers.documents import Document
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import default_model_path
from tributary_workers.pipeline.writer import open_client
from tributary_workers.streaming.producer import Producer
from tributary_workers.streaming.queue import RedisStream, StreamNames

BIN = Path(sys.executable).parent
CHUNKING = ChunkerConfig(max_tokens=48, overlap_tokens=8)
CHUNK_FLAGS = ["--max-tokens", "48", "--overlap-tokens", "8"]
T0 = 1_700_000_000_000_000_000


def text_of(doc: str, version: int, origin: str) -> str:
    return "\n\n".join(
        f"{origin} copy of {doc} at version {version}, part {n}: the ferry timetable changes with the tides "
        f"and the harbour master logs reading {version % 100_000 + n} every morning."
        for n in range(3)
    )


class Timeline:
    """Every operation applied to the index, from both paths; the highest version per doc wins."""

    def __init__(self):
        self.ops: dict[str, list[tuple[int, str | None]]] = {}
        self._lock = threading.Lock()

    def add(self, doc_id: str, version: int, text: str | None) -> None:
        with self._lock:
            self.ops.setdefault(doc_id, []).append((version, text))

    def expected_pks(self, chunker: Chunker) -> dict[str, set[str]]:
        want = {}
        for doc_id, ops in self.ops.items():
            version, text = max(ops, key=lambda op: op[0])  # versions are distinct per document here
            want[doc_id] = {c.pk for c in chunker.run(Document(doc_id, version, text))} if text else set()
        return want


def write_file(corpus: Path, name: str, version: int, timeline: Timeline) -> None:
    path = corpus / name
    text = text_of(name, version, "batch")
    path.write_text(text)
    os.utime(path, ns=(version, version))
    timeline.add(name, version, text)


def upsert(name: str, version: int, timeline: Timeline) -> dict:
    text = text_of(name, version, "stream")
    timeline.add(name, version, text)
    return {"op": "upsert", "doc_id": name, "version": version, "content": text}


def delete(name: str, version: int, timeline: Timeline) -> dict:
    timeline.add(name, version, None)
    return {"op": "delete", "doc_id": name, "version": version}


def rows_by_doc(uri: str, collection: str) -> dict[str, set[str]]:
    def attempt():  # retried: milvus-lite's server drops idle shared gRPC channels ("too many pings")
        client = open_client(uri)
        try:
            return (client.query(collection, filter="", output_fields=["pk", "doc_id"], limit=16384),)
        finally:
            client.close()

    rows = wait_for(attempt, timeout=30, message=f"query of {collection}")[0]
    assert len(rows) == len({r["pk"] for r in rows})
    got: dict[str, set[str]] = {}
    for row in rows:
        got.setdefault(row["doc_id"], set()).add(row["pk"])
    return got


def assert_every_document(uri: str, collection: str, timeline: Timeline, chunker: Chunker) -> None:
    want = timeline.expected_pks(chunker)
    got = rows_by_doc(uri, collection)
    wrong = {doc_id: (len(got.get(doc_id, ())), len(pks)) for doc_id, pks in want.items()
             if got.get(doc_id, set()) != pks}
    assert not wrong, f"documents not at their highest version (rows, expected): {wrong}"
    assert set(got) <= set(want)


def run_batch(corpus: Path, tmp: Path, redis_url: str, milvus_uri: str, collection: str, job: str):
    worker = BatchWorker(BatchConfig(
        source=str(corpus), collection=collection, milvus_uri=milvus_uri, ledger_url=redis_url,
        checkpoint_url=str(tmp / "checkpoints.sqlite"), job_id=job, chunking=CHUNKING, max_concurrency=2,
        embed_batch_size=16,
    ))
    worker.warm_up()
    try:
        return worker.run()
    finally:
        worker.close()


def test_batch_and_stream_interleaved_end_at_the_highest_version(tmp_path, redis_server, milvus_server,
                                                                collection_name, worker_env):
    timeline = Timeline()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    names = [f"doc-{i:02d}.txt" for i in range(16)]
    v = {name: T0 + i * 1_000 for i, name in enumerate(names)}
    for name in names:
        write_file(corpus, name, v[name], timeline)

    t = timeline
    before = (
        [upsert(n, v[n] + 10, t) for n in names[0:4]]  # newer edits: the stream wins
        + [delete(n, v[n] + 20, t) for n in names[8:11]]  # newer deletes: the documents go
        + [upsert("stream/only-1.md", 1, t), upsert("stream/only-2.md", 1, t)]
    )
    during = (
        [upsert(n, v[n] - 10, t) for n in names[4:8]]  # older edits: the batch wins
        + [delete(n, v[n] - 20, t) for n in names[11:13]]  # older deletes: the batch wins
        + [delete(names[13], v[names[13]] + 30, t), upsert(names[13], v[names[13]] + 25, t)]  # no resurrection
        + [upsert(names[14], v[names[14]] + 5, t)]
        + [upsert(names[15], v[names[15]] + 40, t), delete(names[15], v[names[15]] + 45, t)]
        + [delete("stream/only-2.md", 2, t)]
    )
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(collection_name))
    producer = Producer(redis_server.url, collection_name)
    producer.publish_many(before)

    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "tributary-stream-worker"), "--index", collection_name, "--redis-url", redis_server.url,
         "--milvus-uri", milvus_server.uri, "--consumer", "hybrid", "--max-batch-size", "3", *CHUNK_FLAGS],
        env=worker_env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        # Phase 1: the batch runs while the stream worker consumes events published meanwhile.
        publisher_errors = []

        def publish_during():
            try:
                for event in during:
                    producer.publish(event)
                    time.sleep(0.05)
            except BaseException as exc:
                publisher_errors.append(exc)

        publisher = threading.Thread(target=publish_during)
        publisher.start()
        first = run_batch(corpus, tmp_path, redis_server.url, milvus_server.uri, collection_name, "day")
        publisher.join(timeout=60)
        assert not publisher_errors
        assert first.documents_failed == 0 and first.documents_total == 16

        def drained():
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            state = stream.group_state()
            return state is not None and state.lag == 0 and state.pending == 0

        wait_for(drained, timeout=180, message="the stream worker did not consume every event")
        assert_every_document(milvus_server.uri, collection_name, timeline, CHUNKER())

        # Phase 2: the nightly batch over the same files (one of them rewritten since) must not
        # regress newer streamed edits nor resurrect newer deletes.
        write_file(corpus, names[14], v[names[14]] + 50, timeline)
        nightly = run_batch(corpus, tmp_path, redis_server.url, milvus_server.uri, collection_name, "nightly")
        assert nightly.documents_succeeded == 1  # only the rewritten file
        assert nightly.documents_superseded == 4 + 3 + 2  # newer edits, newer deletes, 13 and 15
        assert_every_document(milvus_server.uri, collection_name, timeline, CHUNKER())

        # Phase 3: late stream events after the nightly batch, one older and one newer than it.
        producer.publish_many([upsert(names[14], v[names[14]] + 40, t), upsert(names[5], v[names[5]] + 70, t),
                               delete(names[0], v[names[0]] + 80, t)])
        wait_for(drained, timeout=120)
        assert_every_document(milvus_server.uri, collection_name, timeline, CHUNKER())
        gone = {n for n in names if max(timeline.ops[n])[1] is None}
        assert gone == {names[0], *names[8:11], names[13], names[15]}
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
            log.close()
        producer.close()
        stream.close()
    assert worker.returncode == 0


_chunker: list[Chunker] = []


def CHUNKER() -> Chunker:  # noqa: N802 - one lazily built chunker for the expected chunk ids
    if not _chunker:
        _chunker.append(Chunker.for_model_path(default_model_path(), CHUNKING, 256))
    return _chunker[0]


def test_local_mode_ingest_and_stream_share_the_sqlite_ledger(tmp_path, redis_server, milvus_server, worker_env):
    """`tributary ingest` and `tributary stream` on one --home share ledger.sqlite: a stream delete newer
    than the files survives the next ingest, and an older stream edit never regresses a file."""
    tributary = [str(BIN / "tributary"), "--home", str(tmp_path / "home"), "--milvus", milvus_server.uri,
                 "--redis", redis_server.url]
    index = f"local_{os.getpid()}_{int(time.time())}"
    timeline = Timeline()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, name in enumerate(["a.txt", "b.txt", "c.txt"]):
        write_file(corpus, name, T0 + i, timeline)

    def ingest():
        result = subprocess.run([*tributary, "ingest", str(corpus), "--index", index, "--json", *CHUNK_FLAGS],
                                env=worker_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)

    assert ingest()["documents_succeeded"] == 3
    with Producer(redis_server.url, index) as producer:
        producer.publish_many([delete("a.txt", T0 + 100, timeline), upsert("b.txt", T0 - 100, timeline),
                               upsert("c.txt", T0 + 200, timeline)])
    stream = RedisStream.from_url(redis_server.url, StreamNames.for_index(index))
    worker = subprocess.Popen([*tributary, "stream", "--index", index, "--json", *CHUNK_FLAGS], env=worker_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: worker.poll() is not None or (stream.group_state().lag == 0
                                                        and stream.group_state().pending == 0),
                 timeout=120, message="the local stream worker did not consume the events")
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["events"] == {"deleted": 1, "superseded": 1, "written": 1}
    again = ingest()
    assert again["documents_superseded"] == 2 and again["documents_succeeded"] == 0
    assert_every_document(milvus_server.uri, index, timeline, CHUNKER())
    stream.close()
