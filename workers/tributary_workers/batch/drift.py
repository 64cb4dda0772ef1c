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
