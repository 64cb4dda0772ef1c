"""The re-embedding phases of an EmbeddingIndex (Backfilling, CatchingUp, Validating, Swapping):
each pass decides the next step from the candidate's step Jobs and the pipelines' routing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tributary_workers.contract.reembed import Step

from tributary_operator.api.v1alpha1 import EmbeddingIndex, IndexPhase
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.embeddingindex.observed import (
    MAX_MESSAGE,
    Lifecycle,
    PipelineRouting,
    StepJob,
    progressing,
    spec_of,
    swapped,
    waiting_for,
)
from tributary_operator.core.embeddingindex.steps import StepRequest, step_job_name
from tributary_operator.core.targets import active_spec


def reembed(ei: EmbeddingIndex, candidate: str, wanted: str, jobs: Mapping[str, StepJob],
             pipelines: Sequence[PipelineRouting], now: datetime, ready: ConditionSpec,
             ingesting: tuple[str, ...] = ()) -> Lifecycle:
    status, active = ei.status, ei.status.active_collection
    pending = ConditionSpec("ReembedPending", True, "Reembedding",
                            f"re-embedding {active} into {candidate}; alias {ei.spec.alias} serves {active}")
    if status.candidate_spec_hash != wanted or status.candidate_collection != candidate:
        return Lifecycle(
            {"phase": IndexPhase.BACKFILLING.value, "candidateCollection": candidate, "candidateSpecHash": wanted,
             "progress": None},
            (ready, pending, progressing(True, "CandidateNamed", f"candidate collection {candidate}: "
                                          "waiting for every StreamPipeline to write to it too")),
            event=("Normal", "ReembedStarted", f"the spec's essence changed: building {candidate} from {active}"))
    rechunk = active_spec(ei).chunking != ei.spec.chunking
    requests = {step: StepRequest(step, candidate, active, rechunk)
                for step in (Step.BACKFILL, Step.CATCHUP, Step.VALIDATE, Step.SWAP)}
    names = {step: step_job_name(ei, r) for step, r in requests.items()}
    keep = tuple(names.values())
    phase = status.phase

    def step(fields: dict[str, Any], *conditions: ConditionSpec, run: Step | None = None,
             delete: tuple[str, ...] = (), event: tuple[str, str, str] | None = None,
             swap_ms: int | None = None) -> Lifecycle:
        return Lifecycle(fields, (ready, pending, *conditions), requests[run] if run else None, delete, keep,
                         event, swap_ms)

    def failed(reason: str, message: str) -> Lifecycle:
        return step({"phase": IndexPhase.FAILED.value}, progressing(False, reason, message),
                    event=("Warning", reason, message[:MAX_MESSAGE]))

    if phase == IndexPhase.FAILED.value:
        kept = next((c for c in status.conditions if c.type == "Progressing"), None)
        reason = kept.reason if kept is not None else "Failed"
        message = kept.message if kept is not None else f"re-embedding into {candidate} failed"
        return step({"phase": IndexPhase.FAILED.value}, progressing(False, reason, message))

    if phase in (None, IndexPhase.BACKFILLING.value, IndexPhase.READY.value, IndexPhase.PENDING.value):
        waiting = waiting_for(pipelines, candidate, present=True)
        if waiting:
            return step({"phase": IndexPhase.BACKFILLING.value}, progressing(
                True, "WaitingForDualWrites",
                f"waiting for StreamPipeline(s) {', '.join(sorted(waiting))} to write to {candidate} as well"))
        job = jobs.get(names[Step.BACKFILL])
        dual = ConditionSpec("DualWrites", True, "AllPipelines",
                             f"{len(pipelines)} StreamPipeline(s) write to {active} and {candidate}")
        if job is None or not (job.succeeded or job.failed):
            return step({"phase": IndexPhase.BACKFILLING.value}, dual, progressing(
                True, "Backfilling", f"backfill job {names[Step.BACKFILL]} re-embeds {active} into {candidate}"),
                run=Step.BACKFILL)
        counts = job.counts()
        report = next((r for r in job.reports if not r.ok), None)
        if job.failed or report is not None:
            why = report.message if report is not None else (job.last_error or "the backfill job failed")
            return failed(report.reason if report is not None else "BackfillFailed", why)
        progress = {"documentsDone": counts.get("written", 0) + counts.get("unchanged", 0),
                    "documentsTotal": counts.get("documents", 0)}
        return step({"phase": IndexPhase.CATCHING_UP.value, "progress": progress}, dual, progressing(
            True, "Backfilled", f"backfill copied {progress['documentsDone']} of {progress['documentsTotal']} "
            "documents; catching up"), event=("Normal", "Backfilled", f"{candidate} backfilled from {active}"))

    if phase == IndexPhase.CATCHING_UP.value:
        job = jobs.get(names[Step.CATCHUP])
        if job is None or not (job.succeeded or job.failed):
            return step({}, progressing(True, "CatchingUp", f"catch-up job {names[Step.CATCHUP]} compares the "
                                         f"ledgers of {active} and {candidate}"), run=Step.CATCHUP)
        report = job.reports[-1] if job.reports else None
        if job.failed and job.permanent:
            return failed(report.reason if report else "CatchUpFailed",
                          report.message if report else (job.last_error or "the catch-up job failed"))
        if report is None or not report.ok:  # behind, or a retryable failure: run another pass
            counts = report.counts if report else {}
            progress = {**(status.progress.model_dump(by_alias=True, exclude_none=True) if status.progress else {}),
                        "backlog": counts.get("remaining")}
            return step({"progress": progress}, progressing(
                True, "CatchingUp", f"{counts.get('remaining', 'unknown')} document(s) still behind in "
                f"{candidate}; another catch-up pass"), delete=(job.name,))
        if ingesting:  # batch runs write the active only: catch up again once they are done
            return step({}, progressing(True, "WaitingForIngestion", ingesting_message(ingesting, active)),
                        delete=(job.name,))
        counts = report.counts
        progress = {"documentsDone": counts.get("candidate_documents", 0),
                    "documentsTotal": counts.get("active_documents", 0), "backlog": 0}
        return step({"phase": IndexPhase.VALIDATING.value, "progress": progress},
                    progressing(True, "CaughtUp", report.message),
                    event=("Normal", "CaughtUp", f"{candidate} holds every live document of {active}"))

    if phase == IndexPhase.VALIDATING.value:
        job = jobs.get(names[Step.VALIDATE])
        if job is None or not (job.succeeded or job.failed):
            return step({}, progressing(True, "Validating", f"validation job {names[Step.VALIDATE]} checks {candidate}"),
                        run=Step.VALIDATE)
        report = job.reports[-1] if job.reports else None
        if report is None:
            if job.permanent:
                return failed("ValidationFailed", job.last_error or "the validation job failed")
            return step({}, progressing(True, "Validating", f"{job.last_error or 'no report'}; validating again"),
                        delete=(job.name,))
        gates = tuple(ConditionSpec(g.name.value, g.passed, g.reason, g.message) for g in report.gates)
        validated = ConditionSpec("Validated", report.ok, report.reason, report.message)
        if not report.ok:
            lifecycle = failed("ValidationFailed", f"{report.message}; alias {ei.spec.alias} keeps serving {active}, "
                               f"{candidate} is kept for inspection until the spec changes")
            return Lifecycle(lifecycle.fields, (*lifecycle.conditions, validated, *gates), None, (), keep,
                             lifecycle.event)
        return step({"phase": IndexPhase.SWAPPING.value}, validated, *gates,
                    progressing(True, "Validated", f"{candidate} passed every gate; swapping"))

    if phase == IndexPhase.SWAPPING.value:
        job = jobs.get(names[Step.SWAP])
        if job is None and ingesting:  # a run started since the catch-up: catch up with it first
            return step({"phase": IndexPhase.CATCHING_UP.value},
                        progressing(True, "WaitingForIngestion", ingesting_message(ingesting, active)),
                        delete=(names[Step.CATCHUP],))
        if job is None or not (job.succeeded or job.failed):
            return step({}, progressing(True, "Swapping", f"moving alias {ei.spec.alias} to {candidate}"), run=Step.SWAP)
        report = job.reports[-1] if job.reports else None
        if report is None or not report.ok:
            if job.permanent or (report is not None and not report.ok):
                return failed(report.reason if report else "SwapFailed",
                              report.message if report else (job.last_error or "the swap job failed"))
            return step({}, progressing(True, "Swapping", f"{job.last_error}; swapping again"), delete=(job.name,))
        fields = swapped(ei, candidate, spec_of(ei), wanted, now, report.model)
        message = f"alias {ei.spec.alias} moved from {active} to {candidate}; {active} kept for rollback"
        return Lifecycle(fields, (ConditionSpec("Ready", True, "Swapped", message),
                                  ConditionSpec("ReembedPending", False, "UpToDate", f"collection {candidate} matches the spec"),
                                  progressing(False, "Swapped", message)),
                         None, (), keep, ("Normal", "Swapped", message), report.counts.get("swap_ms"))

    return step({"phase": IndexPhase.BACKFILLING.value}, progressing(True, "Backfilling", "resuming the re-embedding"))


def ingesting_message(names: tuple[str, ...], active: str) -> str:
    return (f"IngestionJob(s) {', '.join(sorted(names))} write to {active}: the swap waits for them, then "
            "catches up with what they wrote")
