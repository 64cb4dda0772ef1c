"""EmbeddingIndex's kopf handlers: thin. They read the cluster, call the pure core, apply what it returns.

The operator never talks to Milvus: provisioning (the first collection and its alias, or adopting
an existing alias) runs as a Job (core.embeddingindex.manifests), whose outcome the pure policy
turns into the status. create, update, resume and the resync timer share one reconcile.
"""

from __future__ import annotations

import logging
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
from tributary_operator.core.embeddingindex.manifests import TOKEN_KEY

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
    if plan.event is not None:
        kind, reason, message = plan.event
        kopf.event(body, type=kind, reason=reason, message=message)
    return plan.fields, list(plan.conditions)
