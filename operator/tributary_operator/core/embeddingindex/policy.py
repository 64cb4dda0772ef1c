"""EmbeddingIndex provisioning, decided: (index, what its provisioning Job shows) -> what to do and
the status to write. Pure; the controller observes and applies.

- No active collection yet: run the provisioning Job; its outcome (a termination message holding
  contract.adoption.Adoption) becomes activeCollection and Ready, or phase Failed with what differs.
- Milvus unreachable: Ready=False, reason MilvusUnavailable, the Job's last error in one line; the
  Job controller retries with back-off, and a spent Job is replaced.
- Once there is an active collection, the blue-green lifecycle (lifecycle.py) takes over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tributary_workers.contract.adoption import AdoptAction, Adoption
from tributary_workers.contract.exits import EXIT_PERMANENT

from tributary_operator.api.v1alpha1 import EmbeddingIndex, IndexPhase
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.embeddingindex.manifests import provision_job_name, spec_hash
from tributary_operator.core.embeddingindex.naming import model_id
from tributary_operator.core.pods import job_finished, terminations

MAX_MESSAGE = 1024


@dataclass(frozen=True)
class ProvisionView:
    """What the operator needs of the provisioning Job and its pods."""

    name: str
    active: int = 0
    succeeded: bool = False
    failed: bool = False
    outcome: Adoption | None = None  # the latest pod's report, when it wrote one
    last_error: str = ""  # the latest failed pod's termination message (one line)
    permanent: bool = False  # the latest failed pod exited EXIT_PERMANENT

    @classmethod
    def from_job(cls, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()) -> ProvisionView:
        outcome, error, permanent = None, "", False
        for ended in terminations(pods):
            try:
                outcome = Adoption.from_json(ended.message)
            except (ValueError, KeyError, TypeError):
                if ended.exit_code:
                    error = ended.error_line(MAX_MESSAGE)
            permanent = ended.exit_code == EXIT_PERMANENT
        succeeded, failed = job_finished(job)
        return cls(job["metadata"]["name"], int((job.get("status") or {}).get("active") or 0), succeeded, failed,
                   outcome, error, permanent)


class Action(StrEnum):
    NONE = "None"
    CREATE_JOB = "CreateJob"
    DELETE_JOB = "DeleteJob"  # done with it (read), or spent: replaced on the next pass


@dataclass(frozen=True)
class IndexPlan:
    action: Action
    job: str  # the provisioning Job's name
    fields: dict[str, Any]  # status fields (camelCase), merged over the current status
    conditions: tuple[ConditionSpec, ...]
    event: tuple[str, str, str] | None = None  # (type, reason, message) for a step worth an Event


def _unavailable(error: str) -> bool:
    text = error.lower()
    return "milvus" in text and ("connect" in text or "reach" in text or "unavailable" in text)


def plan(ei: EmbeddingIndex, job: ProvisionView | None) -> IndexPlan:
    spec = ei.spec
    name = provision_job_name(ei)
    wanted = spec_hash(spec)

    def waiting(reason: str, message: str, action: Action = Action.NONE) -> IndexPlan:
        return IndexPlan(action, name, {"phase": IndexPhase.PENDING.value},
                         (ConditionSpec("Ready", False, reason, message),))

    if job is None:
        return waiting("Provisioning", f"provisioning alias {spec.alias}: job {name} started", Action.CREATE_JOB)
    outcome = job.outcome
    if job.succeeded and outcome is not None and outcome.action is not AdoptAction.CONFLICT:
        fields = {"phase": IndexPhase.READY.value, "activeCollection": outcome.collection,
                  "activeModel": outcome.model or model_id(spec.model.name), "activeSpecHash": wanted}
        return IndexPlan(Action.DELETE_JOB, name, fields,
                         (ConditionSpec("Ready", True, outcome.reason, outcome.message),
                          ConditionSpec("ReembedPending", False, "UpToDate",
                                        f"collection {outcome.collection} matches the spec")),
                         ("Normal", outcome.reason, outcome.message))
    if outcome is not None and outcome.action is AdoptAction.CONFLICT:
        return IndexPlan(Action.NONE, name, {"phase": IndexPhase.FAILED.value},
                         (ConditionSpec("Ready", False, outcome.reason, outcome.message),))
    if job.failed and job.permanent:
        return IndexPlan(Action.NONE, name, {"phase": IndexPhase.FAILED.value},
                         (ConditionSpec("Ready", False, "ProvisioningFailed",
                                        job.last_error or "the provisioning job failed"),))
    if job.last_error:
        reason = "MilvusUnavailable" if _unavailable(job.last_error) else "ProvisioningRetrying"
        # A spent Job is replaced: the Job controller's back-off starts again.
        return waiting(reason, f"{job.last_error} (retrying with back-off)",
                       Action.DELETE_JOB if job.failed else Action.NONE)
    if job.succeeded:  # finished without a readable outcome: run it again
        return waiting("Provisioning", f"job {name} left no outcome; provisioning again", Action.DELETE_JOB)
    return waiting("Provisioning", f"provisioning alias {spec.alias}: job {name} running")
