"""The drift analysis (batch/drift.py): gone, stale, foreign-model and orphaned rows."""

from __future__ import annotations

from tributary_workers.batch.drift import RowSummary, find_drift
from tributary_workers.cli.drift import glob_escape
from tributary_workers.ledger import LedgerRecord, Provenance
from tributary_workers.pipeline.sources import DocIdFilter

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def rows(version=10, model=MODEL):
    return RowSummary(frozenset({version}), frozenset({model}), 2)


def live(fence=10):
    return LedgerRecord(fence=fence, content_hash="h", data_version=fence, deleted=False)


def test_each_kind_is_found_and_a_clean_index_is_clean():
    report = find_drift(
        "docs", MODEL,
        rows={"kept.md": rows(), "gone.md": rows(), "stale.md": rows(), "foreign.md": rows(model="other/model"),
              "orphan.md": rows(), "tomb.md": rows(), "old.md": rows()},
        records={"kept.md": live(), "gone.md": live(), "stale.md": live(), "foreign.md": live(),
                 "orphan.md": None, "tomb.md": LedgerRecord(11, None, None, True), "old.md": live()},
        provenance={d: Provenance(d, 10) for d in ("kept.md", "gone.md", "stale.md", "foreign.md")},
        listed={"kept.md": 10, "stale.md": 20, "foreign.md": 10, "orphan.md": 10, "tomb.md": 10, "old.md": 30},
    )
    assert report.gone == ["gone.md"]
    assert report.stale == ["old.md", "stale.md"]  # old.md: indexed before provenance, its own origin
    assert report.foreign == ["foreign.md"]
    assert report.orphans == ["orphan.md", "tomb.md"]
    assert not report.clean and report.to_dict()["stale"] == {"count": 2, "doc_ids": ["old.md", "stale.md"]}

    clean = find_drift("docs", MODEL, {"a.md": rows()}, {"a.md": live()}, {"a.md": Provenance("a.md", 10)},
                       {"a.md": 10})
    assert clean.clean and clean.to_dict()["clean"] is True


def test_records_of_a_multi_document_file_follow_their_origin():
    provenance = {"r1": Provenance("all.jsonl", 5), "r2": Provenance("all.jsonl", 5)}
    report = find_drift("docs", MODEL, {"r1": rows(5), "r2": rows(5)}, {"r1": live(5), "r2": live(5)}, provenance,
                        {})
    assert report.gone == ["r1", "r2"] and report.stale == []


def test_glob_escape_matches_exactly_one_doc_id():
    doc_id = "weird[1]*name?.md"
    only = DocIdFilter([glob_escape(doc_id)])
    assert only.accepts(doc_id) and not only.accepts("weird1xname?.md") and not only.accepts("weird[1]aname?.md")
