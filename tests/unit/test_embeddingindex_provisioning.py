"""EmbeddingIndex provisioning, pure: the Job manifest and the plan over what the Job shows."""

from __future__ import annotations

import json

import pytest
from tributary_operator.api.v1alpha1 import EmbeddingIndex
from tributary_operator.core.embeddingindex import (
    Action,
    ProvisionView,
    build_provision_job,
    collection_name,
    plan,
    provision_job_name,
    spec_hash,
)
from tributary_operator.core.ingestion import OperatorDefaults
from tributary_workers.contract.adoption import AdoptAction, Adoption

SPEC = {"milvus": {"uri": "http://milvus:19530", "credentialsSecretRef": {"name": "creds"}}, "alias": "handbook",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384},
        "index": {"indexType": "HNSW", "params": {"M": 16}}}


def index(status=None, **spec) -> EmbeddingIndex:
    return EmbeddingIndex.from_body({"metadata": {"name": "handbook", "namespace": "ns", "generation": 1},
                                     "spec": {**SPEC, **spec}, "status": status or {}})


def test_job_carries_settings_and_the_token_only_by_reference():
    ei = index()
    job = build_provision_job(ei, OperatorDefaults())
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["command"] == ["tributary-index-admin", "provision"]
    assert env["TRIBUTARY_COLLECTION"]["value"] == collection_name(ei.spec)
    assert (env["TRIBUTARY_ALIAS"]["value"], env["TRIBUTARY_INDEX_TYPE"]["value"]) == ("handbook", "HNSW")
    assert json.loads(env["TRIBUTARY_INDEX_PARAMS"]["value"]) == {"M": 16}
    assert env["TRIBUTARY_MILVUS_TOKEN"] == {"name": "TRIBUTARY_MILVUS_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "creds", "key": "MILVUS_TOKEN", "optional": False}}}
    assert "TRIBUTARY_MODEL" not in env  # the bundled model needs no path
    assert container["securityContext"]["runAsNonRoot"] and pod["restartPolicy"] == "Never"
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert (rule["action"], rule["onExitCodes"]["values"]) == ("FailJob", [2])
    assert job["metadata"]["name"] == provision_job_name(ei) and len(job["metadata"]["name"]) <= 63


def test_job_name_follows_the_essence_and_place_not_serving():
    base = provision_job_name(index())
    assert provision_job_name(index(serving={"replicas": 3})) == base
    assert provision_job_name(index(chunking={"maxTokens": 99})) != base
    assert provision_job_name(index(milvus={"uri": "http://other:19530"})) != base
    long = EmbeddingIndex.from_body({"metadata": {"name": "x" * 63, "namespace": "ns"}, "spec": SPEC})
    assert len(provision_job_name(long)) == 63


def terminated(exit_code: int, message: str, created: str = "2026-01-01T00:00:00Z") -> dict:
    return {"metadata": {"creationTimestamp": created}, "status": {"phase": "Failed" if exit_code else "Succeeded",
            "containerStatuses": [{"state": {"terminated": {"exitCode": exit_code, "message": message}}}]}}


CREATED = Adoption(AdoptAction.CREATE, "handbook_1234abcd", "Provisioned", "created it", "m")
CONFLICT = Adoption(AdoptAction.CONFLICT, "legacy", "ModelMismatch", "alias handbook points at legacy, but ...")
DONE = {"type": "Complete", "status": "True"}
FAILED = {"type": "Failed", "status": "True"}
UNREACHABLE = "tributary-index-admin: error: cannot connect to Milvus at http://m:1: connection refused"


def job(conditions=(), pods=(), active=0) -> ProvisionView:
    return ProvisionView.from_job({"metadata": {"name": "j"}, "status": {"conditions": list(conditions),
                                                                        "active": active}}, pods)


@pytest.mark.parametrize("view, action, phase, reason", [
    (None, Action.CREATE_JOB, "Pending", "Provisioning"),
    (job(active=1), Action.NONE, "Pending", "Provisioning"),
    (job([DONE], [terminated(0, CREATED.to_json())]), Action.DELETE_JOB, "Ready", "Provisioned"),
    (job([FAILED], [terminated(2, CONFLICT.to_json())]), Action.NONE, "Failed", "ModelMismatch"),
    (job([FAILED], [terminated(2, "tributary-index-admin: error: no model at /m")]), Action.NONE, "Failed",
     "ProvisioningFailed"),
    (job([], [terminated(1, UNREACHABLE)], active=0), Action.NONE, "Pending", "MilvusUnavailable"),
    (job([FAILED], [terminated(1, UNREACHABLE)]), Action.DELETE_JOB, "Pending", "MilvusUnavailable"),
    (job([DONE], []), Action.DELETE_JOB, "Pending", "Provisioning"),  # no outcome: run again
])  # fmt: skip
def test_plan_before_the_index_is_active(view, action, phase, reason):
    result = plan(index(), view)
    ready = next(c for c in result.conditions if c.type == "Ready")
    assert (result.action, result.fields["phase"], ready.reason) == (action, phase, reason)
    assert ready.status is (phase == "Ready")


def test_plan_after_success_records_what_serves():
    result = plan(index(), job([DONE], [terminated(1, UNREACHABLE, "a"), terminated(0, CREATED.to_json(), "b")]))
    assert result.fields == {"phase": "Ready", "activeCollection": "handbook_1234abcd", "activeModel": "m",
                             "activeSpecHash": spec_hash(index().spec)}
    assert result.event == ("Normal", "Provisioned", "created it")


