"""IngestionJob's kopf handlers: thin. They read the cluster, call the pure core, apply what it returns.

create, update, resume and the resync timer all run one level-triggered reconcile, so a missed
event, an operator restart or a hand-deleted child all converge the same way.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import kopf

from tributary_operator import kube, metrics
from tributary_operator.api.v1alpha1 import GROUP, VERSION, EmbeddingIndex, IngestionJob
from tributary_operator.core import ingestion
from tributary_operator.core.conditions import merge_conditions, status_patch

RESYNC_SECONDS = float(os.environ.get("TRIBUTARY_RESYNC_SECONDS", "10"))
DEFAULTS = ingestion.OperatorDefaults(
    worker_image=os.environ.get("TRIBUTARY_WORKER_IMAGE", ingestion.OperatorDefaults.worker_image),
    service_account=os.environ.get("TRIBUTARY_WORKER_SERVICE_ACCOUNT", ingestion.OperatorDefaults.service_account),
)


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
    ref = ingestion.index_ref(ij)
    index_body = kube.get_custom(namespace, "embeddingindexes", ref) if ref else None
    target, blocked = ingestion.resolve_target(ij, EmbeddingIndex.from_body(index_body) if index_body else None)
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

    for run_name, suspend in ingestion.runs_to_suspend(ij, runs, decision.stop):  # suspend follows the spec
        kube.set_job_suspended(namespace, run_name, suspend)
        kopf.info(body, reason="Suspended" if suspend else "Resumed", message=f"run {run_name}")

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


def read_checkpoints(ij: IngestionJob, run_name: str) -> dict[str, str]:
    """Shard checkpoints of a run, from its ConfigMap or from Redis."""
    namespace = ij.metadata["namespace"]
    where = ingestion.checkpoint_location(ij, run_name)
    if where.redis_secret is not None:
        url = kube.read_secret_key(namespace, where.redis_secret.name, where.redis_secret.key)
        return kube.redis_checkpoints(url, run_name) if url else {}
    return kube.read_configmap_data(namespace, where.configmap)


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
