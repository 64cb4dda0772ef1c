"""Per-target outcomes of a streamed batch: the active target decides the event's fate, a
secondary target's failure goes to the repair set (see contract/routing.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from tributary_workers.documents import Document
from tributary_workers.errors import one_line
from tributary_workers.pipeline.indexer import DocResult, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetResult:
    collection: str
    active: bool
    result: DocResult


@dataclass
class DocOutcome:
    """What one document's per-target results mean: acknowledge with the active's result, or
    fail (the active failed: retried, then dead-lettered); repairs are secondary targets that
    failed and get the document recorded for catch-up."""

    active: DocResult | None = None
    failure: str | None = None
    repairs: list[str] = field(default_factory=list)


def classify(results: Sequence[TargetResult]) -> DocOutcome:
    outcome = DocOutcome()
    for item in results:
        failed = item.result.status is Status.FAILED
        if item.active:
            outcome.active = item.result
            if failed:
                outcome.failure = f"collection {item.collection}: {item.result.reason}"
        elif failed:
            outcome.repairs.append(item.collection)
    if outcome.active is None and outcome.failure is None:
        outcome.failure = "no result from the active target"
    return outcome


def apply_to_targets(targets: Sequence, docs: Sequence[Document], deletes: Sequence[tuple[str, int]]
                     ) -> dict[str, list[TargetResult]]:
    """Write to every target; targets[0] is the active. An exception of the active propagates
    (the batch is retried); one of a secondary target fails every document of the batch there."""
    results: dict[str, list[TargetResult]] = {}
    for position, target in enumerate(targets):
        active = position == 0
        try:
            written = target.apply(docs, deletes)
        except Exception as exc:
            if active:
                raise
            log.warning("secondary target %s failed; its documents go to the repair set: %s",
                        target.collection, one_line(exc))
            reason = one_line(exc)
            written = [DocResult(d.doc_id, d.version, Status.FAILED, reason=reason) for d in docs]
            written += [DocResult(doc_id, version, Status.FAILED, reason=reason) for doc_id, version in deletes]
        for result in written:
            results.setdefault(result.doc_id, []).append(TargetResult(target.collection, active, result))
    return results


def repairs_by_collection(outcomes: Sequence[tuple[str, int, DocOutcome]]) -> dict[str, dict[str, int]]:
    """collection -> {doc_id: version} of the documents to record in its repair set."""
    by: dict[str, dict[str, int]] = {}
    for doc_id, version, outcome in outcomes:
        for collection in outcome.repairs:
            versions = by.setdefault(collection, {})
            versions[doc_id] = max(version, versions.get(doc_id, version))
    return by


__all__ = ["DocOutcome", "TargetResult", "apply_to_targets", "classify", "repairs_by_collection"]
