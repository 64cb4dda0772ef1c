"""Pieces every pod the operator makes shares: env entries and what the `restricted` Pod Security
Standard asks of a pod and its containers."""

from __future__ import annotations

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
