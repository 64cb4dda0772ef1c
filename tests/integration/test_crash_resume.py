"""A batch worker killed with SIGKILL mid-run resumes from its checkpoint: no chunk lost or duplicated."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from harness.corpus import make_corpus
from harness.servers import free_port
from harness.waiting import wait_for
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import default_model_path
from tributary_workers.pipeline.parsers import Parser
from tributary_workers.pipeline.sources import open_source
from tributary_workers.pipeline.writer import open_client

WORKER = [str(Path(sys.executable).parent / "tributary-batch-worker")]
DOCS = 60
CHUNKING = ChunkerConfig(max_tokens=48, overlap_tokens=8)


def expected_pks(corpus: Path) -> set[str]:
    """The chunk ids a complete run must leave, computed independently of the worker."""
    chunker = Chunker.for_model_path(default_model_path(), CHUNKING, 256)
    source, parser = open_source(str(corpus)), Parser()
    return {
        chunk.pk
        for ref in source.list()
        for document in parser.run(source.read(ref)).documents
        for chunk in chunker.run(document)
    }


def checkpointed_documents(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute("SELECT state FROM checkpoints").fetchone()
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    return json.loads(row[0])["report"].get("documents_total", 0) if row else 0


def test_sigkill_mid_run_then_resume_is_exact(tmp_path, milvus_server, collection_name, worker_env):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, DOCS, paragraphs=6)
    checkpoints = tmp_path / "checkpoints.sqlite"
    args = WORKER + [
        "--source", str(corpus), "--collection", collection_name, "--milvus-uri", milvus_server.uri,
        "--ledger", str(tmp_path / "ledger.sqlite"), "--checkpoint", str(checkpoints), "--job-id", "crash",
        "--max-concurrency", "1", "--embed-batch-size", "4",
        "--max-tokens", str(CHUNKING.max_tokens), "--overlap-tokens", str(CHUNKING.overlap_tokens),
    ]
    metrics_port = free_port()
    victim = subprocess.Popen(args + ["--metrics-port", str(metrics_port)], env=worker_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: checkpointed_documents(checkpoints) >= 10 or victim.poll() is not None, timeout=120,
                 message="the worker never checkpointed 10 documents")
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'tributary_documents_total{result="succeeded"}' in scraped
        assert "tributary_embedding_batch_seconds_count" in scraped
        victim.kill()  # SIGKILL: no cleanup, no final checkpoint
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    done_before = checkpointed_documents(checkpoints)
    assert victim.returncode == -9, "the worker finished before it could be killed; make the corpus larger"
    assert 10 <= done_before < DOCS

    resumed = subprocess.run(args, env=worker_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads(resumed.stdout.strip().splitlines()[-1])

    want = expected_pks(corpus)
    client = open_client(milvus_server.uri)
    rows = client.query(collection_name, filter="", output_fields=["pk"], limit=16384)
    count = client.query(collection_name, filter="", output_fields=["count(*)"])[0]["count(*)"]
    client.close()
    got = [row["pk"] for row in rows]
    assert len(got) == len(set(got)) == count, "duplicated chunk rows"
    assert set(got) == want, f"missing {len(want - set(got))}, unexpected {len(set(got) - want)}"
    assert report["documents_total"] == DOCS
    assert report["documents_succeeded"] == DOCS and report["documents_failed"] == 0
    assert report["documents_unchanged"] == 0  # its own pre-crash commits count as succeeded
    assert report["chunks_written"] == len(want)

    # A pod of the same (finished) run, e.g. one replaced after it finished, redoes nothing.
    again = subprocess.run(args, env=worker_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    repeat = json.loads(again.stdout.strip().splitlines()[-1])
    assert (repeat["documents_succeeded"], repeat["chunks_written"]) == (DOCS, len(want))
    assert "already completed" in again.stderr


def test_an_index_s_collection_is_not_created_by_a_batch_write(tmp_path, milvus_server, collection_name, worker_env):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 2, paragraphs=1)
    args = WORKER + [
        "--source", str(corpus), "--collection", collection_name, "--milvus-uri", milvus_server.uri,
        "--ledger", str(tmp_path / "ledger.sqlite"), "--checkpoint", str(tmp_path / "c.sqlite")]
    refused = subprocess.run(args, env={**worker_env, "TRIBUTARY_CREATE_COLLECTION": "false"}, capture_output=True,
                             text=True, timeout=300)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode != 0 and last == f"tributary-batch-worker: error: collection {collection_name} does not exist"
    assert "Traceback" not in refused.stderr
    client = open_client(milvus_server.uri)
    try:
        assert not client.has_collection(collection_name)
    finally:
        client.close()
