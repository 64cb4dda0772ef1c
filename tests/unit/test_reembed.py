"""The pure parts of re-embedding: live documents from rows, the ledgers' difference, copy versions."""

from __future__ import annotations

import pytest
from tributary_workers.ledger import LedgerRecord
from tributary_workers.reembed.catchup import differences
from tributary_workers.reembed.copy import copy_version
from tributary_workers.reembed.source import LiveDocument, StoredChunk, group_live


def row(doc_id, version, chunk_index, text=None, content_hash=None, metadata=None):
    return {"doc_id": doc_id, "version": version, "chunk_index": chunk_index,
            "text": text if text is not None else f"{doc_id}@{version}#{chunk_index}",
            "content_hash": content_hash or f"h{version}", "metadata": metadata or {"v": version}}


def live(version, fence=None):
    return LedgerRecord(fence=fence or version, content_hash=f"h{version}", data_version=version, deleted=False)


def gone(fence):
    return LedgerRecord(fence=fence, content_hash=None, data_version=None, deleted=True)


def test_rows_group_by_document_in_chunk_order_at_the_highest_version_without_a_record():
    rows = [row("b", 1, 1), row("a", 3, 2), row("a", 3, 0), row("a", 2, 0), row("a", 3, 1), row("b", 1, 0)]
    docs = group_live(rows, {})
    assert [d.doc_id for d in docs] == ["a", "b"]
    a = docs[0]
    assert (a.version, a.content_hash, a.metadata) == (3, "h3", {"v": 3})
    assert a.chunks == tuple(StoredChunk(i, f"a@3#{i}") for i in range(3))


def test_the_ledger_picks_the_live_version_and_hides_tombstones():
    rows = [row("a", 2, 0), row("a", 3, 0),  # 3 written, not committed: 2 is live
            row("t", 4, 0),  # tombstoned, rows not yet removed
            row("n", 5, 0),  # record says 6, whose rows are gone (a newer commit meanwhile): not read now
            row("u", 1, 0)]  # unchanged newer version moved the fence only
    records = {"a": live(2), "t": gone(5), "n": live(6), "u": live(1, fence=9)}
    docs = {d.doc_id: d for d in group_live(rows, records)}
    assert set(docs) == {"a", "u"}
    assert docs["a"].version == 2 and docs["a"].chunks[0].text == "a@2#0"
    assert copy_version(docs["u"], records["u"]) == 9  # written at the active's fence
    assert copy_version(docs["a"], None) == 2


def test_chunks_are_rebuilt_at_the_written_version():
    doc = LiveDocument("d", 2, "h", {"k": 1}, (StoredChunk(0, "one two"), StoredChunk(1, "three")))
    chunks = doc.chunks_at(7, lambda text: len(text.split()))
    assert [(c.doc_id, c.version, c.chunk_index, c.text, c.token_count) for c in chunks] == [
        ("d", 7, 0, "one two", 2), ("d", 7, 1, "three", 1)]
    assert chunks[0].pk != doc.chunks_at(2, len)[0].pk  # primary keys follow the version
    assert doc.as_document(7).metadata == {"k": 1} and doc.as_document(7).version == 7


@pytest.mark.parametrize("active, candidate, repairs, copy, delete, repaired, remaining", [
    # nothing anywhere
    ({}, {}, {}, {}, {}, {}, 0),
    # the same on both sides
    ({"a": live(3)}, {"a": live(3)}, {}, {}, {}, {}, 0),
    # missing in the candidate / behind / ahead (streamed to the candidate only)
    ({"a": live(3)}, {}, {}, {"a": 3}, {}, {}, 1),
    ({"a": live(5)}, {"a": live(3)}, {}, {"a": 5}, {}, {}, 1),
    ({"a": live(3)}, {"a": live(5)}, {}, {}, {}, {}, 0),
    # the active's fence moved with unchanged content: copy at the fence
    ({"a": live(3, fence=8)}, {"a": live(3)}, {}, {"a": 8}, {}, {}, 1),
    # tombstones: missing, behind, held, or the candidate already newer
    ({"a": gone(4)}, {}, {}, {}, {"a": 4}, {}, 1),
    ({"a": gone(4)}, {"a": live(3)}, {}, {}, {"a": 4}, {}, 1),
    ({"a": gone(4)}, {"a": gone(4)}, {}, {}, {}, {}, 0),
    ({"a": gone(4)}, {"a": live(6)}, {}, {}, {}, {}, 0),
    # the active tombstoned an older version than the candidate's tombstone
    ({"a": gone(4)}, {"a": gone(6)}, {}, {}, {}, {}, 0),
    # repair entries: behind -> copied first (one remaining, not two); not behind -> settled
    ({"a": live(5)}, {"a": live(3)}, {"a": 5}, {"a": 5}, {}, {}, 1),
    ({"a": live(5)}, {"a": live(5)}, {"a": 5}, {}, {}, {"a": 5}, 1),
    ({"a": gone(6)}, {"a": live(5)}, {"a": 6}, {}, {"a": 6}, {}, 1),
    ({}, {}, {"x": 2}, {}, {}, {"x": 2}, 1),  # the active holds nothing of it: nothing to copy
])
def test_differences(active, candidate, repairs, copy, delete, repaired, remaining):
    diff = differences(active, candidate, repairs)
    assert (diff.copy, diff.delete, diff.repaired, diff.remaining) == (copy, delete, repaired, remaining)
    assert diff.actionable == bool(remaining)


def test_differences_count_live_documents_on_each_side():
    diff = differences({"a": live(1), "b": gone(2), "c": live(3)}, {"a": live(1), "b": gone(2)}, {})
    assert (diff.active_documents, diff.candidate_documents) == (2, 1)
    assert diff.copy == {"c": 3}


@pytest.mark.parametrize("overrides, message", [
    ({"ledger_url": "/state/ledger.sqlite"}, "needs a Redis ledger"),
    ({"collection": "a"}, "is the active one"),
    ({"shard_index": 2, "shard_count": 2}, "shard index 2 is not in"),
])
def test_settings_no_rerun_can_fix_are_permanent(overrides, message):
    from tributary_workers.errors import PermanentError
    from tributary_workers.reembed.copy import ReembedConfig

    values = dict(active_collection="a", collection="b", milvus_uri="http://m:19530", ledger_url="redis://r:6379/0")
    with pytest.raises(PermanentError, match=message):
        ReembedConfig(**{**values, **overrides})


def test_step_flags_default_from_the_environment(monkeypatch):
    from tributary_workers.cli.index_admin import build_parser

    monkeypatch.setenv("TRIBUTARY_ACTIVE_COLLECTION", "docs_v1")
    monkeypatch.setenv("TRIBUTARY_COLLECTION", "docs_v2")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    monkeypatch.setenv("TRIBUTARY_SHARD_COUNT", "4")
    monkeypatch.setenv("TRIBUTARY_RECHUNK", "true")
    backfill = build_parser().parse_args(["backfill"])
    assert (backfill.active_collection, backfill.collection, backfill.shard_index, backfill.shard_count,
            backfill.rechunk) == ("docs_v1", "docs_v2", 3, 4, True)
    catchup = build_parser().parse_args(["catchup", "--max-passes", "2"])
    assert (catchup.command, catchup.max_passes, catchup.active_collection) == ("catchup", 2, "docs_v1")
    assert not hasattr(catchup, "shard_index")
