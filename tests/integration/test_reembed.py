"""Re-embedding's copy steps against a real redis-server and `milvus-lite server`: backfill (sharded,
checkpointed, tombstones seeded) into a candidate with another model (256 dimensions), then
catch-up of edits, deletes and the repair set; the CLI's report and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from tributary_workers.pipeline.embedder import resolve_model
from harness.models import DERIVED_DIMENSION
from harness.servers import free_port
from tributary_workers.batch.checkpoint import open_checkpoint_store
from tributary_workers.batch.worker import shard_of
from tributary_workers.contract import keys, routing
from tributary_workers.contract.checkpoints import CheckpointState
from tributary_workers.documents import Document
from tributary_workers.ledger import RedisLedger
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig
from tributary_workers.pipeline.indexer import DocumentIndexer, Status
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig, open_client
from tributary_workers.reembed.backfill import backfill
from tributary_workers.reembed.catchup import catchup
from tributary_workers.reembed.copy import ReembedConfig

ADMIN = str(Path(sys.executable).parent / "tributary-index-admin")
CHUNKING = ChunkerConfig(max_tokens=48, overlap_tokens=8)
DOCS = [f"docs/{i:02d}.md" for i in range(20)]
DELETED = {DOCS[3], DOCS[11]}
WORDS = "river delta stone harbour lantern meadow copper violet engine garden signal orbit".split()


def text_of(doc_id: str, version: int) -> str:
    n = int(doc_id[5:7])
    return "\n\n".join(" ".join(WORDS[(n + p + k) % len(WORDS)] for k in range(30)) + f" {doc_id} v{version} p{p}."
                       for p in range(3))


@dataclass
class Active:
    collection: str
    indexer: DocumentIndexer
    versions: dict[str, int]  # the live documents

    def upsert(self, doc_id: str, version: int) -> None:
        results = self.indexer.index([Document(doc_id, version, text_of(doc_id, version), {"n": doc_id})])
        assert results[0].status is Status.SUCCEEDED, results
        self.versions[doc_id] = version

    def delete(self, doc_id: str, version: int) -> None:
        assert self.indexer.delete(doc_id, version).status is Status.DELETED
        self.versions.pop(doc_id)


@pytest.fixture
def store_texts() -> bool:
    return True


@pytest.fixture
def active(redis_server, milvus_server, bundled, collection_name, store_texts):
    """20 documents indexed as a served collection would be (loaded, ledger in Redis), 2 deleted."""
    writer = MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name,
                                       model_id=bundled.model_id, dimension=bundled.dimension,
                                       store_texts=store_texts))
    writer.warm_up()
    chunker = Chunker.for_model_path(bundled.model_path, CHUNKING, bundled.max_seq_length)
    ledger = RedisLedger.from_url(redis_server.url, collection_name)
    side = Active(collection_name, DocumentIndexer(chunker, bundled, writer, ledger, "ingest"), {})
    for i, doc_id in enumerate(DOCS):
        side.upsert(doc_id, 1000 + i)
    for doc_id in sorted(DELETED):
        side.delete(doc_id, 5000)
    yield side
    writer.close()
    ledger.close()


def settings(active: Active, candidate: str, redis_server, milvus_server, derived_path, tmp_path, **extra):
    values = dict(active_collection=active.collection, collection=candidate, milvus_uri=milvus_server.uri,
                  ledger_url=redis_server.url, model=str(derived_path), device="cpu", chunking=CHUNKING,
                  checkpoint_url=str(tmp_path / "checkpoints.sqlite"), index=active.collection)
    return ReembedConfig(**{**values, **extra})


def candidate_rows(uri: str, collection: str, dimension: int = DERIVED_DIMENSION) -> dict[str, list[dict]]:
    """The candidate's rows by document, after building its index (validate's job) so it can be queried."""
    writer = MilvusWriter(WriterConfig(uri=uri, collection=collection, model_id="unused", dimension=dimension))
    writer.client = open_client(uri)
    try:
        writer.finish_bulk_load()
        iterator = writer.client.query_iterator(collection, batch_size=1000, filter="", output_fields=[
            "pk", "doc_id", "version", "chunk_index", "text", "model_id", "vector"])
        rows: dict[str, list[dict]] = {}
        while batch := iterator.next():
            for row in batch:
                rows.setdefault(row["doc_id"], []).append(row)
        iterator.close()
    finally:
        writer.close()
    return {doc_id: sorted(found, key=lambda r: r["chunk_index"]) for doc_id, found in rows.items()}


def active_texts(active: Active) -> dict[str, list[str]]:
    return {doc_id: [c.text for c in active.indexer.chunker.run(Document(doc_id, v, text_of(doc_id, v)))]
            for doc_id, v in active.versions.items()}


def assert_candidate_matches(active: Active, uri: str, candidate: str, derived_path: Path) -> None:
    rows = candidate_rows(uri, candidate)
    assert set(rows) == set(active.versions)  # deleted documents absent
    texts = active_texts(active)
    for doc_id, found in rows.items():
        assert {r["version"] for r in found} == {active.versions[doc_id]}, doc_id  # its version only
        assert [r["chunk_index"] for r in found] == list(range(len(found))), doc_id  # each chunk exactly once
        assert [r["text"] for r in found] == texts[doc_id], doc_id
        assert {len(r["vector"]) for r in found} == {DERIVED_DIMENSION}
        # a local model is its folder's name and a digest of its files
        assert {r["model_id"] for r in found} == {resolve_model(str(derived_path))[1]}
        assert resolve_model(str(derived_path))[1].startswith(f"{derived_path.name}@")


def test_backfill_copies_live_documents_with_the_candidate_model_and_seeds_tombstones(
        active, redis_server, milvus_server, derived_path, tmp_path):
    candidate = f"{active.collection}_v2"
    report = backfill(settings(active, candidate, redis_server, milvus_server, derived_path, tmp_path, job_id="bf-1"))
    assert (report.ok, report.reason) == (True, "Backfilled"), report
    assert report.counts == {"documents": 18, "written": 18, "unchanged": 0, "superseded": 0, "failed": 0,
                             "without_text": 0, "tombstones_seeded": 2}
    assert_candidate_matches(active, milvus_server.uri, candidate, derived_path)

    ledger = RedisLedger.from_url(redis_server.url, candidate)
    try:
        records = dict(ledger.records())
        assert {d: r.fence for d, r in records.items() if r.deleted} == {d: 5000 for d in DELETED}
        assert {d: r.data_version for d, r in records.items() if not r.deleted} == active.versions
    finally:
        ledger.close()

    # A stream event older than the delete, reaching the candidate late, is refused.
    late = derived_indexer(milvus_server.uri, candidate, redis_server.url, derived_path)
    try:
        doc_id = sorted(DELETED)[0]
        result = late.index([Document(doc_id, 4000, "a late old upsert")])[0]
        assert result.status is Status.SUPERSEDED, result
        assert doc_id not in candidate_rows(milvus_server.uri, candidate)
    finally:
        late.writer.close()
        late.ledger.close()

    # Another run writes nothing; a pod of the finished run returns its report without work.
    again = backfill(settings(active, candidate, redis_server, milvus_server, derived_path, tmp_path, job_id="bf-2"))
    assert (again.ok, again.counts["written"], again.counts["unchanged"]) == (True, 0, 18), again
    replaced_pod = backfill(settings(active, candidate, redis_server, milvus_server, derived_path, tmp_path,
                                     job_id="bf-1"))
    assert replaced_pod.counts == report.counts
    assert_candidate_matches(active, milvus_server.uri, candidate, derived_path)


def derived_indexer(uri: str, collection: str, redis_url: str, derived_path: Path) -> DocumentIndexer:
    embedder = Embedder(EmbedderConfig(model=str(derived_path), device="cpu"))
    embedder.warm_up()
    writer = MilvusWriter(WriterConfig(uri=uri, collection=collection, model_id=embedder.model_id,
                                       dimension=embedder.dimension))
    writer.warm_up()
    chunker = Chunker.for_model_path(embedder.model_path, CHUNKING, embedder.max_seq_length)
    return DocumentIndexer(chunker, embedder, writer, RedisLedger.from_url(redis_url, collection), "stream")


def test_two_shards_cover_everything_once_and_a_resumed_shard_skips_what_it_did(
        active, redis_server, milvus_server, derived_path, tmp_path):
    candidate = f"{active.collection}_v2"
    live = sorted(active.versions)
    shard0 = [d for d in live if shard_of(d, 2) == 0]
    # Shard 0 was interrupted after its first 3 documents (its checkpoint says so, its copies are lost).
    store = open_checkpoint_store(str(tmp_path / "checkpoints.sqlite"))
    store.save(keys.checkpoint_key("bf", candidate, 0, 2),
               CheckpointState(watermark=shard0[2], sources_done=3,
                               report={"counts": {"documents": 3, "written": 3}}))
    store.close()
    reports = [backfill(settings(active, candidate, redis_server, milvus_server, derived_path, tmp_path, job_id="bf",
                                 shard_index=i, shard_count=2)) for i in (0, 1)]
    assert all(r.ok for r in reports), reports
    assert sum(r.counts["documents"] for r in reports) == 18
    assert sum(r.counts["tombstones_seeded"] for r in reports) == 2
    assert reports[0].counts["written"] == len(shard0)  # 3 from the checkpoint + the rest now
    rows = candidate_rows(milvus_server.uri, candidate)
    assert set(rows) == set(live) - set(shard0[:3])  # the skipped ones were not redone

    # A fresh run of shard 0 fills the gap; everything is then there exactly once.
    again = backfill(settings(active, candidate, redis_server, milvus_server, derived_path, tmp_path,
                              job_id="bf-again", shard_index=0, shard_count=2))
    assert (again.counts["written"], again.counts["unchanged"]) == (3, len(shard0) - 3), again
    assert_candidate_matches(active, milvus_server.uri, candidate, derived_path)


def test_catchup_lands_edits_deletes_and_repairs_then_finds_nothing(
        active, redis_server, milvus_server, derived_path, tmp_path):
    candidate = f"{active.collection}_v2"
    config = settings(active, candidate, redis_server, milvus_server, derived_path, tmp_path, job_id="bf")
    assert backfill(config).ok
    edited = [DOCS[0], DOCS[5], DOCS[17]]
    for doc_id in edited:
        active.upsert(doc_id, 9000)
    active.delete(DOCS[8], 9000)
    redis = active.indexer.ledger.client
    # A streamed write of DOCS[5] at 9000 failed to reach the candidate; DOCS[1]'s entry is already settled.
    routing.record_repairs(redis, active.collection, candidate, {DOCS[5]: 9000, DOCS[1]: 1001})

    report = catchup(settings(active, candidate, redis_server, milvus_server, derived_path, tmp_path, job_id="cu"))
    assert (report.ok, report.reason) == (True, "CaughtUp"), report
    counts = report.counts
    assert (counts["copied"], counts["deleted"], counts["repaired"], counts["remaining"], counts["failed"]) == (
        3, 1, 2, 0, 0), report
    assert counts["active_documents"] == counts["candidate_documents"] == 17
    assert routing.repairs(redis, active.collection, candidate) == {}
    assert_candidate_matches(active, milvus_server.uri, candidate, derived_path)  # 9000 only, DOCS[8] gone
    ledger = RedisLedger.from_url(redis_server.url, candidate)
    try:
        assert ledger.get(DOCS[8]).deleted and ledger.get(DOCS[8]).fence == 9000
    finally:
        ledger.close()

    quiet = catchup(settings(active, candidate, redis_server, milvus_server, derived_path, tmp_path, job_id="cu2"))
    assert (quiet.ok, quiet.counts["copied"], quiet.counts["passes"], quiet.counts["remaining"]) == (True, 0, 0, 0)


def test_a_repair_entry_is_removed_only_at_the_version_that_was_repaired(redis_server):
    client = RedisLedger.from_url(redis_server.url, "unused").client
    index, collection = f"i{uuid.uuid4().hex[:8]}", "c"
    routing.record_repairs(client, index, collection, {"a": 7, "b": 3})
    routing.record_repairs(client, index, collection, {"a": 9})  # a newer failure meanwhile
    assert routing.resolve_repairs(client, index, collection, {"a": 7, "b": 3}) == 1
    assert routing.repairs(client, index, collection) == {"a": 9}
    client.close()


def admin(step: str, env: dict, *flags: str, report: Path | None = None) -> subprocess.CompletedProcess:
    args = [ADMIN, step, *flags] + (["--report-file", str(report)] if report else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("store_texts", [False])  # a collection written before texts were stored
def test_cli_rechunk_without_stored_texts_is_a_permanent_refusal_with_every_document_failed(
        active, redis_server, milvus_server, derived_path, worker_env, tmp_path):
    env = dict(worker_env, TRIBUTARY_ACTIVE_COLLECTION=active.collection, TRIBUTARY_MILVUS_URI=milvus_server.uri,
               TRIBUTARY_LEDGER_URL=redis_server.url, TRIBUTARY_RECHUNK="true", TRIBUTARY_SHARD_COUNT="1")
    report_file = tmp_path / "termination-log"
    result = admin("backfill", env, "--collection", f"{active.collection}_v2", "--model", str(derived_path),
                   "--max-tokens", "48", "--overlap-tokens", "8", report=report_file)
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert json.loads(report_file.read_text()) == report
    assert (report["step"], report["ok"], report["reason"]) == ("backfill", False, "RechunkUnavailable")
    assert report["counts"]["documents"] == report["counts"]["failed"] == report["counts"]["without_text"] == 18
    assert report["counts"]["written"] == 0
    assert "stores no parsed text" in report["message"]


def test_cli_unreachable_redis_or_milvus_is_one_line_and_retryable_a_sqlite_ledger_is_refused(
        redis_server, worker_env, tmp_path):
    flags = ["--active-collection", "a_1", "--collection", "a_2", "--milvus-uri", f"http://127.0.0.1:{free_port()}"]
    env = dict(worker_env, TRIBUTARY_MILVUS_TOKEN="root:s3cr3t-token")
    for ledger, names in ((f"redis://127.0.0.1:{free_port()}/0", "Redis"), (redis_server.url, "Milvus")):
        down = admin("catchup", env, *flags, "--ledger", ledger)
        assert down.returncode == 1, down
        lines = down.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tributary-index-admin: error:"), down.stderr
        assert names in lines[0] and "s3cr3t" not in down.stderr + down.stdout, down.stderr
    sqlite = admin("backfill", worker_env, *flags, "--ledger", str(tmp_path / "ledger.sqlite"))
    assert sqlite.returncode == 2 and "Redis ledger" in sqlite.stderr, sqlite.stderr
