"""Pre-flight checks of a StreamPipeline, in order; the first that fails names the problem.

The controller gathers what the spec depends on (the EmbeddingIndex, the Redis Secret, the Milvus
token Secret, the worker ServiceAccount); until every check passes no worker Deployment is made,
and the Ready condition says what is missing. Re-checked at every tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tributary_operator.api.v1alpha1 import EmbeddingIndex, StreamPipeline
from tributary_operator.core.conditions import Problem
from tributary_operator.core.pods import OperatorDefaults, service_account_name
from tributary_operator.core.streampipeline.manifests import MILVUS_TOKEN_KEY


@dataclass(frozen=True)
class Dependencies:
    index: EmbeddingIndex | None = None
    secrets: Mapping[str, frozenset[str] | None] = field(default_factory=dict)  # name -> keys; None: absent
    service_account: bool = True


def secret_needs(sp: StreamPipeline, index: EmbeddingIndex | None) -> list[tuple[str, str, str]]:
    """(secret, key, field) the workers read."""
    ref = sp.spec.queue.redis_secret_ref
    needs = [(ref.name, ref.key, "queue.redisSecretRef")]
    token = index.spec.milvus.credentials_secret_ref if index is not None else None
    if token is not None:
        needs.append((token.name, MILVUS_TOKEN_KEY,
                      f"EmbeddingIndex {index.metadata.get('name')} milvus.credentialsSecretRef"))
    return needs


def preflight(sp: StreamPipeline, deps: Dependencies, defaults: OperatorDefaults) -> Problem | None:
    ref = sp.spec.index_ref.name
    if deps.index is None:
        return Problem("IndexNotFound", f"EmbeddingIndex {ref} (spec.indexRef) not found in this namespace; "
                       "the workers start once it exists")
    if not deps.index.status.active_collection:
        return Problem("IndexNotReady", f"EmbeddingIndex {ref} has no active collection yet; the workers "
                       "start once it is Ready")
    for name, key, where in secret_needs(sp, deps.index):
        keys = deps.secrets.get(name)
        if keys is None:
            return Problem("SecretNotFound", f"Secret {name} ({where}) not found in this namespace")
        if key not in keys:
            return Problem("SecretKeyMissing", f"Secret {name} ({where}) has no key {key}")
    if not deps.service_account:
        account = service_account_name(sp.spec.worker, defaults)
        return Problem("ServiceAccountNotFound", f"ServiceAccount {account} not found in this namespace "
                       "(spec.worker.serviceAccountName, or the Helm chart's worker account)")
    return None
