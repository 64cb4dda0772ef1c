"""Pieces every pod the operator makes shares: env entries and what the `restricted` Pod Security
Standard asks of a pod and its containers."""

from __future__ import annotations

from typing import Any

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
