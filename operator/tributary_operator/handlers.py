"""kopf handlers: thin. They read the cluster, call the pure core, apply what it returns.

create, update, resume and the resync timer all run one level-triggered reconcile, so a missed
event, an operator restart or a hand-deleted child all converge the same way.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import kopf

from . import ingestion, kube, metrics
from .api.v1alpha1 import GROUP, VERSION, CheckpointBackend, EmbeddingIndex, IngestionJob
from .conditions import merge_conditions, status_patch

DOMAIN = GROUP
RESYNC_SECONDS = float(os.environ.get("TRIBUTARY_RESYNC_SECONDS", "10"))
DEFAULTS = ingestion.OperatorDefaults(
    worker_image=os.environ.get("TRIBUTARY_WORKER_IMAGE", ingestion.OperatorDefaults.worker_image),
    service_account=os.environ.get("TRIBUTARY_WORKER_SERVICE_ACCOUNT", ingestion.OperatorDefaults.service_account),
)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping stays under our domain and out of the user-facing status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=DOMAIN)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=DOMAIN, key="last-handled-configuration")
    settings.persistence.finalizer = f"{DOMAIN}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.networking.error_backoffs = [1, 2, 5, 10]
    kube.load_config()


# --- IngestionJob ------------------------------------------------------------------------------


@kopf.on.create(GROUP, VERSION, "ingestionjobs", id="reconcile")
@kopf.on.update(GROUP, VERSION, "ingestionjobs", id="reconcile")
@kopf.on.resume(GROUP, VERSION, "ingestionjobs", id="reconcile")
@kopf.timer(GROUP, VERSION, "ingestionjobs", interval=RESYNC_SECONDS, id="resync")
def reconcile_ingestion_job(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
    with metrics.reconciling("IngestionJob"):
        reconcile(body, patch, logger)


def reconcile(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger) -> None:
    ij = IngestionJob.from_body(body)
    namespace, name = ij.metadata["namespace"], ij.metadata["name"]
    now = datetime.now(UTC)

    jobs = kube.list_jobs(namespace, f"{ingestion.LABEL_JOB}={name}")
    runs = [ingestion.RunView.from_job(job) for job in jobs]
    target, blocked = resolve_target(ij)
    decision = ingestion.decide_run(ij, runs, now)
    tick = None
    if decision.start and target is not None:
        for stale in decision.stop:
            kube.delete_job(namespace, stale)
            kopf.info(body, reason="RunStopped", message=f"stopped run {stale} ({decision.reason})")
        configmap = ingestion.build_checkpoint_configmap(ij, decision.start)
        job = ingestion.build_job(ij, decision.start, target, DEFAULTS, decision.tick)
        kopf.adopt([configmap, job], owner=body)
        kube.create_if_absent(configmap)
        if kube.create_if_absent(job):
            logger.info("started run %s", decision.start)
            kopf.info(body, reason="RunStarted",
                      message=f"started run {decision.start} with {ij.spec.parallelism} shard(s)")
        tick = decision.tick
        jobs = kube.list_jobs(namespace, f"{ingestion.LABEL_JOB}={name}")
        runs = [ingestion.RunView.from_job(job) for job in jobs]

    for run in runs:  # suspend and resume follow the spec
        if not run.finished and run.suspend_requested != ij.spec.suspend and run.name not in decision.stop:
            kube.set_job_suspended(namespace, run.name, ij.spec.suspend)
            kopf.info(body, reason="Suspended" if ij.spec.suspend else "Resumed", message=f"run {run.name}")

    for doomed in ingestion.runs_to_delete(ij.spec, runs):
        kube.delete_job(namespace, doomed)
        kube.delete_configmap(namespace, ingestion.checkpoint_configmap_name(doomed))

    current = max(runs, key=lambda r: r.created, default=None)
    checkpoints = read_checkpoints(ij, current.name) if current else {}
    fields, conditions = ingestion.compute_status(
        ij, current, ingestion.shard_progress(checkpoints, current.name) if current else {}, blocked)
    if tick is not None:
        fields["lastScheduleTime"] = tick.strftime("%Y-%m-%dT%H:%M:%SZ")
    status = dict(body.get("status") or {})
    fields["conditions"] = merge_conditions(status.get("conditions"), conditions, ij.metadata.get("generation"))
    changes = status_patch(status, fields)
    if changes:
        patch.status.update(changes)
    if "phase" in changes:
        announce_phase(body, status.get("phase"), changes["phase"], fields)


def announce_phase(body: kopf.Body, old: str | None, new: str, fields: dict[str, Any]) -> None:
    """A Kubernetes Event for each phase transition, a warning when a run failed."""
    message = (f"{old or 'New'} -> {new}: {fields.get('documentsSucceeded', 0)} succeeded, "
               f"{fields.get('documentsFailed', 0)} failed, {fields.get('chunksWritten', 0)} chunks")
    if new == "Failed":
        kopf.warn(body, reason="RunFailed", message=message)
    else:
        kopf.info(body, reason=new, message=message)


def resolve_target(ij: IngestionJob) -> tuple[ingestion.ResolvedTarget | None, str | None]:
    """An inline target as is; an indexRef through its EmbeddingIndex's active collection."""
    inline = ingestion.inline_target(ij.spec)
    if inline is not None:
        return inline, None
    ref = ij.spec.target.index_ref.name
    body = kube.get_custom(ij.metadata["namespace"], "embeddingindexes", ref)
    if body is None:
        return None, f"EmbeddingIndex {ref} not found"
    index = EmbeddingIndex.from_body(body)
    collection = index.status.active_collection
    if not collection:
        return None, f"EmbeddingIndex {ref} has no active collection yet"
    spec = index.spec
    return ingestion.ResolvedTarget(
        milvus_uri=spec.milvus.uri, collection=collection, model=spec.model.name,
        max_tokens=spec.chunking.max_tokens, overlap_tokens=spec.chunking.overlap_tokens,
        credentials_secret=spec.milvus.credentials_secret_ref.name if spec.milvus.credentials_secret_ref else None,
        replicas=spec.serving.replicas, metric_type=spec.index.metric_type.value,
        index_type=spec.index.index_type.value,
    ), None


def read_checkpoints(ij: IngestionJob, run_name: str) -> dict[str, str]:
    """Shard checkpoints of a run, from its ConfigMap or from Redis."""
    namespace = ij.metadata["namespace"]
    checkpoint = ij.spec.checkpoint
    if checkpoint is not None and checkpoint.backend is CheckpointBackend.REDIS:
        url = kube.read_secret_key(namespace, checkpoint.redis_secret_ref.name, checkpoint.redis_secret_ref.key)
        return kube.redis_checkpoints(url, run_name) if url else {}
    return kube.read_configmap_data(namespace, ingestion.checkpoint_configmap_name(run_name))


@kopf.on.delete(GROUP, VERSION, "ingestionjobs", id="cleanup")
def delete_ingestion_job(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    """Owner references let a cluster's garbage collector do this too; doing it here makes the
    Jobs (and so their pods) go at once, and also where no collector runs."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    selector = f"{ingestion.LABEL_JOB}={name}"
    for job in kube.list_jobs(namespace, selector):
        kube.delete_job(namespace, job["metadata"]["name"])
    kube.delete_configmaps(namespace, selector)
    logger.info("deleted the runs of %s", name)


@kopf.on.probe(id="now")
def liveness_probe(**_: Any) -> float:
    return time.time()
