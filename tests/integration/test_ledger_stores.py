"""One contract suite for both ledger stores: SQLite (embedded mode) and Redis (clusters)."""

import threading
import uuid

import pytest
from tributary_workers.ledger import Outcome, RedisLedger, SQLiteLedger

NS_VERSION = 1_732_400_000_123_456_789  # a nanosecond timestamp: beyond a double's exact range


@pytest.fixture(params=["sqlite", "redis"])
def make_ledger(request, tmp_path, redis_server):
    created = []

    def make(namespace="coll"):
        if request.param == "sqlite":
            ledger = SQLiteLedger(tmp_path / "ledger.sqlite", namespace)
        else:
            ledger = RedisLedger.from_url(redis_server.url, f"{namespace}-{uuid.uuid4().hex}")
        created.append(ledger)
        return ledger

    yield make
    for ledger in created:
        ledger.close()


def test_full_lifecycle(make_ledger):
    ledger = make_ledger()
    assert ledger.decide("d", 5, "h1").outcome is Outcome.WRITE
    assert ledger.commit("d", 5, "h1", "run-a", 3).outcome is Outcome.COMMITTED
    record = ledger.get("d")
    assert (record.fence, record.data_version, record.content_hash, record.writer, record.chunk_count,
            record.deleted) == (5, 5, "h1", "run-a", 3, False)
    assert ledger.decide("d", 5, "h1").outcome is Outcome.UNCHANGED
    assert ledger.decide("d", 4, "h0").outcome is Outcome.STALE
    assert ledger.commit("d", 5, "h1", "run-a", 3).outcome is Outcome.ALREADY
    assert ledger.tombstone("d", 9, "stream").outcome is Outcome.COMMITTED
    assert ledger.get("d").deleted
    assert ledger.decide("d", 7, "h2").outcome is Outcome.STALE
    assert ledger.commit("d", 7, "h2", "late", 1).outcome is Outcome.STALE
    assert ledger.decide("d", 10, "h3").outcome is Outcome.WRITE


def test_unchanged_content_with_newer_version_moves_the_fence(make_ledger):
    ledger = make_ledger()
    ledger.commit("d", 5, "h", "w", 2)
    decision = ledger.decide("d", 8, "h")
    assert decision.outcome is Outcome.UNCHANGED
    record = ledger.get("d")
    assert record.fence == 8 and record.data_version == 5
    assert ledger.decide("d", 7, "other").outcome is Outcome.STALE


def test_nanosecond_versions_compare_exactly(make_ledger):
    ledger = make_ledger()
    ledger.commit("d", NS_VERSION + 1, "h", "w", 1)
    assert ledger.decide("d", NS_VERSION, "x").outcome is Outcome.STALE
    assert ledger.decide("d", NS_VERSION + 2, "x").outcome is Outcome.WRITE
    assert ledger.get("d").fence == NS_VERSION + 1


def test_namespaces_are_separate(make_ledger):
    a, b = make_ledger("blue"), make_ledger("green")
    a.commit("d", 5, "h", "w", 1)
    assert b.get("d") is None
    assert b.decide("d", 1, "h").outcome is Outcome.WRITE


