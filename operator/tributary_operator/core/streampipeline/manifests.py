"""StreamPipeline manifests: the worker Deployment and the routing record's targets.

Pure: the spec and the EmbeddingIndex's active collection in, plain objects out. The worker's
settings travel as the TRIBUTARY_* variables of tributary_workers.contract.env.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from tributary_workers.contract import defaults as shared
from tributary_workers.contract import env as ENV
from tributary_workers.contract.keys import dead_letter_key

from tributary_operator.api.v1alpha1 import CollectionSpec, EmbeddingIndex, StreamPipeline, StreamPipelineSpec
from tributary_operator.api.v1alpha1.schema import BUNDLED_MODELS
from tributary_operator.core.pods import (
    RESTRICTED_POD,
    OperatorDefaults,
    container_security,
    env_var,
    secret_env_var,
    service_account_name,
    worker_container_basics,
)
from tributary_operator.core.targets import ResolvedTarget, active_spec, optional_target_env

LABEL_PIPELINE = "tributary.dev/streampipeline"
COMPONENT = "stream-worker"
TEMPLATE_HASH = "tributary.dev/template-hash"
WORKER_SUFFIX = "-worker"
MILVUS_TOKEN_KEY = "MILVUS_TOKEN"


def worker_name(sp: StreamPipeline) -> str:
    return f"{sp.metadata['name']}{WORKER_SUFFIX}"


def selector_labels(sp: StreamPipeline) -> dict[str, str]:
    """The Deployment's selector: immutable once created, so only what never changes."""
    return {LABEL_PIPELINE: sp.metadata["name"], "app.kubernetes.io/component": COMPONENT}


def labels(sp: StreamPipeline) -> dict[str, str]:
    return {
        **selector_labels(sp),
        "app.kubernetes.io/name": "tributary",
        "app.kubernetes.io/instance": sp.metadata["name"],
        "app.kubernetes.io/part-of": "tributary",
        "app.kubernetes.io/managed-by": "tributary-operator",
    }


def routing_index(index: EmbeddingIndex) -> str:
    """The name the routing record and the applied hash are kept under: the alias the index serves
    (unique per Milvus, and what producers call the index)."""
    return index.spec.alias


def _target(collection: str, built: CollectionSpec, create: bool = False) -> dict[str, Any]:
    """A routing target with its own model and chunking (a worker applies them per target)."""
    model, chunking = built.model, built.chunking
    target: dict[str, Any] = {"collection": collection, "model": None if model.name in BUNDLED_MODELS else model.name,
                              "max_tokens": chunking.max_tokens, "overlap_tokens": chunking.overlap_tokens,
                              "backend": model.backend, "quantize": model.quantize, "dimension": model.dimension}
    if create:  # only the candidate may be created by a write
        target["create"] = True
    return {key: value for key, value in target.items() if value is not None}


def routing_targets(index: EmbeddingIndex) -> list[dict[str, Any]]:
    """The collections every streamed event is written to, each with its own model: the active one
    first; during a blue-green re-embedding the candidate; after a swap the previous collection
    (for a rollback that loses no update) until it is being retired."""
    status = index.status
    spec = index.spec
    targets = [_target(status.active_collection, active_spec(index))]
    if status.candidate_collection and status.candidate_collection != status.active_collection:
        built = CollectionSpec(model=spec.model, chunking=spec.chunking, index=spec.index)
        targets.append(_target(status.candidate_collection, built, create=True))
    previous = status.previous_collection
    if previous and not status.retiring and previous not in (t["collection"] for t in targets):
        targets.append(_target(previous, status.previous_spec or active_spec(index)))
    return targets


def dead_letter_stream(spec: StreamPipelineSpec) -> str:
    return spec.queue.dead_letter_stream or dead_letter_key(spec.queue.stream)


