"""IngestionJob manifests: run names, the worker's Indexed Job and the checkpoint ConfigMap.

Pure: the spec in, plain Kubernetes objects out. The worker's settings travel as the TRIBUTARY_*
variables named in tributary_workers.contract.env, so both planes read one list of names.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from tributary_workers.contract import env as ENV
from tributary_workers.contract import keys
from tributary_workers.contract.exits import EXIT_PERMANENT

from tributary_operator.core.pods import (
    RESTRICTED_POD,
    TERMINATION_LOG,
    OperatorDefaults,
    container_security,
    service_account_name,
    worker_container_basics,
)
from tributary_operator.core.pods import env_var as _env
from tributary_operator.core.pods import secret_env_var as _secret_env
from tributary_operator.core.targets import ResolvedTarget, optional_target_env
from tributary_operator.api.v1alpha1 import (
    CheckpointBackend,
    IngestionJob,
    IngestionJobSpec,
    IngestionMode,
)

LABEL_JOB = "tributary.dev/ingestionjob"
LABEL_RUN = "tributary.dev/run"
LABEL_COMPONENT = "app.kubernetes.io/component"
MAX_FAILURES_IN_STATUS = 20
MAX_REASON_LENGTH = 1024
# Job names become pod label values (<= 63 chars) with a suffix added by the Job controller.
MAX_RUN_NAME = 52
# Exit codes a retry cannot fix: the index fails at once (podFailurePolicy FailIndex) instead of
# spending backoffLimitPerIndex.
UNRETRYABLE_EXIT_CODES = (EXIT_PERMANENT,)


# --- names -------------------------------------------------------------------------------------


def _short_hash(data: Any, length: int = 8) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def run_key(spec: IngestionJobSpec) -> str:
    """What identifies a one-off run: the spec minus the fields that pause or tidy a run.

    Toggling suspend or changing history limits must not start a new run; changing the source,
    the target or the sharding does.
    """
    essence = spec.model_dump(
        mode="json",
        exclude={"suspend", "ttl_seconds_after_finished", "successful_runs_history_limit",
                 "failed_runs_history_limit", "active_deadline_seconds", "concurrency_policy"},
    )
    return _short_hash(essence)


def one_off_run_name(name: str, spec: IngestionJobSpec) -> str:
    return f"{name[:MAX_RUN_NAME - 9]}-{run_key(spec)}"


def scheduled_run_name(name: str, tick: datetime) -> str:
    # As CronJob does: minutes since the epoch, so a tick always maps to the same name.
    return f"{name[:MAX_RUN_NAME - 11]}-{int(tick.timestamp() // 60)}"


def checkpoint_configmap_name(run_name: str) -> str:
    return f"{run_name}-checkpoints"


# --- manifests ---------------------------------------------------------------------------------


def inline_target(spec: IngestionJobSpec) -> ResolvedTarget | None:
    inline = spec.target.inline
    if inline is None:
        return None
    return ResolvedTarget(
        milvus_uri=inline.milvus_uri,
        collection=inline.collection,
        model=inline.model.name,
        max_tokens=inline.chunking.max_tokens,
        overlap_tokens=inline.chunking.overlap_tokens,
        credentials_secret=inline.credentials_secret_ref.name if inline.credentials_secret_ref else None,
        dimension=inline.model.dimension, max_sequence_length=inline.model.max_sequence_length,
        backend=inline.model.backend, quantize=inline.model.quantize,
    )


def source_id(ij: IngestionJob) -> str:
    """Who "this source" is for pruning: the IngestionJob itself, so two jobs over one bucket with
    different filters never prune each other's documents."""
    return f"ingestionjob/{ij.metadata.get('namespace', '')}/{ij.metadata['name']}"


