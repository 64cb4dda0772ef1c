"""The catch-up step: re-embed what changed in the active collection since the candidate's backfill.

The two ledgers say everything: a document whose active record is ahead of the candidate's (or
that the candidate lacks) is copied again from the active's rows when it is live there, and
tombstoned in the candidate when the active tombstoned it (with ``rechunk``, copied from the
active's stored parsed text, as backfill does). The candidate's repair set (documents a
streamed write failed to reach it) is drained along the way: an entry whose document is not behind
is removed, compare-and-delete, so a failure recorded meanwhile at a newer version stays.

Passes repeat while one finds something to do, at most ``max_passes``; ``remaining`` is what the
last look still found, and the step is done (``CaughtUp``) when it is 0. Both ledgers' records are
held in memory during a pass (a few hundred bytes per document).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from tributary_workers.contract import routing
from tributary_workers.contract.reembed import Step, StepReport
from tributary_workers.ledger import LedgerRecord
from tributary_workers.pipeline.indexer import Status
from tributary_workers.reembed.copy import RECHUNK_UNAVAILABLE, ReembedConfig, Reembedding, tally
from tributary_workers.reembed.source import read_documents

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Differences:
    copy: dict[str, int]  # doc_id -> the active's fence: live there, the candidate behind
    delete: dict[str, int]  # doc_id -> the active's tombstone version, the candidate behind
    repaired: dict[str, int]  # repair entries (doc_id -> version) of documents not behind: remove them
    active_documents: int = 0  # live records
    candidate_documents: int = 0

    @property
    def actionable(self) -> bool:
        return bool(self.copy or self.delete or self.repaired)

    @property
    def remaining(self) -> int:
        return len(set(self.copy) | set(self.delete) | set(self.repaired))


def differences(active: Mapping[str, LedgerRecord], candidate: Mapping[str, LedgerRecord],
                repairs: Mapping[str, int]) -> Differences:
    """What the candidate lacks of the active (pure).

    Behind means: no candidate record, or a lower fence. A candidate at or past the active's fence
    (the same version, or a newer one streamed to it) has nothing to take from the active."""
    copy: dict[str, int] = {}
    delete: dict[str, int] = {}
    for doc_id, record in active.items():
        theirs = candidate.get(doc_id)
        if theirs is not None and theirs.fence >= record.fence:
            continue
        (delete if record.deleted else copy)[doc_id] = record.fence
    repaired = {doc_id: version for doc_id, version in repairs.items() if doc_id not in copy and doc_id not in delete}
    return Differences(copy, delete, repaired,
                       active_documents=sum(not r.deleted for r in active.values()),
                       candidate_documents=sum(not r.deleted for r in candidate.values()))


def catchup(config: ReembedConfig) -> StepReport:
    reembedding = Reembedding(config)
    try:
        reembedding.warm_up(writer_id=f"catchup/{config.job_id}")
        return _run(config, reembedding)
    finally:
        reembedding.close()


def _run(config: ReembedConfig, reembedding: Reembedding) -> StepReport:
    redis = reembedding.ledger.client
    counts = {"copied": 0, "deleted": 0, "repaired": 0, "failed": 0, "without_text": 0, "passes": 0}
    failure = ""

    def look() -> tuple[dict[str, LedgerRecord], Differences]:
        active = reembedding.active_records()
        repairs = routing.repairs(redis, config.index, config.collection) if config.index else {}
        return active, differences(active, dict(reembedding.ledger.records()), repairs)

    without_text: set[str] = set()  # a re-chunk found no parsed text: another pass fails the same way

    def to_copy(diff: Differences) -> dict[str, int]:
        return {doc_id: version for doc_id, version in diff.copy.items() if doc_id not in without_text}

    active, diff = look()
    while (to_copy(diff) or diff.delete or diff.repaired) and counts["passes"] < config.max_passes:
        counts["passes"] += 1
        copies = to_copy(diff)
        log.info("catch-up pass %d: %d to copy, %d to delete, %d repair entries settled", counts["passes"],
                 len(copies), len(diff.delete), len(diff.repaired))
        docs = read_documents(reembedding.active_client, config.active_collection, copies, active)
        results = reembedding.copy(docs, copies)
        results += [reembedding.delete(doc_id, version) for doc_id, version in sorted(diff.delete.items())]
        tallied = tally(results)
        counts["copied"] += tallied["written"]
        counts["deleted"] += tallied["deleted"]
        counts["failed"] += tallied["failed"]
        without_text.update(r.doc_id for r in results if r.reason == RECHUNK_UNAVAILABLE)
        counts["without_text"] = len(without_text)
        failure = failure or next((f"{r.doc_id}: {r.reason}" for r in results if r.status is Status.FAILED), "")
        if config.index:
            counts["repaired"] += routing.resolve_repairs(redis, config.index, config.collection, diff.repaired)
        active, diff = look()
    counts.update(active_documents=diff.active_documents, candidate_documents=diff.candidate_documents,
                  remaining=diff.remaining)
    summary = (f"{counts['copied']} copied, {counts['deleted']} deleted, {counts['repaired']} repaired in "
               f"{counts['passes']} passes; active {diff.active_documents}, candidate {diff.candidate_documents} "
               f"documents; {diff.remaining} remaining")
    if failure:
        summary += f"; {counts['failed']} failed, first: {failure}"
    if counts["without_text"]:
        return StepReport(Step.CATCHUP, False, "RechunkUnavailable",
                          f"{summary}; {counts['without_text']} without a stored parsed text to re-chunk: "
                          "re-ingest them from their source", counts)
    if diff.remaining:
        return StepReport(Step.CATCHUP, False, "Behind", summary, counts)
    return StepReport(Step.CATCHUP, True, "CaughtUp", summary, counts)
