"""Who runs: one active operator per watched scope, decided over coordination.k8s.io Leases.

Pure: the controller-runtime rules over a Lease's spec. A holder renews its Lease well inside the
lease duration; another instance takes the Lease over only once the holder has let it expire, and
stands by (saying so) until then. A scope of namespaces is guarded by one Lease in each of them, so
two operators whose namespace lists overlap never both run on the shared namespace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

LEASE_NAME = "tributary-operator"
LEASE_SECONDS = 15
RENEW_EVERY_SECONDS = 5


@dataclass(frozen=True)
class LeaseDecision:
    action: str  # "create", "renew", "take-over" or "stand-by"
    spec: dict[str, Any] | None  # the Lease spec to write; None when standing by
    holder: str | None = None  # who holds it, when standing by


def lease_locations(namespaces: list[str], own_namespace: str) -> list[tuple[str, str]]:
    """(namespace, name) of the Leases an operator must hold: one per watched namespace, or one for
    the whole cluster in its own namespace. Sorted, so every instance acquires them in one order."""
    if namespaces:
        return [(namespace, LEASE_NAME) for namespace in sorted(set(namespaces))]
    return [(own_namespace, f"{LEASE_NAME}-cluster")]


def identity(pod_name: str | None, hostname: str, pid: int) -> str:
    return pod_name or f"{hostname}-{pid}"


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _micro(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decide_lease(current: dict[str, Any] | None, me: str, now: datetime,
                 lease_seconds: int = LEASE_SECONDS) -> LeaseDecision:
    """What to do with a Lease spec (None: the Lease does not exist yet)."""
    fresh = {"holderIdentity": me, "leaseDurationSeconds": lease_seconds, "acquireTime": _micro(now),
             "renewTime": _micro(now), "leaseTransitions": 0}
    if current is None:
        return LeaseDecision("create", fresh)
    holder = current.get("holderIdentity")
    if holder == me:
        return LeaseDecision("renew", {**current, "renewTime": _micro(now)})
    renewed = _time(current.get("renewTime")) or _time(current.get("acquireTime"))
    duration = int(current.get("leaseDurationSeconds") or lease_seconds)
    if not holder or renewed is None or renewed + timedelta(seconds=duration) < now:
        return LeaseDecision("take-over", {**fresh, "leaseTransitions": int(current.get("leaseTransitions") or 0) + 1})
    return LeaseDecision("stand-by", None, holder)


def scope_id(namespaces: list[str]) -> str:
    """A short, stable name for a watched scope (for logs and metrics)."""
    if not namespaces:
        return "cluster"
    return hashlib.sha256(",".join(sorted(set(namespaces))).encode()).hexdigest()[:8]
