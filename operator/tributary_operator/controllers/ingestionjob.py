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
from pydantic import ValidationError
from tributary_workers.errors import explain

from tributary_operator import kube, metrics, queues
from tributary_operator.api.v1alpha1 import GROUP, VERSION, EmbeddingIndex, IngestionJob
from tributary_operator.core import ingestion
from tributary_operator.controllers.status import write_status
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.ingestion import checks
from tributary_operator.core.ingestion.checks import Problem

RESYNC_SECONDS = float(os.environ.get("TRIBUTARY_RESYNC_SECONDS", "10"))
DELETE_ATTEMPTS = 4
DEFAULTS = ingestion.OperatorDefaults(
    worker_image=os.environ.get("TRIBUTARY_WORKER_IMAGE", ingestion.OperatorDefaults.worker_image),
    service_account=os.environ.get("TRIBUTARY_WORKER_SERVICE_ACCOUNT", ingestion.OperatorDefaults.service_account),
)


@kopf.on.create(GROUP, VERSION, "ingestionjobs", id="reconcile")
@kopf.on.update(GROUP, VERSION, "ingestionjobs", id="reconcile")
@kopf.on.resume(GROUP, VERSION, "ingestionjobs", id="reconcile")
def reconcile_ingestion_job(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
    with metrics.reconciling("IngestionJob"):
        reconcile(body, patch, logger)


@kopf.timer(GROUP, VERSION, "ingestionjobs", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, id="resync")
def resync_ingestion_job(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
    # Until the create handler has written a status, the resync leaves the object to it: two passes
    # over the same unwritten status would post every Event twice.
    if (body.get("status") or {}).get("observedGeneration") is None:
        return
    with metrics.reconciling("IngestionJob"):
        reconcile(body, patch, logger)


def reconcile(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger) -> None:
    """Every failure lands on the object: Ready=False with a reason and message, one Warning Event."""
    status = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    tick = None
    try:
        ij = IngestionJob.from_body(body)
    except ValidationError as exc:  # e.g. stored under an older schema
        problem = Problem("InvalidSpec", f"the spec does not parse: {explain(exc, 'invalid spec')}", permanent=True)
        fields, conditions = {"observedGeneration": generation}, failure_conditions(problem)
    else:
        try:
            fields, conditions, tick = converge(ij, body, status, logger)
        except Exception as exc:  # noqa: BLE001 - the reason goes on the object; the resync retries
            logger.exception("reconcile failed")
            problem = Problem("ReconcileError", kube.error_text(exc))
            fields, conditions = {"observedGeneration": generation}, failure_conditions(problem)
    if tick is not None:
        fields["lastScheduleTime"] = tick.strftime("%Y-%m-%dT%H:%M:%SZ")
    write_status(body, patch, status, fields, conditions, generation)


def failure_conditions(problem: Problem) -> list[ConditionSpec]:
    return [ConditionSpec("Ready", False, problem.reason, problem.message)]


def gather(ij: IngestionJob) -> checks.Dependencies:
    """What the spec depends on, read from the cluster (pre-flight input)."""
    namespace = ij.metadata["namespace"]
    ref = ingestion.index_ref(ij)
    index_body = kube.get_custom(namespace, "embeddingindexes", ref) if ref else None
    index = EmbeddingIndex.from_body(index_body) if index_body else None
    secrets = {need.name: kube.secret_keys(namespace, need.name) for need in checks.secret_needs(ij, index)}
    account = checks.service_account(ij, DEFAULTS)
    return checks.Dependencies(secrets, {account: kube.service_account_exists(namespace, account)}, index)


def observe_runs(namespace: str, selector: str) -> list[ingestion.RunView]:
    """The runs' Jobs, each with its pods (their termination messages say why a shard failed)."""
    pods = kube.list_pods(namespace, selector)
    return [ingestion.RunView.from_job(job, [p for p in pods if p["metadata"].get("labels", {}).get(
        ingestion.LABEL_RUN) == job["metadata"]["name"]]) for job in kube.list_jobs(namespace, selector)]


def converge(ij: IngestionJob, body: kopf.Body, status: dict[str, Any], logger: logging.Logger):
    """One level-triggered pass: pre-flight, start/stop/suspend/forget runs, then the status."""
    namespace, name = ij.metadata["namespace"], ij.metadata["name"]
    selector = f"{ingestion.LABEL_JOB}={name}"
    runs = observe_runs(namespace, selector)
    deps = gather(ij)
    problem = checks.preflight(ij, deps, DEFAULTS)
    decision = ingestion.decide_run(ij, runs, datetime.now(UTC))
    tick = None
    if decision.start and problem is None:
        problem = ingestion.rejected_before(status, ij.metadata.get("generation"))
    if decision.start and problem is None:
        target, _ = ingestion.resolve_target(ij, deps.index)
        for stale in decision.stop:
            kube.delete_job(namespace, stale)
            kopf.info(body, reason="RunStopped", message=f"stopped run {stale} ({decision.reason})")
        configmap = ingestion.build_checkpoint_configmap(ij, decision.start)
        job = ingestion.build_job(ij, decision.start, target, DEFAULTS, decision.tick)
        kopf.adopt([configmap, job], owner=body)
        try:
            kube.create_if_absent(configmap)
            created = kube.create_if_absent(job)
        except Exception as exc:
            refused = kube.rejection(exc)
            if refused is None:
                raise
            problem = Problem("ChildRejected", f"the API server refused {job['kind']} {decision.start}: {refused}",
                              permanent=True)
        else:
            if created:
                logger.info("started run %s", decision.start)
                kopf.info(body, reason="RunStarted",
                          message=f"started run {decision.start} with {ij.spec.parallelism} shard(s)")
            tick = decision.tick
            runs = observe_runs(namespace, selector)

    for run_name, suspend in ingestion.runs_to_suspend(ij, runs, decision.stop):  # suspend follows the spec
        kube.set_job_suspended(namespace, run_name, suspend)
        kopf.info(body, reason="Suspended" if suspend else "Resumed", message=f"run {run_name}")

    for doomed in ingestion.runs_to_delete(ij.spec, runs):
        kube.delete_job(namespace, doomed)
        kube.delete_configmap(namespace, ingestion.checkpoint_configmap_name(doomed))

    current = max(runs, key=lambda r: r.created, default=None)
    checkpoints = read_checkpoints(ij, current.name) if current else {}
    shards = ingestion.shard_progress(checkpoints, current.name) if current else {}
    fields, conditions = ingestion.compute_status(ij, current, shards, problem)
    return fields, conditions, tick


def read_checkpoints(ij: IngestionJob, run_name: str) -> dict[str, str]:
    """Shard checkpoints of a run, from its ConfigMap or from Redis."""
    namespace = ij.metadata["namespace"]
    where = ingestion.checkpoint_location(ij, run_name)
    if where.redis_secret is not None:
        url = kube.read_secret_key(namespace, where.redis_secret.name, where.redis_secret.key)
        return queues.checkpoints(url, run_name) if url else {}
    return kube.read_configmap_data(namespace, where.configmap)


@kopf.on.delete(GROUP, VERSION, "ingestionjobs", id="cleanup")
def delete_ingestion_job(body: kopf.Body, logger: logging.Logger, retry: int, **_: Any) -> None:
    """Owner references let a cluster's garbage collector do this too; doing it here makes the
    Jobs (and so their pods) go at once. A delete never hangs: after a few failed attempts the
    finalizer is released with a Warning, and the garbage collector removes what is left."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    selector = f"{ingestion.LABEL_JOB}={name}"
    try:
        for job in kube.list_jobs(namespace, selector):
            kube.delete_job(namespace, job["metadata"]["name"])
        kube.delete_configmaps(namespace, selector)
    except Exception as exc:  # noqa: BLE001
        if retry + 1 < DELETE_ATTEMPTS:
            raise kopf.TemporaryError(f"cleanup failed: {kube.error_text(exc)}", delay=min(2 ** retry, 10)) from None
        kopf.warn(body, reason="CleanupFailed", message=f"gave up cleaning up after {DELETE_ATTEMPTS} attempts "
                  f"({kube.error_text(exc)}); the owner references let the garbage collector remove the runs")
        return
    logger.info("deleted the runs of %s", name)
