"""IngestionJob status: what the cluster shows (the run's Job, the shards' checkpoints) -> status fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tributary_workers.contract import keys
from tributary_workers.contract.checkpoints import CheckpointState

from tributary_operator.api.v1alpha1 import IngestionJob, IngestionPhase
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.ingestion.checks import Problem
from tributary_operator.core.ingestion.manifests import (
    MAX_FAILURES_IN_STATUS,
    MAX_REASON_LENGTH,
)

# --- observing runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunView:
    """What the operator needs to know of one run's Job."""

    name: str
    created: str
    active: int = 0
    finished: bool = False
    succeeded: bool = False
    failed_reason: str = ""
    suspended: bool = False  # the Job controller says so (status condition)
    suspend_requested: bool = False  # spec.suspend of the Job, what the operator last asked for
    start_time: str | None = None
    completion_time: str | None = None
    completed_indexes: frozenset[int] = frozenset()
    failed_indexes: frozenset[int] = frozenset()

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> RunView:
        status = job.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = conditions.get("Failed")
        return cls(
            name=job["metadata"]["name"],
            created=str(job["metadata"].get("creationTimestamp") or ""),
            active=int(status.get("active") or 0),
            finished="Complete" in conditions or failed is not None,
            succeeded="Complete" in conditions,
            failed_reason=(failed.get("reason") or "Failed") if failed else "",
            suspended="Suspended" in conditions,
            suspend_requested=bool((job.get("spec") or {}).get("suspend")),
            start_time=status.get("startTime"),
            completion_time=status.get("completionTime"),
            completed_indexes=frozenset(parse_indexes(status.get("completedIndexes"))),
            failed_indexes=frozenset(parse_indexes(status.get("failedIndexes"))),
        )


