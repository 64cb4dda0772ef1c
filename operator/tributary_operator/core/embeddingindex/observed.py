"""What the blue-green lifecycle decides from and what it returns: a step's Job as observed
(StepJob), a StreamPipeline's routing (PipelineRouting), the decision (Lifecycle), and the status
pieces every phase shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tributary_workers.contract.exits import EXIT_PERMANENT
from tributary_workers.contract.reembed import StepReport

from tributary_operator.api.v1alpha1 import CollectionSpec, EmbeddingIndex, IndexPhase
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.embeddingindex.naming import model_id
from tributary_operator.core.embeddingindex.steps import StepRequest
from tributary_operator.core.pods import job_finished, terminations
from tributary_operator.core.targets import active_spec

MAX_MESSAGE = 1024


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
        reports: dict[str, StepReport] = {}
        error, permanent = "", False
        for ended in terminations(pods):
            try:
                reports[ended.shard] = StepReport.from_json(ended.message)
            except (ValueError, KeyError, TypeError):
                if ended.exit_code:
                    error = ended.error_line(MAX_MESSAGE)
            permanent = permanent or ended.exit_code == EXIT_PERMANENT
        succeeded, failed = job_finished(job)
        return cls(job["metadata"]["name"], int((job.get("status") or {}).get("active") or 0), succeeded, failed,
                   tuple(reports[k] for k in sorted(reports)), error, permanent)

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


def spec_of(ei: EmbeddingIndex) -> CollectionSpec:
    return CollectionSpec(model=ei.spec.model, chunking=ei.spec.chunking, index=ei.spec.index)


def dump(spec: CollectionSpec | None) -> dict[str, Any] | None:
    return None if spec is None else spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def waiting_for(pipelines: Sequence[PipelineRouting], collection: str, present: bool) -> list[str]:
    """Pipelines whose workers do not yet (present) or still (not present) write to collection."""
    return [p.name for p in pipelines if (collection in p.targets) != present or not p.applied]


def swapped(ei: EmbeddingIndex, to: str, to_spec: CollectionSpec, to_hash: str, now: datetime,
            recorded_model: str | None = None) -> dict[str, Any]:
    """Status after the alias moved to ``to``; recorded_model: what that collection records (the
    swap Job reads it: a local model's id carries a digest of its files the operator cannot compute)."""
    status = ei.status
    return {
        "activeCollection": to, "activeSpec": dump(to_spec), "activeSpecHash": to_hash,
        "activeModel": recorded_model or model_id(to_spec.model.name, to_spec.model.quantize),
        "previousCollection": status.active_collection, "previousSpec": dump(active_spec(ei)),
        "previousSpecHash": status.active_spec_hash, "candidateCollection": None, "candidateSpecHash": None,
        "retiring": None, "swappedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "phase": IndexPhase.READY.value,
    }


def progressing(status: bool, reason: str, message: str) -> ConditionSpec:
    return ConditionSpec("Progressing", status, reason, message[:MAX_MESSAGE])