def worker_env(ij: IngestionJob, run_name: str, target: ResolvedTarget, defaults: OperatorDefaults
               ) -> list[dict[str, Any]]:
    spec = ij.spec
    namespace = ij.metadata["namespace"]
    source = spec.source
    env = [
        _env(ENV.SOURCE, source.uri if source.uri is not None else " ".join(source.urls or [])),
        _env(ENV.COLLECTION, target.collection),
        _env(ENV.MILVUS_URI, target.milvus_uri),
        _env(ENV.JOB_ID, run_name),
        _env(ENV.SHARD_COUNT, spec.parallelism),
        _env(ENV.MAX_CONCURRENCY, spec.max_concurrency),
        _env(ENV.EMBED_BATCH_SIZE, spec.embed_batch_size),
        _env(ENV.OVERLAP_TOKENS, target.overlap_tokens),
        _env(ENV.METRICS_PORT, defaults.metrics_port),
        _env(ENV.REPLICAS, target.replicas),
        _env(ENV.METRIC_TYPE, target.metric_type),
        _env(ENV.INDEX_TYPE, target.index_type),
        # A shard that finished with some failed documents is done: retrying it would not help,
        # and the failures reach the status through the checkpoint.
        _env(ENV.PARTIAL_EXIT_CODE, 0),
        # The shard's JSON report becomes its pod's termination message (status.containerStatuses).
        _env(ENV.REPORT_FILE, TERMINATION_LOG),
    ]
    if source.include:
        env.append(_env(ENV.INCLUDE, ",".join(source.include)))
    if source.exclude:
        env.append(_env(ENV.EXCLUDE, ",".join(source.exclude)))
    env += optional_target_env(target)
    if spec.mode is IngestionMode.INITIAL_LOAD:
        env.append(_env(ENV.BULK_LOAD, "true"))
    if spec.target.index_ref is not None:  # the EmbeddingIndex made it; a dropped one is not remade
        env.append(_env(ENV.CREATE_COLLECTION, "false"))
    if target.credentials_secret:
        env.append(_secret_env(ENV.MILVUS_TOKEN, target.credentials_secret, "MILVUS_TOKEN"))
    if spec.ledger is not None:
        ref = spec.ledger.redis_secret_ref
        env.append(_secret_env(ENV.LEDGER_URL, ref.name, ref.key))
    elif target.ledger_secret is not None:
        # An indexRef run writes through the index's shared ledger, which a re-embedding's catch-up
        # compares: a private ledger would hide the run's writes from it.
        env.append(_secret_env(ENV.LEDGER_URL, *target.ledger_secret))
    else:
        # No shared ledger: versions are fenced within each shard only (see the field's description).
        env.append(_env(ENV.LEDGER_URL, "/var/lib/tributary/ledger.sqlite"))
    checkpoint = spec.checkpoint
    if checkpoint is not None and checkpoint.backend is CheckpointBackend.REDIS:
        ref = checkpoint.redis_secret_ref
        env.append(_secret_env(ENV.CHECKPOINT_URL, ref.name, ref.key))
    else:
        env.append(_env(ENV.CHECKPOINT_URL, keys.configmap_checkpoint_url(namespace, checkpoint_configmap_name(run_name))))
    if source.credentials_secret_ref is not None:
        ref = source.credentials_secret_ref
        for key in ref.keys or ():
            env.append(_secret_env(key, ref.name, key))
    if spec.prune is not None and spec.prune.enabled:
        env += [_env(ENV.PRUNE, "true"), _env(ENV.PRUNE_MAX_FRACTION, spec.prune.max_fraction),
                _env(ENV.SOURCE_ID, source_id(ij))]
    if spec.worker and spec.worker.env:
        env += [_env(k, v) for k, v in sorted(spec.worker.env.items())]
    return env


def build_job(ij: IngestionJob, run_name: str, target: ResolvedTarget, defaults: OperatorDefaults,
              tick: datetime | None = None) -> dict[str, Any]:
    """The Indexed Job of one run: one completion index per shard."""
    spec = ij.spec
    worker = spec.worker
    labels = {LABEL_JOB: ij.metadata["name"], LABEL_RUN: run_name, LABEL_COMPONENT: "batch-worker"}
    container: dict[str, Any] = {
        "name": "worker",
        **worker_container_basics(worker, defaults),
        "command": ["tributary-batch-worker"],
        "env": worker_env(ij, run_name, target, defaults),
        "ports": [{"name": "metrics", "containerPort": defaults.metrics_port}],
        "volumeMounts": [{"name": "state", "mountPath": "/var/lib/tributary"}],
        # What the `restricted` Pod Security Standard asks of every container.
        "securityContext": container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        # A fatal error writes no report but one line on stderr: that line becomes the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    source_secret = spec.source.credentials_secret_ref
    if source_secret is not None and not source_secret.keys:
        container["envFrom"] = [{"secretRef": {"name": source_secret.name}}]
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.parallelism,
        "parallelism": spec.parallelism,
        "backoffLimitPerIndex": spec.backoff_limit_per_index,
        "podFailurePolicy": {"rules": [
            {"action": "FailIndex", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                    "values": list(UNRETRYABLE_EXIT_CODES)}},
            # Evicted or preempted pods are not the shard's fault: retried without counting.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "suspend": spec.suspend,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": defaults.termination_grace_seconds,
                # With the container's fields, what the `restricted` Pod Security level asks.
                "securityContext": dict(RESTRICTED_POD),
                "serviceAccountName": service_account_name(worker, defaults),
                "containers": [container],
                "volumes": [{"name": "state", "emptyDir": {}}],
            },
        },
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    annotations = {"tributary.dev/scheduled-at": tick.isoformat()} if tick else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": run_name, "namespace": ij.metadata["namespace"], "labels": labels,
                     "annotations": annotations},
        "spec": job_spec,
    }


def build_checkpoint_configmap(ij: IngestionJob, run_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": checkpoint_configmap_name(run_name),
            "namespace": ij.metadata["namespace"],
            "labels": {LABEL_JOB: ij.metadata["name"], LABEL_RUN: run_name},
        },
        "data": {},
    }
