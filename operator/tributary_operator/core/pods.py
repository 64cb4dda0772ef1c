"""Pieces every pod the operator makes shares: env entries, what the `restricted` Pod Security
Standard asks of a pod and its containers, and what a finished Job and its pods tell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tributary_workers.contract import defaults as shared

# Where kubelet reads a container's termination message; workers write their report there.
TERMINATION_LOG = "/dev/termination-log"

RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}


def env_var(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def secret_env_var(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    """A variable read from a Secret by reference: the value never sits in the manifest."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


def container_security() -> dict[str, Any]:
    return {key: (dict(value) if isinstance(value, dict) else value) for key, value in RESTRICTED_CONTAINER.items()}


@dataclass(frozen=True)
class OperatorDefaults:
    """Settings the operator applies where a spec leaves them out (operator flags/env)."""

    worker_image: str = "ghcr.io/tributary-dev/tributary:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    service_account: str = "tributary-worker"
    metrics_port: int = shared.POD_METRICS_PORT
    # A shard's pods are replaced or stopped within this, not Kubernetes' default of 30 s: the
    # worker checkpoints after every document, so a stopped shard loses at most one in flight.
    termination_grace_seconds: int = 10


def worker_container_basics(worker: Any, defaults: OperatorDefaults) -> dict[str, Any]:
    """image, imagePullPolicy and resources of a worker container from spec.worker (a WorkerTemplate
    or None), the operator's defaults filling in what it leaves out."""
    basics: dict[str, Any] = {
        "image": worker.image if worker and worker.image else defaults.worker_image,
        "imagePullPolicy": (worker.image_pull_policy.value if worker and worker.image_pull_policy
                            else defaults.image_pull_policy),
    }
    if worker and worker.resources:
        # Quantities as strings: `cpu: 1` is a valid quantity, and the API types take strings only.
        resources = worker.resources.model_dump(mode="json", by_alias=True, exclude_none=True)
        basics["resources"] = {kind: {name: str(value) for name, value in amounts.items()}
                               for kind, amounts in resources.items()}
    return basics


def service_account_name(worker: Any, defaults: OperatorDefaults) -> str:
    return worker.service_account_name if worker and worker.service_account_name else defaults.service_account


COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def job_finished(job: Mapping[str, Any]) -> tuple[bool, bool]:
    """(succeeded, failed) from a Job's conditions; SuccessCriteriaMet and FailureTarget come
    before Complete and Failed (while the pods are still being cleaned up)."""
    conditions = {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    return bool(conditions & {"Complete", "SuccessCriteriaMet"}), bool(conditions & {"Failed", "FailureTarget"})


@dataclass(frozen=True)
class Termination:
    """A terminated container of a Job's pod: where a worker's report (its termination message) is."""

    shard: str  # the pod's completion index; "0" outside an Indexed Job
    message: str
    exit_code: int

    def error_line(self, limit: int) -> str:
        """The error, for a status message: a log tail ends with it."""
        return (self.message.splitlines()[-1] if self.message else f"exit code {self.exit_code}")[:limit]


def terminations(pods: Sequence[Mapping[str, Any]]) -> list[Termination]:
    """Every terminated container of the pods, the oldest pod first (so the latest attempt wins)."""
    found = []
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or "")):
        shard = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "0")
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated:
                found.append(Termination(shard, (terminated.get("message") or "").strip(),
                                         int(terminated.get("exitCode") or 0)))
    return found
