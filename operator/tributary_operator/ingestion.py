"""IngestionJob, the pure core: run naming, the worker Job and checkpoint ConfigMap manifests, the
schedule decision, and the status computed from what the cluster shows.

No Kubernetes calls here: handlers.py reads the cluster, calls these functions, and applies what
they return. Every function is unit-tested without a cluster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from .api.v1alpha1 import (
    CheckpointBackend, IngestionJob, IngestionJobSpec, IngestionMode, IngestionPhase,
)
from .conditions import ConditionSpec

LABEL_JOB = "tributary.dev/ingestionjob"
LABEL_RUN = "tributary.dev/run"
LABEL_COMPONENT = "app.kubernetes.io/component"
MAX_FAILURES_IN_STATUS = 20
MAX_REASON_LENGTH = 1024
# Job names become pod label values (<= 63 chars) with a suffix added by the Job controller.
MAX_RUN_NAME = 52
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class OperatorDefaults:
    """Settings the operator applies where a spec leaves them out (operator flags/env)."""

    worker_image: str = "ghcr.io/tributary-dev/tributary:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    service_account: str = "tributary-worker"
    metrics_port: int = 9090


# --- names -------------------------------------------------------------------------------------


def _short_hash(data: Any, length: int = 8) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def run_key(spec: IngestionJobSpec) -> str:
    """What identifies a one-off run: the spec minus the fields that pause or tidy a run.

    Toggling suspend or changing history limits must not start a new run; changing the source,
    the target or the sharding does.
    """
    essence = spec.model_dump(
        mode="json",
        exclude={"suspend", "ttl_seconds_after_finished", "successful_runs_history_limit",
                 "failed_runs_history_limit", "active_deadline_seconds", "concurrency_policy"},
    )
    return _short_hash(essence)


def one_off_run_name(name: str, spec: IngestionJobSpec) -> str:
    return f"{name[:MAX_RUN_NAME - 9]}-{run_key(spec)}"


def scheduled_run_name(name: str, tick: datetime) -> str:
    # As CronJob does: minutes since the epoch, so a tick always maps to the same name.
    return f"{name[:MAX_RUN_NAME - 11]}-{int(tick.timestamp() // 60)}"


def checkpoint_configmap_name(run_name: str) -> str:
    return f"{run_name}-checkpoints"


# --- the schedule ------------------------------------------------------------------------------


def latest_tick(schedule: str, since: datetime, now: datetime) -> datetime | None:
    """The most recent schedule time in (since, now], or None when none passed."""
    ticks = croniter(schedule, since)
    latest = None
    while True:
        tick = ticks.get_next(datetime)
        if tick > now:
            return latest
        latest = tick


@dataclass(frozen=True)
class RunDecision:
    """What to do about runs: start one (and which runs to stop first), or nothing."""

    start: str | None = None
    tick: datetime | None = None
    stop: tuple[str, ...] = ()
    reason: str = ""


def decide_run(
    ij: IngestionJob,
    runs: Sequence[RunView],
    now: datetime,
) -> RunDecision:
    """Which run should exist now. Level-triggered: the same inputs always give the same answer."""
    spec, status = ij.spec, ij.status
    name = ij.metadata["name"]
    active = [r for r in runs if not r.finished]
    if spec.schedule is None:
        wanted = one_off_run_name(name, spec)
        if any(r.name == wanted for r in runs):
            return RunDecision()
        if status.job_name == wanted and status.phase in TERMINAL_PHASES:
            return RunDecision()  # it ran and its Job was cleaned up (ttl / history)
        # A changed spec replaces the run in progress: its documents are fenced by version.
        return RunDecision(start=wanted, stop=tuple(r.name for r in active), reason="spec")
    if spec.suspend:
        return RunDecision()
    since = status.last_schedule_time or _parse_time(ij.metadata.get("creationTimestamp")) or now
    tick = latest_tick(spec.schedule, since, now)
    if tick is None:
        return RunDecision()
    wanted = scheduled_run_name(name, tick)
    if any(r.name == wanted for r in runs):
        return RunDecision()
    if active and spec.concurrency_policy.value == "Forbid":
        return RunDecision(reason="forbid")  # skipped, as CronJob does; the next tick may run
    return RunDecision(start=wanted, tick=tick, stop=tuple(r.name for r in active), reason="schedule")


def runs_to_delete(spec: IngestionJobSpec, runs: Sequence[RunView]) -> list[str]:
    """Finished runs beyond the history limits, oldest first."""
    doomed: list[str] = []
    for succeeded, limit in ((True, spec.successful_runs_history_limit), (False, spec.failed_runs_history_limit)):
        finished = sorted((r for r in runs if r.finished and r.succeeded == succeeded), key=lambda r: r.created)
        doomed += [r.name for r in finished[: max(0, len(finished) - limit)]]
    return doomed


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# --- manifests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedTarget:
    """Where a run writes, after an indexRef was looked up (or straight from an inline target)."""

    milvus_uri: str
    collection: str
    model: str
    max_tokens: int | None
    overlap_tokens: int
    credentials_secret: str | None = None
    replicas: int = 1
    metric_type: str = "COSINE"
    index_type: str = "AUTOINDEX"


def inline_target(spec: IngestionJobSpec) -> ResolvedTarget | None:
    inline = spec.target.inline
    if inline is None:
        return None
    return ResolvedTarget(
        milvus_uri=inline.milvus_uri,
        collection=inline.collection,
        model=inline.model.name,
        max_tokens=inline.chunking.max_tokens,
        overlap_tokens=inline.chunking.overlap_tokens,
        credentials_secret=inline.credentials_secret_ref.name if inline.credentials_secret_ref else None,
    )


def _env(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


def worker_env(ij: IngestionJob, run_name: str, target: ResolvedTarget, defaults: OperatorDefaults
               ) -> list[dict[str, Any]]:
    spec = ij.spec
    namespace = ij.metadata["namespace"]
    source = spec.source
    env = [
        _env("TRIBUTARY_SOURCE", source.uri if source.uri is not None else " ".join(source.urls or [])),
        _env("TRIBUTARY_COLLECTION", target.collection),
        _env("TRIBUTARY_MILVUS_URI", target.milvus_uri),
        _env("TRIBUTARY_JOB_ID", run_name),
        _env("TRIBUTARY_SHARD_COUNT", spec.parallelism),
        _env("TRIBUTARY_MAX_CONCURRENCY", spec.max_concurrency),
        _env("TRIBUTARY_EMBED_BATCH_SIZE", spec.embed_batch_size),
        _env("TRIBUTARY_OVERLAP_TOKENS", target.overlap_tokens),
        _env("TRIBUTARY_METRICS_PORT", defaults.metrics_port),
        _env("TRIBUTARY_REPLICAS", target.replicas),
        _env("TRIBUTARY_METRIC_TYPE", target.metric_type),
        _env("TRIBUTARY_INDEX_TYPE", target.index_type),
        # A shard that finished with some failed documents is done: retrying it would not help,
        # and the failures reach the status through the checkpoint.
        _env("TRIBUTARY_PARTIAL_EXIT_CODE", 0),
    ]
    if source.include:
        env.append(_env("TRIBUTARY_INCLUDE", ",".join(source.include)))
    if source.exclude:
        env.append(_env("TRIBUTARY_EXCLUDE", ",".join(source.exclude)))
    if target.model != DEFAULT_MODEL_ID:
        env.append(_env("TRIBUTARY_MODEL", target.model))
    if target.max_tokens is not None:
        env.append(_env("TRIBUTARY_MAX_TOKENS", target.max_tokens))
    if spec.mode is IngestionMode.INITIAL_LOAD:
        env.append(_env("TRIBUTARY_BULK_LOAD", "true"))
    if target.credentials_secret:
        env.append(_secret_env("TRIBUTARY_MILVUS_TOKEN", target.credentials_secret, "MILVUS_TOKEN"))
    if spec.ledger is not None:
        ref = spec.ledger.redis_secret_ref
        env.append(_secret_env("TRIBUTARY_LEDGER_URL", ref.name, ref.key))
    else:
        # No shared ledger: versions are fenced within each shard only (see the field's description).
        env.append(_env("TRIBUTARY_LEDGER_URL", "/var/lib/tributary/ledger.sqlite"))
    checkpoint = spec.checkpoint
    if checkpoint is not None and checkpoint.backend is CheckpointBackend.REDIS:
        ref = checkpoint.redis_secret_ref
        env.append(_secret_env("TRIBUTARY_CHECKPOINT_URL", ref.name, ref.key))
    else:
        env.append(_env("TRIBUTARY_CHECKPOINT_URL", f"configmap://{namespace}/{checkpoint_configmap_name(run_name)}"))
    if source.credentials_secret_ref is not None:
        ref = source.credentials_secret_ref
        for key in ref.keys or ():
            env.append(_secret_env(key, ref.name, key))
    if spec.worker and spec.worker.env:
        env += [_env(k, v) for k, v in sorted(spec.worker.env.items())]
    return env


def build_job(ij: IngestionJob, run_name: str, target: ResolvedTarget, defaults: OperatorDefaults,
              tick: datetime | None = None) -> dict[str, Any]:
    """The Indexed Job of one run: one completion index per shard."""
    spec = ij.spec
    worker = spec.worker
    labels = {LABEL_JOB: ij.metadata["name"], LABEL_RUN: run_name, LABEL_COMPONENT: "batch-worker"}
    container: dict[str, Any] = {
        "name": "worker",
        "image": (worker.image if worker and worker.image else defaults.worker_image),
        "imagePullPolicy": (worker.image_pull_policy.value if worker and worker.image_pull_policy
                            else defaults.image_pull_policy),
        "command": ["tributary-batch-worker"],
        "env": worker_env(ij, run_name, target, defaults),
        "ports": [{"name": "metrics", "containerPort": defaults.metrics_port}],
        "volumeMounts": [{"name": "state", "mountPath": "/var/lib/tributary"}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    if worker and worker.resources:
        container["resources"] = worker.resources
    source_secret = spec.source.credentials_secret_ref
    if source_secret is not None and not source_secret.keys:
        container["envFrom"] = [{"secretRef": {"name": source_secret.name}}]
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.parallelism,
        "parallelism": spec.parallelism,
        "backoffLimitPerIndex": spec.backoff_limit_per_index,
        "suspend": spec.suspend,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": (worker.service_account_name if worker and worker.service_account_name
                                       else defaults.service_account),
                "containers": [container],
                "volumes": [{"name": "state", "emptyDir": {}}],
            },
        },
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    annotations = {"tributary.dev/scheduled-at": tick.isoformat()} if tick else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": run_name, "namespace": ij.metadata["namespace"], "labels": labels,
                     "annotations": annotations},
        "spec": job_spec,
    }


def build_checkpoint_configmap(ij: IngestionJob, run_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": checkpoint_configmap_name(run_name),
            "namespace": ij.metadata["namespace"],
            "labels": {LABEL_JOB: ij.metadata["name"], LABEL_RUN: run_name},
        },
        "data": {},
    }


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
        tail = key.rsplit(".", 1)[-1]
        if not tail.startswith("shard-") or not key.startswith(run_name):
            continue
        index = int(tail.split("-")[1])
        state = json.loads(raw)
        shards[index] = ShardProgress(
            index=index,
            sources_total=int(state.get("sources_total", 0)),
            sources_done=int(state.get("sources_done", 0)),
            completed=bool(state.get("completed")),
            report=state.get("report") or {},
        )
    return shards


TERMINAL_PHASES = (IngestionPhase.SUCCEEDED, IngestionPhase.PARTIALLY_SUCCEEDED, IngestionPhase.FAILED)


def compute_status(ij: IngestionJob, run: RunView | None, shards: Mapping[int, ShardProgress],
                   blocked: str | None = None) -> tuple[dict[str, Any], list[ConditionSpec]]:
    """The status fields (camelCase, ready to patch) and conditions for the current run."""
    spec = ij.spec
    generation = ij.metadata.get("generation")
    if run is None:
        phase = IngestionPhase.SUSPENDED if spec.suspend else IngestionPhase.PENDING
        if ij.status.phase in TERMINAL_PHASES and ij.status.job_name:
            phase = ij.status.phase  # the run finished and its Job was cleaned up: keep its result
        message = blocked or ("waiting for the next scheduled run" if spec.schedule else "creating the run")
        fields = {"phase": phase.value, "observedGeneration": generation, "activeRun": None}
        return fields, _conditions(phase, message, "")

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
    return fields, _conditions(phase, f"run {run.name}", run.failed_reason)


def _shard_phase(index: int, run: RunView, progress: ShardProgress | None) -> str:
    if index in run.failed_indexes:
        return "Failed"
    if index in run.completed_indexes:
        return "Succeeded"
    return "Running" if progress is not None or run.active else "Pending"


def _conditions(phase: IngestionPhase, message: str, failed_reason: str) -> list[ConditionSpec]:
    running = phase in (IngestionPhase.RUNNING, IngestionPhase.PENDING)
    return [
        ConditionSpec("Progressing", running, phase.value, message),
        ConditionSpec("Complete", phase in (IngestionPhase.SUCCEEDED, IngestionPhase.PARTIALLY_SUCCEEDED),
                      phase.value, message),
        ConditionSpec("Failed", phase is IngestionPhase.FAILED, failed_reason or phase.value, message),
        ConditionSpec("Suspended", phase is IngestionPhase.SUSPENDED, phase.value, message),
    ]