def test_concurrent_commits_exactly_one_winner_per_version(make_ledger):
    ledger = make_ledger()
    outcomes = {}
    barrier = threading.Barrier(8)

    def commit(version):
        barrier.wait()
        outcomes[version] = ledger.commit("race", version, f"h{version}", f"w{version}", 1).outcome

    threads = [threading.Thread(target=commit, args=(v,)) for v in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert ledger.get("race").fence == 8
    assert outcomes[8] is Outcome.COMMITTED


def test_provenance_is_per_collection_and_source(make_ledger):
    from tributary_workers.ledger import Provenance

    ledger, other = make_ledger("a"), make_ledger("b")
    ledger.record_provenance("s3://bucket/docs", {"x.md": Provenance("x.md", NS_VERSION),
                                                   "r1": Provenance("all.jsonl", 7)})
    ledger.record_provenance("s3://bucket/other", {"y.md": Provenance("y.md", 1)})
    ledger.record_provenance("s3://bucket/docs", {"x.md": Provenance("x.md", NS_VERSION + 1)})  # replaces
    assert ledger.provenance("s3://bucket/docs") == {"x.md": Provenance("x.md", NS_VERSION + 1),
                                                     "r1": Provenance("all.jsonl", 7)}
    assert ledger.provenance("s3://bucket/other") == {"y.md": Provenance("y.md", 1)}
    if isinstance(ledger, SQLiteLedger):  # one file, namespaces apart
        assert other.provenance("s3://bucket/docs") == {}
    ledger.forget_provenance("s3://bucket/docs", ["r1", "never-there"])
    assert set(ledger.provenance("s3://bucket/docs")) == {"x.md"}


def test_records_lists_the_namespace_only_tombstones_included(make_ledger):
    from tributary_workers.ledger import Provenance

    ledger, other = make_ledger("a"), make_ledger("ab")  # "a" must not match "ab"'s keys
    ledger.commit("x.md", NS_VERSION, "h", "w", 2)
    ledger.commit("dir:with:colons/y.md", 3, "h2", "w", 1)
    ledger.tombstone("gone", 9, "stream")
    ledger.record_provenance("src", {"x.md": Provenance("x.md", NS_VERSION)})  # not a record
    other.commit("x.md", 1, "o", "w", 1)
    found = dict(ledger.records())
    assert set(found) == {"x.md", "dir:with:colons/y.md", "gone"}
    assert (found["x.md"].fence, found["x.md"].data_version, found["x.md"].chunk_count) == (NS_VERSION, NS_VERSION, 2)
    assert found["gone"].deleted and found["gone"].fence == 9
    assert dict(other.records()) == {"x.md": other.get("x.md")}


def test_delete_namespace_removes_records_and_provenance_of_that_namespace_only(make_ledger):
    from tributary_workers.ledger import Provenance

    ledger, other = make_ledger("blue"), make_ledger("green")
    for i in range(2500):  # more than one SCAN batch
        ledger.commit(f"d{i}", 1, "h", "w", 1)
    ledger.tombstone("t", 5, "w")
    ledger.record_provenance("src", {"d1": Provenance("f", 1)})
    other.commit("d1", 1, "h", "w", 1)
    other.record_provenance("src", {"d1": Provenance("f", 1)})
    assert ledger.delete_namespace() == 2501
    assert list(ledger.records()) == [] and ledger.get("d1") is None
    assert ledger.provenance("src") == {}
    assert other.get("d1") is not None and other.provenance("src") == {"d1": Provenance("f", 1)}
    assert ledger.delete_namespace() == 0  # idempotent


def test_seeded_tombstone_refuses_a_late_older_upsert(make_ledger):
    source, target = make_ledger("active"), make_ledger("candidate")
    source.tombstone("d", 7, "stream")
    for doc_id, record in source.records():  # what a backfill seeds: tombstones copied as tombstones
        assert target.tombstone(doc_id, record.fence, "backfill").outcome is Outcome.COMMITTED
    assert target.decide("d", 6, "old").outcome is Outcome.STALE
    assert target.commit("d", 7, "old", "late", 1).outcome is Outcome.STALE
    assert target.get("d").deleted


def test_redis_namespaces_with_glob_characters_match_only_themselves(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    prefix = f"test:{uuid.uuid4().hex}"
    star, plain = RedisLedger(client, "a*", key_prefix=prefix), RedisLedger(client, "ab", key_prefix=prefix)
    bracket = RedisLedger(client, "[ab]", key_prefix=prefix)
    for ledger in (star, plain, bracket):
        ledger.commit(f"doc-of-{ledger.namespace}", 1, "h", "w", 1)
    assert [doc_id for doc_id, _ in star.records()] == ["doc-of-a*"]
    assert [doc_id for doc_id, _ in bracket.records()] == ["doc-of-[ab]"]
    assert star.delete_namespace() == 1
    assert plain.get("doc-of-ab") is not None and bracket.get("doc-of-[ab]") is not None
    client.close()
