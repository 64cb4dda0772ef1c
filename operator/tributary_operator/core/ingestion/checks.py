"""Pre-flight checks of an IngestionJob, as cert-manager's policy chains: the controller gathers what
the spec depends on (Secrets and their keys, the worker ServiceAccount, the EmbeddingIndex), then
named pure checks run in order and the first one that fails names the problem.

A problem becomes the Ready condition's reason and message, so `kubectl describe` says what is
missing; it is re-checked at every resync, so the object proceeds as soon as the cause is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from croniter import croniter

from tributary_operator.api.v1alpha1 import EmbeddingIndex, IngestionJob
from tributary_operator.core.conditions import Problem
from tributary_operator.core.pods import OperatorDefaults, service_account_name

MILVUS_TOKEN_KEY = "MILVUS_TOKEN"


@dataclass(frozen=True)
class SecretNeed:
    """A Secret the workers read: which field asks for it and which keys (none: every key)."""

    name: str
    keys: frozenset[str]
    field: str


@dataclass(frozen=True)
class Dependencies:
    """What the controller found in the cluster for the needs below."""

    secrets: Mapping[str, frozenset[str] | None] = field(default_factory=dict)  # name -> keys; None: absent
    service_accounts: Mapping[str, bool] = field(default_factory=dict)
    index: EmbeddingIndex | None = None


def secret_needs(ij: IngestionJob, index: EmbeddingIndex | None) -> list[SecretNeed]:
    spec = ij.spec
    needs = []
    if spec.source.credentials_secret_ref is not None:
        ref = spec.source.credentials_secret_ref
        needs.append(SecretNeed(ref.name, frozenset(ref.keys or ()), "source.credentialsSecretRef"))
    inline = spec.target.inline
    if inline is not None and inline.credentials_secret_ref is not None:
        needs.append(SecretNeed(inline.credentials_secret_ref.name, frozenset({MILVUS_TOKEN_KEY}),
                                "target.inline.credentialsSecretRef"))
    if inline is None and index is not None and index.spec.milvus.credentials_secret_ref is not None:
        ref = index.spec.milvus.credentials_secret_ref
        needs.append(SecretNeed(ref.name, frozenset({MILVUS_TOKEN_KEY}),
                                f"EmbeddingIndex {index.metadata.get('name')} milvus.credentialsSecretRef"))
    if spec.ledger is not None:
        ref = spec.ledger.redis_secret_ref
        needs.append(SecretNeed(ref.name, frozenset({ref.key}), "ledger.redisSecretRef"))
    elif inline is None and index is not None and index.spec.ledger is not None:
        ref = index.spec.ledger.redis_secret_ref
        needs.append(SecretNeed(ref.name, frozenset({ref.key}),
                                f"EmbeddingIndex {index.metadata.get('name')} ledger.redisSecretRef"))
    if spec.checkpoint is not None and spec.checkpoint.redis_secret_ref is not None:
        ref = spec.checkpoint.redis_secret_ref
        needs.append(SecretNeed(ref.name, frozenset({ref.key}), "checkpoint.redisSecretRef"))
    return needs


def service_account(ij: IngestionJob, defaults: OperatorDefaults) -> str:
    return service_account_name(ij.spec.worker, defaults)


# --- the checks, in order ------------------------------------------------------------------------

Check = Callable[[IngestionJob, Dependencies, OperatorDefaults], Problem | None]


def schedule_is_valid(ij: IngestionJob, deps: Dependencies, defaults: OperatorDefaults) -> Problem | None:
    schedule = ij.spec.schedule
    if schedule is not None and not croniter.is_valid(schedule):
        return Problem("InvalidSpec", f"spec.schedule {schedule!r} is not a valid cron schedule", permanent=True)
    return None


def index_exists(ij: IngestionJob, deps: Dependencies, defaults: OperatorDefaults) -> Problem | None:
    ref = ij.spec.target.index_ref
    if ij.spec.target.inline is None and ref is not None and deps.index is None:
        return Problem("IndexNotFound", f"EmbeddingIndex {ref.name} (spec.target.indexRef) not found in this "
                       "namespace; the run starts once it exists")
    return None


def index_is_ready(ij: IngestionJob, deps: Dependencies, defaults: OperatorDefaults) -> Problem | None:
    if ij.spec.target.inline is None and deps.index is not None and not deps.index.status.active_collection:
        name = deps.index.metadata.get("name")
        return Problem("IndexNotReady", f"EmbeddingIndex {name} has no active collection yet; the run starts "
                       "once it is Ready")
    return None


def secrets_exist(ij: IngestionJob, deps: Dependencies, defaults: OperatorDefaults) -> Problem | None:
    for need in secret_needs(ij, deps.index):
        if deps.secrets.get(need.name) is None:
            return Problem("SecretNotFound", f"Secret {need.name} ({need.field}) not found in this namespace")
    return None


def secret_keys_present(ij: IngestionJob, deps: Dependencies, defaults: OperatorDefaults) -> Problem | None:
    for need in secret_needs(ij, deps.index):
        missing = sorted(need.keys - (deps.secrets.get(need.name) or frozenset()))
        if missing:
            return Problem("SecretKeyMissing", f"Secret {need.name} ({need.field}) has no key "
                           f"{', '.join(missing)}")
    return None


def service_account_exists(ij: IngestionJob, deps: Dependencies, defaults: OperatorDefaults) -> Problem | None:
    name = service_account(ij, defaults)
    if not deps.service_accounts.get(name, False):
        where = "spec.worker.serviceAccountName" if ij.spec.worker and ij.spec.worker.service_account_name \
            else "the operator's worker account (the Helm chart's worker.serviceAccount)"
        return Problem("ServiceAccountNotFound", f"ServiceAccount {name} ({where}) not found in this namespace")
    return None


PREFLIGHT: tuple[Check, ...] = (
    schedule_is_valid, index_exists, index_is_ready, secrets_exist, secret_keys_present, service_account_exists,
)


def preflight(ij: IngestionJob, deps: Dependencies, defaults: OperatorDefaults) -> Problem | None:
    """The first failing check's problem, or None when the run may start."""
    for check in PREFLIGHT:
        problem = check(ij, deps, defaults)
        if problem is not None:
            return problem
    return None

