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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tributary_workers.contract.exits import EXIT_PERMANENT
from tributary_workers.contract.reembed import Step, StepReport

from tributary_operator.api.v1alpha1 import CollectionSpec, EmbeddingIndex, IndexPhase
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.embeddingindex.manifests import spec_hash
from tributary_operator.core.embeddingindex.naming import collection_name, model_id
from tributary_operator.core.embeddingindex.steps import StepRequest, step_job_name
from tributary_operator.core.targets import active_spec

MAX_MESSAGE = 1024
ROLLBACK_ANNOTATION = "tributary.dev/rollback"  # "true": serve the previous collection, whatever the spec says
GATE_CONDITIONS = ("DocumentRatio", "Dimension", "Metric", "SelfRetrieval", "QueryOverlap")


@dataclass(frozen=True)
class StepJob:
    """What the operator needs of a step's Job and its pods."""

    name: str
    active: int = 0
    succeeded: bool = False
    failed: bool = False
    reports: tuple[StepReport, ...] = ()  # one per pod that wrote one (per shard for the backfill)
    last_error: str = ""  # the latest failed pod's one line, when it wrote no report
    permanent: bool = False  # a pod exited EXIT_PERMANENT: no retry helps

    @classmethod
    def from_job(cls, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()) -> StepJob:
        status = job.get("status") or {}
        conditions = {c["type"] for c in status.get("conditions") or [] if c.get("status") == "True"}
        reports: dict[str, StepReport] = {}
        error, permanent = "", False
        ordered = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        for pod in ordered:
            meta = pod.get("metadata") or {}
            shard = (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated") or {}
                if not terminated:
                    continue
                message = (terminated.get("message") or "").strip()
                try:
                    reports[shard] = StepReport.from_json(message)
                except (ValueError, KeyError, TypeError):
                    if terminated.get("exitCode"):
                        error = (message.splitlines()[-1] if message else
                                 f"exit code {terminated.get('exitCode')}")[:MAX_MESSAGE]
                permanent = permanent or terminated.get("exitCode") == EXIT_PERMANENT
        return cls(job["metadata"]["name"], int(status.get("active") or 0),
                   bool(conditions & {"Complete", "SuccessCriteriaMet"}),
                   bool(conditions & {"Failed", "FailureTarget"}), tuple(reports[k] for k in sorted(reports)),
                   error, permanent)

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for report in self.reports:
            for key, value in report.counts.items():
                total[key] = total.get(key, 0) + value
        return total


@dataclass(frozen=True)
class PipelineRouting:
    """A StreamPipeline on this index, as its status shows its routing record."""

    name: str
    targets: tuple[str, ...]
    applied: bool


@dataclass(frozen=True)
class Lifecycle:
    """What to do: the Job to create (when absent), Jobs to delete, status fields and conditions."""

    fields: dict[str, Any]
    conditions: tuple[ConditionSpec, ...]
    run: StepRequest | None = None  # create this step's Job unless it exists
    delete: tuple[str, ...] = ()  # Jobs to delete (read, or spent: replaced on a later pass)
    keep: tuple[str, ...] = ()  # step Jobs that may stay (all others of the index are deleted)
    event: tuple[str, str, str] | None = None  # (type, reason, message)
    swap_ms: int | None = None  # a swap just finished, taking this long


def _spec_of(ei: EmbeddingIndex) -> CollectionSpec:
    return CollectionSpec(model=ei.spec.model, chunking=ei.spec.chunking, index=ei.spec.index)


def _dump(spec: CollectionSpec | None) -> dict[str, Any] | None:
    return None if spec is None else spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def _ready(ei: EmbeddingIndex) -> ConditionSpec:
    active = ei.status.active_collection
    previous = next((c for c in ei.status.conditions if c.type == "Ready" and c.status == "True"), None)
    if previous is not None and previous.reason in ("Provisioned", "Adopted"):
        return ConditionSpec("Ready", True, previous.reason, previous.message)
    return ConditionSpec("Ready", True, "Serving", f"alias {ei.spec.alias} serves collection {active}")


def _waiting_for(pipelines: Sequence[PipelineRouting], collection: str, present: bool) -> list[str]:
    """Pipelines whose workers do not yet (present) or still (not present) write to collection."""
    return [p.name for p in pipelines if (collection in p.targets) != present or not p.applied]


def _swapped(ei: EmbeddingIndex, to: str, to_spec: CollectionSpec, to_hash: str, now: datetime) -> dict[str, Any]:
    status = ei.status
    return {
        "activeCollection": to, "activeSpec": _dump(to_spec), "activeSpecHash": to_hash,
        "activeModel": model_id(to_spec.model.name, to_spec.model.quantize),
        "previousCollection": status.active_collection, "previousSpec": _dump(active_spec(ei)),
        "previousSpecHash": status.active_spec_hash, "candidateCollection": None, "candidateSpecHash": None,
        "retiring": None, "swappedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "phase": IndexPhase.READY.value,
    }


def _progressing(status: bool, reason: str, message: str) -> ConditionSpec:
    return ConditionSpec("Progressing", status, reason, message[:MAX_MESSAGE])


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
            _progressing(False, "RollbackRequested", f"held by annotation {ROLLBACK_ANNOTATION}")))

    if up_to_date:
        fields: dict[str, Any] = {"phase": IndexPhase.READY.value}
        if status.active_spec is None:
            fields["activeSpec"] = _dump(_spec_of(ei))
        pending = ConditionSpec("ReembedPending", False, "UpToDate",
                                f"collection {status.active_collection} matches the spec")
        if status.candidate_collection:  # reverted while a candidate was built: it is dropped
            fields.update(candidateCollection=None, candidateSpecHash=None, progress=None)
        plan = _retention(ei, jobs, pipelines, now)
        check = _drift(ei, jobs, now)
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
    return _reembed(ei, target, wanted, jobs, pipelines, now, ready, tuple(ingesting))


