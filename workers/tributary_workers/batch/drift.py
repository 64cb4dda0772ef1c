"""Drift: what in a collection no longer matches its source, its model or its ledger. Pure.

Four kinds, each a sorted list of doc_ids:
- ``gone``     rows of documents this source wrote whose origin it no longer lists (what
               ``--prune`` would remove);
- ``stale``    the source lists a newer version than the index holds (a run has not caught up);
- ``foreign``  rows embedded with another model than the collection records (only a re-embedding
               into a new collection fixes them);
- ``orphans``  rows whose document has no live ledger record: nothing fences them, nothing would
               ever replace or delete them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tributary_workers.contract.reembed import Step, StepReport
from tributary_workers.ledger import LedgerRecord, Provenance


@dataclass(frozen=True)
class RowSummary:
    """What the collection holds of one document."""

    versions: frozenset[int]
    model_ids: frozenset[str]
    chunks: int


@dataclass
class DriftReport:
    collection: str
    model_id: str | None
    documents: int  # documents with rows in the collection
    gone: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.gone or self.stale or self.foreign or self.orphans)

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "model_id": self.model_id, "documents": self.documents,
                "clean": self.clean, **{kind: {"count": len(ids), "doc_ids": ids} for kind, ids in self.kinds()}}

    def kinds(self) -> list[tuple[str, list[str]]]:
        return [("gone", self.gone), ("stale", self.stale), ("foreign", self.foreign), ("orphans", self.orphans)]


def find_drift(collection: str, model_id: str | None, rows: Mapping[str, RowSummary],
               records: Mapping[str, LedgerRecord | None], provenance: Mapping[str, Provenance],
               listed: Mapping[str, int]) -> DriftReport:
    """``listed``: origin -> version as the source lists it now; ``provenance``: what it wrote."""
    report = DriftReport(collection, model_id, len(rows))
    for doc_id in sorted(rows):
        summary, record = rows[doc_id], records.get(doc_id)
        if record is None or record.deleted:
            report.orphans.append(doc_id)
        if model_id is not None and summary.model_ids - {model_id}:
            report.foreign.append(doc_id)
        written = provenance.get(doc_id)
        # Documents indexed before provenance was kept: a single-document file is its own origin.
        origin = written.origin if written is not None else doc_id
        if written is not None and origin not in listed:
            report.gone.append(doc_id)
        elif origin in listed and record is not None and not record.deleted and listed[origin] > record.fence:
            report.stale.append(doc_id)
    return report


def row_summaries(client: Any, collection: str) -> dict[str, RowSummary]:
    """What the collection holds, per document: its row versions, model ids and chunk count."""
    gathered: dict[str, tuple[set[int], set[str], int]] = {}
    iterator = client.query_iterator(collection, batch_size=1000, filter="",
                                     output_fields=["doc_id", "version", "model_id"])
    while batch := iterator.next():
        for row in batch:
            versions, models, chunks = gathered.setdefault(row["doc_id"], (set(), set(), 0))
            versions.add(row["version"])
            models.add(row["model_id"])
            gathered[row["doc_id"]] = (versions, models, chunks + 1)
    iterator.close()
    return {d: RowSummary(frozenset(v), frozenset(m), n) for d, (v, m, n) in gathered.items()}


def index_drift(report: DriftReport) -> StepReport:
    """An EmbeddingIndex's periodic check: what needs no source to tell (orphans, foreign rows)."""
    counts = {"documents": report.documents, "orphans": len(report.orphans), "foreign": len(report.foreign)}
    if not (report.orphans or report.foreign):
        return StepReport(Step.DRIFT, True, "Clean", f"{report.documents} documents in {report.collection}, "
                          "every row fenced by the ledger and of the collection's model", counts)
    parts = []
    if report.orphans:
        parts.append(f"{len(report.orphans)} without a live ledger record (e.g. {', '.join(report.orphans[:3])}): "
                     "`tributary drift --fix` removes them")
    if report.foreign:
        parts.append(f"{len(report.foreign)} with rows of another model than {report.model_id} "
                     f"(e.g. {', '.join(report.foreign[:3])}): only a re-embedding replaces them")
    reason = "OrphanRows" if report.orphans else "ForeignModelRows"
    return StepReport(Step.DRIFT, False, reason, f"{report.collection}: " + "; ".join(parts), counts)