def worker_env(sp: StreamPipeline, index: EmbeddingIndex, target: ResolvedTarget,
               defaults: OperatorDefaults) -> list[dict[str, Any]]:
    spec = sp.spec
    queue = spec.queue
    grace = shared.TERMINATION_GRACE_PERIOD_S
    env = [
        # First: the consumer name is the pod's own, so the operator can tell live consumers from gone ones.
        {"name": ENV.POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        env_var(ENV.INDEX, routing_index(index)),
        env_var(ENV.COLLECTION, target.collection),
        secret_env_var(ENV.REDIS_URL, queue.redis_secret_ref.name, queue.redis_secret_ref.key),
        env_var(ENV.MILVUS_URI, target.milvus_uri),
        env_var(ENV.STREAM, queue.stream),
        env_var(ENV.GROUP, queue.group),
        env_var(ENV.DEAD_LETTER_STREAM, dead_letter_stream(spec)),
        env_var(ENV.MAX_BATCH_SIZE, spec.batching.max_batch_size),
        env_var(ENV.MAX_WAIT_MS, spec.batching.max_wait_ms),
        env_var(ENV.CLAIM_IDLE_MS, spec.retry.claim_idle_ms),
        env_var(ENV.MAX_DELIVERIES, spec.retry.max_deliveries),
        # The kubelet SIGKILLs at the grace period: the drain ends DRAIN_MARGIN_S before it.
        env_var(ENV.DRAIN_TIMEOUT_S, shared.drain_timeout_for_grace(grace)),
        env_var(ENV.OVERLAP_TOKENS, target.overlap_tokens),
        env_var(ENV.REPLICAS, target.replicas),
        env_var(ENV.METRIC_TYPE, target.metric_type),
        env_var(ENV.INDEX_TYPE, target.index_type),
        env_var(ENV.METRICS_PORT, defaults.metrics_port),
    ]
    env += optional_target_env(target)
    if target.credentials_secret:
        env.append(secret_env_var(ENV.MILVUS_TOKEN, target.credentials_secret, MILVUS_TOKEN_KEY))
    worker = spec.worker
    if worker and worker.env:
        env += [env_var(k, v) for k, v in sorted(worker.env.items())]
    return env


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def build_worker_deployment(sp: StreamPipeline, index: EmbeddingIndex, target: ResolvedTarget,
                            defaults: OperatorDefaults, replicas: int) -> dict[str, Any]:
    """The worker Deployment `<pipeline>-worker`; its pod template's hash is an annotation, so the
    controller patches the template (a rolling update) only when it really changed."""
    worker = sp.spec.worker
    container = {
        "name": "worker",
        **worker_container_basics(worker, defaults),
        "command": ["tributary-stream-worker"],
        "env": worker_env(sp, index, target, defaults),
        "ports": [{"name": "metrics", "containerPort": defaults.metrics_port}],
        "securityContext": container_security(),
    }
    template = {
        "metadata": {"labels": labels(sp)},
        "spec": {
            # The worker drains on SIGTERM: it stops reading, finishes and acknowledges its batch.
            "terminationGracePeriodSeconds": shared.TERMINATION_GRACE_PERIOD_S,
            "securityContext": dict(RESTRICTED_POD),
            "serviceAccountName": service_account_name(worker, defaults),
            "containers": [container],
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": worker_name(sp), "namespace": sp.metadata["namespace"], "labels": labels(sp),
                     "annotations": {TEMPLATE_HASH: template_hash(template)}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(sp)},
            # A new worker is up before an old one drains: the stream never goes unconsumed.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": template,
        },
    }


def deployment_patch(existing: dict[str, Any], wanted: dict[str, Any], *, replicas: int | None
                     ) -> dict[str, Any] | None:
    """What to patch into an existing worker Deployment: the template when its hash differs,
    spec.replicas when the operator owns them (``replicas`` None: an HPA does); None: nothing."""
    patch: dict[str, Any] = {}
    have = (existing.get("metadata", {}).get("annotations") or {}).get(TEMPLATE_HASH)
    want = wanted["metadata"]["annotations"][TEMPLATE_HASH]
    if have != want:
        patch = {"metadata": {"annotations": {TEMPLATE_HASH: want}, "labels": wanted["metadata"]["labels"]},
                 "spec": {"template": copy.deepcopy(wanted["spec"]["template"]),
                          "strategy": wanted["spec"]["strategy"]}}
    if replicas is not None and existing.get("spec", {}).get("replicas") != replicas:
        patch.setdefault("spec", {})["replicas"] = replicas
    return patch or None
