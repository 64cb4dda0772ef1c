"""EmbeddingIndex's blue-green lifecycle, decided: (index, its step Jobs, its pipelines' routing, now)
-> the step to run and the status to write. Pure and table-tested; the controller observes and applies.

Once the index has an active collection, a change of the spec's essence (model, chunking, index)
walks these phases, each step a Job (core.embeddingindex.steps) whose report (contract.reembed) says
how it went:

    Backfilling   the candidate is named in status; every StreamPipeline on the index writes to it
                  too (their status.routing says every worker applied it), then the backfill
                  Indexed Job re-embeds the active collection into it
    CatchingUp    a catch-up Job compares the ledgers and re-embeds the difference, run again
                  until nothing is left behind
    Validating    a validation Job builds and loads the candidate's index and measures the gates,
                  each its own condition; a failed gate: phase Failed, the active keeps serving
    Swapping      a swap Job moves the alias to the candidate, only if it still points at the active;
                  not while an IngestionJob on the index runs (batch runs write the active only,
                  through the shared ledger): the catch-up runs again once they are done
    Ready         the previous collection is kept for rollback; StreamPipelines keep writing to it
                  until it is retired (retention), alias first, then its ledger

A spec reverted to the previous collection's essence swaps straight back (RollingBack), no backfill.
Every step is idempotent and named deterministically, so a killed operator resumes to the same end.

Here: the entry (``decide``) and rollback; the re-embedding phases are reembed.py, retirement and
the drift check upkeep.py, the inputs and the decision's type observed.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tributary_workers.contract.reembed import Step

from tributary_operator.api.v1alpha1 import EmbeddingIndex, IndexPhase
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.embeddingindex.manifests import spec_hash
from tributary_operator.core.embeddingindex.naming import collection_name
from tributary_operator.core.embeddingindex.observed import (
    MAX_MESSAGE,
    Lifecycle,
    PipelineRouting,
    StepJob,
    dump,
    progressing,
    spec_of,
    swapped,
)
from tributary_operator.core.embeddingindex.reembed import reembed
from tributary_operator.core.embeddingindex.steps import StepRequest, step_job_name
from tributary_operator.core.embeddingindex.upkeep import drift, retention, retire_due

__all__ = ["Lifecycle", "PipelineRouting", "StepJob", "decide", "retire_due"]

ROLLBACK_ANNOTATION = "tributary.dev/rollback"  # "true": serve the previous collection, whatever the spec says


def _ready(ei: EmbeddingIndex) -> ConditionSpec:
    active = ei.status.active_collection
    previous = next((c for c in ei.status.conditions if c.type == "Ready" and c.status == "True"), None)
    if previous is not None and previous.reason in ("Provisioned", "Adopted"):
        return ConditionSpec("Ready", True, previous.reason, previous.message)
    return ConditionSpec("Ready", True, "Serving", f"alias {ei.spec.alias} serves collection {active}")


def decide(ei: EmbeddingIndex, jobs: Mapping[str, StepJob], pipelines: Sequence[PipelineRouting],
           now: datetime, ingesting: Sequence[str] = ()) -> Lifecycle:
    """The index has an active collection: keep it current, re-embed, swap, roll back or retire."""
    spec, status = ei.spec, ei.status
    wanted = spec_hash(spec)
    ready = _ready(ei)
    up_to_date = status.active_spec_hash in (None, wanted)
    if str((ei.metadata.get("annotations") or {}).get(ROLLBACK_ANNOTATION, "")).lower() == "true":
        if up_to_date and status.previous_collection and not status.retiring:
            return _roll_back(ei, jobs, now, ready)
        where = (f"alias {spec.alias} stays on {status.active_collection}" if not up_to_date or not status.previous_collection
                 else f"{status.previous_collection} is being retired")
        return Lifecycle({"phase": IndexPhase.READY.value}, (ready, ConditionSpec(
            "ReembedPending", not up_to_date, "RollbackRequested",
            f"annotation {ROLLBACK_ANNOTATION}=true: {where}; nothing is built, swapped or retired until it is "
            f"removed (then the spec's collection is served again, straight away while it is kept)"),
            progressing(False, "RollbackRequested", f"held by annotation {ROLLBACK_ANNOTATION}")))

    if up_to_date:
        fields: dict[str, Any] = {"phase": IndexPhase.READY.value}
        if status.active_spec is None:
            fields["activeSpec"] = dump(spec_of(ei))
        pending = ConditionSpec("ReembedPending", False, "UpToDate",
                                f"collection {status.active_collection} matches the spec")
        if status.candidate_collection:  # reverted while a candidate was built: it is dropped
            fields.update(candidateCollection=None, candidateSpecHash=None, progress=None)
        plan = retention(ei, jobs, pipelines, now)
        check = drift(ei, jobs, now)
        return Lifecycle({**fields, **plan.fields, **check.fields}, (ready, pending, *plan.conditions, *check.conditions),
                         plan.run or check.run, plan.delete + check.delete, plan.keep + check.keep,
                         plan.event or check.event)

    if status.previous_collection and wanted == status.previous_spec_hash and not status.retiring:
        return _roll_back(ei, jobs, now, ready)
    target = collection_name(spec)
    if target in (status.active_collection, status.previous_collection):
        return Lifecycle({"phase": IndexPhase.READY.value}, (ready, ConditionSpec(
            "ReembedPending", True, "Relocated",
            f"the spec's Milvus or alias changed; alias {spec.alias} keeps serving {status.active_collection}: "
            f"a new place is not re-embedded, create another EmbeddingIndex for it")))
    if spec.ledger is None:
        return Lifecycle({"phase": IndexPhase.READY.value}, (ready, ConditionSpec(
            "ReembedPending", True, "LedgerRequired",
            f"the model, chunking or index changed (it would be collection {target}), but spec.ledger is "
            f"not set: a re-embedding needs the shared ledger; alias {spec.alias} keeps serving "
            f"{status.active_collection}")))
    return reembed(ei, target, wanted, jobs, pipelines, now, ready, tuple(ingesting))


def _roll_back(ei: EmbeddingIndex, jobs: Mapping[str, StepJob], now: datetime, ready: ConditionSpec) -> Lifecycle:
    status = ei.status
    previous, active = status.previous_collection, status.active_collection
    request = StepRequest(Step.SWAP, previous, active)
    name = step_job_name(ei, request)
    job = jobs.get(name)
    pending = ConditionSpec("ReembedPending", False, "RollingBack",
                            f"the spec is back at {previous}'s essence: swapping back, no backfill")
    if job is None or not (job.succeeded or job.failed):
        return Lifecycle({"phase": IndexPhase.ROLLING_BACK.value, "candidateCollection": None,
                          "candidateSpecHash": None, "progress": None},
                         (ready, pending, progressing(True, "RollingBack", f"moving alias {ei.spec.alias} back to {previous}")),
                         request, (), (name,))
    report = job.reports[-1] if job.reports else None
    if report is None or not report.ok:
        message = report.message if report else (job.last_error or "the swap job failed")
        if job.permanent or report is not None:
            return Lifecycle({"phase": IndexPhase.FAILED.value},
                             (ready, pending, progressing(False, "RollbackFailed", message)), None, (), (name,),
                             ("Warning", "RollbackFailed", message[:MAX_MESSAGE]))
        return Lifecycle({}, (ready, pending, progressing(True, "RollingBack", f"{message}; again")), None, (name,), (name,))
    previous_spec = status.previous_spec or spec_of(ei)
    fields = swapped(ei, previous, previous_spec, status.previous_spec_hash, now, report.model)
    message = f"rolled back: alias {ei.spec.alias} moved from {active} to {previous}; {active} kept"
    return Lifecycle(fields, (ConditionSpec("Ready", True, "RolledBack", message),
                              ConditionSpec("ReembedPending", False, "UpToDate", f"collection {previous} matches the spec"),
                              progressing(False, "RolledBack", message)),
                     None, (), (name,), ("Normal", "RolledBack", message), report.counts.get("swap_ms"))
