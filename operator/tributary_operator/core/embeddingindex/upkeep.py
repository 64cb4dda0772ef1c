"""An up-to-date EmbeddingIndex's upkeep: retiring the previous collection after its retention
window (pipelines first stop writing to it), and the periodic drift check (spec.drift)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tributary_workers.contract.reembed import Step

from tributary_operator.api.v1alpha1 import EmbeddingIndex
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.embeddingindex.observed import (
    MAX_MESSAGE,
    PipelineRouting,
    StepJob,
    progressing,
    waiting_for,
)
from tributary_operator.core.embeddingindex.steps import StepRequest, step_job_name


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
class Plan:
    fields: dict[str, Any] = field(default_factory=dict)
    conditions: tuple[ConditionSpec, ...] = ()
    run: StepRequest | None = None
    delete: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    event: tuple[str, str, str] | None = None


def retention(ei: EmbeddingIndex, jobs: Mapping[str, StepJob], pipelines: Sequence[PipelineRouting],
               now: datetime) -> Plan:
    status = ei.status
    previous = status.previous_collection
    if not previous:
        return Plan(conditions=(progressing(False, "Idle", "nothing to build, swap or retire"),))
    due = retire_due(ei, now)
    if due is None or (now < due and not status.retiring):
        until = "until the next swap" if due is None else f"until {due.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        return Plan(conditions=(progressing(False, "PreviousKept", f"{previous} kept for rollback {until}"),))
    if not status.retiring:
        return Plan({"retiring": True}, (progressing(True, "Retiring", f"retiring {previous}: StreamPipelines "
                                                       "stop writing to it first"),))
    request = StepRequest(Step.RETIRE, previous)
    name = step_job_name(ei, request)
    waiting = waiting_for(pipelines, previous, present=False)
    if waiting:
        return Plan(conditions=(progressing(True, "Retiring", f"waiting for StreamPipeline(s) "
                                              f"{', '.join(sorted(waiting))} to stop writing to {previous}"),), keep=(name,))
    job = jobs.get(name)
    if job is None or not (job.succeeded or job.failed):
        return Plan(conditions=(progressing(True, "Retiring", f"dropping {previous} and its ledger"),),
                     run=request, keep=(name,))
    report = job.reports[-1] if job.reports else None
    if report is None or not report.ok:
        message = report.message if report else (job.last_error or "the retire job failed")
        if job.permanent or report is not None:
            return Plan(conditions=(progressing(False, report.reason if report else "RetireFailed", message),),
                         keep=(name,))
        return Plan(conditions=(progressing(True, "Retiring", f"{message}; again"),), delete=(name,), keep=(name,))
    message = f"dropped {previous} and its ledger"
    return Plan({"previousCollection": None, "previousSpec": None, "previousSpecHash": None, "retiring": None},
                 (progressing(False, "Retired", message),), event=("Normal", "Retired", message))


def drift(ei: EmbeddingIndex, jobs: Mapping[str, StepJob], now: datetime) -> Plan:
    """spec.drift: one check of the active collection per interval, its findings in status.drift."""
    check, status = ei.spec.drift, ei.status
    if check is None:
        return Plan()
    last = status.drift.checked_at if status.drift else None
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    checked = status.drift is not None and status.drift.collection == status.active_collection
    if checked and last is not None and (now - last).total_seconds() < check.interval_seconds:
        return Plan()
    request = StepRequest(Step.DRIFT, status.active_collection, tick=int(now.timestamp() // check.interval_seconds))
    name = step_job_name(ei, request)
    job = jobs.get(name)
    if job is None or not (job.succeeded or job.failed):
        return Plan(run=request, keep=(name,))
    report = job.reports[-1] if job.reports else None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if report is None:
        return Plan({"drift": {"checkedAt": stamp, "collection": status.active_collection}},
                     (ConditionSpec("Drifted", None, "CheckFailed", (job.last_error or "the drift job failed")[:MAX_MESSAGE]),),
                     delete=(name,))
    counts = report.counts
    fields = {"drift": {"checkedAt": stamp, "collection": status.active_collection,
                        **{key: counts.get(key, 0) for key in ("documents", "orphans", "foreign")}}}
    event = None if report.ok else ("Warning", report.reason, report.message[:MAX_MESSAGE])
    return Plan(fields, (ConditionSpec("Drifted", not report.ok, report.reason, report.message[:MAX_MESSAGE]),),
                 delete=(name,), event=event)
