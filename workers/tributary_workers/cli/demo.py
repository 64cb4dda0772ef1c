"""`tributary demo`: the whole product on one machine, in about a minute.

A bundled corpus is ingested in batch; then one document is edited and the corpus re-ingested
(only the edit is embedded again), one document is deleted with a versioned tombstone, and the
same queries are asked before and after so the change is visible.
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path

from tributary_workers.batch.worker import BatchConfig, BatchWorker
from tributary_workers.pipeline.indexer import Status
from tributary_workers.pipeline.search import Searcher

INDEX = "tributary_demo"
EDITED = "coffee-brewing.md"
DELETED = "volcanoes.md"
QUESTIONS = (
    ("How long should cold brew coffee steep?", EDITED),
    ("What makes a stratovolcano erupt explosively?", DELETED),
    ("How do consumer groups acknowledge messages?", "redis-streams.md"),
)


def sample_corpus() -> Path:
    return Path(str(resources.files("tributary_workers") / "sample_corpus"))


def _ingest(corpus: Path, state: Path, milvus_uri: str, model: str | None):
    worker = BatchWorker(BatchConfig(
        source=str(corpus), include=["*.md"], collection=INDEX, milvus_uri=milvus_uri,
        ledger_url=str(state / "ledger.sqlite"), checkpoint_url=str(state / "checkpoints.sqlite"), model=model,
    ))
    worker.warm_up()
    return worker, worker.run()


def _ask(searcher: Searcher, title: str) -> dict[str, str]:
    """Prints the top 3 hits per question; returns a one-line description of each top hit."""
    print(f"\n== {title}")
    top = {}
    for question, expected in QUESTIONS:
        hits = searcher.run(question, 3)
        best = hits[0] if hits else None
        top[question] = (
            f"{best.doc_id}#{best.chunk_index} ({best.score:.2f}"
            f"{', mentions cold brew' if 'cold brew' in best.text.lower() else ''})" if best else "(none)"
        )
        print(f"  Q: {question}")
        for hit in hits:
            marker = "*" if hit.doc_id == expected else " "
            print(f"    {marker} {hit.score:.3f} {hit.doc_id}#{hit.chunk_index}: {' '.join(hit.text.split())[:70]}")
    return top


def run_demo(home: Path, milvus_uri: str, model: str | None) -> int:
    state = home / "demo"
    if state.exists():
        shutil.rmtree(state)  # every demo starts from nothing, so it shows the same story each time
    corpus = state / "corpus"
    shutil.copytree(sample_corpus(), corpus, ignore=shutil.ignore_patterns("updates", "queries.json"))
    if milvus_uri.startswith(str(home)):
        milvus_uri = str(state / "milvus.db")
    else:
        from tributary_workers.pipeline.texts import companion_name
        from tributary_workers.pipeline.writer import open_client

        client = open_client(milvus_uri)
        client.drop_collection(INDEX)
        client.drop_collection(companion_name(INDEX))  # its parsed texts
        client.close()

    started = time.monotonic()
    print(f"== 1. Batch ingest of {len(list(corpus.glob('*.md')))} documents into index {INDEX!r}")
    worker, first = _ingest(corpus, state, milvus_uri, model)
    worker.close()
    print(f"   {first.documents_succeeded} documents, {first.chunks_written} chunks, {first.duration_s:.1f}s")

    searcher = Searcher(milvus_uri, INDEX, model=model)
    searcher.warm_up()
    before = _ask(searcher, "2. Queries")

    print(f"\n== 3. Edit {EDITED} (adds a section on cold brew) and re-ingest the corpus")
    shutil.copyfile(sample_corpus() / "updates" / EDITED, corpus / EDITED)
    worker, second = _ingest(corpus, state, milvus_uri, model)
    print(f"   {second.documents_succeeded} re-embedded, {second.documents_unchanged} unchanged (content hash)")

    print(f"\n== 4. Delete {DELETED} with a versioned tombstone")
    (corpus / DELETED).unlink()
    deleted = worker.indexer.delete(DELETED, time.time_ns())
    worker.close()
    print(f"   {deleted.status.value}")

    after = _ask(searcher, "5. The same queries after the edit and the delete")
    searcher.close()

    print("\n== Summary")
    print(f"   first ingest: {first.documents_succeeded} documents, {first.chunks_written} chunks; "
          f"re-ingest: {second.documents_succeeded} changed, {second.documents_unchanged} unchanged")
    for question, _ in QUESTIONS:
        print(f"   {question!r}\n      before: {before[question]}\n      after:  {after[question]}")
    print(f"   total {time.monotonic() - started:.1f}s; state in {state}")
    ok = (deleted.status is Status.DELETED and second.documents_succeeded == 1
          and not after[QUESTIONS[1][0]].startswith(DELETED))
    return 0 if ok else 1