def parse_indexes(text: str | None) -> list[int]:
    """Kubernetes' interval notation: "0,2-4" -> [0, 2, 3, 4]."""
    indexes: list[int] = []
    for part in (text or "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        indexes.extend(range(int(low), int(high or low) + 1))
    return indexes


@dataclass(frozen=True)
class ShardProgress:
    """A shard's checkpoint, as the worker wrote it."""

    index: int
    sources_total: int = 0
    sources_done: int = 0
    completed: bool = False
    report: Mapping[str, Any] = field(default_factory=dict)


def shard_progress(checkpoints: Mapping[str, str], run_name: str) -> dict[int, ShardProgress]:
    """Parse the checkpoint ConfigMap's data: keys end in shard-<i>-of-<n>."""
    shards: dict[int, ShardProgress] = {}
    for key, raw in (checkpoints or {}).items():
        index = keys.parse_shard(key)
        if index is None or not key.startswith(run_name):
            continue
        state = CheckpointState.from_json(raw)
        shards[index] = ShardProgress(
            index=index, sources_total=state.sources_total, sources_done=state.sources_done,
            completed=state.completed, report=state.report or {},
        )
    return shards


TERMINAL_PHASES = (IngestionPhase.SUCCEEDED, IngestionPhase.PARTIALLY_SUCCEEDED, IngestionPhase.FAILED)


def compute_status(ij: IngestionJob, run: RunView | None, shards: Mapping[int, ShardProgress],
                   problem: Problem | None = None) -> tuple[dict[str, Any], list[ConditionSpec]]:
    """The status fields (camelCase, ready to patch) and conditions for the current run.

    ``problem`` is what stops the object from making progress (a failed pre-flight check, a child
    the API server refused, an error): it becomes Ready=False with its reason and message."""
    spec = ij.spec
    generation = ij.metadata.get("generation")
    if run is None:
        phase = IngestionPhase.SUSPENDED if spec.suspend else IngestionPhase.PENDING
        if ij.status.phase in TERMINAL_PHASES and ij.status.job_name:
            phase = ij.status.phase  # the run finished and its Job was cleaned up: keep its result
        message = "waiting for the next scheduled run" if spec.schedule else "creating the run"
        if phase in TERMINAL_PHASES:
            message = f"the last run {ij.status.job_name} finished ({phase.value}); its Job was cleaned up"
        fields = {"phase": phase.value, "observedGeneration": generation, "activeRun": None}
        return fields, _conditions(phase, message, "", problem)

    totals = {"documents_total": 0, "documents_succeeded": 0, "documents_failed": 0, "documents_unchanged": 0,
              "chunks_written": 0}
    failures: list[dict[str, str]] = []
    shard_rows = []
    done = total = 0
    for index in range(spec.parallelism):
        progress = shards.get(index)
        report = progress.report if progress else {}
        for key in totals:
            totals[key] += int(report.get(key, 0))
        for failure in report.get("failures", []):
            if len(failures) < MAX_FAILURES_IN_STATUS:
                failures.append({"docId": failure["doc_id"][:2048], "reason": failure["reason"][:MAX_REASON_LENGTH]})
        if progress:
            done += progress.sources_done
            total += progress.sources_total
        shard_rows.append({
            "index": index,
            "phase": _shard_phase(index, run, progress),
            "documentsDone": int(report.get("documents_total", 0)),
            "documentsFailed": int(report.get("documents_failed", 0)),
            "chunksWritten": int(report.get("chunks_written", 0)),
        })

    if run.finished and not run.succeeded:
        phase = IngestionPhase.FAILED
    elif run.finished:
        phase = IngestionPhase.PARTIALLY_SUCCEEDED if totals["documents_failed"] else IngestionPhase.SUCCEEDED
    elif spec.suspend or run.suspended:
        phase = IngestionPhase.SUSPENDED
    elif run.active or run.start_time:
        phase = IngestionPhase.RUNNING
    else:
        phase = IngestionPhase.PENDING
    reporting = len(shards)
    progress_text = f"{done}/{total}" if reporting == spec.parallelism else f"{done}/{total}+"
    fields = {
        "phase": phase.value,
        "observedGeneration": generation,
        "progress": progress_text,
        "documentsTotal": totals["documents_total"],
        "documentsSucceeded": totals["documents_succeeded"],
        "documentsFailed": totals["documents_failed"],
        "documentsUnchanged": totals["documents_unchanged"],
        "chunksWritten": totals["chunks_written"],
        "shards": shard_rows,
        "failures": failures,
        "startTime": run.start_time,
        "completionTime": run.completion_time if run.finished else None,
        "jobName": run.name,
        "activeRun": None if run.finished else run.name,
    }
    shards_done = sum(1 for row in shard_rows if row["phase"] == "Succeeded")
    message = (f"run {run.name}: {shards_done}/{spec.parallelism} shards done, "
               f"{totals['documents_total']:,} documents, {totals['documents_failed']:,} failed")
    if phase is IngestionPhase.FAILED:
        message += f"; the run failed ({run.failed_reason})"
    return fields, _conditions(phase, message, run.failed_reason, problem)


def _shard_phase(index: int, run: RunView, progress: ShardProgress | None) -> str:
    if index in run.failed_indexes:
        return "Failed"
    if index in run.completed_indexes:
        return "Succeeded"
    return "Running" if progress is not None or run.active else "Pending"


READY_REASON = {
    IngestionPhase.PENDING: "Pending",
    IngestionPhase.RUNNING: "Running",
    IngestionPhase.SUCCEEDED: "Succeeded",
    IngestionPhase.PARTIALLY_SUCCEEDED: "PartiallySucceeded",
    IngestionPhase.FAILED: "RunFailed",
    IngestionPhase.SUSPENDED: "Suspended",
}


def _conditions(phase: IngestionPhase, message: str, failed_reason: str,
                problem: Problem | None) -> list[ConditionSpec]:
    """Ready (what `kubectl wait` and Argo CD read) plus the specific conditions.

    Ready is True once the last run finished (PartiallySucceeded too: its failures are listed in
    status.failures and retrying would not help); False while a run is pending or going, when it
    failed, or when a problem blocks the object (then the problem's reason and message)."""
    running = phase in (IngestionPhase.RUNNING, IngestionPhase.PENDING)
    finished_ok = phase in (IngestionPhase.SUCCEEDED, IngestionPhase.PARTIALLY_SUCCEEDED)
    if problem is not None:
        ready = ConditionSpec("Ready", False, problem.reason, problem.message)
    else:
        ready = ConditionSpec("Ready", finished_ok, READY_REASON[phase], message)
    return [
        ready,
        ConditionSpec("Progressing", running and problem is None, phase.value if problem is None else problem.reason,
                      message if problem is None else problem.message),
        ConditionSpec("Complete", finished_ok, phase.value, message),
        ConditionSpec("Failed", phase is IngestionPhase.FAILED, failed_reason or phase.value, message),
        ConditionSpec("Suspended", phase is IngestionPhase.SUSPENDED, phase.value, message),
    ]
