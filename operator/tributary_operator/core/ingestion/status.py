"""IngestionJob status: what the cluster shows (the run's Job, the shards' checkpoints) -> status fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tributary_workers.contract import keys
from tributary_workers.contract.checkpoints import CheckpointState

from tributary_operator.api.v1alpha1 import IngestionJob, IngestionPhase
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.ingestion.checks import Problem
from tributary_operator.core.ingestion.manifests import (
    MAX_FAILURES_IN_STATUS,
    MAX_REASON_LENGTH,
    one_off_run_name,
)
from tributary_operator.core.pods import COMPLETION_INDEX_ANNOTATION

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
    # (shard index, message) of failed pods: their termination messages, set from the run's pods.
    failure_messages: tuple[tuple[int, str], ...] = ()

    @classmethod
    def from_job(cls, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()) -> RunView:
        """The Job controller writes SuccessCriteriaMet / FailureTarget as soon as the outcome is
        known and Complete / Failed only once every pod is gone (after their grace period): the
        interim conditions already count as finished, so the phase does not lag the pods' exit."""
        status = job.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = conditions.get("Failed") or conditions.get("FailureTarget")
        success = conditions.get("Complete") or conditions.get("SuccessCriteriaMet")
        return cls(
            name=job["metadata"]["name"],
            created=str(job["metadata"].get("creationTimestamp") or ""),
            active=int(status.get("active") or 0),
            finished=success is not None or failed is not None,
            succeeded=success is not None and failed is None,
            failed_reason=(failed.get("reason") or "Failed") if failed else "",
            suspended="Suspended" in conditions,
            suspend_requested=bool((job.get("spec") or {}).get("suspend")),
            start_time=status.get("startTime"),
            completion_time=status.get("completionTime") or (success or {}).get("lastTransitionTime"),
            completed_indexes=frozenset(parse_indexes(status.get("completedIndexes"))),
            failed_indexes=frozenset(parse_indexes(status.get("failedIndexes"))),
            failure_messages=termination_messages(pods),
        )


def termination_messages(pods: Sequence[Mapping[str, Any]]) -> tuple[tuple[int, str], ...]:
    """The termination messages of a run's failed pods, by shard index (latest attempt last)."""
    found: list[tuple[str, int, str]] = []
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Failed":
            continue
        index = (pod.get("metadata") or {}).get("annotations", {}).get(COMPLETION_INDEX_ANNOTATION)
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((container.get("state") or {}).get("terminated") or {}).get("message", "").strip()
            message = message.splitlines()[-1] if message else ""  # a log tail ends with the error line
            if message and index is not None:
                found.append((str(pod["metadata"].get("creationTimestamp") or ""), int(index), message))
    return tuple((index, message[:MAX_REASON_LENGTH]) for _, index, message in sorted(found))


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
        message = "waiting for the next scheduled run" if spec.schedule else "creating the run"
        reason = ""
        if ij.status.phase in TERMINAL_PHASES and ij.status.job_name:
            phase = ij.status.phase  # the run finished and its Job was cleaned up: keep its result
            message = f"the last run {ij.status.job_name} finished ({phase.value}); its Job was cleaned up"
        elif run_lost(ij):
            phase, reason = IngestionPhase.FAILED, "RunLost"
            message = (f"the Job of run {ij.status.job_name} was deleted (ttlSecondsAfterFinished, or by hand) "
                       "before its outcome was recorded; it is not started again: change the spec to run again")
        fields = {"phase": phase.value, "observedGeneration": generation, "activeRun": None}
        return fields, _conditions(phase, message, reason, problem)

    totals = {"documents_total": 0, "documents_succeeded": 0, "documents_failed": 0, "documents_unchanged": 0,
              "chunks_written": 0, "documents_pruned": 0, "prune_refused": 0}
    prune_messages: list[str] = []
    failures: list[dict[str, str]] = []
    shard_rows = []
    done = total = 0
    failed_messages = dict(run.failure_messages)  # the latest attempt's message per shard
    for index in range(spec.parallelism):
        progress = shards.get(index)
        report = progress.report if progress else {}
        for key in totals:
            totals[key] += int(report.get(key, 0))
        if report.get("prune_refused"):
            prune_messages.append(f"shard {index}: {report.get('prune_message', '')}")
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
            **({"message": failed_messages[index][:MAX_REASON_LENGTH]} if index in failed_messages else {}),
        })

    if run.finished and not run.succeeded:
        phase = IngestionPhase.FAILED
    elif run.finished:
        partial = totals["documents_failed"] or totals["prune_refused"]
        phase = IngestionPhase.PARTIALLY_SUCCEEDED if partial else IngestionPhase.SUCCEEDED
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
        "documentsPruned": totals["documents_pruned"] if spec.prune is not None and spec.prune.enabled else None,
        "shards": shard_rows,
        "failures": failures,
        "startTime": run.start_time,
        "completionTime": run.completion_time if run.finished else None,
        "jobName": run.name,
        "activeRun": None if run.finished else run.name,
        "eta": eta(run.start_time, done, total) if phase is IngestionPhase.RUNNING and reporting == spec.parallelism
        else None,
    }
    shards_done = sum(1 for row in shard_rows if row["phase"] == "Succeeded")
    message = (f"run {run.name}: {shards_done}/{spec.parallelism} shards done, "
               f"{totals['documents_total']:,} documents, {totals['documents_failed']:,} failed")
    if totals["documents_pruned"]:
        message += f", {totals['documents_pruned']:,} pruned"
    if prune_messages:
        message += "; " + "; ".join(prune_messages[:2])
    if phase is IngestionPhase.FAILED:
        message += f"; the run failed ({run.failed_reason})"
        if run.failure_messages:
            message += ": " + "; ".join(f"shard {index}: {text}" for index, text in run.failure_messages[-3:])
    return fields, _conditions(phase, message[:MAX_REASON_LENGTH], run.failed_reason, problem)


def run_lost(ij: IngestionJob) -> bool:
    """A one-off run was started (status.jobName is its name) but its Job is gone while the phase
    was not terminal yet: the TTL controller or a person deleted it before the result was seen."""
    return (ij.spec.schedule is None and ij.status.phase not in TERMINAL_PHASES
            and ij.status.job_name == one_off_run_name(ij.metadata["name"], ij.spec))


def eta(start_time: str | None, done: int, total: int, now: datetime | None = None) -> str | None:
    """Time left at the rate measured so far, (total - done) / (done / elapsed), e.g. "4m10s".

    None until a document is done (no rate yet) or without a start time.
    """
    if not start_time or done <= 0 or total <= 0:
        return None
    started = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    elapsed = ((now or datetime.now(UTC)) - started).total_seconds()
    if elapsed <= 0:
        return None
    left = round(max(0, total - done) * elapsed / done)
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


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
