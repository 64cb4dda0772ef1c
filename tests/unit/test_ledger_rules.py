"""The version-fence rules, pure: every ordering of upserts and deletes ends at the newest version."""

import itertools

import pytest
from tributary_workers.ledger import (
    LedgerRecord,
    Outcome,
    commit_rule,
    decide_rule,
    tombstone_rule,
)


def live(version, content="h", data_version=None):
    return LedgerRecord(fence=version, content_hash=content,
                        data_version=version if data_version is None else data_version, deleted=False)


def test_unknown_document_is_written():
    assert decide_rule(None, 5, "h") == (Outcome.WRITE, None)


def test_older_version_after_newer_is_stale_at_decide_and_commit():
    assert decide_rule(live(10), 5, "x")[0] is Outcome.STALE
    assert commit_rule(live(10), 5, "x", "w", 3)[0] is Outcome.STALE


def test_same_version_same_content_is_unchanged():
    assert decide_rule(live(10, "h"), 10, "h")[0] is Outcome.UNCHANGED


def test_same_version_other_content_is_stale_first_writer_wins():
    assert decide_rule(live(10, "h"), 10, "other")[0] is Outcome.STALE


def test_newer_version_same_content_moves_the_fence_but_not_the_rows():
    outcome, record = decide_rule(live(10, "h"), 12, "h")
    assert outcome is Outcome.UNCHANGED
    assert record.fence == 12 and record.data_version == 10
    # ... so a late version 11 can no longer sneak in
    assert decide_rule(record, 11, "other")[0] is Outcome.STALE


def test_commit_makes_version_live_and_is_idempotent():
    outcome, record = commit_rule(live(3), 7, "new", "run-1", 4)
    assert outcome is Outcome.COMMITTED
    assert (record.fence, record.data_version, record.content_hash, record.writer, record.chunk_count) == (
        7, 7, "new", "run-1", 4)
    assert commit_rule(record, 7, "new", "run-2", 4)[0] is Outcome.ALREADY


def test_tombstone_blocks_late_older_upsert():
    outcome, tomb = tombstone_rule(live(5), 8, "stream")
    assert outcome is Outcome.COMMITTED and tomb.deleted and tomb.data_version is None
    assert decide_rule(tomb, 6, "h")[0] is Outcome.STALE
    assert commit_rule(tomb, 6, "h", "batch", 1)[0] is Outcome.STALE
    assert decide_rule(tomb, 8, "h")[0] is Outcome.STALE  # same version as the delete: delete wins
    assert tombstone_rule(tomb, 8, "stream")[0] is Outcome.ALREADY


def test_newer_upsert_recreates_a_deleted_document():
    _, tomb = tombstone_rule(None, 8, "stream")
    assert decide_rule(tomb, 9, "h")[0] is Outcome.WRITE
    assert commit_rule(tomb, 9, "h", "w", 2)[0] is Outcome.COMMITTED


def test_older_delete_is_ignored():
    assert tombstone_rule(live(10), 9, "w")[0] is Outcome.STALE


OPS = [("upsert", 3, "a"), ("upsert", 5, "b"), ("delete", 4, None), ("upsert", 7, "c"), ("delete", 6, None)]


@pytest.mark.parametrize("order", list(itertools.permutations(OPS)))
def test_any_order_ends_at_the_highest_version(order):
    record = None
    for op, version, content in order:
        if op == "upsert":
            outcome, new = decide_rule(record, version, content)
            if outcome is Outcome.WRITE:
                outcome, new = commit_rule(record, version, content, "w", 1)
            record = new if new is not None else record
        else:
            _, new = tombstone_rule(record, version, "w")
            record = new
    assert record.fence == 7 and record.data_version == 7 and record.content_hash == "c" and not record.deleted
