"""IngestionJob decisions: which run should exist now, which to stop, suspend or forget.

Level-triggered and pure: the same spec, status and observed runs always give the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from tributary_operator.api.v1alpha1 import (
    CheckpointBackend,
    EmbeddingIndex,
    IngestionJob,
    IngestionJobSpec,
    RedisSecretRef,
)
from tributary_operator.core.ingestion.checks import Problem
from tributary_operator.core.targets import index_target
from tributary_operator.core.ingestion.manifests import (
    ResolvedTarget,
    checkpoint_configmap_name,
    inline_target,
    one_off_run_name,
    scheduled_run_name,
)
from tributary_operator.core.ingestion.status import RunView


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
        if status.job_name == wanted:
            # It was started and its Job is gone (ttl, history, by hand), also when its outcome was
            # never recorded (a ttlSecondsAfterFinished shorter than a resync): never run it twice.
            return RunDecision()
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


def runs_to_suspend(ij: IngestionJob, runs: Sequence[RunView], stopping: Sequence[str] = ()) -> list[tuple[str, bool]]:
    """(run, suspend) for every unfinished run whose Job's spec.suspend differs from the IngestionJob's."""
    want = ij.spec.suspend
    return [(r.name, want) for r in runs
            if not r.finished and r.suspend_requested != want and r.name not in stopping]


# --- where a run writes and checkpoints ----------------------------------------------------------


def index_ref(ij: IngestionJob) -> str | None:
    """The EmbeddingIndex the target names, to be fetched before resolve_target; None for inline."""
    ref = ij.spec.target.index_ref
    return ref.name if ref is not None and ij.spec.target.inline is None else None


def resolve_target(ij: IngestionJob, index: EmbeddingIndex | None) -> tuple[ResolvedTarget | None, str | None]:
    """An inline target as is; an indexRef through its EmbeddingIndex's active collection.

    Returns (target, None), or (None, why the run cannot start yet)."""
    inline = inline_target(ij.spec)
    if inline is not None:
        return inline, None
    ref = index_ref(ij)
    if index is None:
        return None, f"EmbeddingIndex {ref} not found"
    target = index_target(index)
    if target is None:
        return None, f"EmbeddingIndex {ref} has no active collection yet"
    return target, None


@dataclass(frozen=True)
class CheckpointLocation:
    """Where a run's shards keep their checkpoints: a ConfigMap, or Redis behind a Secret."""

    configmap: str | None = None
    redis_secret: RedisSecretRef | None = None


def checkpoint_location(ij: IngestionJob, run_name: str) -> CheckpointLocation:
    checkpoint = ij.spec.checkpoint
    if checkpoint is not None and checkpoint.backend is CheckpointBackend.REDIS:
        return CheckpointLocation(redis_secret=checkpoint.redis_secret_ref)
    return CheckpointLocation(configmap=checkpoint_configmap_name(run_name))


def rejected_before(status: Mapping[str, Any], generation: int | None) -> Problem | None:
    """A child the API server refused for this very generation is not sent again on every resync:
    the refusal stands (Ready=False, ChildRejected) until the spec changes."""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready and ready.get("reason") == "ChildRejected" and ready.get("observedGeneration") == generation:
        return Problem("ChildRejected", ready.get("message") or "the API server refused the run's Job", permanent=True)
    return None
