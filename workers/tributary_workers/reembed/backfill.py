"""The backfill step: shard i of N copies the active collection's live documents into the candidate.

    1. seed the candidate's ledger with the active's tombstones of this shard (as tombstones), so a
       late older upsert (a stream event still in flight) can't resurrect a deleted document;
    2. read the shard's live documents from the active's rows (reembed.source), in doc_id order;
    3. for each, decide on the candidate's ledger at the active's version and the rows' content
       hash: WRITE re-embeds the stored chunk texts with the candidate's model (with ``rechunk``:
       re-chunks the stored parsed text; a document without one fails), UNCHANGED and STALE (the
       candidate already holds it, or something newer) skip it;
    4. after every group, save a low-watermark checkpoint (batch.checkpoint stores: redis://,
       configmap://NS/NAME or a SQLite path), so a resumed shard skips what it did. Work after the
       last save is redone cheaply: the ledger recognises this run's own commits.

A shard of a finished run (same job id) returns that run's report without doing anything again.
"""

from __future__ import annotations

import logging

from tributary_workers.batch.checkpoint import open_checkpoint_store
from tributary_workers.batch.worker import shard_of
from tributary_workers.contract import keys
from tributary_workers.contract.checkpoints import CheckpointState
from tributary_workers.contract.reembed import Step, StepReport
from tributary_workers.pipeline.indexer import Status
from tributary_workers.reembed.copy import (
    ReembedConfig,
    Reembedding,
    copy_version,
    tally,
)
from tributary_workers.reembed.source import read_live

DOCS_PER_CHECKPOINT = 64
COUNTS = ("documents", "written", "unchanged", "superseded", "failed", "without_text", "tombstones_seeded")
log = logging.getLogger(__name__)


def backfill(config: ReembedConfig) -> StepReport:
    store = open_checkpoint_store(config.checkpoint_url) if config.checkpoint_url else None
    key = keys.checkpoint_key(config.job_id, config.collection, config.shard_index, config.shard_count)
    try:
        state = (store.load(key) if store else None) or CheckpointState()
        if state.completed:
            log.info("backfill %s already completed; its report stands", key)
            return _report(config, state.report.get("counts", {}), state.report.get("failure", ""))
        reembedding = Reembedding(config)
        try:
            reembedding.warm_up(writer_id=state.run_id)
            return _run(config, reembedding, state, lambda: store.save(key, state) if store else None)
        finally:
            reembedding.close()
    finally:
        if store is not None:
            store.close()


def _run(config: ReembedConfig, reembedding: Reembedding, state: CheckpointState, save) -> StepReport:
    def in_shard(doc_id: str) -> bool:
        return shard_of(doc_id, config.shard_count) == config.shard_index

    counts = {name: int(state.report.get("counts", {}).get(name, 0)) for name in COUNTS}
    failure = state.report.get("failure", "")
    records = reembedding.active_records(in_shard)
    counts["tombstones_seeded"] = reembedding.seed_tombstones(
        {doc_id: r.fence for doc_id, r in records.items() if r.deleted})
    docs = read_live(reembedding.active_client, config.active_collection, records,
                     keep=lambda doc_id: in_shard(doc_id) and not state.covers(doc_id))
    state.sources_total = state.sources_done + len(docs)
    if state.sources_done:
        log.info("resuming backfill run %s: %d documents done before", state.run_id, state.sources_done)
    for start in range(0, len(docs), DOCS_PER_CHECKPOINT):
        group = docs[start:start + DOCS_PER_CHECKPOINT]
        results = reembedding.copy(group, {d.doc_id: copy_version(d, records.get(d.doc_id)) for d in group})
        for name, value in tally(results).items():
            if name in counts:
                counts[name] += value
        counts["documents"] += len(group)
        failure = failure or next((f"{r.doc_id}: {r.reason}" for r in results if r.status is Status.FAILED), "")
        # Sequential, in doc_id order: the last document of the group is the watermark.
        state.watermark, state.sources_done = group[-1].doc_id, state.sources_done + len(group)
        state.report = {"counts": counts, "failure": failure}
        save()
    state.completed = True
    state.report = {"counts": counts, "failure": failure}
    save()
    return _report(config, counts, failure)


def _report(config: ReembedConfig, counts: dict[str, int], failure: str) -> StepReport:
    counts = {name: int(counts.get(name, 0)) for name in COUNTS}
    shard = f"shard {config.shard_index} of {config.shard_count}"
    summary = (f"{shard}: {counts['documents']} documents, {counts['written']} written, "
               f"{counts['unchanged']} unchanged, {counts['superseded']} superseded, {counts['failed']} failed, "
               f"{counts['tombstones_seeded']} tombstones seeded")
    if counts["without_text"]:
        return StepReport(Step.BACKFILL, False, "RechunkUnavailable",
                          f"{summary}; {counts['without_text']} of them without a stored parsed text to "
                          f"re-chunk (first: {failure}): re-ingest them from their source", counts)
    if counts["failed"]:
        return StepReport(Step.BACKFILL, False, "DocumentsFailed", f"{summary}; first: {failure}", counts)
    return StepReport(Step.BACKFILL, True, "Backfilled", summary, counts)
