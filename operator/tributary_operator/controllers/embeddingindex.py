"""EmbeddingIndex's kopf handlers: thin. They read the cluster, call the pure core, apply what it returns.

The operator never talks to Milvus: provisioning (the first collection and its alias, or adopting
an existing alias) and every step of a blue-green re-embedding (backfill, catch-up, validation,
swap, retire) run as Jobs (core.embeddingindex.manifests, .steps), whose reports the pure policy
and lifecycle turn into the status. create, update, resume and the timers share one reconcile; a
short timer follows an index while it is in motion (a step's Job finishes within seconds).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError
from tributary_workers.errors import explain

from tributary_operator import kube, metrics
from tributary_operator.api.v1alpha1 import GROUP, VERSION, EmbeddingIndex
from tributary_operator.controllers.ingestionjob import DEFAULTS, RESYNC_SECONDS
from tributary_operator.controllers.status import write_status
from tributary_operator.core import embeddingindex as core
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.embeddingindex import lifecycle, steps
from tributary_operator.core.embeddingindex.manifests import LABEL_COMPONENT, TOKEN_KEY

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@kopf.on.create(GROUP, VERSION, "embeddingindexes", id="reconcile")
@kopf.on.update(GROUP, VERSION, "embeddingindexes", id="reconcile")
@kopf.on.resume(GROUP, VERSION, "embeddingindexes", id="reconcile")
def reconcile_embedding_index(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
    with metrics.reconciling("EmbeddingIndex"):
        reconcile(body, patch, logger)


@kopf.timer(GROUP, VERSION, "embeddingindexes", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, id="resync")
def resync_embedding_index(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
    if (body.get("status") or {}).get("observedGeneration") is None:
        return  # the create handler has not written yet (see the IngestionJob resync)
    with metrics.reconciling("EmbeddingIndex"):
        reconcile(body, patch, logger)


MOTION_SECONDS = 2.0
RESTING_PHASES = ("Ready", "Failed", "Pending")


@kopf.timer(GROUP, VERSION, "embeddingindexes", interval=MOTION_SECONDS, initial_delay=MOTION_SECONDS, id="motion")
def follow_embedding_index(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
    status = body.get("status") or {}
    if status.get("observedGeneration") is None:
        return
    if status.get("phase") in RESTING_PHASES and not status.get("retiring") and not _spec_moved(body):
        return  # at rest: the resync timer is enough
    with metrics.reconciling("EmbeddingIndex"):
        reconcile(body, patch, logger)


def _spec_moved(body: kopf.Body) -> bool:
    """The spec's essence is not the active collection's (a re-embedding or a rollback to start)."""
    try:
        ei = EmbeddingIndex.from_body(body)
    except ValidationError:
        return False
    active = ei.status.active_spec_hash
    return bool(ei.status.active_collection) and active is not None and active != core.spec_hash(ei.spec)


def reconcile(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger) -> None:
    status = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    try:
        ei = EmbeddingIndex.from_body(body)
    except ValidationError as exc:
        fields = {"phase": "Failed"}
        conditions = [ConditionSpec("Ready", False, "InvalidSpec",
                                    f"the spec does not parse: {explain(exc, 'invalid spec')}")]
    else:
        try:
            fields, conditions = converge(ei, body, logger)
        except Exception as exc:  # noqa: BLE001 - the reason goes on the object; the resync retries
            logger.exception("reconcile failed")
            fields, conditions = {}, [ConditionSpec("Ready", False, "ReconcileError", kube.error_text(exc))]
    write_status(body, patch, status, fields, conditions, generation)


def secret_problem(ei: EmbeddingIndex) -> ConditionSpec | None:
    """The Milvus credentials Secret must exist and hold MILVUS_TOKEN (its value is never read)."""
    ref = ei.spec.milvus.credentials_secret_ref
    if ref is None:
        return None
    keys = kube.secret_keys(ei.metadata["namespace"], ref.name)
    if keys is None:
        return ConditionSpec("Ready", False, "SecretNotFound",
                             f"Secret {ref.name} (spec.milvus.credentialsSecretRef) not found")
    if TOKEN_KEY not in keys:
        return ConditionSpec("Ready", False, "SecretKeyMissing",
                             f"Secret {ref.name} (spec.milvus.credentialsSecretRef) has no key {TOKEN_KEY}")
    return None


def converge(ei: EmbeddingIndex, body: kopf.Body, logger: logging.Logger):
    namespace, name = ei.metadata["namespace"], ei.metadata["name"]
    jobs = kube.list_jobs(namespace, f"{core.LABEL_INDEX}={name}")
    if ei.status.active_collection:
        return follow(ei, body, jobs, logger)
    wanted = core.provision_job_name(ei)
    for stale in (j["metadata"]["name"] for j in jobs if j["metadata"]["name"] != wanted):
        kube.delete_job(namespace, stale)  # made for an earlier spec
    job = next((j for j in jobs if j["metadata"]["name"] == wanted), None)
    view = None
    if job is not None:
        view = core.ProvisionView.from_job(job, kube.list_pods(namespace, f"{JOB_NAME_LABEL}={wanted}"))
    plan = core.plan(ei, view)
    if plan.action is core.Action.CREATE_JOB:
        problem = secret_problem(ei)
        if problem is not None:
            return {"phase": "Pending"}, [problem]
        manifest = core.build_provision_job(ei, DEFAULTS)
        kopf.adopt(manifest, owner=body)
        if kube.create_if_absent(manifest):
            logger.info("started provisioning job %s", wanted)
    elif plan.action is core.Action.DELETE_JOB:
        kube.delete_job(namespace, wanted)
    if plan.fields.get("activeCollection"):  # what the first collection was built with
        plan.fields["activeSpec"] = ei.spec.model_dump(mode="json", by_alias=True, exclude_none=True,
                                                       include={"model", "chunking", "index"})
    if plan.event is not None:
        kind, reason, message = plan.event
        kopf.event(body, type=kind, reason=reason, message=message)
    return plan.fields, list(plan.conditions)


def pipelines_on(ei: EmbeddingIndex) -> list[lifecycle.PipelineRouting]:
    """The StreamPipelines writing to this index, with the routing their status reports."""
    found = []
    for sp in kube.list_custom(ei.metadata["namespace"], "streampipelines"):
        if ((sp.get("spec") or {}).get("indexRef") or {}).get("name") != ei.metadata["name"]:
            continue
        routing = (sp.get("status") or {}).get("routing") or {}
        found.append(lifecycle.PipelineRouting(sp["metadata"]["name"], tuple(routing.get("targets") or ()),
                                               bool(routing.get("applied"))))
    return found


def ingesting_into(ei: EmbeddingIndex) -> list[str]:
    """IngestionJobs whose run is writing into this index right now."""
    return [ij["metadata"]["name"] for ij in kube.list_custom(ei.metadata["namespace"], "ingestionjobs")
            if (((ij.get("spec") or {}).get("target") or {}).get("indexRef") or {}).get("name") == ei.metadata["name"]
            and (ij.get("status") or {}).get("phase") == "Running"]


def follow(ei: EmbeddingIndex, body: kopf.Body, jobs: list[dict[str, Any]], logger: logging.Logger):
    """An index with an active collection: the blue-green lifecycle (core.embeddingindex.lifecycle)."""
    namespace = ei.metadata["namespace"]
    views = {}
    for job in jobs:
        job_name = job["metadata"]["name"]
        if (job["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == core.COMPONENT:
            continue  # the provisioning Job: deleted below
        if (job["metadata"].get("deletionTimestamp")):
            continue  # on its way out: replaced once gone
        views[job_name] = lifecycle.StepJob.from_job(job, kube.list_pods(namespace, f"{JOB_NAME_LABEL}={job_name}"))
    plan = lifecycle.decide(ei, views, pipelines_on(ei), datetime.now(UTC), ingesting_into(ei))
    present = {j["metadata"]["name"] for j in jobs}
    for job_name in sorted(present - set(plan.keep) | (set(plan.delete) & present)):
        kube.delete_job(namespace, job_name)
    if plan.run is not None:
        problem = secret_problem(ei) or ledger_problem(ei)
        if problem is not None:
            return {}, [problem]
        manifest = steps.build_step_job(ei, plan.run, DEFAULTS)
        if manifest["metadata"]["name"] not in present:
            kopf.adopt(manifest, owner=body)
            if kube.create_if_absent(manifest):
                logger.info("started %s job %s", plan.run.step.value, manifest["metadata"]["name"])
    if plan.event is not None:
        kind, reason, message = plan.event
        kopf.event(body, type=kind, reason=reason, message=message)
    metrics.index_observed(namespace, ei.metadata["name"], plan.fields.get("phase") or ei.status.phase,
                           plan.fields.get("progress"), plan.swap_ms)
    return plan.fields, list(plan.conditions)


def ledger_problem(ei: EmbeddingIndex) -> ConditionSpec | None:
    ref = ei.spec.ledger.redis_secret_ref if ei.spec.ledger else None
    if ref is None:
        return None
    keys = kube.secret_keys(ei.metadata["namespace"], ref.name)
    if keys is None or ref.key not in keys:
        what = "not found" if keys is None else f"has no key {ref.key}"
        return ConditionSpec("Progressing", False, "SecretNotFound" if keys is None else "SecretKeyMissing",
                             f"Secret {ref.name} (spec.ledger.redisSecretRef) {what}")
    return None