def _reembed(ei: EmbeddingIndex, candidate: str, wanted: str, jobs: Mapping[str, StepJob],
             pipelines: Sequence[PipelineRouting], now: datetime, ready: ConditionSpec,
             ingesting: tuple[str, ...] = ()) -> Lifecycle:
    status, active = ei.status, ei.status.active_collection
    pending = ConditionSpec("ReembedPending", True, "Reembedding",
                            f"re-embedding {active} into {candidate}; alias {ei.spec.alias} serves {active}")
    if status.candidate_spec_hash != wanted or status.candidate_collection != candidate:
        return Lifecycle(
            {"phase": IndexPhase.BACKFILLING.value, "candidateCollection": candidate, "candidateSpecHash": wanted,
             "progress": None},
            (ready, pending, _progressing(True, "CandidateNamed", f"candidate collection {candidate}: "
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
        return step({"phase": IndexPhase.FAILED.value}, _progressing(False, reason, message),
                    event=("Warning", reason, message[:MAX_MESSAGE]))

    if phase == IndexPhase.FAILED.value:
        kept = next((c for c in status.conditions if c.type == "Progressing"), None)
        reason = kept.reason if kept is not None else "Failed"
        message = kept.message if kept is not None else f"re-embedding into {candidate} failed"
        return step({"phase": IndexPhase.FAILED.value}, _progressing(False, reason, message))

    if phase in (None, IndexPhase.BACKFILLING.value, IndexPhase.READY.value, IndexPhase.PENDING.value):
        waiting = _waiting_for(pipelines, candidate, present=True)
        if waiting:
            return step({"phase": IndexPhase.BACKFILLING.value}, _progressing(
                True, "WaitingForDualWrites",
                f"waiting for StreamPipeline(s) {', '.join(sorted(waiting))} to write to {candidate} as well"))
        job = jobs.get(names[Step.BACKFILL])
        dual = ConditionSpec("DualWrites", True, "AllPipelines",
                             f"{len(pipelines)} StreamPipeline(s) write to {active} and {candidate}")
        if job is None or not (job.succeeded or job.failed):
            return step({"phase": IndexPhase.BACKFILLING.value}, dual, _progressing(
                True, "Backfilling", f"backfill job {names[Step.BACKFILL]} re-embeds {active} into {candidate}"),
                run=Step.BACKFILL)
        counts = job.counts()
        report = next((r for r in job.reports if not r.ok), None)
        if job.failed or report is not None:
            why = report.message if report is not None else (job.last_error or "the backfill job failed")
            return failed(report.reason if report is not None else "BackfillFailed", why)
        progress = {"documentsDone": counts.get("written", 0) + counts.get("unchanged", 0),
                    "documentsTotal": counts.get("documents", 0)}
        return step({"phase": IndexPhase.CATCHING_UP.value, "progress": progress}, dual, _progressing(
            True, "Backfilled", f"backfill copied {progress['documentsDone']} of {progress['documentsTotal']} "
            "documents; catching up"), event=("Normal", "Backfilled", f"{candidate} backfilled from {active}"))

    if phase == IndexPhase.CATCHING_UP.value:
        job = jobs.get(names[Step.CATCHUP])
        if job is None or not (job.succeeded or job.failed):
            return step({}, _progressing(True, "CatchingUp", f"catch-up job {names[Step.CATCHUP]} compares the "
                                         f"ledgers of {active} and {candidate}"), run=Step.CATCHUP)
        report = job.reports[-1] if job.reports else None
        if job.failed and job.permanent:
            return failed(report.reason if report else "CatchUpFailed",
                          report.message if report else (job.last_error or "the catch-up job failed"))
        if report is None or not report.ok:  # behind, or a retryable failure: run another pass
            counts = report.counts if report else {}
            progress = {**(status.progress.model_dump(by_alias=True, exclude_none=True) if status.progress else {}),
                        "backlog": counts.get("remaining")}
            return step({"progress": progress}, _progressing(
                True, "CatchingUp", f"{counts.get('remaining', 'unknown')} document(s) still behind in "
                f"{candidate}; another catch-up pass"), delete=(job.name,))
        if ingesting:  # batch runs write the active only: catch up again once they are done
            return step({}, _progressing(True, "WaitingForIngestion", _ingesting(ingesting, active)),
                        delete=(job.name,))
        counts = report.counts
        progress = {"documentsDone": counts.get("candidate_documents", 0),
                    "documentsTotal": counts.get("active_documents", 0), "backlog": 0}
        return step({"phase": IndexPhase.VALIDATING.value, "progress": progress},
                    _progressing(True, "CaughtUp", report.message),
                    event=("Normal", "CaughtUp", f"{candidate} holds every live document of {active}"))

    if phase == IndexPhase.VALIDATING.value:
        job = jobs.get(names[Step.VALIDATE])
        if job is None or not (job.succeeded or job.failed):
            return step({}, _progressing(True, "Validating", f"validation job {names[Step.VALIDATE]} checks {candidate}"),
                        run=Step.VALIDATE)
        report = job.reports[-1] if job.reports else None
        if report is None:
            if job.permanent:
                return failed("ValidationFailed", job.last_error or "the validation job failed")
            return step({}, _progressing(True, "Validating", f"{job.last_error or 'no report'}; validating again"),
                        delete=(job.name,))
        gates = tuple(ConditionSpec(g.name.value, g.passed, g.reason, g.message) for g in report.gates)
        validated = ConditionSpec("Validated", report.ok, report.reason, report.message)
        if not report.ok:
            lifecycle = failed("ValidationFailed", f"{report.message}; alias {ei.spec.alias} keeps serving {active}, "
                               f"{candidate} is kept for inspection until the spec changes")
            return Lifecycle(lifecycle.fields, (*lifecycle.conditions, validated, *gates), None, (), keep,
                             lifecycle.event)
        return step({"phase": IndexPhase.SWAPPING.value}, validated, *gates,
                    _progressing(True, "Validated", f"{candidate} passed every gate; swapping"))

    if phase == IndexPhase.SWAPPING.value:
        job = jobs.get(names[Step.SWAP])
        if job is None and ingesting:  # a run started since the catch-up: catch up with it first
            return step({"phase": IndexPhase.CATCHING_UP.value},
                        _progressing(True, "WaitingForIngestion", _ingesting(ingesting, active)),
                        delete=(names[Step.CATCHUP],))
        if job is None or not (job.succeeded or job.failed):
            return step({}, _progressing(True, "Swapping", f"moving alias {ei.spec.alias} to {candidate}"), run=Step.SWAP)
        report = job.reports[-1] if job.reports else None
        if report is None or not report.ok:
            if job.permanent or (report is not None and not report.ok):
                return failed(report.reason if report else "SwapFailed",
                              report.message if report else (job.last_error or "the swap job failed"))
            return step({}, _progressing(True, "Swapping", f"{job.last_error}; swapping again"), delete=(job.name,))
        fields = _swapped(ei, candidate, _spec_of(ei), wanted, now)
        message = f"alias {ei.spec.alias} moved from {active} to {candidate}; {active} kept for rollback"
        return Lifecycle(fields, (ConditionSpec("Ready", True, "Swapped", message),
                                  ConditionSpec("ReembedPending", False, "UpToDate", f"collection {candidate} matches the spec"),
                                  _progressing(False, "Swapped", message)),
                         None, (), keep, ("Normal", "Swapped", message), report.counts.get("swap_ms"))

    return step({"phase": IndexPhase.BACKFILLING.value}, _progressing(True, "Backfilling", "resuming the re-embedding"))


def _ingesting(names: tuple[str, ...], active: str) -> str:
    return (f"IngestionJob(s) {', '.join(sorted(names))} write to {active}: the swap waits for them, then "
            "catches up with what they wrote")


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
                         (ready, pending, _progressing(True, "RollingBack", f"moving alias {ei.spec.alias} back to {previous}")),
                         request, (), (name,))
    report = job.reports[-1] if job.reports else None
    if report is None or not report.ok:
        message = report.message if report else (job.last_error or "the swap job failed")
        if job.permanent or report is not None:
            return Lifecycle({"phase": IndexPhase.FAILED.value},
                             (ready, pending, _progressing(False, "RollbackFailed", message)), None, (), (name,),
                             ("Warning", "RollbackFailed", message[:MAX_MESSAGE]))
        return Lifecycle({}, (ready, pending, _progressing(True, "RollingBack", f"{message}; again")), None, (name,), (name,))
    previous_spec = status.previous_spec or _spec_of(ei)
    fields = _swapped(ei, previous, previous_spec, status.previous_spec_hash, now)
    message = f"rolled back: alias {ei.spec.alias} moved from {active} to {previous}; {active} kept"
    return Lifecycle(fields, (ConditionSpec("Ready", True, "RolledBack", message),
                              ConditionSpec("ReembedPending", False, "UpToDate", f"collection {previous} matches the spec"),
                              _progressing(False, "RolledBack", message)),
                     None, (), (name,), ("Normal", "RolledBack", message), report.counts.get("swap_ms"))


def retire_due(ei: EmbeddingIndex, now: datetime) -> datetime | None:
    """When the previous collection is to be dropped (None: kept until the next swap)."""
    retention, status = ei.spec.retention, ei.status
    if not status.previous_collection:
        return None
    swapped = status.swapped_at or now
    if swapped.tzinfo is None:
        swapped = swapped.replace(tzinfo=UTC)
    if not retention.keep_previous:
        return swapped
    if retention.retire_after_seconds is None:
        return None
    return swapped + timedelta(seconds=retention.retire_after_seconds)


@dataclass(frozen=True)
class _Plan:
    fields: dict[str, Any] = field(default_factory=dict)
    conditions: tuple[ConditionSpec, ...] = ()
    run: StepRequest | None = None
    delete: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    event: tuple[str, str, str] | None = None


def _retention(ei: EmbeddingIndex, jobs: Mapping[str, StepJob], pipelines: Sequence[PipelineRouting],
               now: datetime) -> _Plan:
    status = ei.status
    previous = status.previous_collection
    if not previous:
        return _Plan(conditions=(_progressing(False, "Idle", "nothing to build, swap or retire"),))
    due = retire_due(ei, now)
    if due is None or (now < due and not status.retiring):
        until = "until the next swap" if due is None else f"until {due.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        return _Plan(conditions=(_progressing(False, "PreviousKept", f"{previous} kept for rollback {until}"),))
    if not status.retiring:
        return _Plan({"retiring": True}, (_progressing(True, "Retiring", f"retiring {previous}: StreamPipelines "
                                                       "stop writing to it first"),))
    request = StepRequest(Step.RETIRE, previous)
    name = step_job_name(ei, request)
    waiting = _waiting_for(pipelines, previous, present=False)
    if waiting:
        return _Plan(conditions=(_progressing(True, "Retiring", f"waiting for StreamPipeline(s) "
                                              f"{', '.join(sorted(waiting))} to stop writing to {previous}"),), keep=(name,))
    job = jobs.get(name)
    if job is None or not (job.succeeded or job.failed):
        return _Plan(conditions=(_progressing(True, "Retiring", f"dropping {previous} and its ledger"),),
                     run=request, keep=(name,))
    report = job.reports[-1] if job.reports else None
    if report is None or not report.ok:
        message = report.message if report else (job.last_error or "the retire job failed")
        if job.permanent or report is not None:
            return _Plan(conditions=(_progressing(False, report.reason if report else "RetireFailed", message),),
                         keep=(name,))
        return _Plan(conditions=(_progressing(True, "Retiring", f"{message}; again"),), delete=(name,), keep=(name,))
    message = f"dropped {previous} and its ledger"
    return _Plan({"previousCollection": None, "previousSpec": None, "previousSpecHash": None, "retiring": None},
                 (_progressing(False, "Retired", message),), event=("Normal", "Retired", message))


def _drift(ei: EmbeddingIndex, jobs: Mapping[str, StepJob], now: datetime) -> _Plan:
    """spec.drift: one check of the active collection per interval, its findings in status.drift."""
    check, status = ei.spec.drift, ei.status
    if check is None:
        return _Plan()
    last = status.drift.checked_at if status.drift else None
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    checked = status.drift is not None and status.drift.collection == status.active_collection
    if checked and last is not None and (now - last).total_seconds() < check.interval_seconds:
        return _Plan()
    request = StepRequest(Step.DRIFT, status.active_collection, tick=int(now.timestamp() // check.interval_seconds))
    name = step_job_name(ei, request)
    job = jobs.get(name)
    if job is None or not (job.succeeded or job.failed):
        return _Plan(run=request, keep=(name,))
    report = job.reports[-1] if job.reports else None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if report is None:
        return _Plan({"drift": {"checkedAt": stamp, "collection": status.active_collection}},
                     (ConditionSpec("Drifted", None, "CheckFailed", (job.last_error or "the drift job failed")[:MAX_MESSAGE]),),
                     delete=(name,))
    counts = report.counts
    fields = {"drift": {"checkedAt": stamp, "collection": status.active_collection,
                        **{key: counts.get(key, 0) for key in ("documents", "orphans", "foreign")}}}
    event = None if report.ok else ("Warning", report.reason, report.message[:MAX_MESSAGE])
    return _Plan(fields, (ConditionSpec("Drifted", not report.ok, report.reason, report.message[:MAX_MESSAGE]),),
                 delete=(name,), event=event)
