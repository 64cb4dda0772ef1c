from collections import Counter

from tributary_workers.batch.checkpoint import WatermarkTracker
from tributary_workers.batch.report import MAX_FAILURES_KEPT, Report
from tributary_workers.batch.worker import shard_of
from tributary_workers.contract.checkpoints import CheckpointState
from tributary_workers.pipeline.indexer import DocResult, Status


def test_shards_are_stable_complete_and_balanced():
    ids = [f"docs/file-{i}.md" for i in range(4000)]
    shards = [shard_of(doc_id, 4) for doc_id in ids]
    assert shards == [shard_of(doc_id, 4) for doc_id in ids]  # deterministic
    counts = Counter(shards)
    assert set(counts) == {0, 1, 2, 3}
    assert all(800 < n < 1200 for n in counts.values()), counts
    # Golden values: a change of hash function would silently reshuffle the documents of every
    # checkpointed job between its shards.
    assert [shard_of(f"doc-{i}", 16) for i in range(8)] == [0, 1, 2, 2, 3, 11, 14, 13]


def test_report_counts_and_exit_code():
    report = Report()
    report.add(DocResult("a", 1, Status.SUCCEEDED, chunks_written=3))
    report.add(DocResult("b", 1, Status.UNCHANGED))
    report.add(DocResult("c", 1, Status.SUPERSEDED, reason="index holds version 2"))
    assert report.exit_code == 0
    report.add(DocResult("d", 1, Status.FAILED, reason="empty document"))
    data = report.to_dict()
    assert (data["documents_total"], data["documents_succeeded"], data["documents_unchanged"],
            data["documents_superseded"], data["documents_failed"], data["chunks_written"]) == (4, 1, 2, 1, 1, 3)
    assert data["failures"] == [{"doc_id": "d", "reason": "empty document"}]
    assert report.exit_code == 3


def test_report_merge_keeps_counts_exact_and_failures_bounded():
    total = Report()
    for shard in range(3):
        part = Report(duration_s=shard + 1.0)
        for i in range(MAX_FAILURES_KEPT):
            part.add(DocResult(f"{shard}-{i}", 1, Status.FAILED, reason="bad"))
        part.add(DocResult(f"{shard}-ok", 1, Status.SUCCEEDED, chunks_written=2))
        total.merge(part)
    assert total.documents_failed == 3 * MAX_FAILURES_KEPT
    assert total.documents_succeeded == 3 and total.chunks_written == 6
    assert len(total.failures) == MAX_FAILURES_KEPT
    assert total.to_dict()["failures_truncated"] is True
    assert total.duration_s == 3.0


def test_report_round_trips_through_a_checkpoint():
    report = Report()
    report.add(DocResult("a", 1, Status.SUCCEEDED, chunks_written=3))
    restored = Report.from_dict(report.to_dict())
    assert restored.to_dict() == report.to_dict()


def test_watermark_advances_only_over_a_finished_prefix():
    state = CheckpointState()
    tracker = WatermarkTracker(state)
    for doc_id in ["a", "b", "c", "d"]:
        tracker.started(doc_id)
    tracker.finished("c")
    assert state.watermark is None and state.done_above == ["c"]
    tracker.finished("a")
    assert state.watermark == "a"
    tracker.finished("b")
    assert state.watermark == "c" and state.done_above == []
    assert state.covers("b") and not state.covers("d")
    restored = CheckpointState.from_json(state.to_json())
    assert restored.watermark == "c" and restored.run_id == state.run_id
